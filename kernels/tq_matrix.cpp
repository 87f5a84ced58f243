// Format 3's matrix kinds on the host (tq_matrix.h): the screened plan of a seed, and the C++
// reference's coding of vectors, by integer Walsh-Hadamard transforms where the CUDA kernels
// multiply by the same integer matrix.
#include "tq_matrix.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace tq_matrix {
namespace {

// The transforms on one vector (T = int) or on kLanes vectors side by side (T = Lanes, below).
template <typename T> void flip(const uint32_t* signs, T* v) {
  for (uint32_t j = 0; j < kDim; ++j)
    if ((signs[j / 32] >> (j % 32)) & 1u) v[j] = -v[j];
}

// Unnormalized, in integers: exact.
template <typename T> void fwht(T* v) {
  for (uint32_t h = 1; h < kDim; h *= 2)
    for (uint32_t i = 0; i < kDim; i += 2 * h)
      for (uint32_t j = i; j < i + h; ++j) {
        const T a = v[j], b = v[j + h];
        v[j] = a + b, v[j + h] = a - b;
      }
}

// v = M v (forward) or M^T v (inverse), exactly: equal to the tensor cores' products.
template <typename T> void rotate(const Plan& plan, T* v, bool inverse) {
  if (!inverse) flip(plan.signs[0], v);
  fwht(v);
  flip(plan.signs[1], v);
  fwht(v);
  if (inverse) flip(plan.signs[0], v);
}

// The sign diagonals of a candidate seed: the first two rounds' streams of format 2's rotation.
void candidate_signs(uint64_t seed, uint32_t (&signs)[2][kDim / 32]) {
  for (uint32_t w = 0; w < kDim / 32; ++w) {
    signs[0][w] = tq_sign_word(seed, kDim, 0, TQ_SIGNS_ROTATION, w);
    signs[1][w] = tq_sign_word(seed, kDim, 0, TQ_SIGNS_ROUND2, w);
  }
}

// Relative squared error of each of n vectors' round trips, summed.
double round_trip_errors(const Plan& plan, const float* x, size_t n) {
  std::vector<uint8_t> codes(n * kCodeBytes);
  std::vector<float> norms(n), y(n * kDim);
  quantize_vectors(plan, x, n, codes.data(), kCodeBytes, norms.data());
  dequantize_vectors(plan, codes.data(), kCodeBytes, norms.data(), n, y.data());
  double sum = 0;
  for (size_t v = 0; v < n; ++v) {
    double err = 0, energy = 0;
    for (uint32_t i = 0; i < kDim; ++i) {
      const double d = double(y[v * kDim + i]) - x[v * kDim + i];
      err += d * d, energy += double(x[v * kDim + i]) * x[v * kDim + i];
    }
    sum += err / energy;
  }
  return sum;
}

// Mean errors of the screen's inputs over Gaussian vectors' (the larger of one-hots' and
// Hadamard rows'); infinite where the matrix does not fit int8.
double screen(const Plan& plan, bool fits) {
  if (!fits) return INFINITY;
  constexpr uint32_t kGaussian = 256;
  std::vector<float> gaussian(kGaussian * kDim), one_hots(kDim * kDim), rows(kDim * kDim);
  for (uint32_t i = 0; i < kGaussian * kDim; i += 2) {  // Box-Muller over a fixed splitmix stream
    const double u1 = ((tq_splitmix64(0x5EED, i) >> 11) + 1.0) / 9007199254740993.0;
    const double u2 = (tq_splitmix64(0x5EED, i + 1) >> 11) / 9007199254740992.0;
    const double r = std::sqrt(-2 * std::log(u1));
    gaussian[i] = float(r * std::cos(6.283185307179586 * u2)), gaussian[i + 1] = float(r * std::sin(6.283185307179586 * u2));
  }
  for (uint32_t k = 0; k < kDim; ++k)
    for (uint32_t i = 0; i < kDim; ++i) {
      one_hots[k * kDim + i] = i == k ? 1.f : 0.f;
      rows[k * kDim + i] = __builtin_popcount(i & k) % 2 ? -1.f : 1.f;
    }
  const double base = round_trip_errors(plan, gaussian.data(), kGaussian) / kGaussian;
  return std::max(round_trip_errors(plan, one_hots.data(), kDim), round_trip_errors(plan, rows.data(), kDim)) / kDim / base;
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
      int column[kDim] = {};
      column[k] = 1;
      rotate(plan, column, false);
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

// p(u) = u (poly[0] + u (poly[1] + ...)) of `degree` by Horner's rule in floats, as the kernels evaluate it.
float crossing_value(float u, const float* poly, int degree) {
  float v = poly[degree - 1];
  for (int j = degree - 2; j >= 0; --j) v = std::fma(u, v, poly[j]);
  return u * v;
}

}  // namespace

bool fit_crossings(const float* boundary, int count, int degree, float* poly) {
  double normal[4][5] = {};  // the normal equations, right-hand side in column 4
  for (int k = 0; k < count; ++k) {
    double basis[4], u = boundary[k];
    for (int j = 0; j < degree; ++j) basis[j] = std::pow(u, j + 1);
    for (int i = 0; i < degree; ++i) {
      for (int j = 0; j < degree; ++j) normal[i][j] += basis[i] * basis[j];
      normal[i][4] += basis[i] * (k + 1);
    }
  }
  for (int i = 0; i < degree; ++i)  // Gauss-Jordan: the system is small and well posed
    for (int r = 0; r < degree; ++r) {
      if (r == i) continue;
      const double f = normal[r][i] / normal[i][i];
      for (int j = i; j < 5; ++j) normal[r][j] -= f * normal[i][j];
    }
  for (int j = 0; j < degree; ++j) poly[j] = float(normal[j][4] / normal[j][j]);
  const auto p = [&](float u) { return crossing_value(u, poly, degree); };
  for (int k = 0; k < count; ++k)
    if (std::floor(p(boundary[k] * 0.99f)) != k || std::floor(p(boundary[k] * 1.01f)) != k + 1) return false;
  return true;
}

bool fit_polynomial(Codebook& book) {
  if (!fit_crossings(book.boundary, 7, 4, book.poly)) return false;
  float last = 0.f;
  for (int i = 1; i <= 100000; ++i) {
    const float value = crossing_value(i / 100000.f, book.poly, 4);
    if (!(value > last)) return false;
    last = value;
  }
  return true;
}

namespace {

// kLanes vectors side by side, coordinate-major, so that every loop over them is a loop over
// one AVX2 register's lanes (the transforms, the fixed point, the coder) and vectorizes.
constexpr uint32_t kLanes = 8;
typedef int32_t Lanes __attribute__((vector_size(kLanes * sizeof(int32_t))));

// Round to nearest even, as round_to_int, for |x| < 2^22: adding and taking off 1.5 * 2^23 leaves
// x rounded in the float's last place (IEEE arithmetic keeps both steps), a branch-free form
// the compiler vectorizes.
inline float round_even(float x) { return (x + 12582912.f) - 12582912.f; }

}  // namespace

void quantize_vectors(const Plan& plan, const float* x, size_t n, uint8_t* codes, size_t code_stride, float* norms) {
  alignas(32) Lanes v[kDim];
  alignas(32) float xt[kDim][kLanes], factor[kLanes], nq[kLanes];
  for (size_t v0 = 0; v0 < n; v0 += kLanes) {
    const uint32_t lanes = uint32_t(std::min<size_t>(kLanes, n - v0));
    float top[kLanes] = {};
    for (uint32_t w = 0; w < kLanes; ++w)
      for (uint32_t j = 0; j < kDim; ++j) {
        xt[j][w] = w < lanes ? x[(v0 + w) * kDim + j] : 0.f;
        const float magnitude = fabsf(xt[j][w]);
        top[w] = magnitude > top[w] ? magnitude : top[w];  // fmaxf's result (NaN passed over), inlined
      }
    for (uint32_t w = 0; w < kLanes; ++w) factor[w] = input_factor(top[w]);
    Lanes sum2 = {};  // at most 128 x 127^2
    for (uint32_t j = 0; j < kDim; ++j) {
      for (uint32_t w = 0; w < kLanes; ++w) {
        const float scaled = xt[j][w] * factor[w];
        v[j][w] = scaled != scaled ? 0 : int(round_even(scaled));  // NaN to 0, as round_to_int
      }
      sum2 += v[j] * v[j];
    }
    for (uint32_t w = 0; w < kLanes; ++w) nq[w] = sqrtf(float(uint32_t(sum2[w])));
    rotate(plan, v, false);
    float coef[4][kLanes];
    for (uint32_t w = 0; w < kLanes; ++w) {
      const PolynomialCoder coder(plan.book, nq[w]);
      for (int i = 0; i < 4; ++i) coef[i][w] = coder.c[i];
    }
    for (uint32_t j = 0; j < kDim; ++j)
      for (uint32_t w = 0; w < kLanes; ++w) v[j][w] = int(PolynomialCoder::code(v[j][w], coef[0][w], coef[1][w], coef[2][w], coef[3][w]));
    for (uint32_t w = 0; w < lanes; ++w) {
      norms[v0 + w] = factor[w] == 0.f ? 0.f : nq[w] / factor[w];
      uint8_t* out = codes + (v0 + w) * code_stride;
      for (uint32_t j = 0; j < kCodeBytes; ++j) out[j] = uint8_t(v[2 * j][w] | v[2 * j + 1][w] << 4);
    }
  }
}

void dequantize_vectors(const Plan& plan, const uint8_t* codes, size_t code_stride, const float* norms, size_t n, float* x) {
  alignas(32) Lanes v[kDim];
  for (size_t v0 = 0; v0 < n; v0 += kLanes) {
    const uint32_t lanes = uint32_t(std::min<size_t>(kLanes, n - v0));
    for (uint32_t w = 0; w < kLanes; ++w) {
      const uint8_t* in = codes + (v0 + std::min(w, lanes - 1)) * code_stride;  // idle lanes repeat the last vector
      for (uint32_t j = 0; j < kDim; ++j) v[j][w] = plan.centroid[(in[j / 2] >> (4 * (j % 2))) & 0xF];
    }
    rotate(plan, v, true);
    for (uint32_t w = 0; w < lanes; ++w) {
      const float scale = std::ldexp(norms[v0 + w], -7 - kCentroidShift);
      for (uint32_t i = 0; i < kDim; ++i) x[(v0 + w) * kDim + i] = float(v[i][w]) * scale;
    }
  }
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
