// Format 3's matrix kinds on the host (tq_matrix.h): the screened plan of a seed, and the C++
// reference's coding of one vector, by integer Walsh-Hadamard transforms where the CUDA kernels
// multiply by the same integer matrix.
#include "tq_matrix.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

namespace tq_matrix {
namespace {

void flip(const uint32_t* signs, int* v) {
  for (uint32_t j = 0; j < kDim; ++j)
    if ((signs[j / 32] >> (j % 32)) & 1u) v[j] = -v[j];
}

// Unnormalized, in integers: exact.
void fwht(int* v) {
  for (uint32_t h = 1; h < kDim; h *= 2)
    for (uint32_t i = 0; i < kDim; i += 2 * h)
      for (uint32_t j = i; j < i + h; ++j) {
        const int a = v[j], b = v[j + h];
        v[j] = a + b, v[j + h] = a - b;
      }
}

// The sign diagonals of a candidate seed: the first two rounds' streams of format 2's rotation.
void candidate_signs(uint64_t seed, uint32_t (&signs)[2][kDim / 32]) {
  for (uint32_t w = 0; w < kDim / 32; ++w) {
    signs[0][w] = tq_sign_word(seed, kDim, 0, TQ_SIGNS_ROTATION, w);
    signs[1][w] = tq_sign_word(seed, kDim, 0, TQ_SIGNS_ROUND2, w);
  }
}

// Relative squared error of one vector's round trip.
double round_trip_error(const Plan& plan, const float* x) {
  uint8_t codes[kCodeBytes];
  float norm, y[kDim];
  quantize_vector(plan, x, codes, &norm);
  dequantize_vector(plan, codes, norm, y);
  double err = 0, energy = 0;
  for (uint32_t i = 0; i < kDim; ++i) err += (double(y[i]) - x[i]) * (double(y[i]) - x[i]), energy += double(x[i]) * x[i];
  return err / energy;
}

// Mean errors of the screen's inputs over Gaussian vectors' (the larger of one-hots' and
// Hadamard rows'); infinite where the matrix does not fit int8.
double screen(const Plan& plan, bool fits) {
  if (!fits) return INFINITY;
  constexpr uint32_t kGaussian = 256;
  double gaussian = 0, one_hots = 0, rows = 0;
  float x[kDim];
  for (uint32_t v = 0; v < kGaussian; ++v) {
    for (uint32_t i = 0; i < kDim; i += 2) {  // Box-Muller over a fixed splitmix stream
      const uint64_t n = (uint64_t)v * kDim + i;
      const double u1 = ((tq_splitmix64(0x5EED, n) >> 11) + 1.0) / 9007199254740993.0;
      const double u2 = (tq_splitmix64(0x5EED, n + 1) >> 11) / 9007199254740992.0;
      const double r = std::sqrt(-2 * std::log(u1));
      x[i] = float(r * std::cos(6.283185307179586 * u2)), x[i + 1] = float(r * std::sin(6.283185307179586 * u2));
    }
    gaussian += round_trip_error(plan, x);
  }
  for (uint32_t k = 0; k < kDim; ++k) {
    for (uint32_t i = 0; i < kDim; ++i) x[i] = i == k ? 1.f : 0.f;
    one_hots += round_trip_error(plan, x);
    for (uint32_t i = 0; i < kDim; ++i) x[i] = __builtin_popcount(i & k) % 2 ? -1.f : 1.f;
    rows += round_trip_error(plan, x);
  }
  gaussian /= kGaussian;
  return std::max(one_hots, rows) / kDim / gaussian;
}

std::unique_ptr<Plan> make_plan(uint64_t configured) {
  auto best = std::make_unique<Plan>();
  best->screen_ratio = INFINITY;
  Plan plan{};
  const float* bound = TQ_CODEBOOK_BOUNDARIES[tq_log2(kDim) - 3][3];
  const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(kDim) - 3][3];
  for (int k = 0; k < 7; ++k) plan.book.boundary[k] = bound[8 + k];
  if (!fit_polynomial(plan.book)) {
    std::fprintf(stderr, "tq_matrix: the 4-bit codebook's polynomial does not code as its boundaries do\n");
    std::abort();
  }
  for (int code = 0; code < 16; ++code) plan.centroid[code] = int(std::lround(std::ldexp(double(cent[code]), kCentroidShift)));
  for (uint32_t i = 0; i < kScreenSeeds; ++i) {
    plan.seed = i == 0 ? configured : tq_splitmix64(configured, i);
    candidate_signs(plan.seed, plan.signs);
    bool fits = true;
    for (uint32_t k = 0; k < kDim; ++k) {
      int e[kDim] = {}, column[kDim];
      e[k] = 1;
      rotate(plan, e, column, false);
      for (uint32_t j = 0; j < kDim; ++j) {
        fits = fits && std::abs(column[j]) <= 127;
        plan.matrix[j][k] = int8_t(column[j]);
      }
    }
    plan.screen_ratio = screen(plan, fits);
    if (plan.screen_ratio < best->screen_ratio) *best = plan;
    if (best->screen_ratio <= kScreenRatio) break;
  }
  return best;
}

}  // namespace

bool fit_polynomial(Codebook& book) {
  double normal[4][5] = {};  // the normal equations, right-hand side in column 4
  for (int k = 0; k < 7; ++k) {
    double basis[4], u = book.boundary[k];
    for (int j = 0; j < 4; ++j) basis[j] = std::pow(u, j + 1);
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) normal[i][j] += basis[i] * basis[j];
      normal[i][4] += basis[i] * (k + 1);
    }
  }
  for (int i = 0; i < 4; ++i)  // Gauss-Jordan: the system is small and well posed
    for (int r = 0; r < 4; ++r) {
      if (r == i) continue;
      const double f = normal[r][i] / normal[i][i];
      for (int j = i; j < 5; ++j) normal[r][j] -= f * normal[i][j];
    }
  for (int j = 0; j < 4; ++j) book.poly[j] = float(normal[j][4] / normal[j][j]);
  const auto p = [&](float u) { return u * std::fma(u, std::fma(u, std::fma(u, book.poly[3], book.poly[2]), book.poly[1]), book.poly[0]); };
  float last = 0.f;
  for (int i = 1; i <= 100000; ++i) {
    const float value = p(i / 100000.f);
    if (!(value > last)) return false;
    last = value;
  }
  for (int k = 0; k < 7; ++k)
    if (std::floor(p(book.boundary[k] * 0.99f)) != k || std::floor(p(book.boundary[k] * 1.01f)) != k + 1) return false;
  return true;
}

void rotate(const Plan& plan, const int* in, int* out, bool inverse) {
  std::memcpy(out, in, kDim * sizeof *out);
  if (!inverse) flip(plan.signs[0], out);
  fwht(out);
  flip(plan.signs[1], out);
  fwht(out);
  if (inverse) flip(plan.signs[0], out);
}

void quantize_vector(const Plan& plan, const float* x, uint8_t* codes, float* norm) {
  float top = 0.f;
  for (uint32_t i = 0; i < kDim; ++i) top = fmaxf(top, fabsf(x[i]));
  const float factor = input_factor(top);
  int q[kDim], acc[kDim];
  uint32_t sum2 = 0;  // at most 128 x 127^2
  for (uint32_t i = 0; i < kDim; ++i) {
    q[i] = round_to_int(x[i] * factor);
    sum2 += uint32_t(q[i] * q[i]);
  }
  const float nq = sqrtf(float(sum2));
  *norm = factor == 0.f ? 0.f : nq / factor;
  rotate(plan, q, acc, false);
  const PolynomialCoder coder(plan.book, nq);
  for (uint32_t j = 0; j < kCodeBytes; ++j) codes[j] = uint8_t(coder(acc[2 * j]) | coder(acc[2 * j + 1]) << 4);
}

void dequantize_vector(const Plan& plan, const uint8_t* codes, float norm, float* x) {
  int c[kDim], acc[kDim];
  for (uint32_t j = 0; j < kDim; ++j) c[j] = plan.centroid[(codes[j / 2] >> (4 * (j % 2))) & 0xF];
  rotate(plan, c, acc, true);
  const float scale = std::ldexp(norm, -7 - kCentroidShift);
  for (uint32_t i = 0; i < kDim; ++i) x[i] = float(acc[i]) * scale;
}

const Plan& plan_for(uint64_t seed) {
  static std::mutex mutex;
  static std::map<uint64_t, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Plan>& plan = plans[seed];
  if (!plan) plan = make_plan(seed);
  return *plan;
}

}  // namespace tq_matrix
