/* Format 3's matrix kinds (docs/QUANTIZATION.md, "Quantized block format, version 3"): 4-bit MSE codes of head_dim-128
 * vectors through two randomized Hadamard rounds taken as one integer matrix on 8-bit operands,
 * so that the CUDA kernels rotate on the tensor cores (turboquant_matrix.cu, tq_matrix_tile.cuh)
 * and still write the C++ reference's bytes: integer products are exact in any order. Per vector:
 *  1. top = the largest magnitude; q = round(x * f), f = 127 / top, so |q| <= 127 (a top below
 *     2^-112, zero included, codes as the zero vector: every code 8, norm 0);
 *  2. acc = M q exactly, M = H D2 H D1 (Sylvester's H, the screened seed's sign diagonals);
 *  3. nq = sqrt((float) sum q^2); code = floor(8 + acc p(|acc|)) held to 0..15, p the quartic whose
 *     crossings of 1..7 are the codebook's boundaries in acc's units (acc = 128 nq u): offset
 *     binary, 8 + m for acc >= 0 and 7 - m below, the codebook's own centroid order;
 *  4. stored norm = nq / f.
 * Dequantize: c = centroid * 2^9 rounded (the largest, 123, fits int8); acc = M^T c = D1 H D2 H c
 * exactly; value = (float) acc * norm * 2^-16, rounded to the block's dtype. */
#ifndef SPILLWAY_TQ_MATRIX_H
#define SPILLWAY_TQ_MATRIX_H

#include <math.h>
#include <stdint.h>

#include "turboquant_format.h"

#ifdef __CUDACC__
#define TQ_MATRIX_HD __host__ __device__
#else
#define TQ_MATRIX_HD
#endif

namespace tq_matrix {

constexpr uint32_t kDim = 128;
constexpr uint32_t kCodeBytes = kDim / 2;  // a nibble a coordinate, coordinate j at nibble j
constexpr uint32_t kTileVectors = 8;       // the tensor cores' tile (the MMA's n): blocks hold whole tiles
constexpr int kMinExponent = -112;         // a top below 2^(kMinExponent - 1) codes as zero
constexpr int kCentroidShift = 9;          // centroids as integers: centroid * 2^9

/* The 4-bit dim-128 codebook as quantize uses it: its 7 positive inner boundaries, ascending,
 * in unit-vector coordinates, and p(u) = u (c0 + u (c1 + u (c2 + u c3))), rising over [0, 1],
 * whose floor counts the boundaries below u but right next to them (within about 1e-5 of a
 * boundary, the midpoint of two centroids, where either code costs the same). */
struct Codebook {
  float boundary[7];
  float poly[4];
};

/* An integer whose clamp to 0..15 (or to fewer bits' range) is floor(p)'s. On the GPU, the bits of
 * p * 2^-149 rounded down, in place of a conversion (F2I, which issues more slowly than a
 * multiply: docs/QUANTIZATION.md). Below 2^23 in magnitude that is a subnormal, whose bits are
 * floor(p) where p >= 0; where p < 0 the sign bit makes them a negative integer, and where
 * p >= 2^23 an integer above 15: each clamps as floor(p) does. Explicit PTX: no flush to zero,
 * whatever the flags. */
TQ_MATRIX_HD inline int floor_for_clamp(float p) {
#ifdef __CUDA_ARCH__
  float scaled;
  asm("mul.rm.f32 %0, %1, 0f00000001;" : "=f"(scaled) : "f"(p));
  return __float_as_int(scaled);
#else
  return static_cast<int>(floorf(fminf(fmaxf(p, -1.f), 16.f)));
#endif
}

/* One vector's coder from its integer norm nq: the polynomial in acc's units (coefficient j
 * times s^(j+1), s = 1 / (128 nq)), so that no value is scaled. Its odd extension plus 8 has
 * the offset-binary code as its floor, held to 0..15: by one min and the conversion's
 * saturation at 0 (code), or by whatever packs the floor (unclamped). Explicit fmaf on both
 * sides: the GPU and the C++ reference round alike. */
struct PolynomialCoder {
  float c[4];
  PolynomialCoder() = default;
  TQ_MATRIX_HD PolynomialCoder(const Codebook& book, float nq) {
    const float s = nq > 0.f ? 1.f / (128.f * nq) : 0.f;  // the zero vector: acc = 0, code 8
    float power = s;
    for (int j = 0; j < 4; ++j, power *= s) c[j] = book.poly[j] * power;
  }
  TQ_MATRIX_HD uint32_t operator()(int acc) const { return code(acc, c[0], c[1], c[2], c[3]); }
  /* floor(8 + acc p(|acc|)) as any integer whose clamp to 0..15 is the code */
  TQ_MATRIX_HD int unclamped(int acc) const { return floor_for_clamp(poly(acc, c[0], c[1], c[2], c[3])); }
  /* The code from the coefficients apart, for loops over many vectors' coders side by side. */
  TQ_MATRIX_HD static uint32_t code(int acc, float c0, float c1, float c2, float c3) {
    float p = poly(acc, c0, c1, c2, c3);
    p = p < 15.5f ? p : 15.5f;
#ifdef __CUDA_ARCH__
    return __float2uint_rd(p);
#else
    return static_cast<uint32_t>(p > 0.f ? p : 0.f);  // the conversion's saturation at 0; truncation is floor from there
#endif
  }
  /* exact as a float: |acc| <= 128 * 127 * 128 < 2^24; p is never NaN, so the min is fminf's */
  TQ_MATRIX_HD static float poly(int acc, float c0, float c1, float c2, float c3) {
    const float a = static_cast<float>(acc), m = fabsf(a);
    return fmaf(a, fmaf(m, fmaf(m, fmaf(m, c3, c2), c1), c0), 8.f);
  }
};

/* Step 1's scale f = 127 / top, or 0 where the vector codes as zero: a tiny top, or an infinite
 * one (NaN values are not tops: fmaxf passes over them). */
TQ_MATRIX_HD inline float input_factor(float top) {
  uint32_t bits;
  memcpy(&bits, &top, 4);
  const int e = top == 0.f ? -127 : static_cast<int>((bits >> 23) & 0xFF) - 126;  // ilogb + 1 for normal floats
  return e < kMinExponent || e > 128 ? 0.f : 127.f / top;
}

TQ_MATRIX_HD inline int round_to_int(float x) {
#ifdef __CUDA_ARCH__
  return __float2int_rn(x);
#else
  return x != x ? 0 : static_cast<int>(nearbyintf(x));  // NaN to 0, as the GPU's conversion
#endif
}

/* What a format's matrix kinds are coded with, made once per seed on the host (tq_matrix.cpp). */
struct Plan {
  uint64_t seed;             /* the screened seed the sign diagonals come from */
  uint32_t signs[2][kDim / 32]; /* D1, D2: bit j of word j / 32 set negates coordinate j */
  int8_t matrix[kDim][kDim]; /* M[j][k] = (H D2 H D1)[j][k], entries at most 127 in magnitude */
  Codebook book;
  int centroid[16];          /* code order (offset binary), times 2^kCentroidShift */
  double screen_ratio;       /* one-hots' and Hadamard rows' mean error over Gaussian vectors', the larger */
};

/* The plan of a configured seed, screened: the first of the seeds derived from it whose matrix
 * fits int8 and codes one-hots and Hadamard rows within kScreenRatio of Gaussian vectors' mean
 * error (the best of kScreenSeeds if none does). Made once per seed, then shared. */
constexpr double kScreenRatio = 1.10;
constexpr uint32_t kScreenSeeds = 64;
const Plan& plan_for(uint64_t seed);

/* p(u) = u (poly[0] + u (poly[1] + ...)) of `degree` (up to 4) through (boundary[k], k + 1),
 * k < count, by least squares; false unless floor(p) codes every boundary's neighbourhood (1 %
 * either side) as the boundary does. */
bool fit_crossings(const float* boundary, int count, int degree, float* poly);

/* The quartic through the 4-bit codebook's boundaries (fit_crossings); false unless it also
 * rises over [0, 1]. */
bool fit_polynomial(Codebook& book);

/* The C++ reference's coding of n vectors (x: n x kDim floats, one after another), its products
 * M q and M^T c by two integer Walsh-Hadamard transforms (exact, so the tensor cores' too): vector v's
 * codes at codes + v * code_stride (kCodeBytes), its norm at norms[v]; and back to floats. */
void quantize_vectors(const Plan& plan, const float* x, size_t n, uint8_t* codes, size_t code_stride, float* norms);
void dequantize_vectors(const Plan& plan, const uint8_t* codes, size_t code_stride, const float* norms, size_t n, float* x);

}  // namespace tq_matrix

#endif
