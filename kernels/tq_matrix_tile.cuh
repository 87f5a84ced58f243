// Format 3's matrix kinds on the tensor cores (tq_matrix.h says what is computed): what one warp
// does to tiles of 8 vectors of head_dim 128, both ways. Written once for the GPU's warp
// (DeviceWarp) and, through the same templates, for an emulation of a warp on CPU threads that
// checks the lane orders without a GPU (bench/quant/mma_warps.cuh). The rotation probe
// (bench/quant/mma_probe.cu) runs this code with other codings and 16-bit operands beside it.
//
// M's rows and columns are put in the orders the MMA fragments hold them (contiguous_k,
// contiguous_row), so that each lane loads 32 consecutive channels of one vector and codes 16
// consecutive coordinates of two: a relabelling that changes no product.
// Operands are 8-bit (kBytes 1: one m16n8k32 s8 MMA a product) or, for the probe, 16-bit
// integers split into a signed high and an unsigned low byte (kBytes 2: two).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "tq_matrix.h"

namespace tq_matrix {

constexpr uint32_t kFrags = 8 * 4 * 32;  // A fragments: 8 m-tiles x 4 k-tiles x 32 lanes, 16 bytes each
// Centroids as integers: centroid * 2^centroid_shift(kBytes), the largest power of two that
// keeps the largest centroid (0.2414 of a unit vector's norm) within the operand's range.
__host__ __device__ constexpr int centroid_shift(int bytes) { return bytes == 2 ? 15 : kCentroidShift; }

// Lane (g = lane / 4, c = lane % 4) feeds the B fragment of vector g with k = 32t + 16s + 4c + i
// (k-tile t, half s, byte i): element contiguous_k(k) = 32c + 8t + 4s + i, so each lane takes 32
// consecutive ones. The accumulator of m-tile mt holds rows 16mt + g + 8h (h = 0, 1) of vectors
// 2c and 2c + 1: elements contiguous_row(row) = 16g + 2mt + h, 16 consecutive ones per lane.
// Quantize's k are channels and its rows coordinates; dequantize's the reverse.
__host__ __device__ constexpr uint32_t contiguous_k(uint32_t k) {
  return 32 * ((k / 4) % 4) + 8 * (k / 32) + 4 * ((k / 16) % 2) + k % 4;
}
__host__ __device__ constexpr uint32_t contiguous_row(uint32_t r) {
  return 16 * (r % 8) + 2 * (r / 16) + (r / 8) % 2;
}

template <typename To, typename From> __host__ __device__ inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
  To out;
  memcpy(&out, &v, sizeof out);
  return out;
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

// The largest of 32 magnitudes, NaNs passed over (fmaxf's): the reference's top.
__host__ __device__ inline float largest_magnitude(const float (&x)[32]) {
  float top = 0.f;
  for (int i = 0; i < 32; ++i) top = fmaxf(top, fabsf(x[i]));
  return top;
}
// The larger of a and b, NaN where either is.
__host__ __device__ inline float max_or_nan(float a, float b) {
#ifdef __CUDA_ARCH__
  float d;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
  return d;
#else
  return a != a || b != b ? NAN : fmaxf(a, b);
#endif
}
// The largest of 32 magnitudes, or NaN where any value is NaN: quantize's fast rounding holds
// for finite products only, and where a value is NaN the top is taken again, passing over it.
__host__ __device__ inline float largest_magnitude_or_nan(const float (&x)[32]) {
  float top = 0.f;
  for (int i = 0; i < 32; ++i) top = max_or_nan(top, fabsf(x[i]));
  return top;
}
// The same of 16-bit elements, two at a time on the GPU (every 16-bit float is a float exactly).
template <typename Two> __host__ __device__ inline float largest_magnitude_or_nan_pairs(const uint32_t* words, const float (&x)[32]) {
#ifdef __CUDA_ARCH__
  Two top = bit_cast<Two>(0u);
  for (int w = 0; w < 16; ++w) top = __hmax2_nan(top, __habs2(bit_cast<Two>(words[w])));
  return max_or_nan(__low2float(top), __high2float(top));
#else
  return largest_magnitude_or_nan(x);
#endif
}

// The block's element types: how 32 of them are read into floats (and their largest
// magnitude), and how two floats are written back (round to nearest even, as the C++
// reference's conversions).
template <uint32_t DT> struct Element;
template <> struct Element<SW_DTYPE_BF16> {
  using Pair = uint32_t;
  static constexpr uint32_t kBytes = 2;
  __host__ __device__ static float at(const uint32_t* words, int i) {
    return bit_cast<float>(i % 2 ? words[i / 2] & 0xFFFF0000u : words[i / 2] << 16);
  }
  __host__ __device__ static float top_or_nan(const uint32_t* words, const float (&x)[32]) { return largest_magnitude_or_nan_pairs<__nv_bfloat162>(words, x); }
  __host__ __device__ static Pair pair(float first, float second) {
#ifdef __CUDA_ARCH__
    return bit_cast<uint32_t>(__floats2bfloat162_rn(first, second));
#else
    return tq_f32_to_bf16(first) | static_cast<uint32_t>(tq_f32_to_bf16(second)) << 16;
#endif
  }
};
template <> struct Element<SW_DTYPE_FP16> {
  using Pair = uint32_t;
  static constexpr uint32_t kBytes = 2;
  __host__ __device__ static float at(const uint32_t* words, int i) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(words[i / 2] >> (16 * (i % 2)))));
  }
  __host__ __device__ static float top_or_nan(const uint32_t* words, const float (&x)[32]) { return largest_magnitude_or_nan_pairs<__half2>(words, x); }
  __host__ __device__ static Pair pair(float first, float second) { return bit_cast<uint32_t>(__floats2half2_rn(first, second)); }
};
template <> struct Element<SW_DTYPE_FP32> {
  using Pair = uint2;
  static constexpr uint32_t kBytes = 4;
  __host__ __device__ static float at(const uint32_t* words, int i) { return bit_cast<float>(words[i]); }
  __host__ __device__ static float top_or_nan(const uint32_t*, const float (&x)[32]) { return largest_magnitude_or_nan(x); }
  __host__ __device__ static Pair pair(float first, float second) { return make_uint2(bit_cast<uint32_t>(first), bit_cast<uint32_t>(second)); }
};

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

// The sum of the products of a's and b's four signed bytes, plus c (dp4a): exact in 32 bits.
__host__ __device__ inline int dot4_s8(uint32_t a, uint32_t b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
#else
  for (int i = 0; i < 4; ++i) c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
#endif
}

// Two codes clamped to 0..15 and packed under the earlier ones: below << 8 | high << 4 | low
// (cvt.pack.sat.u4: the clamp and the pack in one instruction).
__host__ __device__ inline uint32_t pack_codes(int high, int low, uint32_t below) {
#ifdef __CUDA_ARCH__
  uint32_t d;
  asm("cvt.pack.sat.u4.s32.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(high), "r"(low), "r"(below));
  return d;
#else
  const auto clamp = [](int v) { return static_cast<uint32_t>(v < 0 ? 0 : v > 15 ? 15 : v); };
  return below << 8 | clamp(high) << 4 | clamp(low);
#endif
}

// This lane's B fragments of a tile: 32 integers (its elements, in contiguous_k order) as
// bytes. 16-bit (|v| < 2^15): v = 256 hi + lo, hi = v >> 8 (int8), lo = v & 0xFF (uint8);
// 8-bit (|v| <= 127): hi = v (int8), no lo, four values packed by three byte permutes.
struct TileBytes {
  uint32_t hi[8], lo[8];
};
template <int kBytes> __host__ __device__ inline TileBytes split_bytes(const int (&v)[32]) {
  TileBytes b;
  for (int f = 0; f < 8; ++f) {
    const int* w = v + 4 * f;
    b.hi[f] = b.lo[f] = 0;
    if constexpr (kBytes == 1) {
      b.hi[f] = byte_perm(byte_perm(w[0], w[1], 0x0040u), byte_perm(w[2], w[3], 0x0040u), 0x5410u);
    } else {
      for (int i = 0; i < 4; ++i) {
        b.hi[f] |= static_cast<uint32_t>((w[i] >> 8) & 0xFF) << (8 * i);
        b.lo[f] |= static_cast<uint32_t>(w[i] & 0xFF) << (8 * i);
      }
    }
  }
  return b;
}

// This lane's A fragments of m-tile mt of M (4 k-tiles, 16 registers): loaded once and applied
// to every tile a warp holds, so that the matrix is read once per kTiles tiles.
using MtileFragments = uint32_t[4][4];
__host__ __device__ inline void load_mtile(const uint4* a_frags, uint32_t lane, int mt, MtileFragments& a) {
  for (int t = 0; t < 4; ++t) {
    const uint4 f = a_frags[(mt * 4 + t) * 32 + lane];
    a[t][0] = f.x, a[t][1] = f.y, a[t][2] = f.z, a[t][3] = f.w;
  }
}

// A fragments of m16n8k32 (row-major A) of a 128 x 128 int8 matrix given in MMA order by
// entry(row, k): register 0 row g, bytes k = 4c..4c+3; register 1 row g + 8; registers 2 and 3
// the same at k + 16. Four words a lane and fragment, kFrags fragments.
template <typename Entry> std::vector<uint32_t> a_fragments(Entry entry) {
  std::vector<uint32_t> f(kFrags * 4);
  for (uint32_t mt = 0; mt < 8; ++mt)
    for (uint32_t t = 0; t < 4; ++t)
      for (uint32_t lane = 0; lane < 32; ++lane)
        for (uint32_t reg = 0; reg < 4; ++reg) {
          const uint32_t row = 16 * mt + lane / 4 + 8 * (reg % 2), k0 = 32 * t + 16 * (reg / 2) + 4 * (lane % 4);
          uint32_t word = 0;
          for (uint32_t i = 0; i < 4; ++i) word |= static_cast<uint32_t>(entry(row, k0 + i) & 0xFF) << (8 * i);
          f[((mt * 4 + t) * 32 + lane) * 4 + reg] = word;
        }
  return f;
}

// The A fragments of a plan's M (quantize) or M^T (dequantize), rows and columns in MMA order.
inline std::vector<uint32_t> plan_fragments(const Plan& plan, bool inverse) {
  return a_fragments([&](uint32_t r, uint32_t k) {
    const uint32_t row = contiguous_row(r), col = contiguous_k(k);
    return static_cast<int>(inverse ? plan.matrix[col][row] : plan.matrix[row][col]);
  });
}

// The warp's collectives on the GPU: shuffles and int8 mma.sync.
struct DeviceWarp {
  template <typename T> __device__ T shfl_xor(T v, int mask) { return __shfl_xor_sync(0xFFFFFFFFu, v, mask); }
  template <typename T> __device__ T shfl(T v, int src) { return __shfl_sync(0xFFFFFFFFu, v, src); }
  // d += A B: A int8 (uint8 where kUnsignedA), B int8 (uint8 where kUnsignedB), not both unsigned.
  template <bool kUnsignedB, bool kUnsignedA = false> __device__ void mma(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    static_assert(!(kUnsignedA && kUnsignedB), "one operand unsigned at most");
    if (kUnsignedB)
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else if (kUnsignedA)
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

// An 8-bit product as a float by an addition instead of a conversion (I2FP in sm_90's SASS): its
// accumulators start at the bits of 1.5 * 2^23, so that they end as the bits of the float
// 1.5 * 2^23 + acc (|acc| <= 128 * 128 * 127 < 2^22), exactly, and one subtraction leaves acc.
// Dequantize takes its products so (1 % faster on an H100, docs/QUANTIZATION.md). Quantize's
// start at 0: with the bias its kernel spilled at its register cap and ran slower; so do 16-bit
// products (the probe's), scaled by 256 between their two MMAs.
constexpr int kBiasedZero = 0x4B400000;
template <bool kBiased> __host__ __device__ inline float product_float(int acc) {
  return kBiased ? bit_cast<float>(acc) - 12582912.f : static_cast<float>(acc);
}

// One m-tile of M times a tile's 8 vectors, exact: 256 (A hi) + A lo, or A hi alone for 8-bit
// operands; kBiased: from kBiasedZero.
#pragma nv_exec_check_disable
template <int kBytes, bool kBiased, typename W>
__host__ __device__ inline void product_mtile(W& warp, const MtileFragments& a, const TileBytes& b, int (&acc)[4]) {
  static_assert(!kBiased || kBytes == 1, "16-bit products are scaled between their MMAs");
  for (int r = 0; r < 4; ++r) acc[r] = kBiased ? kBiasedZero : 0;
  for (int t = 0; t < 4; ++t) warp.template mma<false>(acc, a[t], b.hi[2 * t], b.hi[2 * t + 1]);
  if constexpr (kBytes == 2) {
    for (int r = 0; r < 4; ++r) acc[r] *= 256;
    for (int t = 0; t < 4; ++t) warp.template mma<true>(acc, a[t], b.lo[2 * t], b.lo[2 * t + 1]);
  }
}

// M times each of kTiles tiles, m-tile by m-tile, each m-tile of M loaded once for all of
// them: use(mt, i, acc) takes tile i's accumulators of m-tile mt (from kBiasedZero where kBiased).
#pragma nv_exec_check_disable
template <int kBytes, int kTiles, bool kBiased = false, typename W, typename Use>
__host__ __device__ inline void products(W& warp, const uint4* a_frags, uint32_t lane, const TileBytes (&b)[kTiles], Use&& use) {
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) {
    MtileFragments a;
    load_mtile(a_frags, lane, mt, a);
#pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      int acc[4];
      product_mtile<kBytes, kBiased>(warp, a, b[i], acc);
      use(mt, i, acc);
    }
  }
}

// This lane's input of a tile: vector g's channels 32c .. 32c + 31, as words.
template <uint32_t DT> struct TileInput {
  uint4 words[2 * Element<DT>::kBytes];
};
template <uint32_t DT, int kTiles>
__host__ __device__ inline void load_inputs(const void* raw, uint32_t lane, TileInput<DT> (&in)[kTiles]) {
  const uint4* vectors = static_cast<const uint4*>(raw);
  constexpr uint32_t kWords = 2 * Element<DT>::kBytes, kVectorWords = kDim * Element<DT>::kBytes / 16;
  for (int i = 0; i < kTiles; ++i)
    for (uint32_t w = 0; w < kWords; ++w) in[i].words[w] = vectors[(i * kTileVectors + lane / 4) * kVectorWords + (lane % 4) * kWords + w];
}

// This lane's part of a tile in fixed point (steps 1-2 of quantize): the B fragments of its
// 32 values' bytes, and its vector's integer norm and stored norm.
struct FixedPoint {
  TileBytes bytes;
  float nq;    // sqrt((float) sum q^2) over the whole vector
  float norm;  // the norm stored: nq in the input's units
};

// round_to_int(x f) for a finite x f with |x f| <= 127, as an integer with the same low byte: on
// the GPU the product plus 1.5 * 2^23, whose float holds the rounded product in its low bits, in
// place of a conversion (no contraction into one fma: the product is rounded first, as the
// reference does).
__host__ __device__ inline int round_to_low_byte(float x, float f) {
#ifdef __CUDA_ARCH__
  return __float_as_int(__fadd_rn(__fmul_rn(x, f), 12582912.f));
#else
  return round_to_int(x * f);
#endif
}

// 8-bit operands take tq_matrix.h's scale; 16-bit ones (the probe's) a power of two,
// 2^(15 - E) for the top's exponent E, so that |q| < 2^15.
#pragma nv_exec_check_disable
template <uint32_t DT, int kBytes, typename W> __host__ __device__ FixedPoint to_fixed_point(W& warp, const TileInput<DT>& in) {
  const uint32_t* words = reinterpret_cast<const uint32_t*>(in.words);
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = Element<DT>::at(words, i);
  float top = Element<DT>::top_or_nan(words, x);
  const bool finite = top == top;  // no NaN here, nor any infinity once the factor is not 0
  if (!finite) top = largest_magnitude(x);
  top = fmaxf(top, warp.shfl_xor(top, 1));
  top = fmaxf(top, warp.shfl_xor(top, 2));
  float factor = input_factor(top);
  if (kBytes == 2 && factor != 0.f) factor = bit_cast<float>(static_cast<uint32_t>(127 + 15 - (static_cast<int>((bit_cast<uint32_t>(top) >> 23) & 0xFF) - 126)) << 23);
  int q[32];  // 8-bit: only their low bytes are used
  if (kBytes == 1 && finite && factor != 0.f) {
    for (int i = 0; i < 32; ++i) q[i] = round_to_low_byte(x[i], factor);
  } else {  // NaN and infinity (whose factor is 0: inf x 0 is NaN) round to 0, as the conversion does
    for (int i = 0; i < 32; ++i) q[i] = round_to_int(x[i] * factor);
  }
  FixedPoint fp;
  fp.bytes = split_bytes<kBytes>(q);
  // 8-bit: the whole vector's sum is at most 128 x 127^2, which 32 bits hold (and a float
  // exactly), summed from the packed bytes four at a time.
  using Sum = std::conditional_t<kBytes == 1, uint32_t, unsigned long long>;
  Sum sum2 = 0;
  if constexpr (kBytes == 1) {
    int packed_sum = 0;
    for (int f = 0; f < 8; ++f) packed_sum = dot4_s8(fp.bytes.hi[f], fp.bytes.hi[f], packed_sum);
    sum2 = static_cast<Sum>(packed_sum);
  } else {
    for (int i = 0; i < 32; ++i) sum2 += static_cast<Sum>(q[i] * q[i]);
  }
  sum2 += warp.shfl_xor(sum2, 1);
  sum2 += warp.shfl_xor(sum2, 2);
  fp.nq = sqrtf(to_float(sum2));
  fp.norm = factor == 0.f ? 0.f : fp.nq / factor;
  return fp;
}

// Quantizes kTiles consecutive tiles of 8 vectors, as lane `lane` of the warp.
//   raw: the tiles' 8 kTiles x 128 values; a_frags: M's A fragments; codes: kCodeBytes a vector;
//   norms: one a vector; Coder(book, nq): a vector's coder, whose unclamped(acc) is any integer
//   that clamps to the code (PolynomialCoder in the format).
#pragma nv_exec_check_disable
template <uint32_t DT, int kBytes, typename Coder, int kTiles, typename W>
__host__ __device__ void quantize_tiles(W& warp, uint32_t lane, const void* raw, const uint4* a_frags, uint8_t* codes, float* norms,
                                        const Codebook& book) {
  const uint32_t g = lane / 4, c = lane % 4;
  TileInput<DT> in[kTiles];
  load_inputs(raw, lane, in);
  TileBytes bytes[kTiles];
  // The coders of the two vectors this lane codes in each tile, 2c and 2c + 1: lanes 8c and
  // 8c + 4 hold their nq. A vector coded as zero has q = 0, so nq = 0, acc = 0 and every code 8.
  struct TileCoders {
    Coder of[2];
  };
  TileCoders coder[kTiles];
  #pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    const FixedPoint fp = to_fixed_point<DT, kBytes>(warp, in[i]);
    bytes[i] = fp.bytes;
    if (c == 0) norms[i * kTileVectors + g] = fp.norm;
    coder[i] = {{Coder(book, warp.shfl(fp.nq, 8 * c)), Coder(book, warp.shfl(fp.nq, 8 * c + 4))}};
  }
  // [tile][vector][m-tiles 0-3, 4-7]: coordinates 16g + 2mt + h at byte mt % 4, nibble h, but
  // packed first to last, so with the bytes in reverse order until the store
  uint32_t nibbles[kTiles][2][2] = {};
  products<kBytes>(warp, a_frags, lane, bytes, [&](int mt, int i, const int (&acc)[4]) {
    // acc[0], acc[1]: row g (h = 0) of vectors 2c, 2c + 1; acc[2], acc[3]: row g + 8 (h = 1).
    for (int v = 0; v < 2; ++v)
      nibbles[i][v][mt / 4] = pack_codes(coder[i].of[v].unclamped(acc[v + 2]), coder[i].of[v].unclamped(acc[v]), nibbles[i][v][mt / 4]);
  });
  #pragma unroll
  for (int i = 0; i < kTiles; ++i)
    for (int v = 0; v < 2; ++v)
      reinterpret_cast<uint2*>(codes + (i * kTileVectors + 2 * c + v) * kCodeBytes)[g] =
          make_uint2(byte_perm(nibbles[i][v][0], 0, 0x0123u), byte_perm(nibbles[i][v][1], 0, 0x0123u));
}

// The centroids as byte tables: [half][word] holds codes 8 half + 4 word .. + 3, a byte each
// (half 0 the values below zero, 1 the rest); hi their high bytes (8-bit: their only bytes), lo
// their low bytes. Fragment register f takes codes 4f .. 4f + 3, one 16-bit run of nibbles;
// each code's low 3 bits pick a byte of each half's table, and its top bit which of the two.
// Where the format's dequantize looks centroids up (measured against one shared-memory load a
// code in the probe: docs/QUANTIZATION.md).
template <int kOperandBytes> struct CentroidTable {
  uint32_t hi[2][2], lo[2][2];
  __host__ __device__ explicit CentroidTable(const int* centroid) : hi{}, lo{} {
    for (int half = 0; half < 2; ++half)
      for (int m = 0; m < 8; ++m) {
        const int v = centroid[8 * half + m];
        hi[half][m / 4] |= static_cast<uint32_t>((kOperandBytes == 2 ? v >> 8 : v) & 0xFF) << (8 * (m % 4));
        if (kOperandBytes == 2) lo[half][m / 4] |= static_cast<uint32_t>(v & 0xFF) << (8 * (m % 4));
      }
  }
  __host__ __device__ static uint32_t lookup4(const uint32_t (&table)[2][2], uint32_t magnitudes, uint32_t pick) {
    return byte_perm(byte_perm(table[0][0], table[0][1], magnitudes), byte_perm(table[1][0], table[1][1], magnitudes), pick);
  }
  template <int kBytes> __host__ __device__ TileBytes bytes(const uint32_t (&nib)[4]) const {
    static_assert(kBytes == kOperandBytes, "a table is made for one operand width");
    TileBytes b;
    for (int f = 0; f < 8; ++f) {
      const uint32_t run = nib[f / 2] >> (16 * (f % 2));
      const uint32_t magnitudes = run & 0x7777u, pick = ((run >> 1) & 0x4444u) | 0x3210u;
      b.hi[f] = lookup4(hi, magnitudes, pick);
      b.lo[f] = kBytes == 2 ? lookup4(lo, magnitudes, pick) : 0;
    }
    return b;
  }
};

// Writes 16 consecutive channels, as pairs.
template <uint32_t DT> __host__ __device__ inline void store_pairs(void* dst, const typename Element<DT>::Pair (&p)[8]) {
  uint4* out = static_cast<uint4*>(dst);
  if constexpr (DT == SW_DTYPE_FP32) {
    for (int w = 0; w < 4; ++w) out[w] = make_uint4(p[2 * w].x, p[2 * w].y, p[2 * w + 1].x, p[2 * w + 1].y);
  } else {
    out[0] = make_uint4(p[0], p[1], p[2], p[3]);
    out[1] = make_uint4(p[4], p[5], p[6], p[7]);
  }
}

// Dequantizes kTiles consecutive tiles of 8 vectors, as lane `lane` of the warp.
//   codes, norms: as quantize_tiles writes them; a_frags: M^T's A fragments; raw: 128 values a
//   vector; centroids: anything with bytes<kBytes>(nibbles), as CentroidTable.
#pragma nv_exec_check_disable
template <uint32_t DT, int kBytes, int kTiles, typename W, typename Centroids>
__host__ __device__ void dequantize_tiles(W& warp, uint32_t lane, const uint8_t* codes, const float* norms, const uint4* a_frags,
                                          void* raw, const Centroids& centroids) {
  const uint32_t g = lane / 4, c = lane % 4;
  TileBytes bytes[kTiles];
  float scale[kTiles][2];
  #pragma unroll
  for (int i = 0; i < kTiles; ++i) {
    // coordinates 32c .. 32c + 31 of vector g
    const uint4 packed = reinterpret_cast<const uint4*>(codes + (i * kTileVectors + g) * kCodeBytes)[c];
    const uint32_t nib[4] = {packed.x, packed.y, packed.z, packed.w};
    bytes[i] = centroids.template bytes<kBytes>(nib);
    for (int v = 0; v < 2; ++v) scale[i][v] = ldexpf(norms[i * kTileVectors + 2 * c + v], -7 - centroid_shift(kBytes));
  }
  using Pair = typename Element<DT>::Pair;
  Pair out[kTiles][2][8];  // [tile][vector][m-tile]: channels 16g + 2mt and 16g + 2mt + 1
  constexpr bool kBiased = kBytes == 1;
  products<kBytes, kTiles, kBiased>(warp, a_frags, lane, bytes, [&](int mt, int i, const int (&acc)[4]) {
    for (int v = 0; v < 2; ++v)
      out[i][v][mt] = Element<DT>::pair(product_float<kBiased>(acc[v]) * scale[i][v], product_float<kBiased>(acc[v + 2]) * scale[i][v]);
  });
  #pragma unroll
  for (int i = 0; i < kTiles; ++i)
    for (int v = 0; v < 2; ++v)
      store_pairs<DT>(static_cast<uint8_t*>(raw) + ((i * kTileVectors + 2 * c + v) * kDim + 16 * g) * Element<DT>::kBytes, out[i][v]);
}

}  // namespace tq_matrix
