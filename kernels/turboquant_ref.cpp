// C++ reference quantizer, and the host backend's: TurboQuant (Zandieh et al. 2025) with a
// randomized Walsh-Hadamard rotation, Lloyd-Max codebooks and an optional QJL residual sketch.
// Vectors are processed kW tokens side by side in coordinate-major scratch, so every loop
// below runs over kW lanes and vectorizes without per-value branches.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "tq_halves.h"
#include "tq_matrix.h"
#include "turboquant.h"
#include "turboquant_format.h"

namespace {

constexpr uint32_t kW = 8;  // tokens per batch: one AVX register of floats
// One coordinate of kW tokens, for the loops the compiler does not vectorize by itself.
typedef float Row __attribute__((vector_size(kW * sizeof(float))));
constexpr uint32_t kMaxPlanes = 4;

struct Batch {
  alignas(32) float v[TQ_MAX_DIM][kW];  // the sub-vectors, coordinate-major
  alignas(32) float r[TQ_MAX_DIM][kW];  // QJL residual, then its sketch
  alignas(32) uint32_t planes[kMaxPlanes][TQ_MAX_SIGN_WORDS][kW];
  alignas(32) float norm[kW], rnorm[kW];
  alignas(32) uint16_t bits[TQ_MAX_DIM][kW];  // 2-byte values to be written
};

template <uint32_t DT> float load(const uint8_t* base, size_t i) {
  if constexpr (DT == SW_DTYPE_FP32) {
    float f;
    std::memcpy(&f, base + 4 * i, 4);
    return f;
  } else if constexpr (DT == SW_DTYPE_FP16) {
    _Float16 h;
    std::memcpy(&h, base + 2 * i, 2);
    return static_cast<float>(h);
  } else {
    uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return tq_bf16_to_f32(h);
  }
}

// An input value as format 2's coding (and format 1's) takes it: NaN and infinite values as +0,
// as the GPU's kernels do (format 3's matrix kinds have their own rule: tq_matrix.h).
template <uint32_t DT> float load_finite(const uint8_t* base, size_t i) {
  const float x = load<DT>(base, i);
  return std::isfinite(x) ? x : 0.0f;
}

template <uint32_t DT> uint16_t narrow(float f) {
  if constexpr (DT == SW_DTYPE_FP16) {
    _Float16 h = static_cast<_Float16>(f);  // round to nearest even
    uint16_t u;
    std::memcpy(&u, &h, 2);
    return u;
  } else {
    return tq_f32_to_bf16(f);
  }
}

uint32_t dtype_bytes(uint32_t dtype) { return dtype == SW_DTYPE_FP32 ? 4u : 2u; }

// Unnormalized Walsh-Hadamard transform, strides ascending, (a + b, a - b): the CUDA
// kernels use the same order, so both paths round identically.
void fwht(float (*v)[kW], uint32_t dim) {
  for (uint32_t h = 1; h < dim; h *= 2)
    for (uint32_t i = 0; i < dim; i += 2 * h)
      for (uint32_t j = i; j < i + h; ++j) {
        // whole rows as vectors: as a loop over w the compiler cannot tell rows j and j + h
        // apart and keeps it scalar
        Row a, b;
        std::memcpy(&a, v[j], sizeof a);
        std::memcpy(&b, v[j + h], sizeof b);
        const Row sum = a + b, diff = a - b;
        std::memcpy(v[j], &sum, sizeof sum);
        std::memcpy(v[j + h], &diff, sizeof diff);
      }
}

// sqrt of the sum of squares in the CUDA kernels' order: each lane of a team fuses its
// tq_lane_elems consecutive squares in sequence, then lanes pair up in a tree.
void tree_norm(const float (*v)[kW], uint32_t dim, float* out) {
  uint32_t e = tq_lane_elems(dim), lanes = dim / e;
  float part[TQ_MAX_DIM / 32][kW];
  for (uint32_t l = 0; l < lanes; ++l) {
    for (uint32_t w = 0; w < kW; ++w) part[l][w] = 0.0f;
    for (uint32_t j = l * e; j < (l + 1) * e; ++j)
      for (uint32_t w = 0; w < kW; ++w) part[l][w] = std::fma(v[j][w], v[j][w], part[l][w]);
  }
  for (uint32_t o = 1; o < lanes; o *= 2)
    for (uint32_t l = 0; l < lanes; l += 2 * o)
      for (uint32_t w = 0; w < kW; ++w) part[l][w] = part[l][w] + part[l + o][w];
  for (uint32_t w = 0; w < kW; ++w) out[w] = std::sqrt(part[0][w]);
}

// Bit casts: selects and sign flips below are integer ops so the loops vectorize.
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float sign_of(const uint32_t* signs, uint32_t j) { return (signs[j >> 5] >> (j & 31)) & 1u ? -1.0f : 1.0f; }

// Multiplies coordinate j of every lane by the sign diagonal's entry j (exact).
void flip_signs(float (*v)[kW], const uint32_t* signs, uint32_t dim) {
  for (uint32_t j = 0; j < dim; ++j) {
    float s = sign_of(signs, j);
    for (uint32_t w = 0; w < kW; ++w) v[j][w] *= s;
  }
}

// b.v holds the (gathered) sub-vectors; fills norms and code planes (planes[0..MSE) are
// the sign-magnitude MSE code, LSB first; plane MSE is the QJL sketch). MSE is the MSE
// code's bit count, a template argument so that the per-value loops fully unroll.
template <uint32_t MSE, bool QJL> void quantize_sub(const tq_sub_plan& sp, Batch& b) {
  constexpr uint32_t kThr = MSE ? (1u << (MSE - 1)) - 1u : 0u;
  const uint32_t dim = sp.dim;
  tree_norm(b.v, dim, b.norm);
  for (uint32_t r = 0; r < sp.rounds; ++r) {
    flip_signs(b.v, sp.rot_signs[r], dim);
    fwht(b.v, dim);
  }
  // y = H D_rounds ... H D_1 x has norm gain |x|: compare against boundaries scaled by gain |x|
  // instead of normalizing, so a zero vector needs no special case.
  float scale[kW], thr[kThr + 1][kW];
  uint32_t cent[kThr + 1];
  for (uint32_t i = 0; i <= kThr; ++i) cent[i] = bits_of(sp.cent[i]);
  for (uint32_t w = 0; w < kW; ++w) scale[w] = b.norm[w] * sp.gain;
  for (uint32_t i = 0; i < kThr; ++i)
    for (uint32_t w = 0; w < kW; ++w) thr[i][w] = sp.thr[i] * scale[w];
  std::memset(b.planes, 0, sizeof b.planes);
  for (uint32_t j = 0; j < dim; ++j) {
    const uint32_t word = j >> 5, bit = j & 31;
    for (uint32_t w = 0; w < kW; ++w) {
      const float y = b.v[j][w], a = std::fabs(y);
      uint32_t mag = 0, c = cent[0];
      for (uint32_t i = 0; i < kThr; ++i) {
        uint32_t above = 0u - static_cast<uint32_t>(a > thr[i][w]);
        mag -= above;
        c = (c & ~above) | (cent[i + 1] & above);
      }
      const uint32_t neg = bits_of(y) >> 31;
      const uint32_t code = (neg << (MSE ? MSE - 1 : 0)) | mag;
      for (uint32_t p = 0; p < MSE; ++p) b.planes[p][word][w] |= ((code >> p) & 1u) << bit;
      if (QJL) b.r[j][w] = MSE ? float_of(c ^ (neg << 31)) : 0.0f;  // the signed centroid, for now
    }
  }
  if (!QJL) return;
  // residual of the MSE code in the rotated frame (all of y when MSE == 0), in a loop of its
  // own: inside the one above it kept that loop from vectorizing
  for (uint32_t j = 0; j < dim; ++j)
    for (uint32_t w = 0; w < kW; ++w) b.r[j][w] = std::fma(-b.r[j][w], scale[w], b.v[j][w]);
  tree_norm(b.r, dim, b.rnorm);
  for (uint32_t w = 0; w < kW; ++w) b.rnorm[w] *= sp.inv_gain;
  flip_signs(b.r, sp.qjl_signs, dim);
  fwht(b.r, dim);
  for (uint32_t j = 0; j < dim; ++j)
    for (uint32_t w = 0; w < kW; ++w) b.planes[MSE][j >> 5][w] |= (std::signbit(b.r[j][w]) ? 1u : 0u) << (j & 31);
}

// Inverse of quantize_sub: from b.planes, b.norm, b.rnorm to the sub-vectors in b.v.
template <uint32_t MSE, bool QJL> void dequantize_sub(const tq_sub_plan& sp, Batch& b) {
  constexpr uint32_t kMag = MSE ? (1u << (MSE - 1)) : 1u;
  const uint32_t dim = sp.dim;
  uint32_t cent[kMag];
  for (uint32_t m = 0; m < kMag; ++m) cent[m] = bits_of(sp.cent[m]);
  for (uint32_t j = 0; j < dim; ++j) {
    const uint32_t word = j >> 5, bit = j & 31;
    for (uint32_t w = 0; w < kW; ++w) {
      uint32_t code = 0;
      for (uint32_t p = 0; p < MSE; ++p) code |= ((b.planes[p][word][w] >> bit) & 1u) << p;
      const uint32_t mag = code & (kMag - 1u);
      uint32_t c = cent[0];
      for (uint32_t m = 1; m < kMag; ++m) {
        uint32_t hit = 0u - static_cast<uint32_t>(mag == m);
        c = (c & ~hit) | (cent[m] & hit);
      }
      const float cs = MSE ? float_of(c ^ ((code >> (MSE ? MSE - 1 : 0)) << 31)) : 0.0f;
      b.v[j][w] = cs * b.norm[w];
    }
  }
  if (QJL) {
    // r^ = sqrt(pi/2)/d |r| S^T sign(S r) with S = H D2 (rows of norm sqrt(d))
    for (uint32_t j = 0; j < dim; ++j)
      for (uint32_t w = 0; w < kW; ++w) b.r[j][w] = (b.planes[MSE][j >> 5][w] >> (j & 31)) & 1u ? -1.0f : 1.0f;
    fwht(b.r, dim);
    float k[kW];
    for (uint32_t w = 0; w < kW; ++w) k[w] = sp.qjl_scale * b.rnorm[w];
    for (uint32_t j = 0; j < dim; ++j) {
      float s = sign_of(sp.qjl_signs, j);
      for (uint32_t w = 0; w < kW; ++w) b.v[j][w] = std::fma(s * b.r[j][w], k[w], b.v[j][w]);
    }
  }
  // the rounds undone last to first: H is its own inverse up to the gain, applied at the end
  fwht(b.v, dim);
  for (uint32_t r = sp.rounds - 1; r > 0; --r) {
    flip_signs(b.v, sp.rot_signs[r], dim);
    fwht(b.v, dim);
  }
  for (uint32_t j = 0; j < dim; ++j) {
    float s = sign_of(sp.rot_signs[0], j) * sp.inv_gain;
    for (uint32_t w = 0; w < kW; ++w) b.v[j][w] *= s;
  }
}

using SubFn = void (*)(const tq_sub_plan&, Batch&);

// [mse bits][qjl]; at most 4 bits in all, so neither 0 + 0 nor 4 + QJL occurs.
constexpr SubFn kQuantizeSub[5][2] = {{nullptr, quantize_sub<0, true>},
                                      {quantize_sub<1, false>, quantize_sub<1, true>},
                                      {quantize_sub<2, false>, quantize_sub<2, true>},
                                      {quantize_sub<3, false>, quantize_sub<3, true>},
                                      {quantize_sub<4, false>, nullptr}};
constexpr SubFn kDequantizeSub[5][2] = {{nullptr, dequantize_sub<0, true>},
                                        {dequantize_sub<1, false>, dequantize_sub<1, true>},
                                        {dequantize_sub<2, false>, dequantize_sub<2, true>},
                                        {dequantize_sub<3, false>, dequantize_sub<3, true>},
                                        {dequantize_sub<4, false>, nullptr}};

// Channel lists of the two halves of a fractional-rate record: outliers (mask bit set)
// ascending, then the rest ascending. A corrupt mask without exactly head_dim/2 bits set
// falls back to the low/high halves so that decoding stays in bounds.
void split_channels(const uint8_t* mask, uint32_t head_dim, uint16_t (*idx)[TQ_MAX_DIM / 2]) {
  uint32_t n[2] = {0, 0}, half = head_dim / 2;
  for (uint32_t c = 0; c < head_dim; ++c) n[((mask[c >> 3] >> (c & 7)) & 1u) ? 0 : 1]++;
  bool ok = n[0] == half;
  n[0] = n[1] = 0;
  for (uint32_t c = 0; c < head_dim; ++c) {
    uint32_t s = ok ? (((mask[c >> 3] >> (c & 7)) & 1u) ? 0u : 1u) : (c < half ? 0u : 1u);
    idx[s][n[s]++] = static_cast<uint16_t>(c);
  }
}

// The head_dim/2 channels with the largest sum of squares over the group's tokens (ties:
// lower channel first), as a bit mask. Energies are compared as bit patterns, a total order
// on non-negative floats that also ranks NaN highest, so the halves are always exact.
template <uint32_t DT> void outlier_mask(const uint8_t* src, uint32_t tokens, uint32_t head_dim, uint8_t* mask) {
  float e[TQ_MAX_DIM] = {};
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t c = 0; c < head_dim; ++c) {
      float x = load_finite<DT>(src, static_cast<size_t>(t) * head_dim + c);
      e[c] = std::fma(x, x, e[c]);
    }
  uint64_t key[TQ_MAX_DIM];
  for (uint32_t c = 0; c < head_dim; ++c) {
    uint32_t bits;
    std::memcpy(&bits, &e[c], 4);
    key[c] = (static_cast<uint64_t>(bits) << 32) | (0xFFFFFFFFu - c);
  }
  std::nth_element(key, key + head_dim / 2 - 1, key + head_dim, std::greater<uint64_t>());
  std::memset(mask, 0, head_dim / 8);
  for (uint32_t i = 0; i < head_dim / 2; ++i) {
    uint32_t c = 0xFFFFFFFFu - static_cast<uint32_t>(key[i]);
    mask[c >> 3] |= static_cast<uint8_t>(1u << (c & 7));
  }
}

struct Layout : tq_layout {
  explicit Layout(const sw_tq_params* p) { tq_make_layout(p, this); }
};

// Format 3's matrix kinds (tq_matrix.h): a group's tokens as floats in x (tokens x kDim), coded
// together with the seed's plan.
template <uint32_t DT>
void quantize_matrix_group(const tq_matrix::Plan& plan, uint32_t tokens, const uint8_t* src, uint8_t* rec, const tq_kind& k, float* x) {
  for (size_t i = 0; i < static_cast<size_t>(tokens) * tq_matrix::kDim; ++i) x[i] = load<DT>(src, i);
  tq_matrix::quantize_vectors(plan, x, tokens, rec + k.codes_off, k.token_bytes, reinterpret_cast<float*>(rec + k.norms_off));
}

template <uint32_t DT>
void dequantize_matrix_group(const tq_matrix::Plan& plan, uint32_t tokens, const uint8_t* rec, uint8_t* dst, const tq_kind& k, float* x) {
  tq_matrix::dequantize_vectors(plan, rec + k.codes_off, k.token_bytes, reinterpret_cast<const float*>(rec + k.norms_off), tokens, x);
  for (size_t i = 0; i < static_cast<size_t>(tokens) * tq_matrix::kDim; ++i) {
    if constexpr (DT == SW_DTYPE_FP32) {
      std::memcpy(dst + 4 * i, &x[i], 4);
    } else {
      const uint16_t bits = narrow<DT>(x[i]);
      std::memcpy(dst + 2 * i, &bits, 2);
    }
  }
}

// What a call codes format 3's matrix kinds with, made once per call (the plan's lookup takes a
// lock): the seed's plan and a group's floats, where the layout has matrix kinds.
struct MatrixScratch {
  const tq_matrix::Plan* plan = nullptr;
  std::vector<float> x;
  MatrixScratch(const sw_tq_params* p, const tq_layout& layout) {
    for (const tq_kind& k : layout.kind)
      if (k.matrix && !plan) plan = &tq_matrix::plan_for(p->seed);
    if (plan) x.resize(static_cast<size_t>(p->tokens) * tq_matrix::kDim);
  }
};

// What a call codes format 4's halves kinds with: each halves kind's plan (the lookup takes a
// lock, so once a call).
struct HalvesPlans {
  const halves::Plan* plan[4] = {};
  HalvesPlans(const sw_tq_params* p, const tq_layout& layout) {
    for (int i = 0; i < 4; ++i)
      if (layout.kind[i].halves) plan[i] = &halves::plan_for(p->seed, layout.kind[i].sub[1].mse_bits);
  }
  const halves::Plan& of(const tq_layout& layout, const tq_kind& k) const { return *plan[&k - layout.kind]; }
};

template <uint32_t DT>
void quantize_groups(const sw_tq_params* p, const uint8_t* raw, uint8_t* q, uint32_t first, uint32_t n) {
  const Layout layout(p);
  const uint32_t D = p->head_dim, T = p->tokens;
  const size_t group_raw = static_cast<size_t>(T) * D * dtype_bytes(DT);
  Batch b;
  uint16_t idx[2][TQ_MAX_DIM / 2];
  MatrixScratch matrix(p, layout);
  HalvesPlans halves(p, layout);
  for (uint32_t g = first; g < first + n; ++g) {
    const tq_kind& k = *tq_group_kind(p, &layout, g);
    const uint8_t* src = raw + g * group_raw;
    uint8_t* rec = q + tq_record_offset(p, &layout, g);
    std::memset(rec, 0, k.record_bytes);  // padding is zero
    if (k.matrix) {
      quantize_matrix_group<DT>(*matrix.plan, T, src, rec, k, matrix.x.data());
      continue;
    }
    if (k.halves) {
      halves::quantize_group(halves.of(layout, k), src, rec);
      continue;
    }
    if (k.fractional) {
      outlier_mask<DT>(src, T, D, rec);
      split_channels(rec, D, idx);
    }
    for (uint32_t t0 = 0; t0 < T; t0 += kW) {
      const uint32_t nw = std::min(kW, T - t0);
      for (uint32_t s = 0; s < k.nsub; ++s) {
        const tq_sub_plan& sp = k.sub[s];
        for (uint32_t j = 0; j < sp.dim; ++j) {
          uint32_t c = k.fractional ? idx[s][j] : j;
          for (uint32_t w = 0; w < kW; ++w)
            b.v[j][w] = w < nw ? load_finite<DT>(src, static_cast<size_t>(t0 + w) * D + c) : 0.0f;
        }
        kQuantizeSub[sp.mse_bits][k.qjl](sp, b);
        for (uint32_t w = 0; w < nw; ++w) {
          const uint32_t t = t0 + w;
          std::memcpy(rec + k.norms_off + (t * k.nsub + s) * 4, &b.norm[w], 4);
          if (k.qjl) std::memcpy(rec + k.rnorms_off + (t * k.nsub + s) * 4, &b.rnorm[w], 4);
          uint8_t* codes = rec + k.codes_off + static_cast<size_t>(t) * k.token_bytes + k.sub_off[s];
          for (uint32_t pl = 0; pl < sp.bits; ++pl)
            for (uint32_t by = 0; by < k.plane_bytes[s]; ++by)
              codes[pl * k.plane_bytes[s] + by] = static_cast<uint8_t>(b.planes[pl][by >> 2][w] >> (8 * (by & 3)));
        }
      }
    }
  }
}

template <uint32_t DT>
void dequantize_groups(const sw_tq_params* p, const uint8_t* q, uint8_t* raw, uint32_t first, uint32_t n) {
  const Layout layout(p);
  const uint32_t D = p->head_dim, T = p->tokens;
  const size_t group_raw = static_cast<size_t>(T) * D * dtype_bytes(DT);
  Batch b;
  uint16_t idx[2][TQ_MAX_DIM / 2];
  MatrixScratch matrix(p, layout);
  HalvesPlans halves(p, layout);
  for (uint32_t g = first; g < first + n; ++g) {
    const tq_kind& k = *tq_group_kind(p, &layout, g);
    uint8_t* dst = raw + g * group_raw;
    const uint8_t* rec = q + tq_record_offset(p, &layout, g);
    if (k.matrix) {
      dequantize_matrix_group<DT>(*matrix.plan, T, rec, dst, k, matrix.x.data());
      continue;
    }
    if (k.halves) {
      halves::dequantize_group(halves.of(layout, k), rec, dst);
      continue;
    }
    if (k.fractional) split_channels(rec, D, idx);
    for (uint32_t t0 = 0; t0 < T; t0 += kW) {
      const uint32_t nw = std::min(kW, T - t0);
      for (uint32_t s = 0; s < k.nsub; ++s) {
        const tq_sub_plan& sp = k.sub[s];
        for (uint32_t w = 0; w < kW; ++w) {
          const uint32_t t = t0 + std::min(w, nw - 1);  // idle lanes repeat the last token
          std::memcpy(&b.norm[w], rec + k.norms_off + (t * k.nsub + s) * 4, 4);
          if (k.qjl) std::memcpy(&b.rnorm[w], rec + k.rnorms_off + (t * k.nsub + s) * 4, 4);
          const uint8_t* codes = rec + k.codes_off + static_cast<size_t>(t) * k.token_bytes + k.sub_off[s];
          for (uint32_t pl = 0; pl < sp.bits; ++pl)
            for (uint32_t wd = 0; wd < (sp.dim + 31) / 32; ++wd) {
              uint32_t v = 0;
              for (uint32_t by = 0; by < 4 && wd * 4 + by < k.plane_bytes[s]; ++by)
                v |= static_cast<uint32_t>(codes[pl * k.plane_bytes[s] + wd * 4 + by]) << (8 * by);
              b.planes[pl][wd][w] = v;
            }
        }
        kDequantizeSub[sp.mse_bits][k.qjl](sp, b);
        // 2-byte values are rounded in a loop of their own, which vectorizes; the stores
        // to the token-major block cannot
        if constexpr (DT != SW_DTYPE_FP32)
          for (uint32_t j = 0; j < sp.dim; ++j)
            for (uint32_t w = 0; w < kW; ++w) b.bits[j][w] = narrow<DT>(b.v[j][w]);
        for (uint32_t j = 0; j < sp.dim; ++j) {
          uint8_t* out = dst + (static_cast<size_t>(t0) * D + (k.fractional ? idx[s][j] : j)) * dtype_bytes(DT);
          for (uint32_t w = 0; w < nw; ++w) {
            if constexpr (DT == SW_DTYPE_FP32) std::memcpy(out + static_cast<size_t>(w) * D * 4, &b.v[j][w], 4);
            else std::memcpy(out + static_cast<size_t>(w) * D * 2, &b.bits[j][w], 2);
          }
        }
      }
    }
  }
}

void put16(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
uint32_t get16(const uint8_t* p) { return p[0] | (p[1] << 8); }
uint32_t get32(const uint8_t* p) { return get16(p) | (get16(p + 2) << 16); }
uint64_t get64(const uint8_t* p) { return get32(p) | (static_cast<uint64_t>(get32(p + 4)) << 32); }

uint64_t payload_bytes(const sw_tq_params* p) {
  const Layout layout(p);
  return tq_block_bytes(p, &layout) - SW_TQ_HEADER_BYTES;
}

template <typename... A> int fail(char* err, size_t len, int code, const char* fmt, A... a) {
  if (err && len) std::snprintf(err, len, fmt, a...);
  return code;
}

}  // namespace

extern "C" {

int sw_tq_check_params(const sw_tq_params* p, char* err, size_t len) {
  const char* msg = nullptr;
  if (!p) msg = "params: null";
  else if (p->head_dim < 16 || p->head_dim > TQ_MAX_DIM || (p->head_dim & (p->head_dim - 1)))
    msg = "head_dim: must be a power of two in 16..512";
  else if (p->layers < 1 || p->layers > 0xFFFF) msg = "layers: must be in 1..65535";
  else if (p->kv_heads < 1 || p->kv_heads > 0xFFFF) msg = "kv_heads: must be in 1..65535";
  else if (p->tokens < 1 || p->tokens > 0xFFFF) msg = "tokens: must be in 1..65535";
  else if (p->dtype > SW_DTYPE_BF16) msg = "dtype: must be 0 (fp32), 1 (fp16) or 2 (bf16)";
  else if (p->key_bits_x2 < 2 || p->key_bits_x2 > 8) msg = "key_bits_x2: must be in 2..8 (1.0 to 4.0 bits in halves)";
  else if (p->value_bits_x2 < 2 || p->value_bits_x2 > 8) msg = "value_bits_x2: must be in 2..8 (1.0 to 4.0 bits in halves)";
  else if (p->variant > SW_TQ_PROD) msg = "variant: must be 0 (mse) or 1 (prod)";
  else if (p->version != 0 && (p->version < SW_TQ_OLDEST_FORMAT_VERSION || p->version > SW_TQ_FORMAT_VERSION))
    msg = "version: must be 0 (this build's format) or a format version this build reads";
  else if (p->outer_first > p->layers || p->outer_last > p->layers - p->outer_first)
    msg = "outer_first + outer_last: must not exceed layers";
  else if ((p->outer_first || p->outer_last) && tq_version(p) < 2)
    msg = "outer_first, outer_last: format version 1 has one rate for all layers";
  else if ((p->outer_first || p->outer_last) && (p->outer_key_bits_x2 < 2 || p->outer_key_bits_x2 > 8))
    msg = "outer_key_bits_x2: must be in 2..8 (1.0 to 4.0 bits in halves)";
  else if ((p->outer_first || p->outer_last) && (p->outer_value_bits_x2 < 2 || p->outer_value_bits_x2 > 8))
    msg = "outer_value_bits_x2: must be in 2..8 (1.0 to 4.0 bits in halves)";
  else if (!p->outer_first && !p->outer_last && (p->outer_key_bits_x2 || p->outer_value_bits_x2))
    msg = "outer_key_bits_x2, outer_value_bits_x2: must be 0 without outer layers";
  else if (static_cast<uint64_t>(p->layers) * 2 * p->kv_heads > 0xFFFFFFFFull) msg = "layers * kv_heads: too many groups";
  else if (payload_bytes(p) > 0xFFFFFFFFull) msg = "geometry: quantized payload exceeds the format's 4 GiB limit";
  if (!msg) return SW_TQ_OK;
  if (err && len) std::snprintf(err, len, "%s", msg);
  return SW_TQ_EPARAMS;
}

size_t sw_tq_raw_bytes(const sw_tq_params* p) {
  return static_cast<size_t>(sw_tq_groups(p)) * p->tokens * p->head_dim * dtype_bytes(p->dtype);
}

size_t sw_tq_quantized_bytes(const sw_tq_params* p) { return SW_TQ_HEADER_BYTES + payload_bytes(p); }

uint32_t sw_tq_groups(const sw_tq_params* p) { return p->layers * 2u * p->kv_heads; }

uint32_t sw_tq_header_version(const void* quantized) {
  const uint8_t* h = static_cast<const uint8_t*>(quantized);
  return std::memcmp(h, "SWTQ", 4) == 0 ? get16(h + 4) : 0u;
}

void sw_tq_write_header(const sw_tq_params* p, void* quantized) {
  uint8_t* h = static_cast<uint8_t*>(quantized);
  std::memset(h, 0, SW_TQ_HEADER_BYTES);
  std::memcpy(h, "SWTQ", 4);
  put16(h + 4, tq_version(p));
  h[6] = static_cast<uint8_t>(p->dtype);
  h[7] = static_cast<uint8_t>(p->variant);
  put16(h + 8, p->layers);
  put16(h + 10, p->kv_heads);
  put16(h + 12, p->head_dim);
  put16(h + 14, p->tokens);
  h[16] = static_cast<uint8_t>(p->key_bits_x2);
  h[17] = static_cast<uint8_t>(p->value_bits_x2);
  uint64_t payload = payload_bytes(p);
  for (int i = 0; i < 4; ++i) h[20 + i] = static_cast<uint8_t>(payload >> (8 * i));
  for (int i = 0; i < 8; ++i) h[24 + i] = static_cast<uint8_t>(p->seed >> (8 * i));
  put16(h + 32, p->outer_first);
  put16(h + 34, p->outer_last);
  h[36] = static_cast<uint8_t>(p->outer_key_bits_x2);
  h[37] = static_cast<uint8_t>(p->outer_value_bits_x2);
}

int sw_tq_check_header(const sw_tq_params* p, const void* quantized, char* err, size_t len) {
  const uint8_t* h = static_cast<const uint8_t*>(quantized);
  if (std::memcmp(h, "SWTQ", 4) != 0)
    return fail(err, len, SW_TQ_EFORMAT, "not a quantized KV block: bad magic");
  const uint32_t version = get16(h + 4);
  if (version < SW_TQ_OLDEST_FORMAT_VERSION || version > SW_TQ_FORMAT_VERSION)
    return fail(err, len, SW_TQ_EFORMAT, "quantized block has format version %u; this build reads versions %u to %u",
                version, SW_TQ_OLDEST_FORMAT_VERSION, SW_TQ_FORMAT_VERSION);
  const struct {
    const char* name;
    unsigned long long got, want;
  } fields[] = {
      {"version", version, tq_version(p)},
      {"dtype", h[6], p->dtype},
      {"variant", h[7], p->variant},
      {"layers", get16(h + 8), p->layers},
      {"kv_heads", get16(h + 10), p->kv_heads},
      {"head_dim", get16(h + 12), p->head_dim},
      {"tokens", get16(h + 14), p->tokens},
      {"key_bits_x2", h[16], p->key_bits_x2},
      {"value_bits_x2", h[17], p->value_bits_x2},
      {"seed", get64(h + 24), p->seed},
      {"outer_first", get16(h + 32), p->outer_first},
      {"outer_last", get16(h + 34), p->outer_last},
      {"outer_key_bits_x2", h[36], p->outer_key_bits_x2},
      {"outer_value_bits_x2", h[37], p->outer_value_bits_x2},
  };
  for (const auto& f : fields)
    if (f.got != f.want)
      return fail(err, len, SW_TQ_EMISMATCH, "quantized block was written with %s = %llu, but %llu was asked for",
                  f.name, f.got, f.want);
  bool reserved_zero = get16(h + 18) == 0;
  for (uint32_t i = 38; i < SW_TQ_HEADER_BYTES; ++i) reserved_zero = reserved_zero && h[i] == 0;
  if (!reserved_zero) return fail(err, len, SW_TQ_EFORMAT, "quantized block header: reserved bytes are not zero");
  if (get32(h + 20) != payload_bytes(p))
    return fail(err, len, SW_TQ_EFORMAT, "quantized block header: payload of %llu bytes, the parameters give %llu",
                static_cast<unsigned long long>(get32(h + 20)), static_cast<unsigned long long>(payload_bytes(p)));
  return SW_TQ_OK;
}

void sw_tq_quantize_groups(const sw_tq_params* p, const void* raw, void* quantized, uint32_t first, uint32_t n) {
  const auto* in = static_cast<const uint8_t*>(raw);
  auto* out = static_cast<uint8_t*>(quantized);
  switch (p->dtype) {
    case SW_DTYPE_FP32: quantize_groups<SW_DTYPE_FP32>(p, in, out, first, n); break;
    case SW_DTYPE_FP16: quantize_groups<SW_DTYPE_FP16>(p, in, out, first, n); break;
    default: quantize_groups<SW_DTYPE_BF16>(p, in, out, first, n); break;
  }
}

void sw_tq_dequantize_groups(const sw_tq_params* p, const void* quantized, void* raw, uint32_t first, uint32_t n) {
  const auto* in = static_cast<const uint8_t*>(quantized);
  auto* out = static_cast<uint8_t*>(raw);
  switch (p->dtype) {
    case SW_DTYPE_FP32: dequantize_groups<SW_DTYPE_FP32>(p, in, out, first, n); break;
    case SW_DTYPE_FP16: dequantize_groups<SW_DTYPE_FP16>(p, in, out, first, n); break;
    default: dequantize_groups<SW_DTYPE_BF16>(p, in, out, first, n); break;
  }
}

}  // extern "C"
