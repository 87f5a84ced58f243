// Host reference quantizer throughput: (bytes read + bytes written) / s for quantize and
// dequantize of a Llama-3-8B-like bf16 block set, on one core and on all cores
// (std::thread, groups split evenly, as the addon's pool does).
// Usage: host_speed [json path]
#include <chrono>
#include <cstdio>
#include <thread>

#include "common.h"

namespace {

using Clock = std::chrono::steady_clock;

// Blocks of 32 layers x 8 kv heads x 16 tokens x 128 dims; `blocks` of them, quantized one
// after another like the tier does, each split over `threads` threads.
double run(const sw_tq_params& p, unsigned threads, size_t blocks, bool quant, std::vector<uint8_t>& raw,
           std::vector<uint8_t>& q) {
  const size_t rb = sw_tq_raw_bytes(&p), qb = sw_tq_quantized_bytes(&p);
  const uint32_t groups = sw_tq_groups(&p);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = Clock::now();
    for (size_t b = 0; b < blocks; ++b) {
      uint8_t* r = raw.data() + b * rb;
      uint8_t* z = q.data() + b * qb;
      if (quant) sw_tq_write_header(&p, z);
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t) {
        uint32_t g0 = groups * t / threads, g1 = groups * (t + 1) / threads;
        pool.emplace_back([&, g0, g1] {
          if (quant) sw_tq_quantize_groups(&p, r, z, g0, g1 - g0);
          else sw_tq_dequantize_groups(&p, z, r, g0, g1 - g0);
        });
      }
      for (auto& th : pool) th.join();
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    double gbs = (rb + qb) * static_cast<double>(blocks) / s / 1e9;
    best = gbs > best ? gbs : best;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned cores = std::thread::hardware_concurrency();
  const size_t blocks = 16;  // 16 x 2 MiB raw = 32 MiB per pass
  FILE* json = argc > 1 ? std::fopen(argv[1], "w") : nullptr;
  if (json) std::fprintf(json, "{\n  \"cores\": %u,\n  \"results\": [\n", cores);
  std::printf("| bits (K=V) | variant | quantize GB/s 1 core | dequantize GB/s 1 core | quantize GB/s %u cores | dequantize GB/s %u cores |\n",
              cores, cores);
  std::printf("|---|---|---|---|---|---|\n");
  bool first = true;
  struct Case {
    uint32_t variant, bx2, version;  // version 0: this build's format
  };
  std::vector<Case> cases;
  for (uint32_t variant : {SW_TQ_MSE, SW_TQ_PROD})
    for (uint32_t bx2 : {8u, 7u, 5u, 4u}) cases.push_back({variant, bx2, 0});
  cases.insert(cases.begin() + 1, {SW_TQ_MSE, 8, 2});  // format 2's coding of the heads format 3 takes to its matrix
  for (const auto& [variant, bx2, version] : cases) {
      sw_tq_params p = bench::params(32, 8, 128, 16, SW_DTYPE_BF16, bx2, bx2, variant, 1, version);
      bench::Rng rng(bx2);
      std::vector<float> x(sw_tq_raw_bytes(&p) / 2 * blocks);
      for (auto& v : x) v = static_cast<float>(rng.normal());
      std::vector<uint8_t> raw, q(sw_tq_quantized_bytes(&p) * blocks);
      bench::encode(x, p.dtype, raw);
      double q1 = run(p, 1, blocks, true, raw, q), d1 = run(p, 1, blocks, false, raw, q);
      double qn = run(p, cores, blocks, true, raw, q), dn = run(p, cores, blocks, false, raw, q);
      const char* vname = variant ? "prod" : "mse";
      const uint32_t format = version ? version : SW_TQ_FORMAT_VERSION;
      std::printf("| %.1f | %s, format %u | %.2f | %.2f | %.2f | %.2f |\n", bx2 / 2.0, vname, format, q1, d1, qn, dn);
      if (json)
        std::fprintf(json,
                     "%s    {\"bits\": %.1f, \"variant\": \"%s\", \"format\": %u, \"quantize_gbs_1\": %.3f, \"dequantize_gbs_1\": %.3f, "
                     "\"quantize_gbs_all\": %.3f, \"dequantize_gbs_all\": %.3f}",
                     first ? "" : ",\n", bx2 / 2.0, vname, format, q1, d1, qn, dn);
      first = false;
    }
  if (json) {
    std::fprintf(json, "\n  ]\n}\n");
    std::fclose(json);
  }
  return 0;
}
