// Rotations that integer tensor cores could apply exactly, and what each costs on
// structured inputs (docs/QUANTIZATION.md, "A rotation for the tensor cores").
//
// Integer MMA is exact, so a rotation that is an integer matrix applied to a fixed-point
// input gives the same products on the GPU as in the C++ reference, in any summation order.
// A product of randomized Hadamard rounds is such a matrix once scaled by dim^(rounds/2);
// what matters is whether its entries fit int8, and what its lattice (a one-hot maps to one
// integer column) does to the codebook's error. For each candidate, dimension (128: the
// integer rates; 64: the halves of the fractional rates) and seed:
//  - the largest entry of the integer matrix (int8 holds up to 127);
//  - every one-hot and every Hadamard row of that dimension through it at 2, 3 and 4 bits:
//    the mean error over the dim one-hots and over the dim rows, as a multiple of Gaussian
//    vectors' mean error at the same rate;
//  - over seeds: the best, median and worst seed's largest multiple, and how many seeds
//    stay within 1.10x.
// Then what a 16-bit fixed-point input (a power-of-two scale per vector) costs.
// Usage: rotations [json path] [markdown path]
#include <algorithm>
#include <cstdio>

#include "common.h"
#include "rotation_sim.h"

namespace {

constexpr uint32_t kSeeds = 64;
constexpr uint32_t kGaussians = 4096;

// Subtractive dither in the rotated domain: a fixed pseudo-random offset per coordinate,
// added before coding and taken off the centroid, of `steps` lattice steps (2/dim for a
// unit vector under two rounds); the same offsets for every vector, so the reference and a
// kernel hold them as one table.
std::vector<double> dither(uint32_t dim, uint64_t seed, double steps) {
  std::vector<double> u(dim, 0.0);
  for (uint32_t i = 0; i < dim && steps > 0; ++i)
    u[i] = ((tq_splitmix64(seed ^ 0x9E3779B97F4A7C15ull, i) >> 11) * 0x1.0p-53 - 0.5) * steps * 2.0 / dim;
  return u;
}

struct Candidate {
  const char* name;
  uint32_t rounds;
  double dither_steps;
};

// One seed's lattice check, and the largest entry of its integer matrix into *max_entry.
bench::LatticeScore score(const Candidate& c, uint32_t dim, uint64_t seed, double* max_entry) {
  const bench::Matrix q = bench::hadamard_rotation(dim, 0, seed, c.rounds);
  const double scale = std::pow(static_cast<double>(dim), c.rounds / 2.0);
  for (double v : q) *max_entry = std::max(*max_entry, std::fabs(v) * scale);
  return bench::lattice_score(q, dim, dither(dim, seed, c.dither_steps));
}

// The input as the fixed-point format would hold it: 16-bit integers under a power-of-two
// scale per vector (the smallest at or above its largest magnitude).
std::vector<double> fixed_point16(const std::vector<double>& x) {
  double top = 0;
  for (double v : x) top = std::max(top, std::fabs(v));
  if (top == 0) return x;
  const double scale = std::ldexp(1.0, std::ilogb(top) + 1 - 15);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = std::clamp(std::nearbyint(x[i] / scale), -32767.0, 32767.0) * scale;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  FILE* json = std::fopen(argc > 1 ? argv[1] : "rotations.json", "w");
  FILE* md = std::fopen(argc > 2 ? argv[2] : "rotations.md", "w");
  if (!json || !md) return 2;
  const Candidate cands[] = {
      {"one Hadamard round (format v1)", 1, 0.0},
      {"two Hadamard rounds", 2, 0.0},
      {"two Hadamard rounds, dither of one lattice step", 2, 1.0},
      {"three Hadamard rounds (format v2)", 3, 0.0},
  };
  std::fprintf(md, "| rotation | dim | largest integer entry | best seed | median seed | worst seed | seeds within 1.10x | "
                   "Gaussian error, 2 / 3 / 4 bits |\n|---|---|---|---|---|---|---|---|\n");
  std::fprintf(json, "{\n  \"seeds\": %u,\n  \"candidates\": [\n", kSeeds);
  bool first = true;
  for (uint32_t dim : {128u, 64u}) {
    for (const Candidate& c : cands) {
      double max_entry = 0, gaussian[3] = {};
      std::vector<double> largest;
      for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
        const bench::LatticeScore s = score(c, dim, seed, &max_entry);
        largest.push_back(s.largest);
        for (size_t b = 0; b < 3; ++b) gaussian[b] += s.gaussian[b] / kSeeds;
      }
      std::vector<double> sorted = largest;
      std::sort(sorted.begin(), sorted.end());
      const auto within = std::count_if(largest.begin(), largest.end(), [](double v) { return v <= 1.10; });
      std::fprintf(md, "| %s | %u | %.0f | %.2fx | %.2fx | %.2fx | %ld of %u | %.4f / %.4f / %.5f |\n", c.name, dim, max_entry,
                   sorted.front(), sorted[kSeeds / 2], sorted.back(), static_cast<long>(within), kSeeds, gaussian[0],
                   gaussian[1], gaussian[2]);
      std::fprintf(json,
                   "%s    {\"rotation\": \"%s\", \"dim\": %u, \"max_integer_entry\": %.0f, \"best\": %.4f, \"median\": %.4f, "
                   "\"worst\": %.4f, \"within_1_10\": %ld, \"gaussian_error\": [%.6f, %.6f, %.6f], \"largest_per_seed\": [",
                   first ? "" : ",\n", c.name, dim, max_entry, sorted.front(), sorted[kSeeds / 2], sorted.back(),
                   static_cast<long>(within), gaussian[0], gaussian[1], gaussian[2]);
      for (uint32_t i = 0; i < kSeeds; ++i) std::fprintf(json, "%s%.4f", i ? ", " : "", largest[i]);
      std::fprintf(json, "]}");
      first = false;
    }
  }
  // A 16-bit fixed-point input: Gaussian vectors and a massive channel (channel 7 at 100x,
  // the rest N(0, 1)), whose scale the large channel sets, through two rounds (seed 1).
  std::fprintf(md, "\n| input (dim 128, two rounds) | bits | error, exact input | error, 16-bit fixed-point input | ratio |\n"
                   "|---|---|---|---|---|\n");
  std::fprintf(json, "\n  ],\n  \"fixed_point16\": [\n");
  const bench::Matrix q = bench::hadamard_rotation(128, 0, 1, 2);
  const std::vector<double> none(128, 0.0);
  bench::Rng rng(11);
  std::vector<std::vector<double>> massive(kGaussians, std::vector<double>(128));
  for (auto& v : massive)
    for (uint32_t i = 0; i < 128; ++i) v[i] = i == 7 ? 100.0 : rng.normal();
  const std::pair<const char*, const std::vector<std::vector<double>>*> inputs[] = {
      {"Gaussian", nullptr}, {"one massive channel", &massive}};
  const auto gaussians = bench::unit_gaussian_vectors(128, kGaussians, 7);
  first = true;
  for (const auto& [name, vectors] : inputs) {
    const auto& xs = vectors ? *vectors : gaussians;
    for (uint32_t bits : bench::kLatticeBits) {
      double exact = 0, fixed = 0;
      for (const auto& x : xs) {
        exact += bench::coded_error(bench::rotate_unit(q, x), bits, none) / xs.size();
        // the error against the exact input: what the rounding and the codebook lose together
        const std::vector<double> xf = fixed_point16(x), y = bench::rotate_unit(q, xf);
        double nx = 0, nf = 0;
        for (size_t i = 0; i < x.size(); ++i) nx += x[i] * x[i], nf += xf[i] * xf[i];
        std::vector<double> coded(128);
        for (uint32_t i = 0; i < 128; ++i) coded[i] = bench::codebook_value(128, bits, y[i]) * std::sqrt(nf);
        double e = 0;
        for (uint32_t j = 0; j < 128; ++j) {
          double back = 0;
          for (uint32_t i = 0; i < 128; ++i) back += q[i * 128 + j] * coded[i];
          e += (back - x[j]) * (back - x[j]);
        }
        fixed += e / nx / xs.size();
      }
      std::fprintf(md, "| %s | %u | %.6f | %.6f | %.4f |\n", name, bits, exact, fixed, fixed / exact);
      std::fprintf(json, "%s    {\"input\": \"%s\", \"bits\": %u, \"exact\": %.7f, \"fixed_point16\": %.7f}", first ? "" : ",\n",
                   name, bits, exact, fixed);
      first = false;
    }
  }
  std::fprintf(json, "\n  ]\n}\n");
  std::fclose(json);
  std::fclose(md);
  return 0;
}
