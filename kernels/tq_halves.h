/* Format 4's halves kinds (docs/QUANTIZATION.md, "Quantized block format, version 4"): MSE codes of a
 * head of 128 at b + 0.5 bits (b = 2 or 3) in bf16 blocks of 16 tokens, each half of the channels
 * through three randomized Hadamard rounds of dimension 64 taken as one integer matrix (entries up
 * to a few hundred: int16, two int8 products a tile on the tensor cores) on 8-bit operands, each
 * code the floor of a polynomial, as format 3's 4-bit kind is coded; so that the CUDA kernels
 * (turboquant_halves.cu, tq_halves_tile.cuh) write the C++ reference's bytes. Per record (a group
 * of 16 tokens; non-finite values are taken as 0 throughout):
 *  1. energy of channel c: e = fma(x_t, x_t, e) over tokens t = 0..15 in turn (fp32, from 0);
 *     its key is the top 16 bits of e's pattern; the outliers are the 64 largest keys, the
 *     lower channel first among equal keys;
 *  2. per token and half (channels ascending): top, f = 127 / top (0 for a top below 2^-113 or
 *     infinite: the zero vector), q = x f rounded from the exact product, acc = M q exactly
 *     (M = H D3 H D2 H D1 at dim 64, 512 times the orthogonal rotation; D1..D3 format 2's sign
 *     streams of sub-vector 0 at dim 64), nq = sqrt((float) sum q^2); code = floor(2^(bits-1) +
 *     a p(|a|)) held to 0..2^bits - 1, a = acc held to +-cap (3 and 2 bits: where p stops rising,
 *     or has passed the top code); stored norm nq / f;
 *  3. record: mask (16 bytes, bit c of byte c / 8 set for an outlier), norms (token-major,
 *     outlier half first), then per token the outlier half's codes (bits + 1 a coordinate) and
 *     the other half's (bits), in offset binary, packed as the GPU writes them whole (put_code):
 *     4-bit codes as nibbles (coordinate j at byte j / 2, the low nibble for even j); 3- and
 *     2-bit codes' low two bits as 16 bytes of pairs (coordinate j at byte j / 4, bits
 *     2 (j % 4)), then a 3-bit code's top bit as 8 bytes (byte j / 8, bit j % 8).
 * Dequantize: c = round(centroid * 2^shift), the largest shift that keeps the codebook in int8;
 * acc = M^T c exactly; value = (float) acc * (norm * 2^-(9 + shift)), rounded to bf16. */
#ifndef SPILLWAY_TQ_HALVES_H
#define SPILLWAY_TQ_HALVES_H
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "codebooks.h"
#include "tq_matrix.h"
#include "turboquant_format.h"

namespace halves {

constexpr uint32_t kChannels = 128, kDim = 64, kTokens = 16, kGain = 512;  // kGain = kDim^(3/2)

// A half's coder: p(u) = u (c0 + u (c1 + ...)) of the codebook's degree, rising on [0, cap]
// across 1 .. 2^(bits-1) - 1 at the boundaries; in acc's units per vector (below).
struct Book {
  uint32_t bits;
  float poly[4];
  float cap;  // in unit-vector coordinates; 0: none needed (p rises over all of [0, 1])
};

// One vector's coefficients: poly[j] s^(j+1) with s = 1 / (kGain nq), and the cap in acc's units.
struct Coder {
  float c[4], cap;
};

// The polynomial's degree at each bit width (python3 bench/quant/polynomial_codes.py's fits).
TQ_MATRIX_HD constexpr uint32_t degree_for(uint32_t bits) { return bits == 4 ? 4 : bits == 3 ? 3 : 1; }

// The coder of a kBits book for one vector: its degree a constant, so that the GPU keeps the
// coefficients in registers rather than choosing each by a run-time index.
template <uint32_t kBits> TQ_MATRIX_HD inline Coder coder_for(const Book& book, float nq) {
  Coder k{};
  const float s = nq > 0.f ? 1.f / (static_cast<float>(kGain) * nq) : 0.f;
  float power = s;
  for (uint32_t j = 0; j < degree_for(kBits); ++j, power *= s) k.c[j] = book.poly[j] * power;
  k.cap = book.cap * static_cast<float>(kGain) * nq;
  return k;
}

// floor(offset + a p(|a|)) with a held to the cap, as an integer (not yet held to the code range:
// the packing clamps). Explicit fmaf: the GPU rounds alike.
template <uint32_t kDegree, bool kCapped> TQ_MATRIX_HD inline float code_value(const Coder& k, int acc, float offset) {
  float a = static_cast<float>(acc);
  if (kCapped) a = fminf(fmaxf(a, -k.cap), k.cap);
  const float m = fabsf(a);
  float p = k.c[kDegree - 1];
  for (int j = static_cast<int>(kDegree) - 2; j >= 0; --j) p = fmaf(m, p, k.c[j]);
  return fmaf(a, p, offset);
}

// A half's centroids as dequantize's 8-bit operands: centroid * 2^shift rounded, the largest
// shift that keeps every one within int8, in code order (the codebook's, ascending).
struct Centroids {
  int value[16];
  int shift;
};

// What a seed's halves kinds at b + 0.5 bits are coded with, made once per (seed, b) on the host.
struct Plan {
  int16_t matrix[kDim][kDim];  // M[j][k]: integers, H D3 H D2 H D1 with Sylvester's H unnormalized
  Book outlier, rest;          // bits + 1 and bits
  Centroids centroids[2];      // the outlier half's, the rest's
  uint32_t bits;               // the rest's; the rate is bits + 0.5
};

const Plan& plan_for(uint64_t seed, uint32_t bits);

// A half's centroids as the byte tables dequantize looks codes up in (four a word, code order).
inline void centroid_table(const Centroids& c, uint32_t (&table)[4]) {
  for (int w = 0; w < 4; ++w) {
    table[w] = 0;
    for (int i = 0; i < 4; ++i) table[w] |= static_cast<uint32_t>(c.value[4 * w + i] & 0xFF) << (8 * i);
  }
}

constexpr uint32_t kMaskBytes = kChannels / 8, kNormBytes = kTokens * 2 * 4;
TQ_MATRIX_HD constexpr uint32_t record_bytes(uint32_t bits) { return kMaskBytes + kNormBytes + kTokens * 8 * (2 * bits + 1); }

// A bf16 value's bits as the halves kinds read them: non-finite values as +0.
TQ_MATRIX_HD inline uint16_t finite_bf16(uint16_t h) { return (h & 0x7F80u) == 0x7F80u ? 0 : h; }

// x f rounded to the nearest integer (ties to even) from the exact product, as an integer with that
// low byte (|x f| <= 127): on the GPU one fma with 1.5 * 2^23, whose float holds the rounded product
// in its low bits; on the host the product is exact in double (x is a bf16 value, 8 significant
// bits). Format 3 rounds the float product instead (tq_matrix::round_to_low_byte), one instruction more.
TQ_MATRIX_HD inline int fixed_point_byte(float x, float f) {
#ifdef __CUDA_ARCH__
  return __float_as_int(__fmaf_rn(x, f, 12582912.f));
#else
  return static_cast<int>(std::nearbyint(static_cast<double>(x) * f));
#endif
}

// The code as any integer that clamps to it (the GPU's packing clamps to 0..15; the caps keep
// 3 and 2 bits inside their ranges, so that a floor above the top code is never asked for).
template <uint32_t kBits> TQ_MATRIX_HD inline int unclamped_code(const Coder& k, int acc) {
  return tq_matrix::floor_for_clamp(code_value<degree_for(kBits), kBits != 4>(k, acc, static_cast<float>(1u << (kBits - 1))));
}

// A half's vector's scale: its values are acc * norm * 2^-(9 + shift) (M is 512 times the
// rotation), in fp32, both sides alike.
TQ_MATRIX_HD inline float half_scale(float norm, int shift) { return ldexpf(norm, -9 - shift); }

// The code (offset binary: the level itself) of coordinate j in a half's codes of one token,
// packed at `bits` bits as the record holds them.
uint32_t get_code(const uint8_t* half, uint32_t bits, uint32_t j);

// The C++ reference: one group's bytes (16 tokens x 128 bf16 values, token-major, at any
// alignment) into its record of record_bytes(plan.bits) bytes, and a record back to them.
void quantize_group(const Plan& plan, const uint8_t* group, uint8_t* record);
void dequantize_group(const Plan& plan, const uint8_t* record, uint8_t* group);

}  // namespace halves

#endif
