// The head_dim-128 kernels (bf16/fp16, at most 32 tokens per block, format 2) as templates
// over the rate: turboquant_mse.cu instantiates those without QJL, turboquant_prod.cu those
// with. Included by those two files only.
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
#ifndef SPILLWAY_TQ_FAST_KERNELS_CUH
#define SPILLWAY_TQ_FAST_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <utility>

#include "tq_cuda_params.h"
#include "tq_device.cuh"

namespace tq_cuda {

// What one kernel of the family is compiled for, and what follows from it. MSE: the MSE bits of
// the vector at integer rates, of the narrower half at fractional ones (the other half has one
// bit more); QJL: a 1-bit sketch of the residual after them.
// Whether the family codes a rate: at most 4 bits a value (the wider half's at fractional
// rates), at least 1 (the narrower half's).
constexpr bool fast_rate(bool frac, int mse, bool qjl) { return mse >= 0 && mse + qjl >= 1 && mse + qjl + frac <= 4; }

template <int DT, bool FRAC, int MSE, bool QJL> struct FastTraits {
  static constexpr bool kValid = fast_rate(FRAC, MSE, QJL);
  static_assert(DT == SW_DTYPE_BF16 || DT == SW_DTYPE_FP16, "the head_dim-128 kernels take 2-byte values");
  static_assert(kValid, "a rate of 1 to 4 bits a value, at least 1 for the narrower half");
  static_assert(kFastD == 2 * kLaneD && kFastThreads == 32 * kFastWarps, "two lanes (or halves) of 64 values per row");
  static constexpr int kWideMse = FRAC ? MSE + 1 : MSE;  // MSE bits of the wider half (the code path)
  // With the 4-bit code (3.5 bits a value) the fractional quantize path, with the per-group work
  // before it, outgrows the instruction cache (a quarter of stalls waiting for instructions):
  // its coding loop is then rolled, which costs a move per two values and gained 0.41 -> 0.45
  // of the copy; at 2.5 bits it lost (0.54 -> 0.52), so there it stays unrolled.
  static constexpr bool kRollFrac = FRAC && !QJL && kWideMse == 4;
  // Fractional dequantize scatters 2-byte values of 32 rows to one channel: with rows 264 bytes
  // apart (66 words) the 16 rows of a group fall in 16 banks, where 272 puts every eighth row
  // in one; the rows then go out in 8-byte pieces. Measured: 3.5- and 2.5-bit mse dequantize
  // 0.65 -> 0.68 and 0.64 -> 0.66 of the copy; with QJL it lost (3.5 bits 0.55 -> 0.53).
  static constexpr bool kNarrowRows = FRAC && !QJL;
  static constexpr uint32_t kDequantRow = kNarrowRows ? kFastD * 2 + 8 : kFastRow;
  static_assert(kDequantRow % 8 == 0 && kFastRow % 16 == 0, "staged rows hold whole pieces");
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
// (bit 31); with FINITE a non-finite value is taken as +0 first (the reference's load_finite).
// For bf16 the mask is added to the shifted bits: a carry out of bit 31 is lost, so the sum is
// the XOR in one instruction.
template <bool FINITE> __device__ __forceinline__ uint32_t bf16_bits(uint32_t b) {
  return FINITE && (b & 0x7F800000u) == 0x7F800000u ? 0u : b;
}
template <int DT, bool FINITE = false> __device__ __forceinline__ float lo_signed(uint32_t w, uint32_t m) {
  if (DT == SW_DTYPE_BF16) return __uint_as_float(bf16_bits<FINITE>(w << 16) + m);
  const float v = __half2float(__ushort_as_half((unsigned short)(w & 0xFFFFu)));
  return flip(FINITE ? finite_or_zero(v) : v, m);
}
template <int DT, bool FINITE = false> __device__ __forceinline__ float hi_signed(uint32_t w, uint32_t m) {
  if (DT == SW_DTYPE_BF16) return __uint_as_float(bf16_bits<FINITE>(w & 0xFFFF0000u) ^ m);
  const float v = __half2float(__ushort_as_half((unsigned short)(w >> 16)));
  return flip(FINITE ? finite_or_zero(v) : v, m);
}

// Whether the warp's rows must be read again with their non-finite values taken as 0: a norm
// that is not finite in any lane (a NaN or infinite value, or a square past float's range,
// where reading again changes nothing). All 32 lanes must be here.
__device__ __forceinline__ bool read_again(float norm) { return __any_sync(0xFFFFFFFFu, !(fabsf(norm) <= 3.402823466e38f)); }

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
  // Non-finite values are taken as 0 (the reference's load_finite). Whole rows (SPLIT, every
  // lane here) are read as they are and read again only where the warp finds a norm that is not
  // finite, so the common read checks no value; a fractional rate's gathered halves (not SPLIT)
  // check each value as they are read, as reading them twice cost more than that (on an H100 the
  // 3.5-bit quantize ran at 0.14 of a copy against 0.27).
  load(x, std::bool_constant<!SPLIT>{});
  constexpr int kMag = MSE ? 1 << (MSE - 1) : 1;
  constexpr int kNB = MSE > 1 ? MSE - 1 : 0;  // magnitude bits
  constexpr int kThr = kMag - 1;              // positive boundaries
  float norm = norm64<SPLIT>(x);
  if constexpr (SPLIT) {
    if (read_again(norm)) {
      load(x, std::true_type{});
      norm = norm64<SPLIT>(x);
    }
  }
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
  static_assert(sizeof(FastTraits<DT, FRAC, MSE, QJL>) > 0, "the rate's traits hold");
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
            const float lo = lo_signed<DT, true>(w, 0u), hi = hi_signed<DT, true>(w, 0u);
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
            [&](float* x, auto finite) {
              constexpr bool kFinite = decltype(finite)::value;
#pragma unroll
              for (int c = 0; c < kLaneD / 8; ++c) {
                const uint4 d = load16(src + 16 * c), m0 = load16(rm + 8 * c), m1 = load16(rm + 8 * c + 4);
                x[8 * c] = lo_signed<DT, kFinite>(d.x, m0.x), x[8 * c + 1] = hi_signed<DT, kFinite>(d.x, m0.y);
                x[8 * c + 2] = lo_signed<DT, kFinite>(d.y, m0.z), x[8 * c + 3] = hi_signed<DT, kFinite>(d.y, m0.w);
                x[8 * c + 4] = lo_signed<DT, kFinite>(d.z, m1.x), x[8 * c + 5] = hi_signed<DT, kFinite>(d.z, m1.y);
                x[8 * c + 6] = lo_signed<DT, kFinite>(d.w, m1.z), x[8 * c + 7] = hi_signed<DT, kFinite>(d.w, m1.w);
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
      // list order, four list bytes at a time, the half's rotation signs applied (rolled or
      // not: FastTraits::kRollFrac)
#pragma unroll 1
      for (uint32_t s = 0; s < 2; ++s) {
        const uint8_t* chs = ch + kLaneD * s;
        const uint32_t* rm = sh.rot[0][s];
        quant64<MSE + 1, QJL, false, FastTraits<DT, FRAC, MSE, QJL>::kRollFrac>(
            k.sub[0], fa.book[s],
            [&](float* x, auto finite) {
              constexpr bool kFinite = decltype(finite)::value;
#pragma unroll
              for (int c = 0; c < kLaneD / 4; ++c) {
                const uint32_t cw = *reinterpret_cast<const uint32_t*>(chs + 4 * c);
                const uint4 m = load16(rm + 4 * c);
                const uint32_t mm[4] = {m.x, m.y, m.z, m.w};
#pragma unroll
                for (int j = 0; j < 4; ++j)
                  x[4 * c + j] = lo_signed<DT, kFinite>(
                      *reinterpret_cast<const uint16_t*>(row + 2 * ((cw >> (8 * j)) & 0xFFu)), mm[j]);
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
  using Traits = FastTraits<DT, FRAC, MSE, QJL>;
  constexpr uint32_t kRow = Traits::kDequantRow;
  using Piece = typename std::conditional<Traits::kNarrowRows, uint2, uint4>::type;
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

// The quantize or dequantize kernel of (DT, FRAC, MSE, QJL) where that is a rate, else null.
template <int DT, bool FRAC, int MSE, bool QJL> const void* fast_kernel_at(bool quant) {
  if constexpr (fast_rate(FRAC, MSE, QJL))
    return quant ? reinterpret_cast<const void*>(quantize_fast<DT, FRAC, MSE, QJL>)
                 : reinterpret_cast<const void*>(dequantize_fast<DT, FRAC, MSE, QJL>);
  return nullptr;
}

// Every rate of one dtype, indexed by 5 * frac + mse bits.
template <int DT, bool QJL, int... M> const void* fast_kernel_in(bool quant, uint32_t index, std::integer_sequence<int, M...>) {
  const void* table[] = {fast_kernel_at<DT, false, M, QJL>(quant)..., fast_kernel_at<DT, true, M, QJL>(quant)...};
  return index < sizeof table / sizeof table[0] ? table[index] : nullptr;
}

// The kernel of one rate of the family with or without QJL (dtype bf16 or fp16), or null
// where the rate is not one: taking the kernels' addresses instantiates them, so each family
// file that calls this (turboquant_mse.cu, turboquant_prod.cu) holds its family's kernels.
template <bool QJL> const void* fast_kernel_of(uint32_t dtype, bool quant, bool frac, uint32_t mse_bits) {
  const uint32_t index = (frac ? 5u : 0u) + mse_bits;
  const auto rates = std::make_integer_sequence<int, 5>{};
  if (dtype == SW_DTYPE_BF16) return fast_kernel_in<SW_DTYPE_BF16, QJL>(quant, index, rates);
  if (dtype == SW_DTYPE_FP16) return fast_kernel_in<SW_DTYPE_FP16, QJL>(quant, index, rates);
  return nullptr;
}

}  // namespace tq_cuda

#endif
