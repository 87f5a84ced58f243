// CUDA TurboQuant kernels: the same codes as turboquant_ref.cpp, many KV blocks per launch.
//
// One CTA takes one group (layer, kv, head) of one block at a time; a persistent grid walks
// all of them. Raw rows are staged in shared memory with 16-byte copies (cp.async for
// quantize, double-buffered so the next group's rows arrive while this one is coded). Each
// sub-vector is then worked on by a team of dim / E lanes of one warp, each lane holding
// E = min(dim, 32) consecutive coordinates in registers: Hadamard butterflies run in
// registers for strides below E and through warp shuffles above, in the reference's stride
// order, and each lane packs its own 32-bit word of every code plane. Norms are summed in
// the order the reference mimics, so codes match it bit for bit on finite input.
//
// For head_dim 128 in bf16/fp16 with at most 32 tokens per block a second pair of kernels
// (quantize_fast / dequantize_fast, "fast path" below) gives each vector to one or two lanes;
// see there.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <type_traits>

#include "turboquant.h"
#include "turboquant_format.h"

namespace {

constexpr int kThreads = 64;             // two warps: one group of 16 tokens x 128 dims fills them
constexpr uint32_t kStageBytes = 10240;  // staged rows per buffer

struct Args {
  sw_tq_params p;
  tq_layout layout;  // kinds by (outer layer, K or V), record offsets
  uint32_t header[SW_TQ_HEADER_BYTES / 4];
  uint32_t kv_heads, head_dim, tokens, groups, dtype, dsize;
  uint32_t chunk, row_bytes;  // rows per staged pass, staged bytes per row
  uint64_t group_raw_bytes;
  const uint8_t* raw_base;
  size_t raw_stride;
  const uint32_t* raw_slots;
  uint8_t* q_base;
  size_t q_stride;
  const uint32_t* q_slots;
  uint32_t n_blocks;
};

// Staged rows keep the raw bytes with 16 pad bytes after every 64, so the lanes of a team,
// which read 32 consecutive values each, start in different banks.
__host__ __device__ __forceinline__ uint32_t staged(uint32_t byte) { return byte + (byte >> 6) * 16u; }

__device__ __forceinline__ float flip(float v, uint32_t bit31) { return __uint_as_float(__float_as_uint(v) ^ bit31); }

__device__ __forceinline__ uint32_t sign_bit(uint32_t word, int i) { return (word << (31 - i)) & 0x80000000u; }


__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  cp_async16((uint32_t)__cvta_generic_to_shared(smem), gmem);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_prior() { asm volatile("cp.async.wait_group 1;\n" ::); }

// ---- values in staged rows ----------------------------------------------------------------

// E consecutive values starting at value index c0 (a multiple of E) of a staged row.
template <int E> __device__ __forceinline__ void read_run(const uint8_t* row, uint32_t c0, uint32_t dtype, float* x) {
  if (dtype == SW_DTYPE_FP32) {
#pragma unroll
    for (int k = 0; k < E / 4; ++k) {
      float4 v = *reinterpret_cast<const float4*>(row + staged(4 * (c0 + 4 * k)));
      x[4 * k] = v.x, x[4 * k + 1] = v.y, x[4 * k + 2] = v.z, x[4 * k + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < E / 8; ++k) {
      uint4 v = *reinterpret_cast<const uint4*>(row + staged(2 * (c0 + 8 * k)));
      const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if (dtype == SW_DTYPE_BF16) {
          x[8 * k + 2 * q] = __uint_as_float(w[q] << 16);
          x[8 * k + 2 * q + 1] = __uint_as_float(w[q] & 0xFFFF0000u);
        } else {
          float2 h = __half22float2(*reinterpret_cast<const __half2*>(&w[q]));
          x[8 * k + 2 * q] = h.x, x[8 * k + 2 * q + 1] = h.y;
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
  if (dtype == SW_DTYPE_FP32) return *reinterpret_cast<const float*>(row + staged(4 * c));
  uint16_t h = *reinterpret_cast<const uint16_t*>(row + staged(2 * c));
  return dtype == SW_DTYPE_BF16 ? __uint_as_float((uint32_t)h << 16) : __half2float(__ushort_as_half(h));
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

// All-ones if a > b (false for NaN, like the reference's comparison), else zero.
__device__ __forceinline__ uint32_t gt_mask(float a, float b) {
  uint32_t r;
  asm("set.gt.u32.f32 %0, %1, %2;" : "=r"(r) : "f"(a), "f"(b));
  return r;
}

__device__ __forceinline__ uint32_t select_bits(uint32_t mask, uint32_t if_set, uint32_t if_clear) {
  return (if_set & mask) | (if_clear & ~mask);
}

// v[index] for N values, the index given by N-1 bit masks, least significant first: pairs
// are merged by bit 0, then by bit 1, and so on (no indexed registers).
template <int N> __device__ __forceinline__ uint32_t select_tree(const uint32_t* v, const uint32_t* bit_masks) {
  uint32_t t[N];
#pragma unroll
  for (int k = 0; k < N; ++k) t[k] = v[k];
#pragma unroll
  for (int n = N, b = 0; n > 1; n /= 2, ++b)
#pragma unroll
    for (int k = 0; k < n / 2; ++k) t[k] = select_bits(bit_masks[b], t[2 * k + 1], t[2 * k]);
  return t[0];
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
#pragma unroll 1
  for (uint32_t r = 0; r < sp.rounds; ++r) {
    const uint32_t rs = sp.rot_signs[r][tm.lane];
#pragma unroll
    for (int i = 0; i < E; ++i) x[i] = flip(x[i], sign_bit(rs, i));
    fwht<E>(x, tm);
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
        x = a.dtype == SW_DTYPE_FP32   ? *reinterpret_cast<const float*>(p)
            : a.dtype == SW_DTYPE_BF16 ? __uint_as_float((uint32_t)*reinterpret_cast<const uint16_t*>(p) << 16)
                                       : __half2float(*reinterpret_cast<const __half*>(p));
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
    if (cur.t0 == 0) {
      if (g == 0 && threadIdx.x < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(q)[threadIdx.x] = a.header[threadIdx.x];
      // zero the padding of each record section
      zero_bytes(rec, k.norms_off + a.tokens * k.nsub * 4, k.rnorms_off);
      if (k.qjl) zero_bytes(rec, k.rnorms_off + a.tokens * k.nsub * 4, k.codes_off);
      zero_bytes(rec, k.codes_off + a.tokens * k.token_bytes, k.record_bytes);
    }
    cp_async_wait_prior();
    __syncthreads();
    if (cur.t0 == 0 && k.fractional) {
      channel_energy(a, a.chunk >= a.tokens ? stage_mem + b * buf_bytes : nullptr, group_raw(a, cur.work), sh);
      select_outliers(a, sh);
      for (uint32_t i = threadIdx.x; i < k.mask_bytes; i += blockDim.x)
        rec[i] = i < a.head_dim / 8 ? (uint8_t)(sh.mask[i / 4] >> (8 * (i % 4))) : 0;
    }
    code_rows<true>(a, k, sh, stage_mem + b * buf_bytes, rec, cur.t0, cur.rows);
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

// ---- fast path: head_dim 128, 2-byte dtypes, at most 32 tokens per block --------------------
//
// A warp takes a tile of whole groups of one kind (keys or values) and codes it from
// registers, each lane holding 64 values of one row. Integer rates: two lanes per vector
// (lanes r and r + 16 hold channels [0, 64) and [64, 128) of row r), so only the Hadamard
// transform's last stage crosses lanes (one shuffle per value) and a lane's registers (128)
// leave room for four CTAs per SM rather than three. Fractional rates: one lane per row and
// its two 64-channel sub-vectors in turn, both through the wider half's code path (FastBook),
// so the kernel holds that path once. Per-coordinate constants (sign diagonals, the dequantize
// scale) are read from a per-CTA copy in shared memory, 16 bytes at a time. Rotation signs are
// applied as the values are unpacked; dequantization gathers each value's code into a byte
// and looks its signed centroid up in shared memory. Rows are staged per warp with 16-byte
// cp.async (double-buffered for quantize; a whole 16-row tile's copies in straight-line code),
// 16 bytes of padding per row so a quarter-warp's 16-byte reads of 8 different rows hit 8
// different bank quads; no CTA-wide barriers after the start. Each kernel is compiled for one
// rate (bits and variant), so its coding loop is straight-line code; keys and values share a
// launch when they share a rate. Tile indices
// are divided by multiply-high (FastDiv), not by the division subroutine: at 16 rows a tile
// that bookkeeping is paid once per 2048 values.
constexpr int kFastD = 128;                 // head_dim of the fast path
constexpr int kLaneD = 64;                  // values per lane
constexpr int kFastWarps = 4;               // warps per CTA
constexpr int kFastThreads = 32 * kFastWarps;
constexpr int kFastCtas = 4;                // CTAs per SM that registers are budgeted for
constexpr uint32_t kFastRow = kFastD * 2 + 16;   // staged row stride (bytes)
constexpr int kFastRounds = 3;              // rotation rounds of the format the fast path writes
// Words from one round's sign masks of a coordinate to the next round's (FastShared::rot).
constexpr int kRoundWords = 2 * (kLaneD + 4);

// Division by a divisor fixed at launch as a multiply-high and a shift (Granlund and
// Montgomery, in the form of CUTLASS's FastDivmod): exact for dividends below 2^31, and a
// few instructions where a division is a long subroutine.
struct FastDiv {
  uint32_t d, mul, shift;
  void set(uint32_t divisor) {
    uint32_t log2 = 0;
    while ((1ull << log2) < divisor) ++log2;
    d = divisor;
    mul = divisor == 1 ? 0u : (uint32_t)(((1ull << (31 + log2)) + divisor - 1) / divisor);
    shift = divisor == 1 ? 0u : log2 - 1;
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const { return d == 1 ? n : __umulhi(n, mul) >> shift; }
};

// The codebook of a sub-vector as the fast kernels read it. A fractional rate codes its narrower
// half with the wider half's code (one code path for both): boundaries past its own are +inf,
// so the top magnitude bit stays 0 and is not stored, and centroids past its own are 0.
struct FastBook {
  float thr[7];   // positive boundaries, ascending
  float cent[8];  // nonnegative centroids by magnitude
  uint32_t sign;  // bit 31 where the sub-vector has an MSE code: the value's sign goes to its centroid
};

// A launch codes the blocks' groups of one rate in one range of layers of a class (the first
// outer layers, the inner ones, the last outer ones): both kinds when keys and values share it
// (their records are then alike), else one kind, and a second launch takes the other.
struct FastArgs {
  Args a;
  // per coordinate, in the launch's sub-vectors (one of 128 or two of 64 values):
  alignas(16) uint32_t rot[kFastRounds][kFastD];  // rotation signs of each round as bit-31 masks
  alignas(16) uint32_t qjl[kFastD];  // QJL signs as bit-31 masks
  alignas(16) float dq[kFastD];      // first round's sign times 1/gain: the dequantizer's last multiply
  FastBook book[2];                  // per sub-vector of the kind coded
  float cent[4][16];        // per kind and sub-vector: signed centroid by code (magnitude bits, then sign)
  uint32_t kv_first, kv_count;   // the kinds coded: kv_first, or both (kv_count 2)
  uint32_t groups_per_tile, tiles;  // tiles: of this launch, below 2^31
  FastDiv tiles_per_seg, tiles_per_block, tokens;  // a segment: the groups of one layer and kind
  tq_kind kind;                    // the kind coded (both kinds are alike when kv_count is 2)
  uint32_t padded;                 // whether records have padding bytes, which quantize zeroes
  uint32_t layer0;                 // the range's first layer
  // offsets within a block, below 2^32 on this path (fast_eligible)
  uint32_t range_off;              // of the range's first record
  uint32_t layer_q_bytes;          // quantized bytes of one layer of the range (both kinds)
  uint32_t values_off;             // of a layer's value records from its first key record
  uint32_t tile_bytes, warp_smem;  // staged rows of one tile; shared memory per warp
};

// Per-CTA copies of the per-coordinate constants by half (the second half 4 words on, so the
// halves' 16-byte reads fall in different banks) and of the centroid tables.
struct __align__(16) FastShared {
  uint32_t rot[kFastRounds][2][kLaneD + 4], qjl[2][kLaneD + 4];
  float dq[2][kLaneD + 4];
  float cent[4][16];
};

__device__ __forceinline__ void fast_shared_init(const FastArgs& fa, FastShared& sh) {
  for (uint32_t i = threadIdx.x; i < kFastD; i += blockDim.x) {
#pragma unroll
    for (int r = 0; r < kFastRounds; ++r) sh.rot[r][i / kLaneD][i % kLaneD] = fa.rot[r][i];
    sh.qjl[i / kLaneD][i % kLaneD] = fa.qjl[i];
    sh.dq[i / kLaneD][i % kLaneD] = fa.dq[i];
  }
  for (uint32_t i = threadIdx.x; i < 64; i += blockDim.x) sh.cent[i / 16][i % 16] = fa.cent[i / 16][i % 16];
  __syncthreads();
}

__device__ __forceinline__ uint4 load16(const void* p) { return *reinterpret_cast<const uint4*>(p); }

// Flips the signs of the lane's 64 values by 64 bit-31 masks, read 16 bytes at a time.
__device__ __forceinline__ void flip64(float* x, const uint32_t* m) {
#pragma unroll
  for (int k = 0; k < kLaneD / 4; ++k) {
    const uint4 s = load16(m + 4 * k);
    x[4 * k] = flip(x[4 * k], s.x), x[4 * k + 1] = flip(x[4 * k + 1], s.y);
    x[4 * k + 2] = flip(x[4 * k + 2], s.z), x[4 * k + 3] = flip(x[4 * k + 3], s.w);
  }
}

// The low or high value of a pair of bf16/fp16 bits as float, its sign flipped by the mask m
// (bit 31). For bf16 the mask is added to the shifted bits: a carry out of bit 31 is lost, so
// the sum is the XOR in one instruction.
template <int DT> __device__ __forceinline__ float lo_signed(uint32_t w, uint32_t m) {
  if (DT == SW_DTYPE_BF16) return __uint_as_float((w << 16) + m);
  return flip(__half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu))), m);
}
template <int DT> __device__ __forceinline__ float hi_signed(uint32_t w, uint32_t m) {
  if (DT == SW_DTYPE_BF16) return __uint_as_float((w & 0xFFFF0000u) ^ m);
  return flip(__half2float(__ushort_as_half((unsigned short)(w >> 16))), m);
}

// In-register Walsh-Hadamard stages h = H0, 2 H0, ..., DIM/2, (a + b, a - b), as the reference.
template <int DIM, int H0> __device__ __forceinline__ void fwht_regs(float* x) {
#pragma unroll
  for (int h = H0; h < DIM; h *= 2)
#pragma unroll
    for (int i = 0; i < DIM; ++i)
      if (!(i & h)) {
        const float p = x[i], q = x[i + h];
        x[i] = __fadd_rn(p, q);
        x[i + h] = __fsub_rn(p, q);
      }
}

// All stages over the lane's 64 values; with SPLIT the last one (stride 64) pairs lane r with
// lane r + 16: lower x + other, upper other - x, one exact-sign FMA either way.
template <bool SPLIT> __device__ __forceinline__ void fwht64(float* x) {
  fwht_regs<kLaneD, 1>(x);
  if (SPLIT) {
    const float sgn = (threadIdx.x & 16) ? -1.0f : 1.0f;
#pragma unroll
    for (int i = 0; i < kLaneD; ++i) x[i] = __fmaf_rn(x[i], sgn, __shfl_xor_sync(0xFFFFFFFFu, x[i], 16));
  }
}

// The reference's norm: runs of 32 squares fused in sequence, then a tree over the runs; with
// SPLIT the partner lane's two runs are the tree's other branch (addition commutes).
template <bool SPLIT> __device__ __forceinline__ float norm64(const float* x) {
  float part[2];
#pragma unroll
  for (int p = 0; p < 2; ++p) {
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; ++i) acc = __fmaf_rn(x[32 * p + i], x[32 * p + i], acc);
    part[p] = acc;
  }
  float s = __fadd_rn(part[0], part[1]);
  if (SPLIT) s = __fadd_rn(s, __shfl_xor_sync(0xFFFFFFFFu, s, 16));
  return sqrtf(s);
}

// Bit 31 set iff a > t, for finite a >= 0 and t: the sign of t - a rounded, which is
// negative exactly when t < a (a difference of finite floats rounds to zero only when they are
// equal, and then to +0). One FP32 add instead of a compare on the integer pipe.
__device__ __forceinline__ uint32_t above(float a, float t) { return __float_as_uint(__fsub_rn(t, a)); }

// Where plane p of an MSE-bit code is stored: at p, or for the narrower half of a fractional rate
// (one bit less) one plane down past the dropped one (the top magnitude plane, or the sign plane
// of a 1-bit code), -1 for the dropped one.
template <int MSE> __device__ __forceinline__ int narrow_plane(int p, bool narrow) {
  constexpr int kDrop = MSE > 1 ? MSE - 2 : 0;
  return !narrow || p < kDrop ? p : p == kDrop ? -1 : p - 1;
}

// Where a lane's 64 values go: SPLIT, the lower or upper half of a 128-value vector (words
// 0-1 or 2-3 of each plane; the lower lane writes the norms); else a whole 64-value sub-vector.
template <bool SPLIT> struct LaneCodes {
  static constexpr uint32_t kPlaneBytes = SPLIT ? 16 : 8;
  static __device__ __forceinline__ uint32_t offset() { return SPLIT && (threadIdx.x & 16) ? 8 : 0; }
  static __device__ __forceinline__ bool writes_norms() { return !SPLIT || !(threadIdx.x & 16); }
};

// Codes of the lane's 64 values: load(x) gives them in channel order with the first rotation
// round's signs applied; rm: the second round's 64 sign masks (the third's kRoundWords on);
// qm: their 64 QJL sign masks. narrow: a fractional rate's narrower half, whose planes are
// stored without the top magnitude plane (without the sign plane when MSE is 1).
template <int MSE, bool QJL, bool SPLIT, bool ROLL, class Load>
__device__ __forceinline__ void quant64(const tq_sub_plan& sp, const FastBook& bk, const Load& load, const uint32_t* rm,
                                        const uint32_t* qm, uint8_t* codes, float* norm_out, float* rnorm_out,
                                        bool narrow = false) {
  using LC = LaneCodes<SPLIT>;
  float x[kLaneD];
  load(x);
  constexpr int kMag = MSE ? 1 << (MSE - 1) : 1;
  constexpr int kNB = MSE > 1 ? MSE - 1 : 0;  // magnitude bits
  constexpr int kThr = kMag - 1;              // positive boundaries
  const float norm = norm64<SPLIT>(x);
  fwht64<SPLIT>(x);
  // the later rounds through one copy of the transform's code (instruction cache)
#pragma unroll 1
  for (int r = 1; r < kFastRounds; ++r) {
    flip64(x, rm + (r - 1) * kRoundWords);
    fwht64<SPLIT>(x);
  }
  const float scale = __fmul_rn(norm, sp.gain);
  float thr[kThr > 0 ? kThr : 1];
#pragma unroll
  for (int k = 0; k < kThr; ++k) thr[k] = __fmul_rn(bk.thr[k], scale);
  uint32_t cent[kMag];
#pragma unroll
  for (int k = 0; k < kMag; ++k) cent[k] = __float_as_uint(bk.cent[k]);
  // codes 32 values xw[0, 32) into one word of each plane, pw; with QJL leaves the residuals in xw
  auto code_word = [&](float* xw, uint32_t* pw) {
#pragma unroll
    for (int p = 0; p <= MSE; ++p) pw[p] = 0;
    // element i ends at bit i after 32 funnel shifts
#pragma unroll
    for (int i = 31; i >= 0; --i) {
      const float y = xw[i], a = fabsf(y);
      // thermometer bits t_k = [a > thr_k] in bit 31; magnitude = their count, whose binary
      // digits are parities of the thermometer: bit b = XOR of t_k over k = j * 2^b
      uint32_t mag[kNB > 0 ? kNB : 1];
      if (kNB == 1) {
        mag[0] = above(a, thr[0]);
      } else if (kNB == 2) {
        const uint32_t t1 = above(a, thr[0]), t2 = above(a, thr[1]), t3 = above(a, thr[2]);
        mag[1] = t2;
        mag[0] = t1 ^ t2 ^ t3;
      } else if (kNB == 3) {
        uint32_t t[7];
#pragma unroll
        for (int k = 0; k < 7; ++k) t[k] = above(a, thr[k]);
        mag[2] = t[3];
        mag[1] = t[1] ^ t[3] ^ t[5];
        mag[0] = t[0] ^ t[2] ^ (t[4] ^ t[6] ^ mag[1]);  // three 3-input XORs for both bits
      }
#pragma unroll
      for (int p = 0; p < kNB; ++p) pw[p] = __funnelshift_l(mag[p], pw[p], 1);
      if (MSE) pw[kNB] = __funnelshift_l(__float_as_uint(y), pw[kNB], 1);  // sign
      if (QJL) {
        float cs = 0.0f;
        if (MSE) {
          uint32_t m[kNB > 0 ? kNB : 1];
#pragma unroll
          for (int p = 0; p < kNB; ++p) m[p] = (uint32_t)((int32_t)mag[p] >> 31);
          cs = __uint_as_float(select_tree<kMag>(cent, m) ^ (__float_as_uint(y) & bk.sign));
        }
        xw[i] = __fmaf_rn(-cs, scale, y);  // the residual, in place
      }
    }
  };
  uint32_t planes[MSE + 1][2];
  if constexpr (!ROLL) {
    uint32_t pw[2][MSE + 1];
    code_word(x, pw[0]);
    code_word(x + 32, pw[1]);
#pragma unroll
    for (int p = 0; p <= MSE; ++p) planes[p][0] = pw[0][p], planes[p][1] = pw[1][p];
  } else {
    static_assert(!QJL, "a rolled coding loop keeps no residuals");
    // the coding loop's code once, half the instruction-cache footprint: pass 0 codes x[0, 32)
    // and moves x[32, 64) there for pass 1
#pragma unroll 1
    for (int w = 0; w < 2; ++w) {
      uint32_t pw[MSE + 1];
      code_word(x, pw);
#pragma unroll
      for (int p = 0; p <= MSE; ++p) {
        planes[p][0] = w ? planes[p][0] : pw[p];  // no register arrays indexed by w
        planes[p][1] = pw[p];
      }
      if (w == 0) {
#pragma unroll
        for (int i = 0; i < 32; ++i) x[i] = x[32 + i];
      }
    }
  }
  if (LC::writes_norms()) *norm_out = norm;
  if (QJL) {
    const float rn = __fmul_rn(norm64<SPLIT>(x), sp.inv_gain);
    if (LC::writes_norms()) *rnorm_out = rn;
    flip64(x, qm);
    fwht64<SPLIT>(x);
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      uint32_t s = 0;
#pragma unroll
      for (int i = 31; i >= 0; --i) s = __funnelshift_l(__float_as_uint(x[32 * w + i]), s, 1);
      planes[MSE][w] = s;
    }
  }
  constexpr int kPlanes = MSE + (QJL ? 1 : 0);
  int p = 0;
  if (SPLIT) {
    // planes in pairs: the lower lane trades its half of plane p + 1 for the upper lane's half
    // of plane p, and each stores a whole plane, so a store fills whole 32-byte sectors
    const bool up = threadIdx.x & 16;
#pragma unroll
    for (; p + 1 < kPlanes; p += 2) {
      uint32_t w[2][2];  // [kept, given][word]
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        w[0][i] = up ? planes[p + 1][i] : planes[p][i];
        w[1][i] = __shfl_xor_sync(0xFFFFFFFFu, up ? planes[p][i] : planes[p + 1][i], 16);
      }
      *reinterpret_cast<uint4*>(codes + (p + up) * LC::kPlaneBytes) =
          up ? make_uint4(w[1][0], w[1][1], w[0][0], w[0][1]) : make_uint4(w[0][0], w[0][1], w[1][0], w[1][1]);
    }
  }
#pragma unroll
  for (; p < kPlanes; ++p) {
    const int d = narrow_plane<MSE>(p, narrow);
    if (d >= 0)
      *reinterpret_cast<uint2*>(codes + d * LC::kPlaneBytes + LC::offset()) = make_uint2(planes[p][0], planes[p][1]);
  }
}

// The lane's 64 values back from codes (see quant64), in channel order, rotation undone.
// table: byte offset of the sub-vector's centroids in sh.cent; rm, qm, dq: the later rounds'
// sign masks (as in quant64), the 64 QJL sign masks and the final scales of these
// coordinates; store(v) takes the values.
template <int MSE, bool QJL, bool SPLIT, class Store>
__device__ __forceinline__ void dequant64(const tq_sub_plan& sp, const FastShared& sh, uint32_t table,
                                          const uint32_t* rm, const uint32_t* qm, const float* dq, const uint8_t* codes,
                                          float norm, float rnorm, const Store& store, bool narrow = false) {
  using LC = LaneCodes<SPLIT>;
  float v[kLaneD];
  uint32_t planes[MSE + 1][2];
#pragma unroll
  for (int p = 0; p < MSE + (QJL ? 1 : 0); ++p) {
    const int d = narrow_plane<MSE>(p, narrow);
    const uint2 w = d >= 0 ? *reinterpret_cast<const uint2*>(codes + d * LC::kPlaneBytes + LC::offset()) : make_uint2(0, 0);
    planes[p][0] = w.x, planes[p][1] = w.y;
  }
  if (QJL) {
    // sign(S r) as +-1, then S^T = D2 H: the transform of +-1 values is exact in any order
#pragma unroll
    for (int i = 0; i < kLaneD; ++i) v[i] = __uint_as_float(0x3F800000u | (planes[MSE][i / 32] << (31 - i % 32) & 0x80000000u));
    fwht64<SPLIT>(v);
    flip64(v, qm);
  }
  const float kr = __fmul_rn(sp.qjl_scale, rnorm);
  const uint8_t* cent = reinterpret_cast<const uint8_t*>(&sh.cent[0][0]);
#pragma unroll
  for (int w = 0; w < 2; ++w)
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      // byte j: 4 * code of value 8 j + m plus the table's offset (bit p of the code from plane p)
      uint32_t bytes = table * 0x01010101u;
#pragma unroll
      for (int p = 0; p < MSE; ++p) {
        const int s = 2 + p - m;
        bytes |= (s >= 0 ? planes[p][w] << s : planes[p][w] >> -s) & (0x04040404u << p);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int i = 32 * w + 8 * j + m;
        const uint32_t off = j == 0 ? bytes & 0xFFu : j == 3 ? bytes >> 24 : __byte_perm(bytes, 0u, 0x4440u + j);
        // (+-c) * norm rounds like +-(c * norm), the reference's order
        const float c = MSE ? __fmul_rn(*reinterpret_cast<const float*>(cent + off), norm) : 0.0f;
        v[i] = QJL ? __fmaf_rn(v[i], kr, c) : c;
      }
    }
  fwht64<SPLIT>(v);
  // the later rounds undone last to first, then the first round's signs and the gain
#pragma unroll 1
  for (int r = kFastRounds - 1; r > 0; --r) {
    flip64(v, rm + (r - 1) * kRoundWords);
    fwht64<SPLIT>(v);
  }
#pragma unroll
  for (int k = 0; k < kLaneD / 4; ++k) {
    const float4 s = *reinterpret_cast<const float4*>(dq + 4 * k);
    v[4 * k] = __fmul_rn(v[4 * k], s.x), v[4 * k + 1] = __fmul_rn(v[4 * k + 1], s.y);
    v[4 * k + 2] = __fmul_rn(v[4 * k + 2], s.z), v[4 * k + 3] = __fmul_rn(v[4 * k + 3], s.w);
  }
  store(v);
}

// The rates of the fast kernels as (mse bits, qjl): of the vector at integer rates, of the
// narrower half at fractional ones (the other half has one bit more); at most 4 bits in all.
#define TQ_INT_CASES(X) X(0, 1) X(1, 0) X(1, 1) X(2, 0) X(2, 1) X(3, 0) X(3, 1) X(4, 0)
#define TQ_FRAC_CASES(X) X(0, 1) X(1, 0) X(1, 1) X(2, 0) X(2, 1) X(3, 0)

template <int DT> __device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  if (DT == SW_DTYPE_BF16) {
    __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&b);
  }
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <int DT> __device__ __forceinline__ uint16_t pack_one(float v) {
  return DT == SW_DTYPE_BF16 ? __bfloat16_as_ushort(__float2bfloat16_rn(v)) : __half_as_ushort(__float2half_rn(v));
}

// A tile: groups [g0, g0 + ng) of one block, all of one kind, their records from rec_off on
// (consecutive heads of one kind: one record after the other).
struct Tile {
  uint32_t block, g0, ng;
  uint32_t rec_off;
};
__device__ __forceinline__ Tile fast_tile(const FastArgs& fa, uint32_t tile) {
  Tile t;
  t.block = fa.tiles_per_block.div(tile);
  const uint32_t r = tile - t.block * fa.tiles_per_block.d, seg = fa.tiles_per_seg.div(r),
                 first = (r - seg * fa.tiles_per_seg.d) * fa.groups_per_tile;
  // segments in block order: (layer, kind) pairs of the range, or its layers of the one kind
  const uint32_t layer = seg >> (fa.kv_count - 1), kv = fa.kv_count == 2 ? seg & 1u : fa.kv_first;
  t.g0 = (2 * (fa.layer0 + layer) + kv) * fa.a.kv_heads + first;
  t.ng = min(fa.groups_per_tile, fa.a.kv_heads - first);
  t.rec_off = fa.range_off + layer * fa.layer_q_bytes + (kv ? fa.values_off : 0u) + first * fa.kind.record_bytes;
  return t;
}

// Where row r of a tile codes to.
struct RowRec {
  uint8_t* rec;
  uint32_t tok;
};
__device__ __forceinline__ RowRec fast_row(const FastArgs& fa, uint8_t* rec0, uint32_t r) {
  const uint32_t gi = fa.tokens.div(r);
  return {rec0 + gi * fa.kind.record_bytes, r - gi * fa.tokens.d};
}

// Per-warp scratch after the row buffers (fractional rates only): energies, then the channel
// lists (u8, outliers ascending then the rest ascending) of every group of the tile.
__host__ __device__ __forceinline__ uint32_t fast_scratch_bytes(uint32_t groups_per_tile) {
  return kFastD * 4 + groups_per_tile * kFastD;
}

// Outlier mask of one group from energies (lane holds channels k*32 + lane), as outlier_mask.
__device__ __forceinline__ void fast_outlier_mask(const float* energy, uint32_t* mask) {
  constexpr int S = kFastD / 32;
  const uint32_t lane = threadIdx.x & 31;
  uint32_t e[S];
#pragma unroll
  for (int k = 0; k < S; ++k) e[k] = __float_as_uint(energy[k * 32 + lane]);
  // bits above the highest one where the least and the largest energy differ are common to
  // all, so the search starts below them; it stops early once exactly head_dim/2 are >= x
  uint32_t lo = min(min(e[0], e[1]), min(e[2], e[3])), hi = max(max(e[0], e[1]), max(e[2], e[3]));
  lo = __reduce_min_sync(0xFFFFFFFFu, lo);
  hi = __reduce_max_sync(0xFFFFFFFFu, hi);
  const int top = 31 - __clz(lo ^ hi);  // -1 when all are equal
  uint32_t x = top < 0 ? lo : lo & ~(0xFFFFFFFFu >> (31 - top));
  for (int bit = top; bit >= 0; --bit) {
    const uint32_t cand = x | (1u << bit);
    uint32_t n = 0;
#pragma unroll
    for (int k = 0; k < S; ++k) n += e[k] >= cand;
    n = __reduce_add_sync(0xFFFFFFFFu, n);
    if (n >= kFastD / 2) {
      x = cand;
      if (n == kFastD / 2) break;
    }
  }
  uint32_t above_n = 0;
#pragma unroll
  for (int k = 0; k < S; ++k) above_n += e[k] > x;
  uint32_t need = kFastD / 2 - __reduce_add_sync(0xFFFFFFFFu, above_n);
#pragma unroll
  for (int k = 0; k < S; ++k) {
    const uint32_t eq = __ballot_sync(0xFFFFFFFFu, e[k] == x);
    const uint32_t rank = __popc(eq & ((1u << lane) - 1u));
    mask[k] = __ballot_sync(0xFFFFFFFFu, e[k] > x || (e[k] == x && rank < need));
    need -= min(need, (uint32_t)__popc(eq));
  }
}

// Channel lists from a mask (warp-uniform words), as split_channels.
__device__ __forceinline__ void fast_split(const uint32_t* mask, uint8_t* chans) {
  constexpr int S = kFastD / 32;
  const uint32_t lane = threadIdx.x & 31;
  uint32_t total = 0;
#pragma unroll
  for (int k = 0; k < S; ++k) total += __popc(mask[k]);
  const bool ok = total == kFastD / 2;
  uint32_t before = 0;
#pragma unroll
  for (int k = 0; k < S; ++k) {
    const uint32_t c = k * 32 + lane;
    const uint32_t below = before + __popc(mask[k] & ((1u << lane) - 1u));
    const bool out = (mask[k] >> lane) & 1u;
    if (ok) chans[out ? below : kFastD / 2 + c - below] = (uint8_t)c;
    else chans[c] = (uint8_t)c;
    before += __popc(mask[k]);
  }
}

__device__ __forceinline__ void fast_zero(uint8_t* p, uint32_t from, uint32_t to) {
  for (uint32_t i = from + (threadIdx.x & 31); i < to; i += 32) p[i] = 0;
}

// Pieces J.. of a whole 16-row tile's copy (8 per lane), at constant offsets from the lane's
// first: piece j 2 rows further in shared memory and 512 bytes further in the block.
template <int J = 0> __device__ __forceinline__ void fast_issue16(uint32_t dst, const uint8_t* src) {
  if constexpr (J < 8) {
    asm volatile("cp.async.cg.shared.global [%0+%2], [%1+%3], 16;\n" ::"r"(dst), "l"(src), "n"(J * 2 * kFastRow),
                 "n"(J * 512));
    fast_issue16<J + 1>(dst, src);
  }
}

// Starts the copy of a tile's raw rows into buf: 16-byte pieces, piece i of the tile to row
// i / 16, so lane l's pieces are 2 rows apart.
__device__ __forceinline__ void fast_issue(const FastArgs& fa, const Tile& t, uint8_t* buf) {
  const Args& a = fa.a;
  const uint32_t lane = threadIdx.x & 31, n = t.ng * a.tokens * (kFastD * 2 / 16);
  const uint8_t* src =
      a.raw_base + a.raw_slots[t.block] * a.raw_stride + (t.g0 * (uint32_t)a.group_raw_bytes + lane * 16);
  uint32_t dst = (uint32_t)__cvta_generic_to_shared(buf + (lane >> 4) * kFastRow + (lane & 15) * 16);
  if (n == 16 * 16) return fast_issue16(dst, src);  // the usual tile: straight-line code, no counting
#pragma unroll 4
  for (uint32_t i = lane; i < n; i += 32, src += 512, dst += 2 * kFastRow) cp_async16(dst, src);
}

// Codes the tiles of one rate (FRAC, MSE, QJL: see TQ_INT_CASES), each warp its own tiles,
// double-buffered: the next tile's rows are on their way while this one is coded.
template <int DT, bool FRAC, int MSE, bool QJL>
__global__ void __launch_bounds__(kFastThreads, kFastCtas) quantize_fast(const __grid_constant__ FastArgs fa) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ FastShared sh;
  fast_shared_init(fa, sh);
  const Args& a = fa.a;
  const tq_kind& k = fa.kind;
  const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, step = gridDim.x * kFastWarps;
  uint8_t* bufs = smem + warp * fa.warp_smem;
  float* energy = reinterpret_cast<float*>(bufs + 2 * fa.tile_bytes);
  uint8_t* chans = bufs + 2 * fa.tile_bytes + kFastD * 4;
  uint32_t tile = blockIdx.x * kFastWarps + warp;
  Tile next_t{};
  if (tile < fa.tiles) {
    next_t = fast_tile(fa, tile);
    fast_issue(fa, next_t, bufs);
  }
  cp_async_commit();
  for (int b = 0; tile < fa.tiles; b ^= 1) {
    const Tile t = next_t;
    const uint32_t next = tile + step;
    if (next < fa.tiles) {
      next_t = fast_tile(fa, next);
      fast_issue(fa, next_t, bufs + (b ^ 1) * fa.tile_bytes);
    }
    cp_async_commit();
    uint8_t* q = a.q_base + a.q_slots[t.block] * a.q_stride;
    uint8_t* rec0 = q + t.rec_off;
    const uint8_t* buf = bufs + b * fa.tile_bytes;
    if (t.g0 == 0 && lane < SW_TQ_HEADER_BYTES / 4) reinterpret_cast<uint32_t*>(q)[lane] = a.header[lane];
    cp_async_wait_prior();
    __syncwarp();
    for (uint32_t gi = 0; (FRAC || fa.padded) && gi < t.ng; ++gi) {
      uint8_t* rec = rec0 + gi * k.record_bytes;
      if (fa.padded) {
        fast_zero(rec, k.norms_off + a.tokens * k.nsub * 4, k.rnorms_off);
        if (QJL) fast_zero(rec, k.rnorms_off + a.tokens * k.nsub * 4, k.codes_off);
        fast_zero(rec, k.codes_off + a.tokens * k.token_bytes, k.record_bytes);
      }
      if (FRAC) {
        // per-channel sum of squares in token order; lane: channels 2 lane, 2 lane + 1, +64
        const uint8_t* rows = buf + gi * a.tokens * kFastRow;
        float e[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (uint32_t r = 0; r < a.tokens; ++r) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const uint32_t w = *reinterpret_cast<const uint32_t*>(rows + r * kFastRow + 4 * lane + 128 * h);
            const float lo = lo_signed<DT>(w, 0u), hi = hi_signed<DT>(w, 0u);
            e[2 * h] = __fmaf_rn(lo, lo, e[2 * h]);
            e[2 * h + 1] = __fmaf_rn(hi, hi, e[2 * h + 1]);
          }
        }
        __syncwarp();
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          energy[64 * h + 2 * lane] = e[2 * h];
          energy[64 * h + 2 * lane + 1] = e[2 * h + 1];
        }
        __syncwarp();
        uint32_t mask[kFastD / 32];
        fast_outlier_mask(energy, mask);
        fast_split(mask, chans + gi * kFastD);
        if (lane < kFastD / 32) {
          uint32_t m = mask[0];
#pragma unroll
          for (int kk = 1; kk < kFastD / 32; ++kk) m = lane == (uint32_t)kk ? mask[kk] : m;
          reinterpret_cast<uint32_t*>(rec)[lane] = m;
        }
        fast_zero(rec, kFastD / 8, k.mask_bytes);
      }
    }
    __syncwarp();
    const uint32_t rows = t.ng * a.tokens;
    if constexpr (!FRAC) {
      // lanes past the tile's rows recode its last row alongside (same values, same bytes)
      for (uint32_t r0 = 0; r0 < rows; r0 += 16) {
        const uint32_t r = min(r0 + (lane & 15), rows - 1), h = lane >> 4;
        const RowRec rr = fast_row(fa, rec0, r);
        const uint8_t* src = buf + r * kFastRow + h * (kLaneD * 2);
        const uint32_t* rm = sh.rot[0][h];
        quant64<MSE, QJL, true, false>(
            k.sub[0], fa.book[0],
            [&](float* x) {
#pragma unroll
              for (int c = 0; c < kLaneD / 8; ++c) {
                const uint4 d = load16(src + 16 * c), m0 = load16(rm + 8 * c), m1 = load16(rm + 8 * c + 4);
                x[8 * c] = lo_signed<DT>(d.x, m0.x), x[8 * c + 1] = hi_signed<DT>(d.x, m0.y);
                x[8 * c + 2] = lo_signed<DT>(d.y, m0.z), x[8 * c + 3] = hi_signed<DT>(d.y, m0.w);
                x[8 * c + 4] = lo_signed<DT>(d.z, m1.x), x[8 * c + 5] = hi_signed<DT>(d.z, m1.y);
                x[8 * c + 6] = lo_signed<DT>(d.w, m1.z), x[8 * c + 7] = hi_signed<DT>(d.w, m1.w);
              }
            },
            sh.rot[1][h], sh.qjl[h], rr.rec + k.codes_off + (size_t)rr.tok * k.token_bytes,
            reinterpret_cast<float*>(rr.rec + k.norms_off) + rr.tok, reinterpret_cast<float*>(rr.rec + k.rnorms_off) + rr.tok);
      }
    } else if (lane < rows) {
      const RowRec rr = fast_row(fa, rec0, lane);
      const uint8_t* row = buf + lane * kFastRow;
      const uint8_t* ch = chans + (lane / a.tokens) * kFastD;
      float* norms = reinterpret_cast<float*>(rr.rec + k.norms_off) + rr.tok * 2;
      float* rnorms = reinterpret_cast<float*>(rr.rec + k.rnorms_off) + rr.tok * 2;
      uint8_t* codes = rr.rec + k.codes_off + (size_t)rr.tok * k.token_bytes;
      // the halves in turn through one code path (the wider half's): its channels gathered in
      // list order, four list bytes at a time, the half's rotation signs applied. With the
      // 4-bit code (3.5 bits a value) that path, with the per-group work before it, outgrows
      // the instruction cache (a quarter of stalls waiting for instructions): its coding
      // loop is then rolled, which costs a move per two values and gained 0.41 -> 0.45 of the
      // copy; at 2.5 bits it lost (0.54 -> 0.52), so there it stays unrolled
      constexpr bool kRollFrac = !QJL && MSE + 1 == 4;
#pragma unroll 1
      for (uint32_t s = 0; s < 2; ++s) {
        const uint8_t* chs = ch + kLaneD * s;
        const uint32_t* rm = sh.rot[0][s];
        quant64<MSE + 1, QJL, false, kRollFrac>(
            k.sub[0], fa.book[s],
            [&](float* x) {
#pragma unroll
              for (int c = 0; c < kLaneD / 4; ++c) {
                const uint32_t cw = *reinterpret_cast<const uint32_t*>(chs + 4 * c);
                const uint4 m = load16(rm + 4 * c);
                const uint32_t mm[4] = {m.x, m.y, m.z, m.w};
#pragma unroll
                for (int j = 0; j < 4; ++j)
                  x[4 * c + j] =
                      lo_signed<DT>(*reinterpret_cast<const uint16_t*>(row + 2 * ((cw >> (8 * j)) & 0xFFu)), mm[j]);
              }
            },
            sh.rot[1][s], sh.qjl[s], codes + k.sub_off[s], norms + s, rnorms + s, s == 1);
      }
    }
    __syncwarp();
    tile = next;
  }
}

template <int DT, bool FRAC, int MSE, bool QJL>
__global__ void __launch_bounds__(kFastThreads, kFastCtas) dequantize_fast(const __grid_constant__ FastArgs fa) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ FastShared sh;
  fast_shared_init(fa, sh);
  const Args& a = fa.a;
  const tq_kind& k = fa.kind;
  const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, step = gridDim.x * kFastWarps;
  const uint32_t table = fa.kv_first * sizeof sh.cent[0] * 2;
  // Fractional rates scatter 2-byte values of 32 rows to one channel: with rows 264 bytes
  // apart (66 words) the 16 rows of a group fall in 16 banks, where 272 puts every eighth row
  // in one; the rows then go out in 8-byte pieces. Measured: 3.5- and 2.5-bit mse dequantize
  // 0.65 -> 0.68 and 0.64 -> 0.66 of the copy; with QJL it lost (3.5 bits 0.55 -> 0.53).
  constexpr bool kNarrowRows = FRAC && !QJL;
  constexpr uint32_t kRow = kNarrowRows ? kFastD * 2 + 8 : kFastRow;
  using Piece = typename std::conditional<kNarrowRows, uint2, uint4>::type;
  uint8_t* buf = smem + warp * fa.warp_smem;
  uint8_t* chans = buf + fa.tile_bytes + kFastD * 4;
  for (uint32_t tile = blockIdx.x * kFastWarps + warp; tile < fa.tiles; tile += step) {
    const Tile t = fast_tile(fa, tile);
    uint8_t* rec0 = a.q_base + a.q_slots[t.block] * a.q_stride + t.rec_off;
    if (FRAC) {
      for (uint32_t gi = 0; gi < t.ng; ++gi) {
        const uint32_t* rec = reinterpret_cast<const uint32_t*>(rec0 + gi * k.record_bytes);
        uint32_t mask[kFastD / 32];
#pragma unroll
        for (int kk = 0; kk < kFastD / 32; ++kk) mask[kk] = rec[kk];
        fast_split(mask, chans + gi * kFastD);
      }
    }
    __syncwarp();
    const uint32_t rows = t.ng * a.tokens;
    if constexpr (!FRAC) {
      // lanes past the tile's rows decode its last row alongside (same values, same bytes)
      for (uint32_t r0 = 0; r0 < rows; r0 += 16) {
        const uint32_t r = min(r0 + (lane & 15), rows - 1), h = lane >> 4;
        const RowRec rr = fast_row(fa, rec0, r);
        const float* norms = reinterpret_cast<const float*>(rr.rec + k.norms_off) + rr.tok;
        const float* rnorms = reinterpret_cast<const float*>(rr.rec + k.rnorms_off) + rr.tok;
        uint8_t* dst = buf + r * kFastRow + h * (kLaneD * 2);
        dequant64<MSE, QJL, true>(k.sub[0], sh, table, sh.rot[1][h], sh.qjl[h], sh.dq[h], rr.rec + k.codes_off + (size_t)rr.tok * k.token_bytes,
                                  norms[0], QJL ? rnorms[0] : 0.0f, [&](const float* v) {
#pragma unroll
                                    for (int c = 0; c < kLaneD / 8; ++c)
                                      *reinterpret_cast<uint4*>(dst + 16 * c) = make_uint4(
                                          pack_pair<DT>(v[8 * c], v[8 * c + 1]), pack_pair<DT>(v[8 * c + 2], v[8 * c + 3]),
                                          pack_pair<DT>(v[8 * c + 4], v[8 * c + 5]), pack_pair<DT>(v[8 * c + 6], v[8 * c + 7]));
                                  });
      }
    } else if (lane < rows) {
      const RowRec rr = fast_row(fa, rec0, lane);
      uint8_t* row = buf + lane * kRow;
      const uint8_t* ch = chans + (lane / a.tokens) * kFastD;
      const float* norms = reinterpret_cast<const float*>(rr.rec + k.norms_off) + rr.tok * 2;
      const float* rnorms = reinterpret_cast<const float*>(rr.rec + k.rnorms_off) + rr.tok * 2;
      const uint8_t* codes = rr.rec + k.codes_off + (size_t)rr.tok * k.token_bytes;
      // the halves in turn through one code path (the wider half's), values back to their channels
#pragma unroll 1
      for (uint32_t s = 0; s < 2; ++s) {
        const uint8_t* chs = ch + kLaneD * s;
        dequant64<MSE + 1, QJL, false>(
            k.sub[0], sh, table + s * sizeof sh.cent[0], sh.rot[1][s], sh.qjl[s], sh.dq[s], codes + k.sub_off[s], norms[s],
            QJL ? rnorms[s] : 0.0f,
            [&](const float* v) {
#pragma unroll
              for (int c = 0; c < kLaneD / 4; ++c) {
                // four list bytes a load: a byte load per value kept the shared-memory queue
                // full (3.5-bit mse dequantize 0.68 -> 0.74 of the copy)
                const uint32_t cw = *reinterpret_cast<const uint32_t*>(chs + 4 * c);
#pragma unroll
                for (int j = 0; j < 4; ++j)
                  *reinterpret_cast<uint16_t*>(row + 2 * ((cw >> (8 * j)) & 0xFFu)) = pack_one<DT>(v[4 * c + j]);
              }
            },
            s == 1);
      }
    }
    __syncwarp();
    uint8_t* dst = const_cast<uint8_t*>(a.raw_base) + a.raw_slots[t.block] * a.raw_stride + t.g0 * (uint32_t)a.group_raw_bytes;
    constexpr uint32_t kPieces = kFastD * 2 / sizeof(Piece);  // per row
    const uint32_t n = rows * kPieces;
    for (uint32_t i = lane; i < n; i += 32)
      reinterpret_cast<Piece*>(dst)[i] = *reinterpret_cast<const Piece*>(buf + (i / kPieces) * kRow + (i % kPieces) * sizeof(Piece));
    __syncwarp();
  }
}

// Host: whether the fast path takes these parameters, and its arguments.
bool fast_eligible(const sw_tq_params* p) {
  return tq_version(p) == SW_TQ_FORMAT_VERSION && p->head_dim == (uint32_t)kFastD && p->tokens <= 32 && (p->dtype == SW_DTYPE_BF16 || p->dtype == SW_DTYPE_FP16) &&
         sw_tq_raw_bytes(p) < (1ull << 32) && sw_tq_quantized_bytes(p) < (1ull << 32);
}

// The arguments of the launch that codes kinds [kv_first, kv_first + kv_count) of layers
// [layer0, layer0 + layers), all outer or all inner.
void fast_args(bool quant, const sw_tq_params* p, const Args& a, uint32_t layer0, uint32_t layers, uint32_t kv_first,
               uint32_t kv_count, FastArgs& fa) {
  fa.a = a;
  const tq_kind* kinds = &a.layout.kind[2 * tq_outer_layer(p, layer0)];  // this class's K and V
  const tq_kind& k = kinds[kv_first];
  // sign tables of the kind coded: one 128-value sub-vector, or two of 64
  for (uint32_t sub = 0; sub < k.nsub; ++sub) {
    const tq_sub_plan& sp = k.sub[sub];
    auto mask = [](const uint32_t* words, uint32_t j) { return ((words[j / 32] >> (j % 32)) & 1u) << 31; };
    for (uint32_t j = 0; j < sp.dim; ++j) {
      for (int r = 0; r < kFastRounds; ++r) fa.rot[r][sub * sp.dim + j] = mask(sp.rot_signs[r], j);
      fa.qjl[sub * sp.dim + j] = mask(sp.qjl_signs, j);
      fa.dq[sub * sp.dim + j] = mask(sp.rot_signs[0], j) ? -sp.inv_gain : sp.inv_gain;
    }
  }
  // codebooks and centroid tables in the code of the kind's first (at fractional rates the
  // wider) sub-vector: nb magnitude bits, then the sign
  for (uint32_t t = 0; t < 4; ++t) {
    const tq_kind& kt = kinds[t / 2];
    const tq_sub_plan& sp = kt.sub[t % 2];
    const uint32_t nb = kt.sub[0].mse_bits > 1 ? kt.sub[0].mse_bits - 1 : 0;
    const uint32_t levels = sp.mse_bits == 0 ? 0 : 1u << (sp.mse_bits - 1);
    for (uint32_t code = 0; code < 16; ++code) {
      const uint32_t mag = code & ((1u << nb) - 1u);
      const float c = mag < levels ? sp.cent[mag] : 0.0f;
      fa.cent[t][code] = (code >> nb) & 1u ? -c : c;
    }
    if (t / 2 != kv_first) continue;
    FastBook& bk = fa.book[t % 2];
    for (uint32_t i = 0; i < 7; ++i) bk.thr[i] = i + 1 < levels ? sp.thr[i] : __builtin_inff();
    for (uint32_t i = 0; i < 8; ++i) bk.cent[i] = i < levels ? sp.cent[i] : 0.0f;
    bk.sign = levels ? 0x80000000u : 0u;
  }
  fa.kv_first = kv_first;
  fa.kv_count = kv_count;
  // integer rates code 16 rows per pass of a warp, fractional rates 32
  fa.groups_per_tile = (k.fractional ? 32 : 16) / p->tokens;
  if (fa.groups_per_tile < 1) fa.groups_per_tile = 1;
  if (fa.groups_per_tile > p->kv_heads) fa.groups_per_tile = p->kv_heads;
  fa.tiles_per_seg.set((p->kv_heads + fa.groups_per_tile - 1) / fa.groups_per_tile);
  fa.tiles_per_block.set(layers * kv_count * fa.tiles_per_seg.d);
  fa.tokens.set(p->tokens);
  fa.kind = k;
  const uint32_t norms_end = k.norms_off + p->tokens * k.nsub * 4;
  fa.padded = norms_end != k.rnorms_off || (k.qjl && k.rnorms_off + p->tokens * k.nsub * 4 != k.codes_off) ||
              k.codes_off + p->tokens * k.token_bytes != k.record_bytes;
  fa.layer0 = layer0;
  fa.range_off = (uint32_t)tq_layer_offset(p, &a.layout, layer0);
  fa.layer_q_bytes = p->kv_heads * (kinds[0].record_bytes + kinds[1].record_bytes);
  fa.values_off = p->kv_heads * kinds[0].record_bytes;
  fa.tile_bytes = fa.groups_per_tile * p->tokens * kFastRow;
  fa.warp_smem = (quant ? 2 : 1) * fa.tile_bytes + (k.fractional ? tq_align16(fast_scratch_bytes(fa.groups_per_tile)) : 0u);
}

template <int DT> const void* fast_kernel(bool quant, const tq_kind& k) {
  switch ((k.fractional ? 16 : 0) + k.sub[k.nsub - 1].mse_bits * 2 + k.qjl) {
#define TQ_CASE(F, M, J)                                                                   \
  case (F ? 16 : 0) + M * 2 + J:                                                           \
    return quant ? reinterpret_cast<const void*>(quantize_fast<DT, F, M, J>)              \
                 : reinterpret_cast<const void*>(dequantize_fast<DT, F, M, J>);
#define TQ_INT(M, J) TQ_CASE(false, M, J)
#define TQ_FRAC(M, J) TQ_CASE(true, M, J)
    TQ_INT_CASES(TQ_INT)
    TQ_FRAC_CASES(TQ_FRAC)
#undef TQ_FRAC
#undef TQ_INT
#undef TQ_CASE
  }
  return nullptr;
}

// The launches of one range of layers of one class: one for both kinds when they share a
// rate, else one for each; blocks in chunks whose tiles number below 2^31 (FastDiv's range).
cudaError_t launch_fast_range(bool quant, const sw_tq_params* p, const Args& a, uint32_t layer0, uint32_t layers, int sms,
                              cudaStream_t s) {
  const uint32_t outer = tq_outer_layer(p, layer0);
  const uint32_t kv_count = tq_bits_x2(p, outer, 0) == tq_bits_x2(p, outer, 1) ? 2 : 1;
  for (uint32_t kv = 0; kv < 2; kv += kv_count) {
    FastArgs fa;
    fast_args(quant, p, a, layer0, layers, kv, kv_count, fa);
    const void* fn = p->dtype == SW_DTYPE_BF16 ? fast_kernel<SW_DTYPE_BF16>(quant, fa.kind)
                                               : fast_kernel<SW_DTYPE_FP16>(quant, fa.kind);
    if (!fn) return cudaErrorInvalidValue;
    const size_t smem = (size_t)fa.warp_smem * kFastWarps;
    int per_sm = 0;
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kFastThreads, smem);
    if (e != cudaSuccess) return e;
    const uint32_t chunk = 0x7FFFFFFFu / fa.tiles_per_block.d;
    for (uint64_t b0 = 0; b0 < a.n_blocks; b0 += chunk) {
      const uint32_t nb = (uint32_t)(a.n_blocks - b0 < chunk ? a.n_blocks - b0 : chunk);
      fa.a.raw_slots = a.raw_slots + b0;
      fa.a.q_slots = a.q_slots + b0;
      fa.a.n_blocks = nb;
      fa.tiles = nb * fa.tiles_per_block.d;
      const uint32_t ctas_needed = (fa.tiles + kFastWarps - 1) / kFastWarps;
      uint32_t grid = (uint32_t)sms * (per_sm > 0 ? per_sm : 1);
      if (grid > ctas_needed) grid = ctas_needed;
      void* args[] = {&fa};
      e = cudaLaunchKernel(fn, dim3(grid), dim3(kFastThreads), args, smem, s);
      if (e != cudaSuccess) return e;
    }
  }
  return cudaSuccess;
}

// The layer ranges of the classes in block order: the first outer layers, the inner ones, the
// last outer ones (each may be empty).
cudaError_t launch_fast(bool quant, const sw_tq_params* p, const Args& a, int sms, cudaStream_t s) {
  const uint32_t bounds[4] = {0, p->outer_first, p->layers - p->outer_last, p->layers};
  for (int range = 0; range < 3; ++range) {
    if (bounds[range + 1] == bounds[range]) continue;
    cudaError_t e = launch_fast_range(quant, p, a, bounds[range], bounds[range + 1] - bounds[range], sms, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

int fail(char* err, size_t len, int code, const char* msg, const char* detail) {
  if (err && len) snprintf(err, len, "%s%s%s", msg, detail ? ": " : "", detail ? detail : "");
  return code;
}

int launch(bool quant, const sw_tq_params* p, const void* raw_base, size_t raw_stride, const uint32_t* raw_slots,
           void* q_base, size_t q_stride, const uint32_t* q_slots, uint32_t n_blocks, void* stream, char* err,
           size_t len) {
  int rc = sw_tq_check_params(p, err, len);
  if (rc != SW_TQ_OK) return rc;
  if ((reinterpret_cast<uintptr_t>(raw_base) | raw_stride | reinterpret_cast<uintptr_t>(q_base) | q_stride) & 15u)
    return fail(err, len, SW_TQ_EPARAMS, "CUDA quantizer: base pointers and strides must be multiples of 16 bytes", nullptr);
  if (n_blocks == 0) return SW_TQ_OK;
  Args a;
  a.p = *p;
  tq_make_layout(p, &a.layout);
  sw_tq_write_header(p, a.header);
  a.kv_heads = p->kv_heads;
  a.head_dim = p->head_dim;
  a.tokens = p->tokens;
  a.groups = sw_tq_groups(p);
  a.dtype = p->dtype;
  a.dsize = p->dtype == SW_DTYPE_FP32 ? 4 : 2;
  a.row_bytes = staged(p->head_dim * a.dsize);
  a.chunk = kStageBytes / a.row_bytes;
  if (a.chunk < 1) a.chunk = 1;
  if (a.chunk > p->tokens) a.chunk = p->tokens;
  a.group_raw_bytes = (uint64_t)p->tokens * p->head_dim * a.dsize;
  a.raw_base = static_cast<const uint8_t*>(raw_base);
  a.raw_stride = raw_stride;
  a.raw_slots = raw_slots;
  a.q_base = static_cast<uint8_t*>(q_base);
  a.q_stride = q_stride;
  a.q_slots = q_slots;
  a.n_blocks = n_blocks;
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return fail(err, len, SW_TQ_ECUDA, "CUDA quantizer: device query failed", cudaGetErrorString(e));
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (fast_eligible(p)) {
    e = launch_fast(quant, p, a, sms, s);
  } else {
    const size_t smem = (quant ? 2u : 1u) * a.chunk * a.row_bytes;
    const void* fn = quant ? reinterpret_cast<const void*>(quantize_kernel) : reinterpret_cast<const void*>(dequantize_kernel);
    e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, smem);
    if (e != cudaSuccess) return fail(err, len, SW_TQ_ECUDA, "CUDA quantizer: device query failed", cudaGetErrorString(e));
    const uint64_t work = (uint64_t)n_blocks * a.groups;
    uint64_t grid = (uint64_t)sms * (per_sm > 0 ? per_sm : 1);
    if (grid > work) grid = work;
    if (quant) quantize_kernel<<<(unsigned)grid, kThreads, smem, s>>>(a);
    else dequantize_kernel<<<(unsigned)grid, kThreads, smem, s>>>(a);
    e = cudaGetLastError();
  }
  if (e != cudaSuccess)
    return fail(err, len, SW_TQ_ECUDA, quant ? "CUDA quantize launch failed" : "CUDA dequantize launch failed",
                cudaGetErrorString(e));
  return SW_TQ_OK;
}

}  // namespace

extern "C" int sw_tq_quantize_cuda(const sw_tq_params* p, const void* raw_base, size_t raw_stride,
                                   const uint32_t* raw_slots, void* q_base, size_t q_stride, const uint32_t* q_slots,
                                   uint32_t n_blocks, void* stream, char* err, size_t err_len) {
  return launch(true, p, raw_base, raw_stride, raw_slots, q_base, q_stride, q_slots, n_blocks, stream, err, err_len);
}

extern "C" int sw_tq_dequantize_cuda(const sw_tq_params* p, const void* q_base, size_t q_stride,
                                     const uint32_t* q_slots, void* raw_base, size_t raw_stride,
                                     const uint32_t* raw_slots, uint32_t n_blocks, void* stream, char* err,
                                     size_t err_len) {
  return launch(false, p, raw_base, raw_stride, raw_slots, const_cast<void*>(q_base), q_stride, q_slots, n_blocks,
                stream, err, err_len);
}
