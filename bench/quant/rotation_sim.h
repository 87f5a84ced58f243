// Rotations as dense matrices, for the benches that simulate candidates around the
// quantizer's codebooks (quality.cpp, rotations.cpp).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "codebooks.h"
#include "common.h"
#include "turboquant_format.h"

namespace bench {

using Matrix = std::vector<double>;  // dim x dim, row-major

// (H D_rounds ... H D_1) / dim^(rounds/2), with the quantizer's own sign diagonals.
inline Matrix hadamard_rotation(uint32_t dim, uint32_t sub, uint64_t seed, uint32_t rounds) {
  Matrix m(dim * dim, 0.0);
  for (uint32_t i = 0; i < dim; ++i) m[i * dim + i] = 1.0;
  const uint32_t purposes[] = {TQ_SIGNS_ROTATION, TQ_SIGNS_ROUND2, TQ_SIGNS_ROUND3};
  for (uint32_t r = 0; r < rounds; ++r) {
    std::vector<double> sign(dim);
    for (uint32_t k = 0; k < dim; ++k) sign[k] = (tq_sign_word(seed, dim, sub, purposes[r], k / 32) >> (k % 32)) & 1u ? -1.0 : 1.0;
    Matrix next(dim * dim);
    for (uint32_t i = 0; i < dim; ++i)
      for (uint32_t j = 0; j < dim; ++j) {
        double acc = 0;
        for (uint32_t k = 0; k < dim; ++k) acc += (__builtin_popcount(i & k) & 1 ? -sign[k] : sign[k]) * m[k * dim + j];
        next[i * dim + j] = acc / std::sqrt(static_cast<double>(dim));
      }
    m.swap(next);
  }
  return m;
}

// The centroid a rotated coordinate `y` (of a unit vector) codes to at `bits` bits; with
// centroid_bits, the centroid as a kernel on integer tensor cores holds it: an integer of
// that many bits (sign included) under the largest power-of-two scale that keeps every
// centroid of the codebook in range (0: exact).
inline double codebook_value(uint32_t dim, uint32_t bits, double y, int centroid_bits = 0) {
  const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(dim) - 3][bits - 1];
  const float* bound = TQ_CODEBOOK_BOUNDARIES[tq_log2(dim) - 3][bits - 1];
  uint32_t cell = 0;
  while (cell + 1 < (1u << bits) && y > bound[cell]) ++cell;
  if (centroid_bits == 0) return cent[cell];
  // the codebook is symmetric and ascending: its first centroid is the largest in magnitude
  const double limit = std::ldexp(1.0, centroid_bits - 1) - 1;
  const double scale = std::ldexp(1.0, std::ilogb(limit / std::fabs(cent[0])));
  return std::nearbyint(cent[cell] * scale) / scale;
}

// Squared error of unit vector `y` (already rotated) coded at `bits`, with a subtractive
// dither `u` (added before coding and taken off the centroid; all zeros for none).
inline double coded_error(const std::vector<double>& y, uint32_t bits, const std::vector<double>& u) {
  const uint32_t dim = static_cast<uint32_t>(y.size());
  double e = 0;
  for (uint32_t i = 0; i < dim; ++i) {
    const double d = codebook_value(dim, bits, y[i] + u[i]) - u[i] - y[i];
    e += d * d;
  }
  return e;
}

// q x / |x|.
inline std::vector<double> rotate_unit(const Matrix& q, const std::vector<double>& x) {
  const size_t dim = x.size();
  double n = 0;
  for (double v : x) n += v * v;
  std::vector<double> y(dim, 0.0);
  for (size_t i = 0; i < dim; ++i) {
    for (size_t j = 0; j < dim; ++j) y[i] += q[i * dim + j] * x[j];
    y[i] /= std::sqrt(n);
  }
  return y;
}

// x as a kernel on integer tensor cores takes it: integers of `bits` bits (sign included)
// under one scale per vector, either a power of two (the smallest at or above the vector's
// largest magnitude, so that the scale is exact) or the full range (the largest magnitude
// maps to 2^(bits - 1) - 1).
inline std::vector<double> fixed_point(const std::vector<double>& x, int bits, bool full_range) {
  double top = 0;
  for (double v : x) top = std::max(top, std::fabs(v));
  if (top == 0) return x;
  const double limit = std::ldexp(1.0, bits - 1) - 1;
  const double scale = full_range ? top / limit : std::ldexp(1.0, std::ilogb(top) + 2 - bits);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = std::clamp(std::nearbyint(x[i] / scale), -limit, limit) * scale;
  return out;
}

// How a kernel on integer tensor cores holds its operands (input_bits 0: exact input).
struct IntegerOperands {
  int input_bits;
  bool full_range;  // the input's scale: see fixed_point
  int centroid_bits;
};

// x coded at `bits` through rotation q and back, as a kernel with these operands makes it:
// the input in fixed point, rotated exactly, each coordinate coded against the norm of the
// fixed-point input, the centroids in fixed point, back through q's transpose.
inline std::vector<double> integer_round_trip(const Matrix& q, const std::vector<double>& x, uint32_t bits, const IntegerOperands& ops) {
  const uint32_t dim = static_cast<uint32_t>(x.size());
  const std::vector<double> xf = ops.input_bits ? fixed_point(x, ops.input_bits, ops.full_range) : x;
  double n = 0;
  for (double v : xf) n += v * v;
  n = std::sqrt(n);
  std::vector<double> out(dim, 0.0);
  if (n == 0) return out;
  const std::vector<double> y = rotate_unit(q, xf);
  for (uint32_t i = 0; i < dim; ++i) {
    const double coded = codebook_value(dim, bits, y[i], ops.centroid_bits) * n;
    for (uint32_t j = 0; j < dim; ++j) out[j] += q[i * dim + j] * coded;
  }
  return out;
}

inline std::vector<std::vector<double>> unit_gaussian_vectors(uint32_t dim, uint32_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<double>> out(n, std::vector<double>(dim));
  for (auto& v : out) {
    double s = 0;
    for (double& x : v) {
      x = rng.normal();
      s += x * x;
    }
    for (double& x : v) x /= std::sqrt(s);
  }
  return out;
}

// The rates the lattice check covers, and Gaussian vectors' mean error at each with dither u.
constexpr uint32_t kLatticeBits[] = {2, 3, 4};
inline std::array<double, 3> gaussian_errors(uint32_t dim, const std::vector<double>& u) {
  // Gaussian vectors stay Gaussian under any rotation: their error needs only the dither.
  static const std::vector<std::vector<double>> g128 = unit_gaussian_vectors(128, 4096, 7), g64 = unit_gaussian_vectors(64, 4096, 7);
  const auto& gaussians = dim == 128 ? g128 : g64;
  std::array<double, 3> out{};
  for (size_t b = 0; b < 3; ++b)
    for (const auto& g : gaussians) out[b] += coded_error(g, kLatticeBits[b], u) / gaussians.size();
  return out;
}

// A rotation's lattice check: every one-hot and every Hadamard row of its dimension, coded at
// 2, 3 and 4 bits; their mean errors as multiples of Gaussian vectors' at the same rate.
struct LatticeScore {
  double one_hot[3] = {}, hadamard_row[3] = {}, gaussian[3] = {};
  double largest = 0;  // over rates, one-hots and rows
};
inline LatticeScore lattice_score(const Matrix& q, uint32_t dim, const std::vector<double>& u) {
  LatticeScore s;
  const std::array<double, 3> gaussian = gaussian_errors(dim, u);
  for (uint32_t j = 0; j < dim; ++j) {
    // one-hot j comes out as column j; Hadamard row j goes through q
    std::vector<double> column(dim), row(dim);
    for (uint32_t i = 0; i < dim; ++i) column[i] = q[i * dim + j];
    for (uint32_t k = 0; k < dim; ++k) row[k] = __builtin_popcount(j & k) & 1 ? -1.0 : 1.0;
    const std::vector<double> rotated_row = rotate_unit(q, row);
    for (size_t b = 0; b < 3; ++b) {
      s.one_hot[b] += coded_error(column, kLatticeBits[b], u) / dim;
      s.hadamard_row[b] += coded_error(rotated_row, kLatticeBits[b], u) / dim;
    }
  }
  for (size_t b = 0; b < 3; ++b) {
    s.gaussian[b] = gaussian[b];
    s.one_hot[b] /= gaussian[b], s.hadamard_row[b] /= gaussian[b];
    s.largest = std::max({s.largest, s.one_hot[b], s.hadamard_row[b]});
  }
  return s;
}

// The seed a screened rotation of `rounds` Hadamard rounds uses: the configured one if its
// matrix passes the lattice check within `bound`, else the first of splitmix64(seed, 1, 2, ...)
// whose matrix does (after 64 tries, the best seen).
inline uint64_t screened_seed(uint32_t dim, uint64_t seed, uint32_t rounds, double bound = 1.10) {
  const std::vector<double> none(dim, 0.0);
  uint64_t best = seed;
  double best_score = 1e300;
  for (uint64_t k = 0; k < 64; ++k) {
    const uint64_t candidate = k == 0 ? seed : tq_splitmix64(seed, k);
    const double score = lattice_score(hadamard_rotation(dim, 0, candidate, rounds), dim, none).largest;
    if (score <= bound) return candidate;
    if (score < best_score) best_score = score, best = candidate;
  }
  return best;
}

}  // namespace bench
