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
// Then what integer operands cost (input and centroids as 16-bit or 8-bit integers, a scale per
// vector), on the structured inputs, for a screened two-round rotation.
// Usage: rotations [json path] [markdown path]
#include <algorithm>
#include <cstdio>
#include <iterator>

#include "common.h"
#include "rotation_sim.h"

namespace {

constexpr uint32_t kSeeds = 64;

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

constexpr uint32_t kOperandSeeds = 4;
constexpr size_t kOperandVectors = 1024;

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
  // What the integer operands cost: each shape of bench::kShapes (bf16, as the kernels see it)
  // through two screened rounds, coded and back with the input and the centroids held as
  // 16-bit or 8-bit integers (one int8 MMA a product instead of two), against exact operands.
  const bench::IntegerOperands operands[] = {{0, false, 0}, {16, false, 16}, {8, false, 16}, {8, true, 16}, {8, true, 8}};
  std::fprintf(md, "\n| input (dim 128, two screened rounds) | bits | exact operands | 16-bit input and centroids | 8-bit input "
                   "(power-of-two scale) | 8-bit input (full range) | 8-bit input (full range) and centroids |\n"
                   "|---|---|---|---|---|---|---|\n");
  std::fprintf(json, "\n  ],\n  \"integer_operands\": [\n");
  std::vector<bench::Matrix> rotations;
  for (uint64_t seed = 1; seed <= kOperandSeeds; ++seed)
    rotations.push_back(bench::hadamard_rotation(128, 0, bench::screened_seed(128, seed, 2), 2));
  first = true;
  for (bench::Shape shape : bench::kShapes) {
    // as bf16 holds them: what the kernels read
    std::vector<float> xs;
    std::vector<uint8_t> raw;
    bench::encode(bench::shaped_vectors(shape, kOperandVectors, 128, 11), SW_DTYPE_BF16, raw);
    bench::decode(raw, SW_DTYPE_BF16, xs);
    for (uint32_t bits : bench::kLatticeBits) {
      double error[std::size(operands)] = {};
      for (size_t v = 0; v < kOperandVectors; ++v) {
        const std::vector<double> x(&xs[v * 128], &xs[v * 128] + 128);
        double nx = 0;
        for (double value : x) nx += value * value;
        for (size_t o = 0; o < std::size(operands); ++o) {
          const std::vector<double> back = bench::integer_round_trip(rotations[v % kOperandSeeds], x, bits, operands[o]);
          double e = 0;
          for (uint32_t j = 0; j < 128; ++j) e += (back[j] - x[j]) * (back[j] - x[j]);
          error[o] += e / nx / kOperandVectors;
        }
      }
      std::fprintf(md, "| %s | %u | %.5f", bench::shape_name(shape), bits, error[0]);
      for (size_t o = 1; o < std::size(operands); ++o) std::fprintf(md, " | %.5f (%.3fx)", error[o], error[o] / error[0]);
      std::fprintf(md, " |\n");
      std::fprintf(json, "%s    {\"input\": \"%s\", \"bits\": %u, \"exact\": %.7f, \"input16_centroids16\": %.7f, "
                   "\"input8_power_of_two\": %.7f, \"input8_full_range\": %.7f, \"input8_full_range_centroids8\": %.7f}",
                   first ? "" : ",\n", bench::shape_name(shape), bits, error[0], error[1], error[2], error[3], error[4]);
      first = false;
    }
  }
  std::fprintf(json, "\n  ]\n}\n");
  std::fclose(json);
  std::fclose(md);
  return 0;
}
