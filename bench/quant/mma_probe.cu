// A probe of the tensor-core rotation that docs/QUANTIZATION.md ("A rotation for the tensor
// cores") proposes for a future format, before any format is built on it: 4-bit MSE codes of
// head_dim-128 bf16 vectors through two randomized Hadamard rounds taken as one int8 matrix,
// both ways. The tile code is mma_tile.cuh (its arithmetic is described there), the warp
// collectives mma_warps.cuh, the C++ model mma_model.h; here are the kernels and the checks.
// Two ways of finding a code are timed: counting the thresholds below |acc| (7 compares) and a
// binary search over them (3); they give the same codes.
// The probe checks the first vectors' codes, norms and dequantized values against the model,
// byte for byte, then times the kernels beside a device-to-device copy of the same bf16 bytes.
// Usage: mma_probe [json path]        (exit 1 if the GPU and the model disagree)
//        mma_probe --emulate [vectors] (the tile code on CPU threads against the model; no GPU)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "common.h"
#include "cuda_bench.h"
#include "mma_model.h"
#include "mma_tile.cuh"
#include "mma_warps.cuh"

namespace mma_probe {
namespace {

constexpr uint32_t kWarps = 4;  // per CTA

__constant__ float kBoundary[7];

// The A fragments (16 KiB) into the CTA's shared memory, for every warp of it.
__device__ inline void copy_fragments(uint4* smem, const uint4* frags) {
  for (uint32_t i = threadIdx.x; i < kFrags; i += blockDim.x) smem[i] = frags[i];
  __syncthreads();
}

// Each warp takes tiles of 8 vectors in turn; the CTA holds the A fragments (16 KiB) in shared memory.
// kPrefetch: a warp loads its next tile's input before coding this one, so that its own
// loads are in flight while it computes (at 16 more registers).
template <bool kSearch, bool kPrefetch>
__global__ void __launch_bounds__(kWarps * 32) quantize_mma(const uint16_t* __restrict__ raw, const uint4* __restrict__ a_frags,
                                                           uint8_t* __restrict__ codes, float* __restrict__ norms, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  copy_fragments(a_smem, a_frags);
  DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32;
  const size_t tiles = vectors / kTileVectors, stride = static_cast<size_t>(gridDim.x) * kWarps;
  size_t tile = blockIdx.x * kWarps + threadIdx.x / 32;
  TileInput next;
  if (kPrefetch && tile < tiles) next = load_input(raw + tile * kTileVectors * kDim, lane);
  for (; tile < tiles; tile += stride) {
    TileInput in;
    if (kPrefetch) {
      in = next;
      if (tile + stride < tiles) next = load_input(raw + (tile + stride) * kTileVectors * kDim, lane);
    } else {
      in = load_input(raw + tile * kTileVectors * kDim, lane);
    }
    quantize_tile<kSearch>(warp, lane, in, a_smem, codes + tile * kTileVectors * kCodeBytes, norms + tile * kTileVectors, kBoundary);
  }
}

// Where quantize's time goes: the same loads and stores as quantize_mma<true, false>, with
// only the first steps between them (the input, then its fixed point, then the products);
// what they write is a fold of what they computed, so that nothing is left out, not codes.
enum class Stage { kLoadStore, kFixedPoint, kRotate };
constexpr const char* kStageNames[] = {"loads and stores only", "and the fixed point", "and the products (no codebook)"};

template <Stage kStage>
__global__ void __launch_bounds__(kWarps * 32) quantize_stage(const uint16_t* __restrict__ raw, const uint4* __restrict__ a_frags,
                                                             uint8_t* __restrict__ codes, float* __restrict__ norms, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  copy_fragments(a_smem, a_frags);
  DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  for (size_t tile = blockIdx.x * kWarps + threadIdx.x / 32; tile < vectors / kTileVectors; tile += static_cast<size_t>(gridDim.x) * kWarps) {
    const TileInput in = load_input(raw + tile * kTileVectors * kDim, lane);
    uint32_t fold[2] = {0, 0};
    for (int w = 0; w < 4; ++w) fold[w % 2] ^= in.words[w].x ^ in.words[w].y ^ in.words[w].z ^ in.words[w].w;
    float norm = 0.f;
    if (kStage != Stage::kLoadStore) {
      const FixedPoint fp = to_fixed_point(warp, in);
      norm = fp.nq;
      for (int f = 0; f < 8; ++f) fold[f % 2] ^= fp.hi[f] + fp.lo[f];
      if (kStage == Stage::kRotate)
        for (int mt = 0; mt < 8; ++mt) {
          int acc[4];
          product_mtile(warp, a_smem, lane, mt, fp.hi, fp.lo, acc);
          fold[mt % 2] ^= static_cast<uint32_t>(acc[0] ^ acc[1] ^ acc[2] ^ acc[3]);
        }
    }
    if (c == 0) norms[tile * kTileVectors + g] = norm;
    for (int v = 0; v < 2; ++v)
      reinterpret_cast<uint2*>(codes + (tile * kTileVectors + 2 * c + v) * kCodeBytes)[g] = make_uint2(fold[0] + v, fold[1]);
  }
}

__global__ void __launch_bounds__(kWarps * 32) dequantize_mma(const uint8_t* __restrict__ codes, const float* __restrict__ norms,
                                                             const uint4* __restrict__ a_frags, const int* __restrict__ centroid,
                                                             uint16_t* __restrict__ raw, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  __shared__ int centroid_smem[16];
  if (threadIdx.x < 16) centroid_smem[threadIdx.x] = centroid[threadIdx.x];
  copy_fragments(a_smem, a_frags);
  DeviceWarp warp;
  for (size_t tile = blockIdx.x * kWarps + threadIdx.x / 32; tile < vectors / kTileVectors; tile += static_cast<size_t>(gridDim.x) * kWarps)
    dequantize_tile(warp, threadIdx.x % 32, codes + tile * kTileVectors * kCodeBytes, norms + tile * kTileVectors, a_smem,
                    raw + tile * kTileVectors * kDim, centroid_smem);
}


// Test vectors: Gaussian at several scales, with one-hots, a massive channel, constant
// and zero vectors among them.
std::vector<uint16_t> test_vectors(size_t n) {
  std::vector<uint16_t> out(n * kDim);
  bench::Rng rng(7);
  for (size_t v = 0; v < n; ++v)
    for (uint32_t i = 0; i < kDim; ++i) {
      double value = rng.normal() * (0.5 + (v % 7));
      if (v % 64 == 1) value = i == v % kDim ? 3.0 : 0.0;
      if (v % 64 == 2) value = i == 7 ? 100.0 : rng.normal();
      if (v % 64 == 3) value = 1.0;
      if (v % 64 == 4) value = 0.0;
      out[v * kDim + i] = tq_f32_to_bf16(static_cast<float>(value));
    }
  return out;
}

// Codes and norms from one of the two ways of finding a code.
struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> norms;
  explicit Quantized(size_t vectors) : codes(vectors * kCodeBytes), norms(vectors) {}
};
// The quantize kernels timed: the code found by counting or by binary search, and the
// second with each warp's next input loaded ahead. The emulation runs the first two (the
// third is the second's tile code).
constexpr const char* kWays[] = {"counting", "binary search", "binary search, next tile loaded ahead"};
constexpr int kWayCount = 3;

struct Verdict {
  std::vector<size_t> quantize_differing;  // by way, as kWays
  size_t dequantize_differing = 0;
  double gaussian_error = 0;  // the Gaussian test vectors' relative squared error after both ways
};

// One side's (GPU or emulation) codes, norms and values (the values dequantized from the
// model's own codes) against the model's.
Verdict compare(const Model& model, const std::vector<uint16_t>& raw, const std::vector<Quantized>& got, const std::vector<uint16_t>& values) {
  Verdict out;
  out.quantize_differing.assign(got.size(), 0);
  double err = 0, energy = 0;
  for (size_t v = 0; v < raw.size() / kDim; ++v) {
    uint8_t codes[kCodeBytes];
    float norm;
    uint16_t back[kDim];
    model.quantize(&raw[v * kDim], codes, &norm);
    model.dequantize(codes, norm, back);
    for (size_t way = 0; way < got.size(); ++way)
      if (!std::equal(codes, codes + kCodeBytes, &got[way].codes[v * kCodeBytes]) ||
          std::memcmp(&norm, &got[way].norms[v], sizeof norm) != 0)
        ++out.quantize_differing[way];
    if (!std::equal(back, back + kDim, &values[v * kDim])) ++out.dequantize_differing;
    if (v % 64 < 5) continue;
    for (uint32_t i = 0; i < kDim; ++i) {
      const double x = tq_bf16_to_f32(raw[v * kDim + i]), y = tq_bf16_to_f32(back[i]);
      err += (y - x) * (y - x), energy += x * x;
    }
  }
  out.gaussian_error = err / energy;
  return out;
}

bool agrees(const Verdict& r) {
  return r.dequantize_differing == 0 && std::all_of(r.quantize_differing.begin(), r.quantize_differing.end(), [](size_t n) { return n == 0; });
}

void report(const char* side, size_t vectors, const Verdict& r) {
  std::printf("%s, %zu vectors: quantize differs from the model on", side, vectors);
  for (size_t way = 0; way < r.quantize_differing.size(); ++way) std::printf("%s %zu (%s)", way ? "," : "", r.quantize_differing[way], kWays[way]);
  std::printf("; dequantize on %zu; Gaussian vectors come back with relative squared error %.5f\n", r.dequantize_differing, r.gaussian_error);
}

// The model's codes for the vectors, the input the dequantize checks start from.
Quantized model_codes(const Model& model, const std::vector<uint16_t>& raw) {
  Quantized out(raw.size() / kDim);
  for (size_t v = 0; v < raw.size() / kDim; ++v) model.quantize(&raw[v * kDim], &out.codes[v * kCodeBytes], &out.norms[v]);
  return out;
}

// The tile code on 32 CPU threads, one tile after another: no GPU needed.
int emulate(const Model& model, size_t vectors) {
  vectors -= vectors % kTileVectors;
  const std::vector<uint16_t> raw = test_vectors(vectors);
  const std::vector<uint32_t> fwd = Model::a_fragments(model.forward), inv = Model::a_fragments(model.inverse);
  const Quantized model_in = model_codes(model, raw);
  std::vector<Quantized> got(2, Quantized(vectors));
  std::vector<uint16_t> values(vectors * kDim);
  EmulatedWarp warp;
  std::vector<std::thread> lanes;
  for (uint32_t lane = 0; lane < 32; ++lane)
    lanes.emplace_back([&, lane] {
      EmulatedWarp::current_lane = lane;
      const uint4* f = reinterpret_cast<const uint4*>(fwd.data());
      for (size_t v0 = 0; v0 < vectors; v0 += kTileVectors) {
        const TileInput input = load_input(&raw[v0 * kDim], lane);
        quantize_tile<false>(warp, lane, input, f, &got[0].codes[v0 * kCodeBytes], &got[0].norms[v0], model.boundary);
        quantize_tile<true>(warp, lane, input, f, &got[1].codes[v0 * kCodeBytes], &got[1].norms[v0], model.boundary);
        dequantize_tile(warp, lane, &model_in.codes[v0 * kCodeBytes], &model_in.norms[v0], reinterpret_cast<const uint4*>(inv.data()),
                        &values[v0 * kDim], model.centroid);
      }
    });
  for (auto& t : lanes) t.join();
  const Verdict r = compare(model, raw, got, values);
  report("emulated warp", vectors, r);
  return agrees(r) ? 0 : 1;
}

}  // namespace
}  // namespace mma_probe

int main(int argc, char** argv) {
  using namespace mma_probe;
  static_assert(contiguous_row(127) < kDim && contiguous_k(127) < kDim, "MMA orders stay inside the vector");
  const Model model(1234);
  if (model.largest_entry() > 127) {
    std::fprintf(stderr, "the two-round matrix does not fit int8 (entry %d)\n", model.largest_entry());
    return 2;
  }
  if (argc > 1 && std::strcmp(argv[1], "--emulate") == 0) return emulate(model, argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024);
  CUDA_OK(cudaMemcpyToSymbol(kBoundary, model.boundary, sizeof model.boundary));
  // 1 GiB of bf16 vectors, the checked part repeated; the dequantize reads the model's codes of it.
  const size_t vectors = (1ull << 30) / (kDim * 2), checked = 1u << 16;
  const std::vector<uint16_t> host = test_vectors(checked);
  const Quantized host_in = model_codes(model, host);
  const size_t raw_bytes = vectors * kDim * 2, code_bytes = vectors * kCodeBytes, norm_bytes = vectors * sizeof(float);
  uint16_t *raw, *back;
  uint8_t *codes[kWayCount], *codes_in;
  float *norms[kWayCount], *norms_in;
  void* copy;
  uint4 *fwd, *inv;
  int* centroid;
  CUDA_OK(cudaMalloc(&raw, raw_bytes));
  CUDA_OK(cudaMalloc(&back, raw_bytes));
  CUDA_OK(cudaMalloc(&copy, raw_bytes));
  CUDA_OK(cudaMalloc(&codes_in, code_bytes));
  CUDA_OK(cudaMalloc(&norms_in, norm_bytes));
  for (int way = 0; way < kWayCount; ++way) {
    CUDA_OK(cudaMalloc(&codes[way], code_bytes));
    CUDA_OK(cudaMalloc(&norms[way], norm_bytes));
  }
  CUDA_OK(cudaMalloc(&fwd, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&inv, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&centroid, sizeof model.centroid));
  CUDA_OK(cudaMemcpy(fwd, Model::a_fragments(model.forward).data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(inv, Model::a_fragments(model.inverse).data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(centroid, model.centroid, sizeof model.centroid, cudaMemcpyHostToDevice));
  for (size_t off = 0; off < vectors; off += checked) {
    const size_t n = std::min(checked, vectors - off);
    CUDA_OK(cudaMemcpy(raw + off * kDim, host.data(), n * kDim * 2, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(codes_in + off * kCodeBytes, host_in.codes.data(), n * kCodeBytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(norms_in + off, host_in.norms.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  }
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  // A persistent grid: as many CTAs as fit on the GPU at once.
  auto grid_of = [&](const void* kernel) {
    int per_sm = 0;
    CUDA_OK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, 0));
    return static_cast<uint32_t>(sms * std::max(per_sm, 1));
  };
  const uint32_t grid_q[kWayCount] = {grid_of(reinterpret_cast<const void*>(quantize_mma<false, false>)),
                                      grid_of(reinterpret_cast<const void*>(quantize_mma<true, false>)),
                                      grid_of(reinterpret_cast<const void*>(quantize_mma<true, true>))};
  const uint32_t grid_d = grid_of(reinterpret_cast<const void*>(dequantize_mma));
  auto quantize = [&](int way) {
    const auto kernel = way == 0 ? quantize_mma<false, false> : way == 1 ? quantize_mma<true, false> : quantize_mma<true, true>;
    kernel<<<grid_q[way], kWarps * 32>>>(raw, fwd, codes[way], norms[way], vectors);
  };
  auto dequantize = [&] { dequantize_mma<<<grid_d, kWarps * 32>>>(codes_in, norms_in, inv, centroid, back, vectors); };
  for (int way = 0; way < kWayCount; ++way) quantize(way);
  dequantize();
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<Quantized> got(kWayCount, Quantized(checked));
  for (int way = 0; way < kWayCount; ++way) {
    CUDA_OK(cudaMemcpy(got[way].codes.data(), codes[way], checked * kCodeBytes, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(got[way].norms.data(), norms[way], checked * sizeof(float), cudaMemcpyDeviceToHost));
  }
  std::vector<uint16_t> values(checked * kDim);
  CUDA_OK(cudaMemcpy(values.data(), back, checked * kDim * 2, cudaMemcpyDeviceToHost));
  const Verdict r = compare(model, host, got, values);
  double t_q[kWayCount], q_gbps[kWayCount];
  for (int way = 0; way < kWayCount; ++way) t_q[way] = bench::median_ms([&] { quantize(way); }, 10);
  const double t_d = bench::median_ms(dequantize, 10);
  const auto stage_kernels = {quantize_stage<Stage::kLoadStore>, quantize_stage<Stage::kFixedPoint>, quantize_stage<Stage::kRotate>};
  std::vector<double> t_stage;
  for (const auto kernel : stage_kernels) {
    const uint32_t grid = grid_of(reinterpret_cast<const void*>(kernel));
    t_stage.push_back(bench::median_ms([&] { kernel<<<grid, kWarps * 32>>>(raw, fwd, codes[0], norms[0], vectors); }, 10));
  }
  CUDA_OK(cudaGetLastError());
  const double t_copy = bench::median_ms([&] { CUDA_OK(cudaMemcpyAsync(copy, raw, raw_bytes, cudaMemcpyDeviceToDevice)); }, 10);
  const double moved = raw_bytes + code_bytes + norm_bytes, copy_gbps = 2.0 * raw_bytes / t_copy / 1e6;
  for (int way = 0; way < kWayCount; ++way) q_gbps[way] = moved / t_q[way] / 1e6;
  const double d_gbps = moved / t_d / 1e6;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs; %u threads a CTA; CTAs: quantize %u / %u / %u, dequantize %u\n", prop.name, sms, kWarps * 32, grid_q[0],
              grid_q[1], grid_q[2], grid_d);
  report("GPU", checked, r);
  std::printf("| kernel | GB/s (read + written) | D2D copy GB/s | of copy |\n|---|---|---|---|\n");
  for (int way = 0; way < kWayCount; ++way)
    std::printf("| 4-bit quantize, two rounds on int8 MMA, code by %s | %.0f | %.0f | %.2f |\n", kWays[way], q_gbps[way], copy_gbps,
                q_gbps[way] / copy_gbps);
  std::printf("| 4-bit dequantize, two rounds on int8 MMA | %.0f | %.0f | %.2f |\n", d_gbps, copy_gbps, d_gbps / copy_gbps);
  std::printf("\nWhere quantize's time goes (the same bytes in and out; no codes):\n\n| quantize up to | ms | GB/s | of copy |\n|---|---|---|---|\n");
  for (size_t i = 0; i < t_stage.size(); ++i)
    std::printf("| %s | %.3f | %.0f | %.2f |\n", kStageNames[i], t_stage[i], moved / t_stage[i] / 1e6, moved / t_stage[i] / 1e6 / copy_gbps);
  std::printf("| and the codebook (binary search): the whole kernel | %.3f | %.0f | %.2f |\n", t_q[1], q_gbps[1], q_gbps[1] / copy_gbps);
  if (FILE* json = std::fopen(argc > 1 ? argv[1] : "mma_probe.json", "w")) {
    std::fprintf(json,
                 "{\"gpu\": \"%s\", \"vectors\": %zu, \"checked\": %zu, \"dequantize_differing\": %zu, \"gaussian_error\": %.6f, "
                 "\"dequantize_ms\": %.4f, \"copy_ms\": %.4f, \"dequantize_gbps\": %.1f, \"copy_gbps\": %.1f, \"quantize\": [",
                 prop.name, vectors, checked, r.dequantize_differing, r.gaussian_error, t_d, t_copy, d_gbps, copy_gbps);
    for (int way = 0; way < kWayCount; ++way)
      std::fprintf(json, "%s{\"way\": \"%s\", \"differing\": %zu, \"ms\": %.4f, \"gbps\": %.1f}", way ? ", " : "", kWays[way],
                   r.quantize_differing[way], t_q[way], q_gbps[way]);
    std::fprintf(json, "], \"stages_ms\": [");
    for (size_t i = 0; i < t_stage.size(); ++i) std::fprintf(json, "%s{\"stage\": \"%s\", \"ms\": %.4f}", i ? ", " : "", kStageNames[i], t_stage[i]);
    std::fprintf(json, "]}\n");
    std::fclose(json);
  }
  return agrees(r) ? 0 : 1;
}
