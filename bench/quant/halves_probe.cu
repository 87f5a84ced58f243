// Format 4's halves kinds alone on the tensor cores (docs/QUANTIZATION.md, "The fractional
// rates' halves on the tensor cores"): groups of 16 bf16 tokens of a head of 128 at 3.5 and 2.5
// bits, one after another (no blocks), the outlier split chosen per group from its energies and
// each half through three Hadamard rounds of dimension 64 as one int16 matrix (two int8 MMAs a
// product), both ways. The C++ reference is kernels/tq_halves.cpp, the tile code
// kernels/tq_halves_tile.cuh; here are kernels over arrays of groups and the checks.
// The probe checks the first groups' records and dequantized values against the C++ reference's, byte
// for byte, then times the kernels beside a device-to-device copy of the same bf16 bytes.
// Usage: halves_probe [json path]          (exit 1 if the GPU and the reference disagree)
//        halves_probe --emulate [groups]   (the tile code on CPU threads against the reference; no GPU)
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "common.h"
#include "cuda_bench.h"
#include "tq_halves_tile.cuh"
#include "mma_warps.cuh"

namespace halves {
namespace {

constexpr uint32_t kWarps = 4;  // per CTA
constexpr uint64_t kSeed = 1234;

__constant__ Book kBooks[2];         // quantize's: the outlier half's, the rest's
__constant__ uint32_t kTables[2][4];  // dequantize's centroid bytes, the same halves
__constant__ int kShifts[2];

template <uint32_t kBits> using Shared = GroupShared<kBits, kWarps>;

// The fragments into shared memory, then each warp's groups in turn: use(group, warp index).
template <uint32_t kBits, typename Use>
__device__ inline void for_each_group(Shared<kBits>& sm, const uint4* a_hi, const uint4* a_lo, size_t groups, Use&& use) {
  sm.load_fragments(a_hi, a_lo);
  for (size_t group = blockIdx.x * kWarps + threadIdx.x / 32; group < groups; group += static_cast<size_t>(gridDim.x) * kWarps) use(group, threadIdx.x / 32);
}

template <uint32_t kBits>
__global__ void __launch_bounds__(kWarps * 32, kQuantizeMinCtas<kBits>) quantize_halves(const uint4* __restrict__ raw, const uint4* __restrict__ a_hi,
                                                              const uint4* __restrict__ a_lo, uint4* __restrict__ records, size_t groups) {
  __shared__ Shared<kBits> sm;
  HalvesDeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32;
  for_each_group(sm, a_hi, a_lo, groups, [&](size_t group, uint32_t w) {
    stage_group(sm.group[w], raw + group * kGroupWords, lane);
    quantize_group_tiles<kBits>(warp, lane, reinterpret_cast<uint16_t*>(sm.group[w]), sm.hi, sm.lo,
                                kBooks[0], kBooks[1], reinterpret_cast<uint8_t*>(sm.record[w]));
    __syncwarp();
    copy_words(records + group * Shared<kBits>::kRecordWords, sm.record[w], Shared<kBits>::kRecordWords, lane);
  });
}

template <uint32_t kBits>
__global__ void __launch_bounds__(kWarps * 32) dequantize_halves(const uint4* __restrict__ records, const uint4* __restrict__ a_hi,
                                                                const uint4* __restrict__ a_lo, uint4* __restrict__ raw, size_t groups) {
  __shared__ Shared<kBits> sm;
  uint32_t tables[2][4];
  int shifts[2];
  for (int h = 0; h < 2; ++h) {
    shifts[h] = kShifts[h];
    for (int w = 0; w < 4; ++w) tables[h][w] = kTables[h][w];
  }
  HalvesDeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32;
  for_each_group(sm, a_hi, a_lo, groups, [&](size_t group, uint32_t w) {
    copy_words(sm.record[w], records + group * Shared<kBits>::kRecordWords, Shared<kBits>::kRecordWords, lane);
    dequantize_group_tiles<kBits>(warp, lane, reinterpret_cast<const uint8_t*>(sm.record[w]), reinterpret_cast<uint32_t*>(sm.channels[w]),
                                  reinterpret_cast<uint32_t*>(sm.group[w]), sm.hi, sm.lo, tables, shifts, reinterpret_cast<uint16_t*>(raw + group * kGroupWords));
  });
}

// Test groups: Gaussian at several scales, with groups of a massive channel, of constant tokens
// (every key equal), of zero tokens and Gaussian ones among NaN and infinite values (taken as 0),
// of one-hot tokens and of pairs of equal channels among them.
std::vector<uint16_t> test_groups(size_t n) {
  std::vector<uint16_t> out(n * kTokens * kChannels);
  bench::Rng rng(7);
  for (size_t gi = 0; gi < n; ++gi)
    for (uint32_t t = 0; t < kTokens; ++t)
      for (uint32_t c = 0; c < kChannels; ++c) {
        double value = rng.normal() * (0.5 + (gi % 7)) * (c % 5 == 0 ? 4.0 : 1.0);
        switch (gi % 16) {
          case 1: value = c == 7 ? 100.0 : rng.normal(); break;
          case 2: value = 1.0; break;
          case 3: value = c == 9 ? NAN : c == 10 + t % 2 ? (t % 3 ? INFINITY : -INFINITY) : t < 8 ? 0.0 : value; break;
          case 4: value = c == (t * 37 + gi) % kChannels ? 3.0 : 0.0; break;
          case 5: value = (c % 2 ? -1.0 : 1.0) * (1.0 + (c / 2) % 3); break;
        }
        out[(gi * kTokens + t) * kChannels + c] = tq_f32_to_bf16(static_cast<float>(value));
      }
  return out;
}

std::vector<uint8_t> reference_records(const Plan& plan, const std::vector<uint16_t>& raw, size_t groups) {
  std::vector<uint8_t> out(groups * record_bytes(plan.bits));
  for (size_t gi = 0; gi < groups; ++gi) quantize_group(plan, reinterpret_cast<const uint8_t*>(&raw[gi * kTokens * kChannels]), &out[gi * record_bytes(plan.bits)]);
  return out;
}

size_t differing_groups(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, uint32_t bits, size_t groups) {
  size_t n = 0;
  for (size_t gi = 0; gi < groups; ++gi) n += std::memcmp(&a[gi * record_bytes(bits)], &b[gi * record_bytes(bits)], record_bytes(bits)) != 0;
  return n;
}

// The reference's round trip of the Gaussian groups (those of no special shape): relative squared error.
double gaussian_error(const Plan& plan, const std::vector<uint16_t>& raw, const std::vector<uint8_t>& records, size_t groups) {
  double err = 0, energy = 0;
  std::vector<uint16_t> y(kTokens * kChannels);
  for (size_t gi = 0; gi < groups; ++gi) {
    if (gi % 16 < 6) continue;
    dequantize_group(plan, &records[gi * record_bytes(plan.bits)], reinterpret_cast<uint8_t*>(y.data()));
    for (uint32_t i = 0; i < kTokens * kChannels; ++i) {
      const double x = tq_bf16_to_f32(raw[gi * kTokens * kChannels + i]), d = tq_bf16_to_f32(y[i]) - x;
      err += d * d, energy += x * x;
    }
  }
  return err / energy;
}

// The same through format 2's C++ reference (three rounds of its own per half, exact
// arithmetic): the groups as one layer's K and V records of n / 2 heads.
double format2_error(uint32_t bits, const std::vector<uint16_t>& raw, size_t groups) {
  const uint32_t bits_x2 = 2 * bits + 1;
  const sw_tq_params p = bench::params(1, static_cast<uint32_t>(groups / 2), kChannels, kTokens, SW_DTYPE_BF16, bits_x2, bits_x2, SW_TQ_MSE, kSeed, 2);
  std::vector<uint8_t> block(groups * kTokens * kChannels * 2);
  std::memcpy(block.data(), raw.data(), block.size());
  const std::vector<uint8_t> back = bench::dequantize(p, bench::quantize(p, block));
  double err = 0, energy = 0;
  for (size_t gi = 0; gi < groups; ++gi) {
    if (gi % 16 < 6) continue;
    for (uint32_t i = 0; i < kTokens * kChannels; ++i) {
      const size_t at = gi * kTokens * kChannels + i;
      uint16_t y;
      std::memcpy(&y, &back[2 * at], 2);
      const double x = tq_bf16_to_f32(raw[at]), d = tq_bf16_to_f32(y) - x;
      err += d * d, energy += x * x;
    }
  }
  return err / energy;
}

std::vector<uint16_t> reference_groups(const Plan& plan, const std::vector<uint8_t>& records, size_t groups) {
  std::vector<uint16_t> out(groups * kTokens * kChannels);
  for (size_t gi = 0; gi < groups; ++gi) dequantize_group(plan, &records[gi * record_bytes(plan.bits)], reinterpret_cast<uint8_t*>(&out[gi * kTokens * kChannels]));
  return out;
}

size_t differing_values(const uint16_t* a, const uint16_t* b, size_t n) {
  size_t d = 0;
  for (size_t i = 0; i < n; ++i) d += a[i] != b[i];
  return d;
}

// A bit width's kernels and their tile code on the emulated warp: the templates' instances.
using Kernel = void (*)(const uint4*, const uint4*, const uint4*, uint4*, size_t);
struct Instances {
  Kernel quantize, dequantize;
  void (*quantize_emulated)(mma_probe::EmulatedWarp&, uint32_t, uint16_t*, const uint4*, const uint4*, const Book&, const Book&, uint8_t*);
  void (*dequantize_emulated)(mma_probe::EmulatedWarp&, uint32_t, const uint8_t*, uint32_t*, uint32_t*, const uint4*, const uint4*,
                              const uint32_t (&)[2][4], const int (&)[2], uint16_t*);
  template <uint32_t kBits> static Instances of() {
    return {quantize_halves<kBits>, dequantize_halves<kBits>, quantize_group_tiles<kBits, mma_probe::EmulatedWarp>,
            dequantize_group_tiles<kBits, mma_probe::EmulatedWarp>};
  }
};

struct Rate {
  uint32_t bits;  // the rest's: the rate is bits + 0.5
  const Plan& plan;
  std::vector<uint32_t> hi, lo, hi_t, lo_t;  // M's fragments, then M^T's
  uint32_t tables[2][4];
  int shifts[2];
  Instances run;
  explicit Rate(uint32_t b)
      : bits(b), plan(plan_for(kSeed, b)), hi(a_fragments(plan, true)), lo(a_fragments(plan, false)), hi_t(a_fragments(plan, true, true)),
        lo_t(a_fragments(plan, false, true)), run(b == 3 ? Instances::of<3>() : Instances::of<2>()) {
    for (int h = 0; h < 2; ++h) centroid_table(plan.centroids[h], tables[h]), shifts[h] = plan.centroids[h].shift;
  }
};

int largest_entry(const Plan& plan) {
  int m = 0;
  for (const auto& row : plan.matrix)
    for (int16_t v : row) m = std::max(m, std::abs(static_cast<int>(v)));
  return m;
}

// The tile code on 32 CPU threads, group after group: no GPU needed.
int emulate(const Rate (&rates)[2], size_t groups) {
  groups += groups % 2;  // format 2's comparison takes them as K and V of whole heads
  const std::vector<uint16_t> raw = test_groups(groups);
  bool agree = true;
  for (const Rate& rate : rates) {
    const std::vector<uint8_t> reference = reference_records(rate.plan, raw, groups);
    const std::vector<uint16_t> reference_back = reference_groups(rate.plan, reference, groups);
    std::vector<uint8_t> got(reference.size(), 0xA5);
    // the groups as quantize stages them, tokens kRowStride apart
    std::vector<uint16_t> rows(groups * kTokens * kRowStride, 0), back(reference_back.size(), 0xA5A5);
    for (size_t t = 0; t < groups * kTokens; ++t) std::copy_n(&raw[t * kChannels], kChannels, &rows[t * kRowStride]);
    mma_probe::EmulatedWarp warp;
    std::vector<uint32_t> places(kChannels);
    std::vector<uint32_t> scratch(HalfOrder::kWords);
    std::vector<std::thread> lanes;
    for (uint32_t lane = 0; lane < 32; ++lane)
      lanes.emplace_back([&, lane] {
        mma_probe::EmulatedWarp::current_lane = lane;
        const uint4* hi = reinterpret_cast<const uint4*>(rate.hi.data());
        const uint4* lo = reinterpret_cast<const uint4*>(rate.lo.data());
        for (size_t gi = 0; gi < groups; ++gi) {
          uint8_t* record = &got[gi * record_bytes(rate.bits)];
          uint16_t* x = &rows[gi * kTokens * kRowStride];
          rate.run.quantize_emulated(warp, lane, x, hi, lo, rate.plan.outlier, rate.plan.rest, record);
          warp.sync();
        }
        const uint4* hi_t = reinterpret_cast<const uint4*>(rate.hi_t.data());
        const uint4* lo_t = reinterpret_cast<const uint4*>(rate.lo_t.data());
        for (size_t gi = 0; gi < groups; ++gi) {
          const uint8_t* record = &reference[gi * record_bytes(rate.bits)];
          rate.run.dequantize_emulated(warp, lane, record, places.data(), scratch.data(), hi_t, lo_t, rate.tables, rate.shifts,
                                       &back[gi * kTokens * kChannels]);
          warp.sync();
        }
      });
    for (auto& t : lanes) t.join();
    const size_t differing = differing_groups(reference, got, rate.bits, groups), values = differing_values(reference_back.data(), back.data(), back.size());
    std::printf("%.1f bits: %zu groups, records differing from the reference in %zu, dequantized values in %zu of %zu; Gaussian groups' "
                "relative squared error %.5f (format 2's reference %.5f)\n",
                rate.bits + 0.5, groups, differing, values, back.size(), gaussian_error(rate.plan, raw, reference, groups), format2_error(rate.bits, raw, groups));
    agree = agree && differing == 0 && values == 0;
  }
  return agree ? 0 : 1;
}

}  // namespace
}  // namespace halves

int main(int argc, char** argv) {
  using namespace halves;
  static_assert(contiguous_row(63) < kDim && contiguous_k(63) < kDim, "MMA orders stay inside the half");
  const Rate rates[2] = {Rate(3), Rate(2)};
  std::printf("three rounds at dim 64: largest matrix entry %d\n", largest_entry(rates[0].plan));
  if (argc > 1 && std::strcmp(argv[1], "--emulate") == 0) return emulate(rates, argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 64);
  // 1 GiB of bf16 groups, the checked part repeated.
  const size_t group_bytes = kTokens * kChannels * 2, groups = (1ull << 30) / group_bytes, checked = 4096;
  const std::vector<uint16_t> host = test_groups(checked);
  uint4 *raw, *copy, *records, *reference_in, *hi, *lo, *hi_t, *lo_t;
  const size_t raw_bytes = groups * group_bytes;
  CUDA_OK(cudaMalloc(&raw, raw_bytes));
  CUDA_OK(cudaMalloc(&copy, raw_bytes));
  CUDA_OK(cudaMalloc(&records, groups * record_bytes(3)));
  CUDA_OK(cudaMalloc(&reference_in, groups * record_bytes(3)));
  CUDA_OK(cudaMalloc(&hi_t, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&lo_t, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&hi, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&lo, kFrags * sizeof(uint4)));
  for (size_t off = 0; off < groups; off += checked)
    CUDA_OK(cudaMemcpy(reinterpret_cast<uint8_t*>(raw) + off * group_bytes, host.data(), std::min(checked, groups - off) * group_bytes,
                       cudaMemcpyHostToDevice));
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  const double t_copy = bench::median_ms([&] { CUDA_OK(cudaMemcpyAsync(copy, raw, raw_bytes, cudaMemcpyDeviceToDevice)); }, 10);
  const double copy_gbps = 2.0 * raw_bytes / t_copy / 1e6;
  std::printf("%s, %d SMs; %u threads a CTA; D2D copy %.0f GB/s\n\n", prop.name, sms, kWarps * 32, copy_gbps);
  std::printf("| rate | direction | differing (of %zu groups) | CTAs | ms | GB/s (read + written) | of copy |\n|---|---|---|---|---|---|---|\n", checked);
  bool agree = true;
  FILE* json = std::fopen(argc > 1 ? argv[1] : "halves_probe.json", "w");
  if (json) std::fprintf(json, "{\"gpu\": \"%s\", \"groups\": %zu, \"checked\": %zu, \"copy_ms\": %.4f, \"copy_gbps\": %.1f, \"rates\": [", prop.name, groups, checked, t_copy, copy_gbps);
  for (const Rate& rate : rates) {
    CUDA_OK(cudaMemcpyToSymbol(kBooks, &rate.plan.outlier, sizeof(Book)));
    CUDA_OK(cudaMemcpyToSymbol(kBooks, &rate.plan.rest, sizeof(Book), sizeof(Book)));
    CUDA_OK(cudaMemcpy(hi, rate.hi.data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(lo, rate.lo.data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpyToSymbol(kTables, rate.tables, sizeof rate.tables));
    CUDA_OK(cudaMemcpyToSymbol(kShifts, rate.shifts, sizeof rate.shifts));
    CUDA_OK(cudaMemcpy(hi_t, rate.hi_t.data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(lo_t, rate.lo_t.data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
    const void* kernels[2] = {reinterpret_cast<const void*>(rate.run.quantize), reinterpret_cast<const void*>(rate.run.dequantize)};
    uint32_t grid[2];
    for (int k = 0; k < 2; ++k) {
      int per_sm = 0;
      CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernels[k], kWarps * 32, 0));
      grid[k] = static_cast<uint32_t>(sms * std::max(per_sm, 1));
    }
    auto quantize = [&] { rate.run.quantize<<<grid[0], kWarps * 32>>>(raw, hi, lo, records, groups); };
    // dequantize reads the reference's records of the checked groups, repeated, and writes over the copy's buffer
    auto dequantize = [&] { rate.run.dequantize<<<grid[1], kWarps * 32>>>(reference_in, hi_t, lo_t, copy, groups); };
    const std::vector<uint8_t> reference = reference_records(rate.plan, host, checked);
    for (size_t off = 0; off < groups; off += checked)
      CUDA_OK(cudaMemcpy(reinterpret_cast<uint8_t*>(reference_in) + off * record_bytes(rate.bits), reference.data(),
                         std::min(checked, groups - off) * record_bytes(rate.bits), cudaMemcpyHostToDevice));
    quantize();
    dequantize();
    CUDA_OK(cudaGetLastError());
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<uint8_t> got(checked * record_bytes(rate.bits));
    CUDA_OK(cudaMemcpy(got.data(), records, got.size(), cudaMemcpyDeviceToHost));
    std::vector<uint16_t> back(checked * kTokens * kChannels);
    CUDA_OK(cudaMemcpy(back.data(), copy, back.size() * 2, cudaMemcpyDeviceToHost));
    const std::vector<uint16_t> reference_back = reference_groups(rate.plan, reference, checked);
    size_t values_differing = 0, groups_differing = 0;
    for (size_t gi = 0; gi < checked; ++gi) {
      const size_t n = kTokens * kChannels, d = differing_values(&reference_back[gi * n], &back[gi * n], n);
      values_differing += d, groups_differing += d != 0;
    }
    const size_t differing[2] = {differing_groups(reference, got, rate.bits, checked), groups_differing};
    agree = agree && differing[0] == 0 && differing[1] == 0;
    const double ms[2] = {bench::median_ms(quantize, 10), bench::median_ms(dequantize, 10)};
    const double moved = raw_bytes + static_cast<double>(groups) * record_bytes(rate.bits);
    const char* direction[2] = {"quantize", "dequantize"};
    for (int k = 0; k < 2; ++k) {
      const double gbps = moved / ms[k] / 1e6;
      std::printf("| %.1f | %s | %zu | %u | %.3f | %.0f | %.2f |\n", rate.bits + 0.5, direction[k], differing[k], grid[k], ms[k], gbps, gbps / copy_gbps);
      if (json)
        std::fprintf(json, "%s{\"bits\": %.1f, \"direction\": \"%s\", \"differing_groups\": %zu, \"ctas\": %u, \"ms\": %.4f, \"gbps\": %.1f}",
                     &rate == rates && k == 0 ? "" : ", ", rate.bits + 0.5, direction[k], differing[k], grid[k], ms[k], gbps);
    }
    if (values_differing) std::printf("(%.1f bits: %zu dequantized values differ)\n", rate.bits + 0.5, values_differing);
  }
  if (json) {
    std::fprintf(json, "]}\n");
    std::fclose(json);
  }
  return agree ? 0 : 1;
}
