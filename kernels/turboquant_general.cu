// The general CUDA TurboQuant kernels: any head_dim, dtype, tokens per block and rate, the
// same codes as turboquant_ref.cpp, many KV blocks per launch.
//
// One CTA takes one group (layer, kv, head) of one block at a time; a persistent grid walks
// all of them. Raw rows are staged in shared memory with 16-byte copies (cp.async for
// quantize, double-buffered so the next group's rows arrive while this one is coded). Each
// sub-vector is then worked on by a team of dim / E lanes of one warp, each lane holding
// E = min(dim, 32) consecutive coordinates in registers: Hadamard butterflies run in
// registers for strides below E and through warp shuffles above, in the reference's stride
// order, and each lane packs its own 32-bit word of every code plane. Norms are summed in
// the order the reference mimics, so codes match it bit for bit on finite input. These
// kernels code both formats (the rotation's rounds are the plan's).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tq_cuda_params.h"
#include "tq_device.cuh"

namespace tq_cuda {
namespace {

// ---- values in staged rows ----------------------------------------------------------------

// E consecutive values starting at value index c0 (a multiple of E) of a staged row.
template <int E> __device__ __forceinline__ void read_run(const uint8_t* row, uint32_t c0, uint32_t dtype, float* x) {
  if (dtype == SW_DTYPE_FP32) {
#pragma unroll
    for (int k = 0; k < E / 4; ++k) {
      float4 v = *reinterpret_cast<const float4*>(row + staged(4 * (c0 + 4 * k)));
      x[4 * k] = finite_or_zero(v.x), x[4 * k + 1] = finite_or_zero(v.y);
      x[4 * k + 2] = finite_or_zero(v.z), x[4 * k + 3] = finite_or_zero(v.w);
    }
  } else {
#pragma unroll
    for (int k = 0; k < E / 8; ++k) {
      uint4 v = *reinterpret_cast<const uint4*>(row + staged(2 * (c0 + 8 * k)));
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (dtype == SW_DTYPE_BF16) {
          x[8 * k + 2 * q] = finite_or_zero(__uint_as_float(w[q] << 16));
          x[8 * k + 2 * q + 1] = finite_or_zero(__uint_as_float(w[q] & 0xFFFF0000u));
        } else {
          float2 h = __half22float2(*reinterpret_cast<const __half2*>(&w[q]));
          x[8 * k + 2 * q] = finite_or_zero(h.x), x[8 * k + 2 * q + 1] = finite_or_zero(h.y);
        }
      }
    }
  }
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi, uint32_t dtype) {
  if (dtype == SW_DTYPE_BF16) {
    __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&b);
  }
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <int E> __device__ __forceinline__ void write_run(uint8_t* row, uint32_t c0, uint32_t dtype, const float* x) {
  if (dtype == SW_DTYPE_FP32) {
#pragma unroll
    for (int k = 0; k < E / 4; ++k)
      *reinterpret_cast<float4*>(row + staged(4 * (c0 + 4 * k))) =
          make_float4(x[4 * k], x[4 * k + 1], x[4 * k + 2], x[4 * k + 3]);
  } else {
#pragma unroll
    for (int k = 0; k < E / 8; ++k) {
      uint4 v;
      v.x = pack2(x[8 * k], x[8 * k + 1], dtype);
      v.y = pack2(x[8 * k + 2], x[8 * k + 3], dtype);
      v.z = pack2(x[8 * k + 4], x[8 * k + 5], dtype);
      v.w = pack2(x[8 * k + 6], x[8 * k + 7], dtype);
      *reinterpret_cast<uint4*>(row + staged(2 * (c0 + 8 * k))) = v;
    }
  }
}

__device__ __forceinline__ float read_one(const uint8_t* row, uint32_t c, uint32_t dtype) {
  if (dtype == SW_DTYPE_FP32) return finite_or_zero(*reinterpret_cast<const float*>(row + staged(4 * c)));
  uint16_t h = *reinterpret_cast<const uint16_t*>(row + staged(2 * c));
  return finite_or_zero(dtype == SW_DTYPE_BF16 ? __uint_as_float((uint32_t)h << 16) : __half2float(__ushort_as_half(h)));
}

__device__ __forceinline__ void write_one(uint8_t* row, uint32_t c, uint32_t dtype, float v) {
  if (dtype == SW_DTYPE_FP32) {
    *reinterpret_cast<float*>(row + staged(4 * c)) = v;
  } else {
    uint16_t h = dtype == SW_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
    *reinterpret_cast<uint16_t*>(row + staged(2 * c)) = h;
  }
}

// ---- one sub-vector, one team ------------------------------------------------------------

struct Team {
  uint32_t lane, lanes, mask;  // lane within the team, team size, the team's warp lanes
};

// Unnormalized Walsh-Hadamard transform over the team's dim = E * lanes values.
template <int E> __device__ __forceinline__ void fwht(float* x, const Team& tm) {
#pragma unroll
  for (int h = 1; h < E; h *= 2)
#pragma unroll
    for (int i = 0; i < E; ++i)
      if (!(i & h)) {
        float a = x[i], b = x[i + h];
        x[i] = __fadd_rn(a, b);
        x[i + h] = __fsub_rn(a, b);
      }
  for (uint32_t o = 1; o < tm.lanes; o *= 2) {
    // lower lane: x + other; upper lane: other - x; one exact-sign FMA either way
    const float sgn = (tm.lane & o) ? -1.0f : 1.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) x[i] = __fmaf_rn(x[i], sgn, __shfl_xor_sync(tm.mask, x[i], o));
  }
}

// sqrt of the sum of squares: fused in sequence within a lane, then a tree across lanes.
template <int E> __device__ __forceinline__ float team_norm(const float* x, const Team& tm) {
  float acc = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) acc = __fmaf_rn(x[i], x[i], acc);
  for (uint32_t o = 1; o < tm.lanes; o *= 2) acc = __fadd_rn(acc, __shfl_xor_sync(tm.mask, acc, o));
  return sqrtf(acc);
}

// Magnitude code of a = |y| against the sorted positive boundaries, as bit masks (mask[b]
// = bit b of the magnitude): a binary search whose result equals the reference's count of
// boundaries below a. Level by level from the top bit, the boundary compared is picked
// among the candidates by the bits found so far.
template <int NB> __device__ __forceinline__ void magnitude_bits(const uint32_t* thr, float a, uint32_t* mask) {
  constexpr int kMag = 1 << NB;
#pragma unroll
  for (int l = 0; l < NB; ++l) {
    const int h = kMag >> (l + 1);  // boundaries between halves of the remaining range
    uint32_t cand[kMag];
#pragma unroll
    for (int q = 0; q < (1 << l); ++q) cand[q] = thr[(2 * q + 1) * h - 1];
    // candidates are indexed by the l bits found: magnitude bits NB-1 down to NB-l
#pragma unroll
    for (int n = 1 << l, b = NB - l; n > 1; n /= 2, ++b)
#pragma unroll
      for (int k = 0; k < n / 2; ++k) cand[k] = select_bits(mask[b], cand[2 * k + 1], cand[2 * k]);
    mask[NB - 1 - l] = gt_mask(a, __uint_as_float(cand[0]));
  }
}

// Code plane words of one lane; E < 32 lanes own E bits of word 0.
template <int E> __device__ __forceinline__ void store_plane(uint8_t* plane, const Team& tm, uint32_t w) {
  if (E == 32) reinterpret_cast<uint32_t*>(plane)[tm.lane] = w;
  else if (E == 16) *reinterpret_cast<uint16_t*>(plane) = (uint16_t)w;
  else *plane = (uint8_t)w;
}
template <int E> __device__ __forceinline__ uint32_t load_plane(const uint8_t* plane, const Team& tm) {
  if (E == 32) return reinterpret_cast<const uint32_t*>(plane)[tm.lane];
  if (E == 16) return *reinterpret_cast<const uint16_t*>(plane);
  return *plane;
}

struct Item {
  const uint8_t* in_row;   // quantize: staged raw row
  uint8_t* out_row;        // dequantize: staged raw row
  const uint16_t* chans;   // channel list of the sub-vector, or null for all channels in order
  uint8_t* codes;          // this sub-vector's planes for this token
  float* norm;             // in the record
  float* rnorm;
  uint32_t plane_bytes, dtype;
};

template <int E, int MSE, bool QJL> __device__ void quantize_item(const tq_sub_plan& sp, const Team& tm, const Item& it) {
  constexpr int kMag = MSE ? 1 << (MSE - 1) : 1;
  float x[E];
  if (it.chans) {
#pragma unroll
    for (int i = 0; i < E; ++i) x[i] = read_one(it.in_row, it.chans[tm.lane * E + i], it.dtype);
  } else {
    read_run<E>(it.in_row, tm.lane * E, it.dtype, x);
  }
  const float norm = team_norm<E>(x, tm);
  // the rounds unrolled (a loop over them spilled 104 bytes a thread at 80 registers)
#pragma unroll
  for (uint32_t r = 0; r < TQ_MAX_ROUNDS; ++r) {
    if (r < sp.rounds) {
      const uint32_t rs = sp.rot_signs[r][tm.lane];
#pragma unroll
      for (int i = 0; i < E; ++i) x[i] = flip(x[i], sign_bit(rs, i));
      fwht<E>(x, tm);
    }
  }
  // compare the rotated y against boundaries scaled by gain |x| (no division)
  const float scale = __fmul_rn(norm, sp.gain);
  constexpr int kNB = MSE > 1 ? MSE - 1 : 0;  // magnitude bits
  uint32_t thr[kMag], cent[kMag];
#pragma unroll
  for (int k = 0; k < kMag; ++k) cent[k] = __float_as_uint(sp.cent[k]);
#pragma unroll
  for (int k = 0; k + 1 < kMag; ++k) thr[k] = __float_as_uint(__fmul_rn(sp.thr[k], scale));
  // planes fill from the top: element i ends at bit i after E shifts
  uint32_t planes[MSE + 1] = {};
#pragma unroll
  for (int i = E - 1; i >= 0; --i) {
    const float y = x[i];
    uint32_t mag[kNB + 1];
    magnitude_bits<kNB>(thr, fabsf(y), mag);
#pragma unroll
    for (int p = 0; p < kNB; ++p) planes[p] = __funnelshift_l(mag[p], planes[p], 1);
    if (MSE) planes[kNB] = __funnelshift_l(__float_as_uint(y), planes[kNB], 1);  // sign
    if (QJL) {
      const float cs = MSE ? __uint_as_float(select_tree<kMag>(cent, mag) ^ (__float_as_uint(y) & 0x80000000u)) : 0.0f;
      x[i] = __fmaf_rn(-cs, scale, y);  // the residual, in place
    }
  }
  if (QJL) {
    const float rn = __fmul_rn(team_norm<E>(x, tm), sp.inv_gain);
    const uint32_t qs = sp.qjl_signs[tm.lane];
#pragma unroll
    for (int i = 0; i < E; ++i) x[i] = flip(x[i], sign_bit(qs, i));
    fwht<E>(x, tm);
#pragma unroll
    for (int i = E - 1; i >= 0; --i) planes[MSE] = __funnelshift_l(__float_as_uint(x[i]), planes[MSE], 1);
    if (tm.lane == 0) *it.rnorm = rn;
  }
  if (tm.lane == 0) *it.norm = norm;
#pragma unroll
  for (int p = 0; p < MSE + (QJL ? 1 : 0); ++p) store_plane<E>(it.codes + p * it.plane_bytes, tm, planes[p]);
}

template <int E, int MSE, bool QJL> __device__ void dequantize_item(const tq_sub_plan& sp, const Team& tm, const Item& it) {
  constexpr int kMag = MSE ? 1 << (MSE - 1) : 1;
  uint32_t planes[MSE + 1];
#pragma unroll
  for (int p = 0; p < MSE + (QJL ? 1 : 0); ++p) planes[p] = load_plane<E>(it.codes + p * it.plane_bytes, tm);
  // centroids times the norm once per vector: (+-c) * norm rounds like +-(c * norm)
  const float norm = *it.norm;
  constexpr int kNB = MSE > 1 ? MSE - 1 : 0;
  uint32_t cn[kMag];
  float v[E];
#pragma unroll
  for (int k = 0; k < kMag; ++k) cn[k] = __float_as_uint(__fmul_rn(sp.cent[k], norm));
#pragma unroll
  for (int i = 0; i < E; ++i) {
    uint32_t mag[kNB + 1];
#pragma unroll
    for (int p = 0; p < kNB; ++p) mag[p] = 0u - ((planes[p] >> i) & 1u);
    v[i] = MSE ? __uint_as_float(select_tree<kMag>(cn, mag) ^ sign_bit(planes[kNB], i)) : 0.0f;
  }
  if (QJL) {
    // r^ = sqrt(pi/2)/d |r| S^T sign(S r), S = H D2
    float s[E];
#pragma unroll
    for (int i = 0; i < E; ++i) s[i] = ((planes[MSE] >> i) & 1u) ? -1.0f : 1.0f;
    fwht<E>(s, tm);
    const float kr = __fmul_rn(sp.qjl_scale, *it.rnorm);
    const uint32_t qs = sp.qjl_signs[tm.lane];
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = __fmaf_rn(flip(s[i], sign_bit(qs, i)), kr, v[i]);
  }
  // the rounds undone last to first, the gain and the first round's signs at the end
  fwht<E>(v, tm);
#pragma unroll 1
  for (uint32_t r = sp.rounds - 1; r > 0; --r) {
    const uint32_t rs = sp.rot_signs[r][tm.lane];
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] = flip(v[i], sign_bit(rs, i));
    fwht<E>(v, tm);
  }
  const uint32_t rs = sp.rot_signs[0][tm.lane];
#pragma unroll
  for (int i = 0; i < E; ++i) v[i] = flip(__fmul_rn(v[i], sp.inv_gain), sign_bit(rs, i));
  if (it.chans) {
#pragma unroll
    for (int i = 0; i < E; ++i) write_one(it.out_row, it.chans[tm.lane * E + i], it.dtype, v[i]);
  } else {
    write_run<E>(it.out_row, tm.lane * E, it.dtype, v);
  }
}

// Template dispatch on (lane width, MSE bits, QJL); all valid combinations of 1..4 bits.
template <bool Q, int E> __device__ void run_item(const tq_sub_plan& sp, const Team& tm, const Item& it) {
  switch (sp.mse_bits * 2 + (sp.bits != sp.mse_bits)) {
#define TQ_CASE(M, J)                                          \
  case M * 2 + J:                                              \
    if (Q) quantize_item<E, M, J>(sp, tm, it);                 \
    else dequantize_item<E, M, J>(sp, tm, it);                 \
    break;
    TQ_CASE(0, 1) TQ_CASE(1, 0) TQ_CASE(1, 1) TQ_CASE(2, 0) TQ_CASE(2, 1) TQ_CASE(3, 0) TQ_CASE(3, 1) TQ_CASE(4, 0)
#undef TQ_CASE
  }
}

template <bool Q> __device__ void run_item(const tq_sub_plan& sp, const Team& tm, const Item& it) {
  if (sp.dim >= 32) run_item<Q, 32>(sp, tm, it);
  else if (sp.dim == 16) run_item<Q, 16>(sp, tm, it);
  else run_item<Q, 8>(sp, tm, it);
}

// ---- per-group work ---------------------------------------------------------------------

struct Shared {
  float energy[TQ_MAX_DIM];
  uint32_t mask[TQ_MAX_DIM / 32];
  uint16_t chans[2][TQ_MAX_DIM / 2];  // outliers ascending, then the rest ascending
};

// Channel lists from a mask, as the reference's split_channels: a mask without exactly
// head_dim/2 bits set (only from corrupt input) falls back to the low and high halves.
__device__ void split_channels(Shared& sh, uint32_t D) {
  __syncthreads();
  const uint32_t words = (D + 31) / 32;
  uint32_t total = 0;
  for (uint32_t w = 0; w < words; ++w) total += __popc(sh.mask[w]);
  const bool ok = total == D / 2;
  for (uint32_t c = threadIdx.x; c < D; c += blockDim.x) {
    uint32_t below = 0;
    for (uint32_t w = 0; w < c / 32; ++w) below += __popc(sh.mask[w]);
    below += __popc(sh.mask[c / 32] & ((1u << (c & 31)) - 1u));
    const bool out = (sh.mask[c / 32] >> (c & 31)) & 1u;
    if (ok) sh.chans[out ? 0 : 1][out ? below : c - below] = (uint16_t)c;
    else sh.chans[c < D / 2 ? 0 : 1][c % (D / 2)] = (uint16_t)c;
  }
  __syncthreads();
}

// Per-channel sum of squares over the group's tokens, fused in token order as the reference
// does; from the staged rows when the whole group is staged, else from device memory.
__device__ void channel_energy(const Args& a, const uint8_t* stage, const uint8_t* src, Shared& sh) {
  const uint32_t D = a.head_dim;
  for (uint32_t c = threadIdx.x; c < D; c += blockDim.x) {
    float e = 0.0f;
    for (uint32_t t = 0; t < a.tokens; ++t) {
      float x;
      if (stage) {
        x = read_one(stage + t * a.row_bytes, c, a.dtype);
      } else {
        const uint8_t* p = src + ((size_t)t * D + c) * a.dsize;
        x = finite_or_zero(a.dtype == SW_DTYPE_FP32   ? *reinterpret_cast<const float*>(p)
                           : a.dtype == SW_DTYPE_BF16 ? __uint_as_float((uint32_t)*reinterpret_cast<const uint16_t*>(p) << 16)
                                                      : __half2float(*reinterpret_cast<const __half*>(p)));
      }
      e = __fmaf_rn(x, x, e);
    }
    sh.energy[c] = e;
  }
  __syncthreads();
}

// Mask of the head_dim/2 channels with the largest energy, ties to the lower channel (the
// reference's order). Warp 0, S energies per lane (channel k*32 + lane in slot k): the
// head_dim/2-th largest energy X is found bit by bit on the float bits (a total order for
// non-negative floats), then channels above X and the first ones equal to X are taken.
template <int S> __device__ void outlier_mask(uint32_t D, Shared& sh) {
  const uint32_t lane = threadIdx.x;
  uint32_t e[S];
#pragma unroll
  for (int k = 0; k < S; ++k) e[k] = k * 32 + lane < D ? __float_as_uint(sh.energy[k * 32 + lane]) : 0u;
  const uint32_t valid = D >= 32 ? 0xFFFFFFFFu : (1u << D) - 1u;
  uint32_t x = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t cand = x | (1u << bit);
    uint32_t n = 0;
#pragma unroll
    for (int k = 0; k < S; ++k) n += e[k] >= cand && ((valid >> lane) & 1u);
    if (__reduce_add_sync(0xFFFFFFFFu, n) >= D / 2) x = cand;
  }
  uint32_t above = 0;
#pragma unroll
  for (int k = 0; k < S; ++k) above += e[k] > x && ((valid >> lane) & 1u);
  uint32_t need = D / 2 - __reduce_add_sync(0xFFFFFFFFu, above);  // ties at x to take
#pragma unroll
  for (int k = 0; k < S; ++k) {
    const bool ok = (valid >> lane) & 1u;
    const uint32_t eq = __ballot_sync(0xFFFFFFFFu, ok && e[k] == x);
    const uint32_t rank = __popc(eq & ((1u << lane) - 1u));
    const uint32_t m = __ballot_sync(0xFFFFFFFFu, ok && (e[k] > x || (e[k] == x && rank < need)));
    need -= min(need, (uint32_t)__popc(eq));
    if (lane == 0) sh.mask[k] = m;
  }
}

__device__ void select_outliers(const Args& a, Shared& sh) {
  const uint32_t D = a.head_dim;
  if (threadIdx.x < 32) {
    switch (D) {
      case 16:
      case 32: outlier_mask<1>(D, sh); break;
      case 64: outlier_mask<2>(D, sh); break;
      case 128: outlier_mask<4>(D, sh); break;
      case 256: outlier_mask<8>(D, sh); break;
      default: outlier_mask<16>(D, sh); break;
    }
  }
  split_channels(sh, D);
}

__device__ void zero_bytes(uint8_t* p, uint32_t from, uint32_t to) {
  for (uint32_t i = from + threadIdx.x; i < to; i += blockDim.x) p[i] = 0;
}

__device__ __forceinline__ Team make_team(uint32_t lanes) {
  Team tm;
  tm.lanes = lanes;
  tm.lane = threadIdx.x & (lanes - 1);
  uint32_t base = (threadIdx.x & 31) & ~(lanes - 1);
  tm.mask = (lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u)) << base;
  return tm;
}

// Codes every (token, sub-vector) of `rows` staged rows: teams take items sub-major, so
// the teams of a warp mostly share a sub-vector and its bit width.
template <bool Q>
__device__ void code_rows(const Args& a, const tq_kind& k, const Shared& sh, uint8_t* stage, uint8_t* rec,
                          uint32_t t0, uint32_t rows) {
  const uint32_t dim = k.sub[0].dim, E = dim < 32 ? dim : 32, lanes = dim / E;
  const Team tm = make_team(lanes);
  const uint32_t items = rows * k.nsub;
  for (uint32_t item = threadIdx.x / lanes; item < items; item += blockDim.x / lanes) {
    const uint32_t s = item / rows, r = item % rows, t = t0 + r;
    Item it;
    it.in_row = stage + r * a.row_bytes;
    it.out_row = stage + r * a.row_bytes;
    it.chans = k.fractional ? sh.chans[s] : nullptr;
    it.codes = rec + k.codes_off + (size_t)t * k.token_bytes + k.sub_off[s];
    it.norm = reinterpret_cast<float*>(rec + k.norms_off) + t * k.nsub + s;
    it.rnorm = reinterpret_cast<float*>(rec + k.rnorms_off) + t * k.nsub + s;
    it.plane_bytes = k.plane_bytes[s];
    it.dtype = a.dtype;
    run_item<Q>(k.sub[s], tm, it);
  }
}

// The work of one CTA pass: a chunk of rows of one group of one block.
struct Stage {
  uint64_t work;  // block * groups + group
  uint32_t t0, rows;
};

__device__ __forceinline__ Stage first_stage(const Args& a) { return {blockIdx.x, 0, min(a.chunk, a.tokens)}; }
__device__ __forceinline__ Stage next_stage(const Args& a, Stage s) {
  if (s.t0 + s.rows < a.tokens) return {s.work, s.t0 + s.rows, min(a.chunk, a.tokens - s.t0 - s.rows)};
  return {s.work + gridDim.x, 0, min(a.chunk, a.tokens)};
}

__device__ __forceinline__ const uint8_t* group_raw(const Args& a, uint64_t work) {
  return a.raw_base + a.raw_slots[work / a.groups] * a.raw_stride + (work % a.groups) * a.group_raw_bytes;
}
__device__ __forceinline__ uint8_t* group_raw_mut(const Args& a, uint64_t work) {
  return const_cast<uint8_t*>(group_raw(a, work));
}
__device__ __forceinline__ uint8_t* block_q(const Args& a, uint64_t work) {
  return a.q_base + a.q_slots[work / a.groups] * a.q_stride;
}

__device__ void issue_rows(const Args& a, Stage s, uint8_t* stage) {
  const uint8_t* src = group_raw(a, s.work) + (size_t)s.t0 * a.head_dim * a.dsize;
  const uint32_t row16 = a.head_dim * a.dsize / 16, n = s.rows * row16;
  for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
    cp_async16(stage + (i / row16) * a.row_bytes + staged((i % row16) * 16), src + (size_t)i * 16);
}

__global__ void __launch_bounds__(kThreads, 12) quantize_kernel(const __grid_constant__ Args a) {
  extern __shared__ __align__(16) uint8_t stage_mem[];
  __shared__ Shared sh;
  const uint64_t total = (uint64_t)a.n_blocks * a.groups;
  const uint32_t buf_bytes = a.chunk * a.row_bytes;
  Stage cur = first_stage(a);
  if (cur.work < total) issue_rows(a, cur, stage_mem);
  cp_async_commit();
  for (int b = 0; cur.work < total; b ^= 1) {
    const Stage nxt = next_stage(a, cur);
    if (nxt.work < total) issue_rows(a, nxt, stage_mem + (b ^ 1) * buf_bytes);
    cp_async_commit();
    const uint32_t g = cur.work % a.groups;
    const tq_kind& k = *tq_group_kind(&a.p, &a.layout, g);
    uint8_t* q = block_q(a, cur.work);
    uint8_t* rec = q + tq_record_offset(&a.p, &a.layout, g);
    if (cur.t0 == 0 && !tq_matrix_coded(&k)) {
      if (g == 0 && threadIdx.x < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(q)[threadIdx.x] = a.header[threadIdx.x];
      // zero the padding of each record section
      zero_bytes(rec, k.norms_off + a.tokens * k.nsub * 4, k.rnorms_off);
      if (k.qjl) zero_bytes(rec, k.rnorms_off + a.tokens * k.nsub * 4, k.codes_off);
      zero_bytes(rec, k.codes_off + a.tokens * k.token_bytes, k.record_bytes);
    }
    cp_async_wait_prior();
    __syncthreads();
    if (cur.t0 == 0 && k.fractional && !k.halves) {
      channel_energy(a, a.chunk >= a.tokens ? stage_mem + b * buf_bytes : nullptr, group_raw(a, cur.work), sh);
      select_outliers(a, sh);
      for (uint32_t i = threadIdx.x; i < k.mask_bytes; i += blockDim.x)
        rec[i] = i < a.head_dim / 8 ? (uint8_t)(sh.mask[i / 4] >> (8 * (i % 4))) : 0;
    }
    // the matrix-coded kinds are their kernels' (their rows were staged all the same)
    if (!tq_matrix_coded(&k)) code_rows<true>(a, k, sh, stage_mem + b * buf_bytes, rec, cur.t0, cur.rows);
    __syncthreads();
    cur = nxt;
  }
}

__global__ void __launch_bounds__(kThreads) dequantize_kernel(const __grid_constant__ Args a) {
  extern __shared__ __align__(16) uint8_t stage_mem[];
  __shared__ Shared sh;
  const uint64_t total = (uint64_t)a.n_blocks * a.groups;
  for (Stage cur = first_stage(a); cur.work < total; cur = next_stage(a, cur)) {
    const uint32_t g = cur.work % a.groups;
    const tq_kind& k = *tq_group_kind(&a.p, &a.layout, g);
    if (tq_matrix_coded(&k)) continue;  // the matrix or halves kernel's
    uint8_t* rec = block_q(a, cur.work) + tq_record_offset(&a.p, &a.layout, g);
    if (cur.t0 == 0 && k.fractional) {
      for (uint32_t w = threadIdx.x; w < (a.head_dim + 31) / 32; w += blockDim.x) {
        uint32_t v = 0;
        for (uint32_t by = 0; by < 4 && w * 4 + by < a.head_dim / 8; ++by) v |= (uint32_t)rec[w * 4 + by] << (8 * by);
        sh.mask[w] = v;
      }
      split_channels(sh, a.head_dim);
    }
    code_rows<false>(a, k, sh, stage_mem, rec, cur.t0, cur.rows);
    __syncthreads();
    uint8_t* dst = group_raw_mut(a, cur.work) + (size_t)cur.t0 * a.head_dim * a.dsize;
    const uint32_t row16 = a.head_dim * a.dsize / 16, n = cur.rows * row16;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x)
      reinterpret_cast<uint4*>(dst)[i] =
          *reinterpret_cast<const uint4*>(stage_mem + (i / row16) * a.row_bytes + staged((i % row16) * 16));
    __syncthreads();
  }
}

}  // namespace

const void* general_kernel(bool quant) {
  return quant ? reinterpret_cast<const void*>(quantize_kernel) : reinterpret_cast<const void*>(dequantize_kernel);
}

}  // namespace tq_cuda
