// Quantization quality of the C++ reference (the same codes as the CUDA kernels):
//  1. MSE of unit-norm Gaussian vectors, dim 128, at 1..4 bits beside the paper's reported
//     distortion, the codebook's own prediction and the 4^-b lower bound; 2.5 and 3.5 bits.
//  2. Inner-product error and bias of both variants.
//  3. Synthetic keys with heavy outlier channels and Gaussian values beside a KIVI-style
//     baseline (implemented here) at the same total bits per value.
//  4. Structured inputs (one-hot, a massive channel, constant, Hadamard rows, biased outlier
//     channels) against Gaussian ones at every rate from 2 to 4 bits: the rotations that were
//     candidates (simulated in double precision: one to three randomized Hadamard rounds, a
//     dense random orthogonal matrix, per-channel pre-scaling before one round, and the
//     tensor-core plan: two rounds with a screened seed at integer rates; the fractional
//     halves on the tensor cores with 8-bit operands, two screened rounds or three), then the
//     reference in format v1 (one round), v2 (three rounds), v3 and v4 (bf16 blocks of 16 tokens).
// Usage: quality [json path] [markdown path]
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <string>

#include "common.h"
#include "rotation_sim.h"

namespace {

constexpr uint32_t kDim = 128;

struct Stats {
  double n = 0, sum = 0, sum2 = 0;
  void add(double v) { n += 1, sum += v, sum2 += v * v; }
  double mean() const { return sum / n; }
  double sd() const { return std::sqrt(std::max(0.0, sum2 / n - mean() * mean())); }
};

// Round trip through the reference: blocks of `dtype` (fp32 unless asked), 1 layer, `heads`
// heads, all vectors of keys and values (both quantized with the same bits).
std::vector<float> round_trip(const std::vector<float>& x, uint32_t heads, uint32_t tokens, uint32_t kbits_x2,
                              uint32_t vbits_x2, uint32_t variant, double* bits_per_value, uint32_t version = 0,
                              uint64_t seed = 1234, uint32_t dtype = SW_DTYPE_FP32) {
  sw_tq_params p = bench::params(1, heads, kDim, tokens, dtype, kbits_x2, vbits_x2, variant, seed, version);
  std::vector<uint8_t> raw, q;
  bench::encode(x, dtype, raw);
  q = bench::quantize(p, raw);
  if (bits_per_value) *bits_per_value = 8.0 * q.size() / x.size();
  std::vector<float> y;
  bench::decode(bench::dequantize(p, q), dtype, y);
  return y;
}

std::vector<float> unit_gaussians(size_t n, uint64_t seed) {
  bench::Rng rng(seed);
  std::vector<float> x(n * kDim);
  for (size_t v = 0; v < n; ++v) {
    double s = 0;
    for (uint32_t j = 0; j < kDim; ++j) s += (x[v * kDim + j] = static_cast<float>(rng.normal())) * x[v * kDim + j];
    for (uint32_t j = 0; j < kDim; ++j) x[v * kDim + j] /= static_cast<float>(std::sqrt(s));
  }
  return x;
}

double dot(const float* a, const float* b) {
  double s = 0;
  for (uint32_t j = 0; j < kDim; ++j) s += static_cast<double>(a[j]) * b[j];
  return s;
}

// E||x - x^||^2 / E||x||^2 over all vectors.
double rel_mse(const std::vector<float>& x, const std::vector<float>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]), den += x[i] * static_cast<double>(x[i]);
  return num / den;
}

struct IpError {
  double d_times_mse;  // d * E[(<q,x^> - <q,x>)^2], unit x, independent unit q (paper's D_prod scale)
  double slope;        // sum <q,x^><q,x> / sum <q,x>^2 with q correlated to x: 1 = unbiased
  double bias_t;       // mean(<q,x^> - <q,x>) / (sd / sqrt(n)) for the correlated queries
};

IpError ip_error(const std::vector<float>& x, const std::vector<float>& y, uint64_t seed) {
  const size_t n = x.size() / kDim;
  const std::vector<float> qi = unit_gaussians(n, seed), noise = unit_gaussians(n, seed + 1);
  Stats indep, corr;
  double num = 0, den = 0;
  std::vector<float> q(kDim);
  for (size_t v = 0; v < n; ++v) {
    const float *xv = &x[v * kDim], *yv = &y[v * kDim];
    indep.add(dot(&qi[v * kDim], yv) - dot(&qi[v * kDim], xv));
    // q = x + independent unit noise: <q, x> is about 1, the error's sign shows a bias
    for (uint32_t j = 0; j < kDim; ++j) q[j] = xv[j] + noise[v * kDim + j];
    const double t = dot(q.data(), xv), e = dot(q.data(), yv);
    corr.add(e - t);
    num += e * t, den += t * t;
  }
  return {kDim * (indep.sum2 / indep.n), num / den, corr.mean() / (corr.sd() / std::sqrt(corr.n))};
}

// Synthetic keys: per head, 8 of 128 channels are outliers with 10x the scale and a fixed
// per-channel offset of 5 (the shape KIVI and others report for pre-RoPE keys); the rest
// N(0, 1). Values: N(0, 1). Layout [head][kv][token][dim] of one layer.
std::vector<float> synthetic_kv(uint32_t heads, uint32_t tokens, uint64_t seed) {
  bench::Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(heads) * 2 * tokens * kDim);
  for (uint32_t kv = 0; kv < 2; ++kv)
    for (uint32_t h = 0; h < heads; ++h) {
      bool outlier[kDim] = {};
      for (int k = 0; k < 8;) {
        uint32_t c = rng.next() % kDim;
        if (!outlier[c]) outlier[c] = true, ++k;
      }
      float* g = &x[(static_cast<size_t>(kv) * heads + h) * tokens * kDim];
      for (uint32_t t = 0; t < tokens; ++t)
        for (uint32_t c = 0; c < kDim; ++c) {
          double z = rng.normal();
          g[t * kDim + c] = static_cast<float>(kv == 0 && outlier[c] ? 10.0 * z + 5.0 : z);
        }
    }
  return x;
}

// KIVI-style asymmetric integer quantization with a zero point: min and scale kept in fp16
// per group of `group` values. Keys are grouped per channel along tokens, values per token
// along channels (KIVI's arrangement).
void kivi(std::vector<float>& x, uint32_t heads, uint32_t tokens, uint32_t bits, uint32_t group) {
  auto half = [](float v) { return static_cast<float>(static_cast<_Float16>(v)); };
  const float levels = static_cast<float>((1u << bits) - 1);
  for (uint32_t kv = 0; kv < 2; ++kv)
    for (uint32_t h = 0; h < heads; ++h) {
      float* g = &x[(static_cast<size_t>(kv) * heads + h) * tokens * kDim];
      // (outer, inner) index -> element: keys walk tokens within a channel, values channels within a token
      auto at = [&](uint32_t outer, uint32_t i) -> float& {
        return kv == 0 ? g[i * kDim + outer] : g[outer * kDim + i];
      };
      const uint32_t outers = kv == 0 ? kDim : tokens, inner = kv == 0 ? tokens : kDim;
      for (uint32_t o = 0; o < outers; ++o)
        for (uint32_t i0 = 0; i0 < inner; i0 += group) {
          float lo = at(o, i0), hi = lo;
          for (uint32_t i = i0; i < i0 + group; ++i) lo = std::min(lo, at(o, i)), hi = std::max(hi, at(o, i));
          const float mn = half(lo), sc = half((hi - mn) / levels);
          for (uint32_t i = i0; i < i0 + group; ++i) {
            float qv = sc > 0 ? std::nearbyint((at(o, i) - mn) / sc) : 0.0f;
            at(o, i) = mn + std::min(std::max(qv, 0.0f), levels) * sc;
          }
        }
    }
}

// Split [head][kv] blocks (the quantizer's layout for one layer) into keys and values.
void split_kv(const std::vector<float>& x, uint32_t heads, uint32_t tokens, std::vector<float>& k, std::vector<float>& v) {
  const size_t g = static_cast<size_t>(tokens) * kDim;
  k.assign(x.begin(), x.begin() + heads * g);
  v.assign(x.begin() + heads * g, x.end());
}

// ---- rotation candidates, simulated ----------------------------------------------------
// Each candidate is a dense orthonormal matrix per sub-vector dimension and half, applied in
// double precision around the same codebooks and the same outlier split as the quantizer.

using bench::Matrix;
using bench::hadamard_rotation;

// The paper's rotation: Gram-Schmidt on a Gaussian matrix.
Matrix dense_rotation(uint32_t dim, uint32_t sub, uint64_t seed) {
  bench::Rng rng(seed * 2 + sub);
  Matrix m(dim * dim);
  for (auto& v : m) v = rng.normal();
  for (uint32_t i = 0; i < dim; ++i) {
    for (uint32_t p = 0; p < i; ++p) {
      double d = 0;
      for (uint32_t j = 0; j < dim; ++j) d += m[i * dim + j] * m[p * dim + j];
      for (uint32_t j = 0; j < dim; ++j) m[i * dim + j] -= d * m[p * dim + j];
    }
    double n = 0;
    for (uint32_t j = 0; j < dim; ++j) n += m[i * dim + j] * m[i * dim + j];
    for (uint32_t j = 0; j < dim; ++j) m[i * dim + j] /= std::sqrt(n);
  }
  return m;
}

// One sub-vector through rotation q, the b-bit codebook for its dimension, and back; with
// integer operands as a tensor-core kernel holds them where ops gives any.
void code_sub(const Matrix& q, uint32_t bits, std::vector<double>& v, const bench::IntegerOperands& ops) {
  if (ops.input_bits) {
    v = bench::integer_round_trip(q, v, bits, ops);
    return;
  }
  const uint32_t dim = static_cast<uint32_t>(v.size());
  double norm = 0;
  for (double x : v) norm += x * x;
  norm = std::sqrt(norm);
  if (norm == 0) return;
  std::vector<double> y(dim, 0.0);
  for (uint32_t i = 0; i < dim; ++i) {
    double acc = 0;
    for (uint32_t j = 0; j < dim; ++j) acc += q[i * dim + j] * v[j];
    y[i] = bench::codebook_value(dim, bits, acc / norm) * norm;
  }
  for (uint32_t j = 0; j < dim; ++j) {
    double acc = 0;
    for (uint32_t i = 0; i < dim; ++i) acc += q[i * dim + j] * y[i];
    v[j] = acc;
  }
}

struct Candidate {
  const char* name;
  std::function<Matrix(uint32_t dim, uint32_t sub, uint64_t seed)> rotation;
  bool prescale;  // divide each channel by its RMS over the group's tokens first
  bool all_seeds;  // over as many rotation seeds as the reference (the others: fewer, for time)
  bench::IntegerOperands ops = {};  // exact unless given
};

// Relative squared error of groups of `tokens` vectors at bx2 / 2 bits (MSE codes), with the
// quantizer's fractional split: the head_dim/2 channels of most energy at one bit more.
// The seed of a two-round rotation of dimension d, screened (rotation_sim.h), once per seed.
uint64_t screened_two_rounds(uint32_t d, uint64_t seed) {
  static std::map<std::pair<uint32_t, uint64_t>, uint64_t> screened;
  const auto key = std::make_pair(d, seed);
  if (!screened.count(key)) screened[key] = bench::screened_seed(d, seed, 2);
  return screened[key];
}

constexpr bench::IntegerOperands kTensorCoreOperands = {8, true, 8};

double simulate(const Candidate& cand, const std::vector<float>& x, uint32_t tokens, uint32_t bx2, uint64_t seed) {
  const bool frac = bx2 & 1u;
  const uint32_t nsub = frac ? 2 : 1, dim = kDim / nsub, bits[2] = {(bx2 + 1) / 2, bx2 / 2};
  const Matrix q[2] = {cand.rotation(dim, 0, seed), frac ? cand.rotation(dim, 1, seed) : Matrix()};
  double num = 0, den = 0;
  for (size_t g0 = 0; g0 < x.size(); g0 += static_cast<size_t>(tokens) * kDim) {
    const float* g = &x[g0];
    std::vector<double> energy(kDim, 0.0), scale(kDim, 1.0);
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t c = 0; c < kDim; ++c) energy[c] += static_cast<double>(g[t * kDim + c]) * g[t * kDim + c];
    if (cand.prescale)
      for (uint32_t c = 0; c < kDim; ++c) scale[c] = energy[c] > 0 ? std::sqrt(energy[c] / tokens) : 1.0;
    std::vector<uint32_t> order(kDim);
    for (uint32_t c = 0; c < kDim; ++c) order[c] = c;
    if (frac) {  // outliers ascending, then the rest ascending (ties to the lower channel)
      std::vector<uint32_t> by_energy = order;
      std::stable_sort(by_energy.begin(), by_energy.end(), [&](uint32_t a, uint32_t b) { return energy[a] > energy[b]; });
      std::vector<bool> out(kDim, false);
      for (uint32_t i = 0; i < kDim / 2; ++i) out[by_energy[i]] = true;
      std::stable_partition(order.begin(), order.end(), [&](uint32_t c) { return out[c]; });
    }
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t s = 0; s < nsub; ++s) {
        std::vector<double> v(dim);
        for (uint32_t j = 0; j < dim; ++j) v[j] = g[t * kDim + order[s * dim + j]] / scale[order[s * dim + j]];
        code_sub(q[s], bits[s], v, cand.ops);
        for (uint32_t j = 0; j < dim; ++j) {
          const uint32_t c = order[s * dim + j];
          const double e = v[j] * scale[c] - g[t * kDim + c];
          num += e * e, den += static_cast<double>(g[t * kDim + c]) * g[t * kDim + c];
        }
      }
  }
  return num / den;
}

}  // namespace

int main(int argc, char** argv) {
  FILE* json = std::fopen(argc > 1 ? argv[1] : "quality.json", "w");
  FILE* md = std::fopen(argc > 2 ? argv[2] : "quality.md", "w");
  if (!json || !md) return 2;
  // 1 + 2: unit Gaussians, 64 heads x 2 (K, V) x 64 tokens = 8192 vectors
  const uint32_t heads = 64, tokens = 64;
  const size_t n = 2ull * heads * tokens;
  const std::vector<float> x = unit_gaussians(n, 1);
  const double paper_mse[] = {0.36, 0.117, 0.03, 0.009}, paper_prod[] = {1.57, 0.56, 0.18, 0.047};
  std::fprintf(md, "### Unit-norm Gaussian vectors, d = 128 (%zu vectors)\n\n", n);
  std::fprintf(md, "| bits | bits/value stored | MSE (ours) | paper D_mse | codebook prediction | lower bound 4^-b | "
                   "d·IP err² mse | d·IP err² prod | paper d·D_prod | IP slope mse | IP slope prod | bias t mse | bias t prod |\n");
  std::fprintf(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::fprintf(json, "{\n  \"gaussian_d128\": [\n");
  for (uint32_t bx2 = 2; bx2 <= 8; ++bx2) {
    double stored;
    const std::vector<float> ym = round_trip(x, heads, tokens, bx2, bx2, SW_TQ_MSE, &stored);
    const std::vector<float> yp = round_trip(x, heads, tokens, bx2, bx2, SW_TQ_PROD, nullptr);
    const double mse = rel_mse(x, ym);
    const IpError im = ip_error(x, ym, 77), ip = ip_error(x, yp, 77);
    const bool integer = bx2 % 2 == 0;
    const uint32_t b = bx2 / 2;
    char paper[32] = "–", pred[32] = "–", lb[32] = "–", pprod[32] = "–";
    if (integer) {
      std::snprintf(paper, sizeof paper, "%.3g", paper_mse[b - 1]);
      std::snprintf(pred, sizeof pred, "%.4f", TQ_CODEBOOK_DISTORTION[4][b - 1]);
      std::snprintf(lb, sizeof lb, "%.4f", std::pow(4.0, -static_cast<double>(b)));
      std::snprintf(pprod, sizeof pprod, "%.3g", paper_prod[b - 1]);
    } else {
      // two halves of 64 dims at b+1 and b bits
      std::snprintf(pred, sizeof pred, "%.4f", 0.5 * (TQ_CODEBOOK_DISTORTION[3][b] + TQ_CODEBOOK_DISTORTION[3][b - 1]));
    }
    std::fprintf(md, "| %.1f | %.3f | %.4f | %s | %s | %s | %.3f | %.3f | %s | %.4f | %.4f | %.1f | %.1f |\n", bx2 / 2.0,
                 stored, mse, paper, pred, lb, im.d_times_mse, ip.d_times_mse, pprod, im.slope, ip.slope, im.bias_t,
                 ip.bias_t);
    std::fprintf(json,
                 "%s    {\"bits\": %.1f, \"stored_bits_per_value\": %.4f, \"mse\": %.5f, \"ip_d_mse_mse\": %.4f, "
                 "\"ip_d_mse_prod\": %.4f, \"ip_slope_mse\": %.5f, \"ip_slope_prod\": %.5f, \"bias_t_mse\": %.2f, "
                 "\"bias_t_prod\": %.2f}",
                 bx2 == 2 ? "" : ",\n", bx2 / 2.0, stored, mse, im.d_times_mse, ip.d_times_mse, im.slope, ip.slope,
                 im.bias_t, ip.bias_t);
  }
  // 3: outlier keys vs KIVI, 8 heads x 128 tokens per block (KIVI key groups of 128 tokens)
  const uint32_t oheads = 8, otokens = 128;
  const std::vector<float> kvx = synthetic_kv(oheads, otokens, 9);
  std::vector<float> kx, vx;
  split_kv(kvx, oheads, otokens, kx, vx);
  std::fprintf(md, "\n### Synthetic keys with outlier channels (8 of 128 channels at 10x scale, offset 5), Gaussian values\n\n");
  std::fprintf(md, "| method | nominal bits | stored bits/value | key rel. MSE | value rel. MSE | key IP rel. RMS err |\n|---|---|---|---|---|---|\n");
  std::fprintf(json, "\n  ],\n  \"outlier_keys\": [\n");
  bool first = true;
  auto row = [&](const char* method, double nominal, double stored, const std::vector<float>& y) {
    std::vector<float> ky, vy;
    split_kv(y, oheads, otokens, ky, vy);
    // inner products with random Gaussian queries, relative to the RMS true inner product
    const std::vector<float> q = unit_gaussians(kx.size() / kDim, 5);
    Stats err, ref;
    for (size_t v = 0; v < kx.size() / kDim; ++v) {
      const double t = dot(&q[v * kDim], &kx[v * kDim]);
      err.add(dot(&q[v * kDim], &ky[v * kDim]) - t);
      ref.add(t);
    }
    const double ipe = std::sqrt(err.sum2 / err.n) / std::sqrt(ref.sum2 / ref.n);
    const double km = rel_mse(kx, ky), vm = rel_mse(vx, vy);
    std::fprintf(md, "| %s | %.1f | %.3f | %.4f | %.4f | %.4f |\n", method, nominal, stored, km, vm, ipe);
    std::fprintf(json,
                 "%s    {\"method\": \"%s\", \"nominal_bits\": %.1f, \"stored_bits_per_value\": %.4f, \"key_rel_mse\": %.5f, "
                 "\"value_rel_mse\": %.5f, \"key_ip_rel_rms\": %.5f}",
                 first ? "" : ",\n", method, nominal, stored, km, vm, ipe);
    first = false;
  };
  for (uint32_t bx2 : {8u, 7u, 5u, 4u}) {
    double stored;
    const std::vector<float> y = round_trip(kvx, oheads, otokens, bx2, bx2, SW_TQ_MSE, &stored);
    row("TurboQuant mse", bx2 / 2.0, stored, y);
  }
  // KIVI at b bits with fp16 min and scale per group of 128: b + 0.25 bits per value, the
  // same as TurboQuant's b bits + one fp32 norm per 128 values at integer rates.
  for (uint32_t b : {4u, 3u, 2u}) {
    std::vector<float> y = kvx;
    kivi(y, oheads, otokens, b, 128);
    row("KIVI (group 128)", b, b + 32.0 / 128, y);
  }
  // 4: structured inputs, 16 groups of 64 tokens each
  const uint32_t sheads = 8, stokens = 64;
  const size_t sn = 2ull * sheads * stokens;
  const uint32_t rates[] = {4, 5, 6, 7, 8};
  constexpr uint32_t kSeeds = 32, kSimSeeds = 8;  // the simulation's dense products cost more
  std::vector<Candidate> cands = {
      {"one Hadamard round (v1)", [](uint32_t d, uint32_t s, uint64_t seed) { return hadamard_rotation(d, s, seed, 1); }, false, false},
      {"two Hadamard rounds", [](uint32_t d, uint32_t s, uint64_t seed) { return hadamard_rotation(d, s, seed, 2); }, false, false},
      {"three Hadamard rounds", [](uint32_t d, uint32_t s, uint64_t seed) { return hadamard_rotation(d, s, seed, 3); }, false, false},
      {"dense random orthogonal", dense_rotation, false, false},
      {"per-channel pre-scaling + one round", [](uint32_t d, uint32_t s, uint64_t seed) { return hadamard_rotation(d, s, seed, 1); }, true, false},
      // The tensor-core plan (docs/QUANTIZATION.md): two rounds as one int8 matrix for the
      // integer rates, with the seed screened for its lattice; three for the fractional halves.
      {"two rounds, screened seed (integer rates); three (fractional)", [](uint32_t d, uint32_t s, uint64_t seed) {
         return d == kDim ? hadamard_rotation(d, 0, screened_two_rounds(d, seed), 2) : hadamard_rotation(d, s, seed, 3);
       }, false, true},
      // Candidates for the fractional halves on the tensor cores, as the kernels would hold
      // their operands (8-bit input to the full range, 8-bit centroids); the integer rates
      // as format 3 codes them. Two screened rounds fit int8 at dim 64 (one matrix for both
      // halves); three need int16 entries (two int8 products each way).
      {"8-bit operands: two screened rounds at dim 128 and at 64", [](uint32_t d, uint32_t, uint64_t seed) {
         return hadamard_rotation(d, 0, screened_two_rounds(d, seed), 2);
       }, false, true, kTensorCoreOperands},
      {"8-bit operands: two screened rounds at dim 128, three at 64", [](uint32_t d, uint32_t s, uint64_t seed) {
         return d == kDim ? hadamard_rotation(d, 0, screened_two_rounds(d, seed), 2) : hadamard_rotation(d, s, seed, 3);
       }, false, true, kTensorCoreOperands},
  };
  std::fprintf(md, "\n### Structured inputs: relative squared error as a multiple of the Gaussian figure (mse)\n\n");
  std::fprintf(md, "%zu vectors of each shape in groups of %u tokens; a cell is the shape's error over the Gaussian "
                   "vectors' error under the same method and rate (the Gaussian row gives that error). The reference's "
                   "rows and the tensor-core plan's are means over %u rotation seeds (the other simulated candidates' over %u), with the worst single seed "
                   "after the slash. Worst: the largest over the structured shapes (not the Gaussian ones: every vector its own "
                   "draw, or one draw repeated).\n\n",
               sn, stokens, kSeeds, kSimSeeds);
  std::fprintf(md, "| method | input | 2 bits | 2.5 | 3 | 3.5 | 4 |\n|---|---|---|---|---|---|---|\n");
  std::fprintf(json, "\n  ],\n  \"structured\": [\n");
  bool first_row = true;
  // One method: errors per shape, rate and seed; rows of mean ratios to the Gaussian mean,
  // with the worst seed's ratio where there are several seeds.
  using ErrorFn = std::function<double(const std::vector<float>&, uint32_t bx2, uint32_t seed)>;
  auto method_rows = [&](const char* method, uint32_t seeds, const ErrorFn& err) {
    double mean[bench::kShapeCount][5] = {}, top[bench::kShapeCount][5] = {}, worst[5] = {}, worst_seed[5] = {};
    for (size_t si = 0; si < bench::kShapeCount; ++si) {
      const std::vector<float> xs = bench::shaped_vectors(bench::kShapes[si], sn, kDim, 500 + si);
      for (int r = 0; r < 5; ++r)
        for (uint32_t seed = 0; seed < seeds; ++seed) {
          const double e = err(xs, rates[r], 1234 + seed);
          mean[si][r] += e / seeds;
          top[si][r] = std::max(top[si][r], e);
        }
    }
    for (size_t si = 0; si < bench::kShapeCount; ++si) {
      std::fprintf(md, "| %s | %s |", method, bench::shape_name(bench::kShapes[si]));
      const bool structured = si > 0 && bench::kShapes[si] != bench::Shape::RepeatedGaussian;
      for (int r = 0; r < 5; ++r) {
        const double ratio = mean[si][r] / mean[0][r], seed_ratio = top[si][r] / mean[0][r];
        if (structured) worst[r] = std::max(worst[r], ratio), worst_seed[r] = std::max(worst_seed[r], seed_ratio);
        if (!si) std::fprintf(md, " %.4f |", mean[0][r]);
        else std::fprintf(md, " %.2fx / %.2fx |", ratio, seed_ratio);
        std::fprintf(json,
                     "%s    {\"method\": \"%s\", \"input\": \"%s\", \"bits\": %.1f, \"seeds\": %u, \"rel_mse\": %.6f, "
                     "\"vs_gaussian\": %.4f, \"worst_seed_vs_gaussian\": %.4f}",
                     first_row ? "" : ",\n", method, bench::shape_name(bench::kShapes[si]), rates[r] / 2.0, seeds,
                     mean[si][r], ratio, seed_ratio);
        first_row = false;
      }
      std::fprintf(md, "\n");
    }
    std::fprintf(md, "| %s | **worst** |", method);
    for (int r = 0; r < 5; ++r) std::fprintf(md, " **%.2fx** / %.2fx |", worst[r], worst_seed[r]);
    std::fprintf(md, "\n");
  };
  for (const Candidate& c : cands)
    method_rows(c.name, c.all_seeds ? kSeeds : kSimSeeds, [&](const std::vector<float>& xs, uint32_t bx2, uint32_t seed) { return simulate(c, xs, stokens, bx2, seed); });
  for (uint32_t version : {1u, 2u, 3u}) {
    const std::string name = "reference, format v" + std::to_string(version);
    method_rows(name.c_str(), kSeeds, [&](const std::vector<float>& xs, uint32_t bx2, uint32_t seed) {
      return rel_mse(xs, round_trip(xs, sheads, stokens, bx2, bx2, SW_TQ_MSE, nullptr, version, seed));
    });
  }
  // format 4's halves kinds code the fractional rates of bf16 blocks of 16 tokens: the same vectors
  // in such blocks, by format 3 and by format 4 (the errors against the fp32 values, bf16's
  // rounding included)
  for (uint32_t version : {3u, 4u}) {
    const std::string name = "reference, format v" + std::to_string(version) + " (bf16, 16 tokens a block)";
    method_rows(name.c_str(), kSeeds, [&](const std::vector<float>& xs, uint32_t bx2, uint32_t seed) {
      return rel_mse(xs, round_trip(xs, static_cast<uint32_t>(sn / 2 / 16), 16, bx2, bx2, SW_TQ_MSE, nullptr, version, seed, SW_DTYPE_BF16));
    });
  }
  // 5: how far one vector's error spreads, Gaussian vectors each their own draw: what a
  // single direction's error over rotation seeds is compared with (the control above).
  std::fprintf(md, "\n### One vector's error: Gaussian vectors, each its own draw (format v2, one seed)\n\n"
                   "The relative squared error of each of the %zu vectors, as a multiple of their mean.\n\n"
                   "| bits | mean | p50 | p90 | 1 in 32 (p97) | max |\n|---|---|---|---|---|---|\n", sn);
  std::fprintf(json, "\n  ],\n  \"per_vector\": [\n");
  const std::vector<float> gx = bench::shaped_vectors(bench::Shape::Gaussian, sn, kDim, 500);
  for (int r = 0; r < 5; ++r) {
    const std::vector<float> gy = round_trip(gx, sheads, stokens, rates[r], rates[r], SW_TQ_MSE, nullptr, 2);
    std::vector<double> e(sn);
    double mean = 0;
    for (size_t v = 0; v < sn; ++v) {
      const std::vector<float> xv(gx.begin() + v * kDim, gx.begin() + (v + 1) * kDim), yv(gy.begin() + v * kDim, gy.begin() + (v + 1) * kDim);
      e[v] = rel_mse(xv, yv);
      mean += e[v] / sn;
    }
    std::sort(e.begin(), e.end());
    const double p50 = e[sn / 2] / mean, p90 = e[sn * 9 / 10] / mean, p97 = e[sn * 97 / 100] / mean, top = e[sn - 1] / mean;
    std::fprintf(md, "| %.1f | %.4f | %.2fx | %.2fx | %.2fx | %.2fx |\n", rates[r] / 2.0, mean, p50, p90, p97, top);
    std::fprintf(json, "%s    {\"bits\": %.1f, \"mean\": %.6f, \"p50\": %.4f, \"p90\": %.4f, \"p97\": %.4f, \"max\": %.4f}",
                 r ? ",\n" : "", rates[r] / 2.0, mean, p50, p90, p97, top);
  }
  std::fprintf(json, "\n  ]\n}\n");
  std::fclose(json);
  std::fclose(md);
  return 0;
}
