// The tile code of the tensor-core rotation probe (mma_probe.cu): what one warp does to
// tiles of 8 vectors of head_dim 128 in bf16, both ways, written once for the GPU's warp and for an
// emulation of it on CPU threads (mma_warps.cuh). M = 128 H D2 H D1, two randomized Hadamard
// rounds as one int8 matrix (entries at most 48, the quantizer's sign diagonals), its rows and
// columns in the orders the MMA fragments want (a relabelling, below). The operands are
// 16-bit (kBytes 2: two MMAs a product) or 8-bit integers (kBytes 1: one MMA a product; what
// that costs in quality is docs/QUANTIZATION.md's "integer operands" table). Per vector:
// Quantize:
//  1. top = the largest magnitude; E = its exponent plus one. 16-bit: every value times
//     2^(15 - E), rounded to nearest even: integers q, |q| < 2^15. 8-bit: every value times
//     f = 127 / top, rounded: |q| <= 127. E below -112 codes as zero.
//  2. 16-bit: q = 256 hi + lo, hi = q >> 8 as int8, lo = the low byte as uint8. 8-bit: q as int8.
//  3. acc = M q, exact in int32: m16n8k32 MMAs, 256 (M hi) + M lo (s8 x s8 and s8 x u8) or M q.
//  4. nq = sqrt((float) sum q^2); the code of each coordinate (Coding): the number of the 7
//     positive boundaries beta_k of the dim-128 4-bit codebook below |acc| / (128 nq), counted
//     or found by binary search against integer thresholds t_k = floor(beta_k * (128 nq)) (no
//     conversion per value), or read off a polynomial whose crossings of 1, 2, ..., 7 are the
//     beta_k: m. Codes are offset binary, 8 + m for acc >= 0 and 7 - m below, the order of the
//     codebook's 16 centroids. Stored norm = nq * 2^(E - 15), or nq / f.
//     Codes are nibbles, coordinate j at nibble j of the vector's 64 bytes; norms fp32 apart.
// Dequantize: each code's centroid as a fixed-point integer (centroid * 2^s, rounded; s = 15
// for 16-bit, 9 for 8-bit, where the largest centroid is 123), split into bytes the same way,
// found in shared memory one code at a time or in registers four codes at a time (Lookup);
// acc = M^T c, exact; value = bf16((float)acc * norm * 2^-(7 + s)).
#pragma once
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "turboquant_format.h"

namespace mma_probe {

constexpr uint32_t kDim = 128;
constexpr uint32_t kTileVectors = 8;  // the MMA's n
constexpr uint32_t kCodeBytes = kDim / 2;
constexpr uint32_t kFrags = 8 * 4 * 32;  // A fragments: 8 m-tiles x 4 k-tiles x 32 lanes, 16 bytes each
constexpr int kMinExponent = -112;       // below: coded as zero (2^(15 - E) must be a normal float)
// Centroids as integers: centroid * 2^centroid_shift(kBytes), the largest power of two that
// keeps the largest centroid (0.2414 of a unit vector's norm) within the operand's range.
__host__ __device__ constexpr int centroid_shift(int bytes) { return bytes == 2 ? 15 : 9; }

// The orders that give each lane consecutive elements. Lane (g = lane / 4, c = lane % 4)
// feeds the B fragment of vector g with k = 32t + 16s + 4c + i (k-tile t, half s, byte i):
// element contiguous_k(k) = 32c + 8t + 4s + i of the vector, so each lane takes 32
// consecutive ones. The accumulator of m-tile mt holds rows 16mt + g + 8h (h = 0, 1) of
// vectors 2c and 2c + 1: elements contiguous_row(row) = 16g + 2mt + h, 16 consecutive ones
// per lane. Quantize's k are channels and its rows coordinates; dequantize's the reverse.
__host__ __device__ constexpr uint32_t contiguous_k(uint32_t k) {
  return 32 * ((k / 4) % 4) + 8 * (k / 32) + 4 * ((k / 16) % 2) + k % 4;
}
__host__ __device__ constexpr uint32_t contiguous_row(uint32_t r) {
  return 16 * (r % 8) + 2 * (r / 16) + (r / 8) % 2;
}

// Bit casts and roundings with the same results on both sides of the probe.
template <typename To, typename From> __host__ __device__ inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
  To out;
  memcpy(&out, &v, sizeof out);
  return out;
}
__host__ __device__ inline int round_to_int(float x) {
#ifdef __CUDA_ARCH__
  return __float2int_rn(x);
#else
  return static_cast<int>(std::nearbyint(x));
#endif
}
__host__ __device__ inline float to_float(unsigned long long x) {
#ifdef __CUDA_ARCH__
  return __ull2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}
__host__ __device__ inline float to_float(uint32_t x) {
#ifdef __CUDA_ARCH__
  return __uint2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}

// This lane's B fragments of a tile: 32 integers (its elements, in contiguous_k order) as
// bytes. 16-bit (|v| < 2^15): v = 256 hi + lo, hi = v >> 8 (int8), lo = v & 0xFF (uint8);
// 8-bit (|v| <= 127): hi = v (int8), no lo.
struct TileBytes {
  uint32_t hi[8], lo[8];
};
template <int kBytes> __host__ __device__ inline TileBytes split_bytes(const int (&v)[32]) {
  TileBytes b;
  for (int f = 0; f < 8; ++f) {
    b.hi[f] = b.lo[f] = 0;
    for (int i = 0; i < 4; ++i) {
      b.hi[f] |= static_cast<uint32_t>((kBytes == 2 ? v[4 * f + i] >> 8 : v[4 * f + i]) & 0xFF) << (8 * i);
      if (kBytes == 2) b.lo[f] |= static_cast<uint32_t>(v[4 * f + i] & 0xFF) << (8 * i);
    }
  }
  return b;
}

// Byte permute (prmt.b32 with selectors of 0-7): output byte i is byte (s >> 4i) & 7 of the
// eight bytes x (bytes 0-3) and y (bytes 4-7).
__host__ __device__ inline uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t s) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, s);
#else
  const uint64_t bytes = static_cast<uint64_t>(y) << 32 | x;
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) out |= static_cast<uint32_t>((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return out;
#endif
}

// Two bf16 (round to nearest even) in one word, the first in the low half.
__host__ __device__ inline uint32_t bf16_pair(float first, float second) {
#ifdef __CUDA_ARCH__
  return bit_cast<uint32_t>(__floats2bfloat162_rn(first, second));
#else
  return tq_f32_to_bf16(first) | static_cast<uint32_t>(tq_f32_to_bf16(second)) << 16;
#endif
}

// How a coordinate's code is found: by counting the thresholds below it, by a binary search
// over them, or from a polynomial (below).
enum class Coding { kCounting, kSearch, kPolynomial };

// The 4-bit dim-128 codebook as quantize uses it: its 7 positive inner boundaries, ascending,
// in unit-vector coordinates; and p(u) = u (c0 + u (c1 + u (c2 + u c3))), fitted so that
// p(beta_k) is close to k + 1 and rising over [0, 1] (mma_model.h): min(floor(p(u)), 7) is then
// the number of boundaries below u, but right next to them.
struct Codebook {
  float boundary[7];
  float poly[4];
};

// One vector's coder, made from its integer norm nq (acc = 128 nq u for the unit vector's
// coordinate u): code(acc) is acc's 4-bit code. By counting or binary search (the primary
// template) against integer thresholds; by the polynomial (its specialization, below).
template <Coding kCoding> struct VectorCoder {
  int t[7];  // floor(beta_k * 128 nq): |acc| > t_k exactly when |acc| > beta_k * 128 nq
  VectorCoder() = default;
  __host__ __device__ VectorCoder(const Codebook& book, float nq) {
    for (int k = 0; k < 7; ++k) t[k] = static_cast<int>(floorf(book.boundary[k] * (128.f * nq)));
  }
  __host__ __device__ uint32_t operator()(int acc) const {
    const int mag = acc < 0 ? -acc : acc;
    return (static_cast<uint32_t>(acc >> 31) ^ (magnitude(mag) + 8u)) & 15u;  // 8 + m, or its complement 7 - m below zero
  }
  __host__ __device__ uint32_t magnitude(int mag) const {
    if (kCoding == Coding::kCounting) {
      uint32_t n = 0;
      for (int k = 0; k < 7; ++k) n += mag > t[k] ? 1u : 0u;
      return n;
    }
    const bool four = mag > t[3];
    const bool two = mag > (four ? t[5] : t[1]);
    const int last = four ? (two ? t[6] : t[4]) : (two ? t[2] : t[0]);
    return (four ? 4u : 0u) + (two ? 2u : 0u) + (mag > last ? 1u : 0u);
  }
};

// The polynomial in acc's units: coefficient j times s^(j+1), s = 1 / (128 nq), so that no value
// is scaled. Taken as the odd function a (c0 + |a| (...)) of a = acc, plus 8, its floor is the
// offset-binary code itself: 8 + floor(p(|a|)) for a >= 0 and 7 - floor(p(|a|)) below (8 - p's
// floor, p not an integer), held to 0-15 by one min and the conversion's saturation at 0.
// Explicit fmaf on both sides: the GPU and the C++ model round alike.
template <> struct VectorCoder<Coding::kPolynomial> {
  float c[4];
  VectorCoder() = default;
  __host__ __device__ VectorCoder(const Codebook& book, float nq) {
    const float s = nq > 0.f ? 1.f / (128.f * nq) : 0.f;  // a vector coded as zero: acc = 0, code 8
    float power = s;
    for (int j = 0; j < 4; ++j, power *= s) c[j] = book.poly[j] * power;
  }
  __host__ __device__ uint32_t operator()(int acc) const {
    // acc as a float is rounded alike on both sides (exact below 2^24: 8-bit operands)
    const float a = static_cast<float>(acc), m = fabsf(a);
    const float p = fminf(fmaf(a, fmaf(m, fmaf(m, fmaf(m, c[3], c[2]), c[1]), c[0]), 8.f), 15.5f);
#ifdef __CUDA_ARCH__
    return __float2uint_rd(p);
#else
    return p < 0.f ? 0u : static_cast<uint32_t>(std::floor(p));
#endif
  }
};

// This lane's A fragments of m-tile mt of M (4 k-tiles, 16 registers): loaded once and applied
// to every tile a warp holds, so that the matrix is read once per kTiles tiles.
using MtileFragments = uint32_t[4][4];
__host__ __device__ inline void load_mtile(const uint4* a_frags, uint32_t lane, int mt, MtileFragments& a) {
  for (int t = 0; t < 4; ++t) {
    const uint4 f = a_frags[(mt * 4 + t) * 32 + lane];
    a[t][0] = f.x, a[t][1] = f.y, a[t][2] = f.z, a[t][3] = f.w;
  }
}

// One m-tile of M times a tile's 8 vectors, exact: 256 (A hi) + A lo, or A hi alone for 8-bit operands.
#pragma nv_exec_check_disable
template <int kBytes, typename W>
__host__ __device__ inline void product_mtile(W& warp, const MtileFragments& a, const TileBytes& b, int (&acc)[4]) {
  for (int r = 0; r < 4; ++r) acc[r] = 0;
  for (int t = 0; t < 4; ++t) warp.template mma<false>(acc, a[t], b.hi[2 * t], b.hi[2 * t + 1]);
  if constexpr (kBytes == 2) {
    for (int r = 0; r < 4; ++r) acc[r] *= 256;
    for (int t = 0; t < 4; ++t) warp.template mma<true>(acc, a[t], b.lo[2 * t], b.lo[2 * t + 1]);
  }
}

// M times each of kTiles tiles, m-tile by m-tile, each m-tile of M loaded once for all of
// them: use(mt, i, acc) takes tile i's accumulators of m-tile mt.
#pragma nv_exec_check_disable
template <int kBytes, int kTiles, typename W, typename Use>
__host__ __device__ inline void products(W& warp, const uint4* a_frags, uint32_t lane, const TileBytes (&b)[kTiles], Use&& use) {
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) {
    MtileFragments a;
    load_mtile(a_frags, lane, mt, a);
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      int acc[4];
      product_mtile<kBytes>(warp, a, b[i], acc);
      use(mt, i, acc);
    }
  }
}

// The tile code below runs on one side per instantiation: the GPU's warp (DeviceWarp) on the
// device, an emulation of its collectives on CPU threads (EmulatedWarp) on the host, which
// checks these lane orders against the model without a GPU.

// This lane's input of a tile: vector g's channels 32c .. 32c + 31.
struct TileInput {
  uint4 words[4];
};
__host__ __device__ inline TileInput load_input(const uint16_t* raw, uint32_t lane) {
  TileInput in;
  for (int w = 0; w < 4; ++w) in.words[w] = reinterpret_cast<const uint4*>(raw + (lane / 4) * kDim + 32 * (lane % 4))[w];
  return in;
}
template <int kTiles> __host__ __device__ inline void load_inputs(const uint16_t* raw, uint32_t lane, TileInput (&in)[kTiles]) {
  for (int i = 0; i < kTiles; ++i) in[i] = load_input(raw + i * kTileVectors * kDim, lane);
}

// This lane's part of a tile in fixed point (steps 1-2 of quantize): the B fragments of its
// 32 values' bytes, and its vector's exponent and integer norm.
struct FixedPoint {
  TileBytes bytes;
  bool zero;   // coded as zero: q = 0
  float nq;    // sqrt((float) sum q^2) over the whole vector
  float norm;  // the norm stored: nq in the input's units
};

#pragma nv_exec_check_disable
template <int kBytes, typename W> __host__ __device__ FixedPoint to_fixed_point(W& warp, const TileInput& in) {
  const uint32_t* pairs = reinterpret_cast<const uint32_t*>(in.words);
  float x[32];
  float top = 0.f;
  for (int i = 0; i < 16; ++i) {
    x[2 * i] = bit_cast<float>(pairs[i] << 16);
    x[2 * i + 1] = bit_cast<float>(pairs[i] & 0xFFFF0000u);
    top = fmaxf(top, fmaxf(fabsf(x[2 * i]), fabsf(x[2 * i + 1])));
  }
  top = fmaxf(top, warp.shfl_xor(top, 1));
  top = fmaxf(top, warp.shfl_xor(top, 2));
  FixedPoint fp;
  // ilogb + 1 for normal floats; subnormal and zero tops fall below kMinExponent.
  const int e = top == 0.f ? -127 : static_cast<int>((bit_cast<uint32_t>(top) >> 23) & 0xFF) - 126;
  fp.zero = e < kMinExponent;
  // 8-bit: |x| f <= 127 (1 + 2^-23) for every x, so the rounded values stay within int8.
  const float factor = fp.zero ? 0.f : kBytes == 2 ? bit_cast<float>(static_cast<uint32_t>(127 + 15 - e) << 23) : 127.f / top;
  int q[32];
  // 8-bit: the whole vector's sum is at most 128 x 127^2, which 32 bits hold (and a float exactly).
  using Sum = std::conditional_t<kBytes == 1, uint32_t, unsigned long long>;
  Sum sum2 = 0;
  for (int i = 0; i < 32; ++i) {
    q[i] = round_to_int(x[i] * factor);
    sum2 += static_cast<Sum>(q[i] * q[i]);
  }
  fp.bytes = split_bytes<kBytes>(q);
  sum2 += warp.shfl_xor(sum2, 1);
  sum2 += warp.shfl_xor(sum2, 2);
  fp.nq = sqrtf(to_float(sum2));
  fp.norm = fp.zero ? 0.f : kBytes == 2 ? ldexpf(fp.nq, e - 15) : fp.nq / factor;
  return fp;
}

// Quantizes kTiles consecutive tiles of 8 vectors, as lane `lane` of the warp.
//   raw: the tiles' 8 kTiles x 128 bf16; a_frags: M's A fragments; codes: 64 bytes a vector;
//   norms: one a vector; book: the codebook.
#pragma nv_exec_check_disable
template <int kBytes, Coding kCoding, int kTiles, typename W>
__host__ __device__ void quantize_tiles(W& warp, uint32_t lane, const uint16_t* raw, const uint4* a_frags, uint8_t* codes, float* norms,
                                        const Codebook& book) {
  const uint32_t g = lane / 4, c = lane % 4;
  TileInput in[kTiles];
  load_inputs(raw, lane, in);
  FixedPoint fp[kTiles];
  TileBytes bytes[kTiles];
  // The coders of the two vectors this lane codes in each tile, 2c and 2c + 1: lanes 8c and
  // 8c + 4 hold their nq. A vector coded as zero has q = 0, so nq = 0, acc = 0 and every code 8.
  struct TileCoders {
    VectorCoder<kCoding> of[2];
  };
  TileCoders coder[kTiles];
  #pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    fp[i] = to_fixed_point<kBytes>(warp, in[i]);
    bytes[i] = fp[i].bytes;
    if (c == 0) norms[i * kTileVectors + g] = fp[i].norm;
    coder[i] = {{VectorCoder<kCoding>(book, warp.shfl(fp[i].nq, 8 * c)), VectorCoder<kCoding>(book, warp.shfl(fp[i].nq, 8 * c + 4))}};
  }
  uint32_t nibbles[kTiles][2][2] = {};  // [tile][vector][m-tiles 0-3, 4-7]
  products<kBytes>(warp, a_frags, lane, bytes, [&](int mt, int i, const int (&acc)[4]) {
    // acc[0], acc[1]: row g of vectors 2c, 2c + 1; acc[2], acc[3]: row g + 8.
    for (int r = 0; r < 4; ++r) {
      const int v = r % 2, h = r / 2;
      nibbles[i][v][mt / 4] |= coder[i].of[v](acc[r]) << (4 * (2 * (mt % 4) + h));  // coordinate 16g + 2mt + h
    }
  });
  #pragma unroll
  for (int i = 0; i < kTiles; ++i)
    for (int v = 0; v < 2; ++v)
      reinterpret_cast<uint2*>(codes + (i * kTileVectors + 2 * c + v) * kCodeBytes)[g] = make_uint2(nibbles[i][v][0], nibbles[i][v][1]);
}

// Where dequantize finds a code's centroid: kShared, the 16 integers in shared memory, one load
// a code; kRegisters, byte tables in registers, four codes a lookup by byte permutes.
enum class Lookup { kShared, kRegisters };

// The centroids as byte tables: [half][word] holds codes 8 half + 4 word .. + 3, a byte each
// (half 0 the values below zero, 1 the rest); hi their high bytes (8-bit: their only bytes), lo
// their low bytes.
struct CentroidTable {
  uint32_t hi[2][2], lo[2][2];
};

// What dequantize_tiles looks centroids up in: centroid (the 16 codes' centroids as integers,
// centroid * 2^centroid_shift(kBytes), in code order: codes 0-7 negative) itself, or its byte tables.
template <int kBytes, Lookup kLookup> __host__ __device__ inline auto centroid_source(const int* centroid) {
  if constexpr (kLookup == Lookup::kShared) {
    return centroid;
  } else {
    CentroidTable t{};
    for (int half = 0; half < 2; ++half)
      for (int m = 0; m < 8; ++m) {
        const int v = centroid[8 * half + m];
        t.hi[half][m / 4] |= static_cast<uint32_t>((kBytes == 2 ? v >> 8 : v) & 0xFF) << (8 * (m % 4));
        if (kBytes == 2) t.lo[half][m / 4] |= static_cast<uint32_t>(v & 0xFF) << (8 * (m % 4));
      }
    return t;
  }
}

// This lane's B fragments of a tile's codes (nib: coordinates 32c .. 32c + 31 of vector g, a
// nibble each): the centroid of each code, loaded one at a time...
template <int kBytes> __host__ __device__ inline TileBytes centroid_bytes(const uint32_t (&nib)[4], const int* centroid) {
  int value[32];
  for (int j = 0; j < 32; ++j) value[j] = centroid[(nib[j / 8] >> (4 * (j % 8))) & 0xF];
  return split_bytes<kBytes>(value);
}

// ... or four at a time: fragment register f takes codes 4f .. 4f + 3, one 16-bit run of
// nibbles; each code's low 3 bits pick a byte of each half's table, and its top bit which of
// the two.
__host__ __device__ inline uint32_t lookup4(const uint32_t (&table)[2][2], uint32_t magnitudes, uint32_t pick) {
  return byte_perm(byte_perm(table[0][0], table[0][1], magnitudes), byte_perm(table[1][0], table[1][1], magnitudes), pick);
}
template <int kBytes> __host__ __device__ inline TileBytes centroid_bytes(const uint32_t (&nib)[4], const CentroidTable& t) {
  TileBytes b;
  for (int f = 0; f < 8; ++f) {
    const uint32_t run = nib[f / 2] >> (16 * (f % 2));
    const uint32_t magnitudes = run & 0x7777u, pick = ((run >> 1) & 0x4444u) | 0x3210u;
    b.hi[f] = lookup4(t.hi, magnitudes, pick);
    b.lo[f] = kBytes == 2 ? lookup4(t.lo, magnitudes, pick) : 0;
  }
  return b;
}

// Dequantizes kTiles consecutive tiles of 8 vectors, as lane `lane` of the warp.
//   codes, norms: as quantize_tiles writes them; a_frags: M^T's A fragments; raw: 128 bf16 a
//   vector; centroids: from centroid_source.
#pragma nv_exec_check_disable
template <int kBytes, int kTiles, typename W, typename Centroids>
__host__ __device__ void dequantize_tiles(W& warp, uint32_t lane, const uint8_t* codes, const float* norms, const uint4* a_frags,
                                          uint16_t* raw, const Centroids& centroids) {
  const uint32_t g = lane / 4, c = lane % 4;
  TileBytes bytes[kTiles];
  float scale[kTiles][2];
  #pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    // coordinates 32c .. 32c + 31 of vector g
    const uint4 packed = reinterpret_cast<const uint4*>(codes + (i * kTileVectors + g) * kCodeBytes)[c];
    const uint32_t nib[4] = {packed.x, packed.y, packed.z, packed.w};
    bytes[i] = centroid_bytes<kBytes>(nib, centroids);
    for (int v = 0; v < 2; ++v) scale[i][v] = ldexpf(norms[i * kTileVectors + 2 * c + v], -7 - centroid_shift(kBytes));
  }
  uint32_t out[kTiles][2][8];  // [tile][vector][m-tile]: channels 16g + 2mt and 16g + 2mt + 1
  products<kBytes>(warp, a_frags, lane, bytes, [&](int mt, int i, const int (&acc)[4]) {
    for (int v = 0; v < 2; ++v)
      out[i][v][mt] = bf16_pair(static_cast<float>(acc[v]) * scale[i][v], static_cast<float>(acc[v + 2]) * scale[i][v]);
  });
  #pragma unroll
  for (int i = 0; i < kTiles; ++i)
    for (int v = 0; v < 2; ++v) {
      uint4* dst = reinterpret_cast<uint4*>(raw + (i * kTileVectors + 2 * c + v) * kDim + 16 * g);
      dst[0] = make_uint4(out[i][v][0], out[i][v][1], out[i][v][2], out[i][v][3]);
      dst[1] = make_uint4(out[i][v][4], out[i][v][5], out[i][v][6], out[i][v][7]);
    }
}

}  // namespace mma_probe
