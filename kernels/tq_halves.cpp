// Format 4's halves kinds on the host (tq_halves.h): the seed's plan, and the C++ reference's
// coding of a group, which the CUDA kernels (turboquant_halves.cu) reproduce byte for byte.
#include "tq_halves.h"

#include <map>
#include <memory>
#include <mutex>
#include <utility>

namespace halves {
namespace {

// tq_matrix::fit_crossings's polynomial through the codebook's positive boundaries, then the
// cap: the first u where p stops rising or reaches the top code's next integer. Aborts where
// the fit does not code the boundaries' neighbourhoods as they do.
Book fit_book(uint32_t bits) {
  Book book{};
  book.bits = bits;
  const uint32_t n = (1u << (bits - 1)) - 1;
  const float* positive = TQ_CODEBOOK_BOUNDARIES[tq_log2(kDim) - 3][bits - 1] + n + 1;  // ascending
  if (!tq_matrix::fit_crossings(positive, static_cast<int>(n), static_cast<int>(degree_for(bits)), book.poly)) std::abort();
  if (bits == 4) return book;  // the quartic rises over [0, 1]; cvt.pack.sat clamps its top
  double last = 0;
  for (int i = 1; i <= 100000 && book.cap == 0.f; ++i) {
    const double u = i / 100000.0;
    double v = 0;
    for (int j = static_cast<int>(degree_for(bits)) - 1; j >= 0; --j) v = v * u + book.poly[j];
    v *= u;
    if (v <= last || v >= n + 1) book.cap = static_cast<float>((i - 1) / 100000.0);
    last = v;
  }
  return book;
}

Centroids centroids_for(uint32_t bits) {
  const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(kDim) - 3][bits - 1];
  Centroids c{};
  c.shift = 0;
  while (std::lround(std::ldexp(std::fabs(double(cent[0])), c.shift + 1)) <= 127) ++c.shift;
  for (uint32_t k = 0; k < (1u << bits); ++k) c.value[k] = static_cast<int>(std::lround(std::ldexp(double(cent[k]), c.shift)));
  return c;
}

// M = H D3 H D2 H D1 at dim 64 in integers (Sylvester's H unnormalized, entries +-1), the
// diagonals format 2's rounds of sub-vector 0 at dim 64: kGain times the orthogonal rotation.
Plan make_plan(uint64_t seed, uint32_t bits) {
  Plan plan{};
  plan.bits = bits;
  plan.outlier = fit_book(bits + 1), plan.rest = fit_book(bits);
  plan.centroids[0] = centroids_for(bits + 1), plan.centroids[1] = centroids_for(bits);
  const uint32_t purposes[3] = {TQ_SIGNS_ROTATION, TQ_SIGNS_ROUND2, TQ_SIGNS_ROUND3};
  int m[kDim][kDim] = {};
  for (uint32_t i = 0; i < kDim; ++i) m[i][i] = 1;
  for (uint32_t purpose : purposes) {
    int next[kDim][kDim];
    for (uint32_t i = 0; i < kDim; ++i)
      for (uint32_t j = 0; j < kDim; ++j) {
        int acc = 0;
        for (uint32_t k = 0; k < kDim; ++k) {
          const bool negate = ((tq_sign_word(seed, kDim, 0, purpose, k / 32) >> (k % 32)) & 1u) ^ (__builtin_popcount(i & k) & 1u);
          acc += negate ? -m[k][j] : m[k][j];
        }
        next[i][j] = acc;
      }
    std::memcpy(m, next, sizeof m);
  }
  for (uint32_t j = 0; j < kDim; ++j)
    for (uint32_t k = 0; k < kDim; ++k) plan.matrix[j][k] = static_cast<int16_t>(m[j][k]);  // |M| <= kDim^2 = 4096
  return plan;
}

// The energy key of each channel, in the order both sides compute it.
void channel_keys(const uint16_t* x, uint32_t (&key)[kChannels]) {
  for (uint32_t c = 0; c < kChannels; ++c) {
    float e = 0.f;
    for (uint32_t t = 0; t < kTokens; ++t) {
      const float v = tq_bf16_to_f32(x[t * kChannels + c]);
      e = fmaf(v, v, e);
    }
    uint32_t bits;
    std::memcpy(&bits, &e, 4);
    key[c] = bits >> 16;
  }
}

uint32_t code_at(const Book& book, const Coder& k, int acc) {
  const int v = book.bits == 4 ? unclamped_code<4>(k, acc) : book.bits == 3 ? unclamped_code<3>(k, acc) : unclamped_code<2>(k, acc);
  const int top = (1 << book.bits) - 1;
  return static_cast<uint32_t>(v < 0 ? 0 : v > top ? top : v);
}

// A half's codes in its record (bits x 8 bytes a token), as the header says: put_code sets the
// code of coordinate j in zeroed bytes, get_code reads it.
void put_code(uint8_t* half, uint32_t bits, uint32_t j, uint32_t code) {
  if (bits == 4) {
    half[j / 2] |= static_cast<uint8_t>(code << (4 * (j % 2)));
    return;
  }
  half[j / 4] |= static_cast<uint8_t>((code & 3u) << (2 * (j % 4)));
  if (bits == 3) half[16 + j / 8] |= static_cast<uint8_t>((code >> 2) << (j % 8));
}

}  // namespace

uint32_t get_code(const uint8_t* half, uint32_t bits, uint32_t j) {
  if (bits == 4) return (half[j / 2] >> (4 * (j % 2))) & 0xFu;
  uint32_t code = (half[j / 4] >> (2 * (j % 4))) & 3u;
  if (bits == 3) code |= ((half[16 + j / 8] >> (j % 8)) & 1u) << 2;
  return code;
}

const Plan& plan_for(uint64_t seed, uint32_t bits) {
  static std::mutex mutex;
  static std::map<std::pair<uint64_t, uint32_t>, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<Plan>& plan = plans[{seed, bits}];
  if (!plan) plan = std::make_unique<Plan>(make_plan(seed, bits));
  return *plan;
}

void quantize_group(const Plan& plan, const uint8_t* group, uint8_t* record) {
  uint16_t x[kTokens * kChannels];
  std::memcpy(x, group, sizeof x);
  for (uint16_t& v : x) v = finite_bf16(v);
  uint32_t key[kChannels];
  channel_keys(x, key);
  uint32_t order[kChannels];
  for (uint32_t c = 0; c < kChannels; ++c) order[c] = c;
  std::stable_sort(order, order + kChannels, [&](uint32_t a, uint32_t b) { return key[a] > key[b]; });
  bool outlier[kChannels] = {};
  for (uint32_t i = 0; i < kChannels / 2; ++i) outlier[order[i]] = true;
  std::memset(record, 0, record_bytes(plan.bits));
  uint32_t idx[2][kDim], n[2] = {};
  for (uint32_t c = 0; c < kChannels; ++c) {
    if (outlier[c]) record[c / 8] |= static_cast<uint8_t>(1u << (c % 8));
    idx[outlier[c] ? 0 : 1][n[outlier[c] ? 0 : 1]++] = c;
  }
  float* norms = reinterpret_cast<float*>(record + kMaskBytes);
  uint8_t* codes = record + kMaskBytes + kNormBytes;
  for (uint32_t t = 0; t < kTokens; ++t)
    for (uint32_t s = 0; s < 2; ++s) {
      const Book& book = s == 0 ? plan.outlier : plan.rest;
      float v[kDim], top = 0.f;
      for (uint32_t j = 0; j < kDim; ++j) top = fmaxf(top, fabsf(v[j] = tq_bf16_to_f32(x[t * kChannels + idx[s][j]])));
      const float f = tq_matrix::input_factor(top);
      int q[kDim], sum2 = 0;
      for (uint32_t j = 0; j < kDim; ++j) {
        q[j] = fixed_point_byte(v[j], f);
        sum2 += q[j] * q[j];
      }
      const float nq = sqrtf(static_cast<float>(sum2));
      norms[t * 2 + s] = f == 0.f ? 0.f : nq / f;
      const Coder k = book.bits == 4 ? coder_for<4>(book, nq) : book.bits == 3 ? coder_for<3>(book, nq) : coder_for<2>(book, nq);
      uint8_t* half = codes + t * 8 * (2 * plan.bits + 1) + (s == 0 ? 0 : 8 * (plan.bits + 1));
      for (uint32_t j = 0; j < kDim; ++j) {
        int acc = 0;
        for (uint32_t i = 0; i < kDim; ++i) acc += plan.matrix[j][i] * q[i];
        put_code(half, book.bits, j, code_at(book, k, acc));
      }
    }
}

void dequantize_group(const Plan& plan, const uint8_t* record, uint8_t* group) {
  uint16_t x[kTokens * kChannels];
  const float* norms = reinterpret_cast<const float*>(record + kMaskBytes);
  const uint8_t* codes = record + kMaskBytes + kNormBytes;
  uint32_t idx[2][kDim], n[2] = {};
  for (uint32_t c = 0; c < kChannels; ++c) {
    const uint32_t s = (record[c / 8] >> (c % 8)) & 1u ? 0 : 1;
    idx[s][n[s]++] = c;
  }
  for (uint32_t t = 0; t < kTokens; ++t)
    for (uint32_t s = 0; s < 2; ++s) {
      const Book& book = s == 0 ? plan.outlier : plan.rest;
      const Centroids& cent = plan.centroids[s];
      const uint8_t* half = codes + t * 8 * (2 * plan.bits + 1) + (s == 0 ? 0 : 8 * (plan.bits + 1));
      int y[kDim];
      for (uint32_t j = 0; j < kDim; ++j) y[j] = cent.value[get_code(half, book.bits, j)];
      for (uint32_t i = 0; i < kDim; ++i) {
        int acc = 0;
        for (uint32_t j = 0; j < kDim; ++j) acc += plan.matrix[j][i] * y[j];
        x[t * kChannels + idx[s][i]] = tq_f32_to_bf16(static_cast<float>(acc) * half_scale(norms[t * 2 + s], cent.shift));
      }
    }
  std::memcpy(group, x, sizeof x);
}

}  // namespace halves
