// A probe of the tensor-core rotation that docs/QUANTIZATION.md ("A rotation for the tensor
// cores") proposes for a future format, before any format is built on it: 4-bit MSE codes of
// head_dim-128 bf16 vectors through two randomized Hadamard rounds taken as one int8 matrix,
// both ways. The tile code is mma_tile.cuh (its arithmetic is described there), the warp
// collectives mma_warps.cuh, the C++ model mma_model.h; here are the kernels and the checks.
// The operands are 16-bit (two int8 MMAs a product) or 8-bit integers (one). A code is found by
// counting the thresholds below |acc| (7 compares) or by a binary search over them (3); both
// give the same codes. A warp codes 1, 2 or 4 tiles of 8 vectors at a time, each m-tile of
// the matrix loaded once for all of them.
// The probe checks the first vectors' codes, norms and dequantized values against the model,
// byte for byte, then times the kernels beside a device-to-device copy of the same bf16 bytes.
// Usage: mma_probe [json path]        (exit 1 if the GPU and the model disagree)
//        mma_probe --emulate [vectors] (the tile code on CPU threads against the model; no GPU)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
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

__constant__ Codebook kCodebook;

// The A fragments (16 KiB) into the CTA's shared memory, for every warp of it.
__device__ inline void copy_fragments(uint4* smem, const uint4* frags) {
  for (uint32_t i = threadIdx.x; i < kFrags; i += blockDim.x) smem[i] = frags[i];
  __syncthreads();
}

// This warp's groups of kTiles tiles (8 kTiles vectors), in turn: the first vector of each.
template <int kTiles, typename F> __device__ inline void for_each_group(size_t vectors, F&& group) {
  const size_t step = kTiles * kTileVectors, stride = static_cast<size_t>(gridDim.x) * kWarps * step;
  for (size_t v0 = (blockIdx.x * kWarps + threadIdx.x / 32) * step; v0 + step <= vectors; v0 += stride) group(v0);
}

// Each warp takes groups of kTiles tiles in turn; the CTA holds the A fragments (16 KiB) in shared memory.
template <int kBytes, Coding kCoding, int kTiles>
__global__ void __launch_bounds__(kWarps * 32) quantize_mma(const uint16_t* __restrict__ raw, const uint4* __restrict__ a_frags,
                                                           uint8_t* __restrict__ codes, float* __restrict__ norms, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  copy_fragments(a_smem, a_frags);
  DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32;
  for_each_group<kTiles>(vectors, [&](size_t v0) {
    quantize_tiles<SW_DTYPE_BF16, kBytes, CoderOf<kCoding>, kTiles>(warp, lane, raw + v0 * kDim, a_smem, codes + v0 * kCodeBytes, norms + v0, kCodebook);
  });
}

// Where quantize's time goes: the same loads and stores as quantize_mma<kBytes, Coding::kSearch, kTiles>, with
// only the first steps between them (the input, then its fixed point, then the products);
// what they write is a fold of what they computed, so that nothing is left out, not codes.
enum class Stage { kLoadStore, kFixedPoint, kRotate };

template <int kBytes, Stage kStage, int kTiles>
__global__ void __launch_bounds__(kWarps * 32) quantize_stage(const uint16_t* __restrict__ raw, const uint4* __restrict__ a_frags,
                                                             uint8_t* __restrict__ codes, float* __restrict__ norms, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  copy_fragments(a_smem, a_frags);
  DeviceWarp warp;
  const uint32_t lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  for_each_group<kTiles>(vectors, [&](size_t v0) {
    TileInput<SW_DTYPE_BF16> in[kTiles];
    load_inputs(raw + v0 * kDim, lane, in);
    uint32_t fold[kTiles][2] = {};
    float norm[kTiles] = {};
    TileBytes bytes[kTiles];
    #pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      for (int w = 0; w < 4; ++w) fold[i][w % 2] ^= in[i].words[w].x ^ in[i].words[w].y ^ in[i].words[w].z ^ in[i].words[w].w;
      if (kStage == Stage::kLoadStore) continue;
      const FixedPoint fp = to_fixed_point<SW_DTYPE_BF16, kBytes>(warp, in[i]);
      norm[i] = fp.nq;
      bytes[i] = fp.bytes;
      for (int f = 0; f < 8; ++f) fold[i][f % 2] ^= fp.bytes.hi[f] + fp.bytes.lo[f];
    }
    if (kStage == Stage::kRotate)
      products<kBytes>(warp, a_smem, lane, bytes, [&](int mt, int i, const int (&acc)[4]) { fold[i][mt % 2] ^= static_cast<uint32_t>(acc[0] ^ acc[1] ^ acc[2] ^ acc[3]); });
    #pragma unroll
    for (int i = 0; i < kTiles; ++i) {
      const size_t first = v0 + i * kTileVectors;
      if (c == 0) norms[first + g] = norm[i];
      for (int v = 0; v < 2; ++v)
        reinterpret_cast<uint2*>(codes + (first + 2 * c + v) * kCodeBytes)[g] = make_uint2(fold[i][0] + v, fold[i][1]);
    }
  });
}

template <int kBytes, int kTiles, Lookup kLookup>
__global__ void __launch_bounds__(kWarps * 32) dequantize_mma(const uint8_t* __restrict__ codes, const float* __restrict__ norms,
                                                             const uint4* __restrict__ a_frags, const int* __restrict__ centroid,
                                                             uint16_t* __restrict__ raw, size_t vectors) {
  __shared__ uint4 a_smem[kFrags];
  __shared__ int centroid_smem[16];
  if (threadIdx.x < 16) centroid_smem[threadIdx.x] = centroid[threadIdx.x];
  copy_fragments(a_smem, a_frags);
  const auto centroids = centroid_source<kBytes, kLookup>(centroid_smem);  // the tables once, before the loop
  DeviceWarp warp;
  for_each_group<kTiles>(vectors, [&](size_t v0) {
    dequantize_tiles<SW_DTYPE_BF16, kBytes, kTiles>(warp, threadIdx.x % 32, codes + v0 * kCodeBytes, norms + v0, a_smem, raw + v0 * kDim, centroids);
  });
}

// The same on the emulated warp, the centroids looked up the kernel's way.
template <int kBytes, int kTiles, Lookup kLookup>
void dequantize_emulated(EmulatedWarp& warp, uint32_t lane, const uint8_t* codes, const float* norms, const uint4* a_frags, uint16_t* raw,
                         const int* centroid) {
  dequantize_tiles<SW_DTYPE_BF16, kBytes, kTiles>(warp, lane, codes, norms, a_frags, raw, centroid_source<kBytes, kLookup>(centroid));
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

// Codes and norms from one quantize kernel.
struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> norms;
  explicit Quantized(size_t vectors) : codes(vectors * kCodeBytes), norms(vectors) {}
};

// The kernels timed, each on the GPU and on the emulated warp: quantize with 16-bit or 8-bit
// operands, finding a code by counting, by binary search or from the polynomial, a warp coding
// 1, 2 or 4 tiles per load of the matrix; dequantize the same widths with 1, 2 or 4 tiles, the centroids in shared
// memory or in registers. Each entry is one instantiation, the kernel and its emulation.
using QuantizeKernel = void (*)(const uint16_t*, const uint4*, uint8_t*, float*, size_t);
using QuantizeGroup = void (*)(EmulatedWarp&, uint32_t, const void*, const uint4*, uint8_t*, float*, const Codebook&);
using DequantizeKernel = void (*)(const uint8_t*, const float*, const uint4*, const int*, uint16_t*, size_t);
using DequantizeGroup = void (*)(EmulatedWarp&, uint32_t, const uint8_t*, const float*, const uint4*, uint16_t*, const int*);
struct QuantizeWay {
  Coding coding;
  int bytes, tiles;
  QuantizeKernel kernel;
  QuantizeGroup emulated;
  std::string name() const {  // "binary search, 2 tiles"
    static const char* const kCodings[] = {"counting", "binary search", "polynomial"};
    return std::string(kCodings[static_cast<int>(coding)]) + ", " + std::to_string(tiles) + (tiles == 1 ? " tile" : " tiles");
  }
};
struct DequantizeWay {
  int bytes, tiles;
  const char* lookup;
  DequantizeKernel kernel;
  DequantizeGroup emulated;
};
template <int kBytes, Coding kCoding, int kTiles> QuantizeWay quantize_way() {
  return {kCoding, kBytes, kTiles, quantize_mma<kBytes, kCoding, kTiles>, quantize_tiles<SW_DTYPE_BF16, kBytes, CoderOf<kCoding>, kTiles, EmulatedWarp>};
}
template <int kBytes, int kTiles, Lookup kLookup> constexpr DequantizeWay dequantize_way() {
  return {kBytes, kTiles, kLookup == Lookup::kShared ? "shared memory" : "registers", dequantize_mma<kBytes, kTiles, kLookup>,
          dequantize_emulated<kBytes, kTiles, kLookup>};
}
constexpr Coding kCounting = Coding::kCounting, kSearch = Coding::kSearch, kPolynomial = Coding::kPolynomial;
const QuantizeWay kWays[] = {quantize_way<2, kCounting, 1>(),   quantize_way<2, kSearch, 1>(),     quantize_way<2, kSearch, 2>(),
                             quantize_way<1, kSearch, 1>(),     quantize_way<1, kSearch, 2>(),     quantize_way<1, kSearch, 4>(),
                             quantize_way<2, kPolynomial, 1>(), quantize_way<1, kPolynomial, 1>(), quantize_way<1, kPolynomial, 2>()};
constexpr Lookup kShared = Lookup::kShared, kRegisters = Lookup::kRegisters;
const DequantizeWay kDequantizeWays[] = {dequantize_way<2, 1, kShared>(),    dequantize_way<2, 2, kShared>(),
                                         dequantize_way<1, 1, kShared>(),    dequantize_way<1, 2, kShared>(),
                                         dequantize_way<1, 4, kShared>(),    dequantize_way<2, 1, kRegisters>(),
                                         dequantize_way<2, 2, kRegisters>(), dequantize_way<1, 1, kRegisters>(),
                                         dequantize_way<1, 2, kRegisters>()};
constexpr size_t kWayCount = std::size(kWays), kDequantizeWayCount = std::size(kDequantizeWays);
constexpr size_t kMostTiles = 4;

// The model of each operand width: wide (16-bit) and narrow (8-bit), the same matrix.
struct Models {
  Model wide, narrow;
  explicit Models(uint64_t seed) : wide(seed, 2), narrow(seed, 1) {}
  const Model& of(int bytes) const { return bytes == 2 ? wide : narrow; }
};

struct Verdict {
  std::vector<size_t> quantize_differing;    // by way, as kWays
  std::vector<size_t> dequantize_differing;  // as kDequantizeWays
  // The Gaussian test vectors' relative squared error after both ways: [polynomial][bytes - 1],
  // thresholds (counting and binary search code alike) or polynomial, 8-bit or 16-bit operands.
  double gaussian_error[2][2] = {};
  size_t codes = 0, polynomial_codes_differing = 0;  // the models' codes, both widths: the polynomial's against the thresholds'
};

// One side's (GPU or emulation) codes, norms and values against the models': each way's
// against the model of its width and coding. The values are dequantized from the 16-bit
// model's codes (by thresholds).
Verdict compare(const Models& models, const std::vector<uint16_t>& raw, const std::vector<Quantized>& got,
                const std::vector<std::vector<uint16_t>>& values) {
  Verdict out;
  out.quantize_differing.assign(got.size(), 0);
  out.dequantize_differing.assign(values.size(), 0);
  double err[2][2] = {}, energy = 0;
  for (size_t v = 0; v < raw.size() / kDim; ++v) {
    uint8_t codes[2][2][kCodeBytes];  // [polynomial][bytes - 1]
    float norm[2][2];
    uint16_t back[2][2][kDim];
    for (int poly = 0; poly < 2; ++poly)
      for (int w = 0; w < 2; ++w) {
        const Model& model = models.of(w + 1);
        if (poly) model.quantize<Coding::kPolynomial>(&raw[v * kDim], codes[poly][w], &norm[poly][w]);
        else model.quantize(&raw[v * kDim], codes[poly][w], &norm[poly][w]);
        model.dequantize(codes[poly][w], norm[poly][w], back[poly][w]);
      }
    for (int w = 0; w < 2; ++w)
      for (uint32_t j = 0; j < kDim; ++j) {
        ++out.codes;
        out.polynomial_codes_differing += ((codes[0][w][j / 2] ^ codes[1][w][j / 2]) >> (4 * (j % 2))) & 0xF ? 1 : 0;
      }
    for (size_t way = 0; way < got.size(); ++way) {
      const int poly = kWays[way].coding == Coding::kPolynomial, w = kWays[way].bytes - 1;
      if (!std::equal(codes[poly][w], codes[poly][w] + kCodeBytes, &got[way].codes[v * kCodeBytes]) ||
          std::memcmp(&norm[poly][w], &got[way].norms[v], sizeof norm[poly][w]) != 0)
        ++out.quantize_differing[way];
    }
    // What each width makes of the 16-bit model's codes, the dequantize kernels' input.
    uint16_t expected[2][kDim];
    for (int w = 0; w < 2; ++w) models.of(w + 1).dequantize(codes[0][1], norm[0][1], expected[w]);
    for (size_t way = 0; way < values.size(); ++way) {
      const uint16_t* want = expected[kDequantizeWays[way].bytes - 1];
      if (!std::equal(want, want + kDim, &values[way][v * kDim])) ++out.dequantize_differing[way];
    }
    if (v % 64 < 5) continue;
    for (uint32_t i = 0; i < kDim; ++i) {
      const double x = tq_bf16_to_f32(raw[v * kDim + i]);
      energy += x * x;
      for (int poly = 0; poly < 2; ++poly)
        for (int w = 0; w < 2; ++w) err[poly][w] += (tq_bf16_to_f32(back[poly][w][i]) - x) * (tq_bf16_to_f32(back[poly][w][i]) - x);
    }
  }
  for (int poly = 0; poly < 2; ++poly)
    for (int w = 0; w < 2; ++w) out.gaussian_error[poly][w] = err[poly][w] / energy;
  return out;
}

bool agrees(const Verdict& r) {
  const auto none = [](size_t n) { return n == 0; };
  return std::all_of(r.quantize_differing.begin(), r.quantize_differing.end(), none) &&
         std::all_of(r.dequantize_differing.begin(), r.dequantize_differing.end(), none);
}

void report(const char* side, size_t vectors, const Verdict& r) {
  std::printf("%s, %zu vectors: quantize differs from the model on", side, vectors);
  for (size_t way = 0; way < kWayCount; ++way)
    std::printf("%s %zu (%d-bit, %s)", way ? "," : "", r.quantize_differing[way], 8 * kWays[way].bytes, kWays[way].name().c_str());
  std::printf("; dequantize on");
  for (size_t way = 0; way < kDequantizeWayCount; ++way)
    std::printf("%s %zu (%d-bit, %d tile%s, centroids in %s)", way ? "," : "", r.dequantize_differing[way], 8 * kDequantizeWays[way].bytes,
                kDequantizeWays[way].tiles, kDequantizeWays[way].tiles == 1 ? "" : "s", kDequantizeWays[way].lookup);
  std::printf("; Gaussian vectors come back with relative squared error %.5f (16-bit operands), %.5f (8-bit); "
              "coded by the polynomial %.5f (16-bit), %.5f (8-bit), %zu of %zu codes differing from the thresholds'\n",
              r.gaussian_error[0][1], r.gaussian_error[0][0], r.gaussian_error[1][1], r.gaussian_error[1][0], r.polynomial_codes_differing,
              r.codes);
}

// The 16-bit model's codes for the vectors, the input the dequantize checks start from.
Quantized model_codes(const Model& model, const std::vector<uint16_t>& raw) {
  Quantized out(raw.size() / kDim);
  for (size_t v = 0; v < raw.size() / kDim; ++v) model.quantize(&raw[v * kDim], &out.codes[v * kCodeBytes], &out.norms[v]);
  return out;
}

bool report_format(size_t vectors);

// The tile code on 32 CPU threads, one group of tiles after another: no GPU needed.
int emulate(const Models& models, size_t vectors) {
  vectors -= vectors % (kMostTiles * kTileVectors);
  const std::vector<uint16_t> raw = test_vectors(vectors);
  const std::vector<uint32_t> fwd = Model::a_fragments(models.wide.forward), inv = Model::a_fragments(models.wide.inverse);
  const Quantized model_in = model_codes(models.wide, raw);
  std::vector<Quantized> got(kWayCount, Quantized(vectors));
  std::vector<std::vector<uint16_t>> values(kDequantizeWayCount, std::vector<uint16_t>(vectors * kDim));
  EmulatedWarp warp;
  std::vector<std::thread> lanes;
  for (uint32_t lane = 0; lane < 32; ++lane)
    lanes.emplace_back([&, lane] {
      EmulatedWarp::current_lane = lane;
      const uint4* f = reinterpret_cast<const uint4*>(fwd.data());
      const uint4* b = reinterpret_cast<const uint4*>(inv.data());
      for (size_t way = 0; way < kWayCount; ++way)
        for (size_t v0 = 0; v0 < vectors; v0 += kWays[way].tiles * kTileVectors)
          kWays[way].emulated(warp, lane, &raw[v0 * kDim], f, &got[way].codes[v0 * kCodeBytes], &got[way].norms[v0],
                              models.wide.book);
      for (size_t way = 0; way < kDequantizeWayCount; ++way)
        for (size_t v0 = 0; v0 < vectors; v0 += kDequantizeWays[way].tiles * kTileVectors)
          kDequantizeWays[way].emulated(warp, lane, &model_in.codes[v0 * kCodeBytes], &model_in.norms[v0], b, &values[way][v0 * kDim],
                                        models.of(kDequantizeWays[way].bytes).centroid);
    });
  for (auto& t : lanes) t.join();
  const Verdict r = compare(models, raw, got, values);
  report("emulated warp", vectors, r);
  const bool format_agrees = report_format(vectors);
  return agrees(r) && format_agrees ? 0 : 1;
}

// Format 3's own tile code as its kernels run it (kernels/turboquant_matrix.cu: 8-bit operands,
// the polynomial, two tiles a run, centroids from byte tables) against the C++ reference's blocks (sw_tq_quantize_groups,
// sw_tq_dequantize_groups), in one dtype: records of one layer of 16-token groups, compared
// byte for byte. Returns the groups whose records differ and the vectors whose values do.
template <uint32_t DT> std::pair<size_t, size_t> format_differing(const std::vector<uint16_t>& bf16, size_t groups) {
  constexpr uint32_t kTokens = 16, kSize = Element<DT>::kBytes;
  sw_tq_params p{};
  p.layers = 1, p.kv_heads = static_cast<uint32_t>(groups / 2), p.head_dim = kDim, p.tokens = kTokens, p.dtype = DT;
  p.key_bits_x2 = p.value_bits_x2 = 8, p.variant = SW_TQ_MSE, p.version = 3, p.seed = 1234;
  std::vector<uint8_t> raw(sw_tq_raw_bytes(&p));
  for (size_t i = 0; i < raw.size() / kSize; ++i) {
    const float x = tq_bf16_to_f32(bf16[i]);
    const uint32_t bits = DT == SW_DTYPE_FP32 ? bit_cast<uint32_t>(x) : DT == SW_DTYPE_FP16 ? __half_as_ushort(__float2half_rn(x)) : bf16[i];
    std::memcpy(&raw[i * kSize], &bits, kSize);
  }
  std::vector<uint8_t> want(sw_tq_quantized_bytes(&p)), got(want.size()), values(raw.size()), back(raw.size());
  sw_tq_write_header(&p, want.data());
  sw_tq_quantize_groups(&p, raw.data(), want.data(), 0, sw_tq_groups(&p));
  sw_tq_dequantize_groups(&p, want.data(), values.data(), 0, sw_tq_groups(&p));
  std::memcpy(got.data(), want.data(), SW_TQ_HEADER_BYTES);  // the kernels write it apart
  tq_layout layout;
  tq_make_layout(&p, &layout);
  const Plan& plan = plan_for(p.seed);
  const std::vector<uint32_t> fwd = plan_fragments(plan, false), inv = plan_fragments(plan, true);
  EmulatedWarp warp;
  std::vector<std::thread> lanes;
  for (uint32_t lane = 0; lane < 32; ++lane)
    lanes.emplace_back([&, lane] {
      EmulatedWarp::current_lane = lane;
      for (uint32_t g = 0; g < sw_tq_groups(&p); ++g) {
        const tq_kind& k = *tq_group_kind(&p, &layout, g);
        const size_t rec = tq_record_offset(&p, &layout, g), first = static_cast<size_t>(g) * kTokens * kDim * kSize;
        quantize_tiles<DT, 1, PolynomialCoder, 2>(warp, lane, &raw[first], reinterpret_cast<const uint4*>(fwd.data()), &got[rec + k.codes_off],
                                                  reinterpret_cast<float*>(&got[rec + k.norms_off]), plan.book);
        dequantize_tiles<DT, 1, 2>(warp, lane, &want[rec + k.codes_off], reinterpret_cast<const float*>(&want[rec + k.norms_off]),
                                   reinterpret_cast<const uint4*>(inv.data()), &back[first], CentroidTable<1>(plan.centroid));
      }
    });
  for (auto& t : lanes) t.join();
  std::pair<size_t, size_t> differing{0, 0};
  for (uint32_t g = 0; g < sw_tq_groups(&p); ++g) {
    const size_t rec = tq_record_offset(&p, &layout, g);
    differing.first += std::memcmp(&got[rec], &want[rec], layout.kind[g / p.kv_heads].record_bytes) != 0;
  }
  for (size_t v = 0; v < raw.size() / (kDim * kSize); ++v) differing.second += std::memcmp(&back[v * kDim * kSize], &values[v * kDim * kSize], kDim * kSize) != 0;
  return differing;
}

bool report_format(size_t vectors) {
  const size_t groups = vectors / 32 * 2;  // an even number of 16-token groups: keys and values
  const std::vector<uint16_t> raw = test_vectors(groups * 16);
  const auto fp32 = format_differing<SW_DTYPE_FP32>(raw, groups), fp16 = format_differing<SW_DTYPE_FP16>(raw, groups),
             bf16 = format_differing<SW_DTYPE_BF16>(raw, groups);
  std::printf("format 3's tile code on the emulated warp, %zu vectors a dtype: records differing from the C++ reference's in %zu (fp32), %zu (fp16), %zu (bf16) "
              "of %zu groups; dequantized vectors differing in %zu (fp32), %zu (fp16), %zu (bf16)\n",
              groups * 16, fp32.first, fp16.first, bf16.first, groups, fp32.second, fp16.second, bf16.second);
  return fp32.first + fp16.first + bf16.first + fp32.second + fp16.second + bf16.second == 0;
}

}  // namespace
}  // namespace mma_probe

int main(int argc, char** argv) {
  using namespace mma_probe;
  static_assert(contiguous_row(127) < kDim && contiguous_k(127) < kDim, "MMA orders stay inside the vector");
  const Models models(1234);
  const Model& model = models.wide;
  if (model.largest_entry() > 127) {
    std::fprintf(stderr, "the two-round matrix does not fit int8 (entry %d)\n", model.largest_entry());
    return 2;
  }
  if (argc > 1 && std::strcmp(argv[1], "--emulate") == 0) return emulate(models, argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024);
  CUDA_OK(cudaMemcpyToSymbol(kCodebook, &model.book, sizeof model.book));
  // 1 GiB of bf16 vectors, the checked part repeated; the dequantize reads the 16-bit model's codes of it.
  const size_t vectors = (1ull << 30) / (kDim * 2), checked = 1u << 16;
  const std::vector<uint16_t> host = test_vectors(checked);
  const Quantized host_in = model_codes(model, host);
  const size_t raw_bytes = vectors * kDim * 2, code_bytes = vectors * kCodeBytes, norm_bytes = vectors * sizeof(float);
  uint16_t *raw, *back[kDequantizeWayCount];
  uint8_t *codes[kWayCount], *codes_in;
  float *norms[kWayCount], *norms_in;
  void* copy;
  uint4 *fwd, *inv;
  int* centroid[2];  // by operand width: 8-bit, 16-bit
  CUDA_OK(cudaMalloc(&raw, raw_bytes));
  CUDA_OK(cudaMalloc(&copy, raw_bytes));
  CUDA_OK(cudaMalloc(&codes_in, code_bytes));
  CUDA_OK(cudaMalloc(&norms_in, norm_bytes));
  for (size_t way = 0; way < kWayCount; ++way) {
    CUDA_OK(cudaMalloc(&codes[way], code_bytes));
    CUDA_OK(cudaMalloc(&norms[way], norm_bytes));
  }
  for (size_t way = 0; way < kDequantizeWayCount; ++way) CUDA_OK(cudaMalloc(&back[way], raw_bytes));
  CUDA_OK(cudaMalloc(&fwd, kFrags * sizeof(uint4)));
  CUDA_OK(cudaMalloc(&inv, kFrags * sizeof(uint4)));
  for (int bytes = 1; bytes <= 2; ++bytes) {
    CUDA_OK(cudaMalloc(&centroid[bytes - 1], sizeof model.centroid));
    CUDA_OK(cudaMemcpy(centroid[bytes - 1], models.of(bytes).centroid, sizeof model.centroid, cudaMemcpyHostToDevice));
  }
  CUDA_OK(cudaMemcpy(fwd, Model::a_fragments(model.forward).data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(inv, Model::a_fragments(model.inverse).data(), kFrags * sizeof(uint4), cudaMemcpyHostToDevice));
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
  // Each kernel's grid found once, outside the timed launches.
  uint32_t grid_q[kWayCount], grid_d[kDequantizeWayCount];
  for (size_t way = 0; way < kWayCount; ++way) grid_q[way] = grid_of(reinterpret_cast<const void*>(kWays[way].kernel));
  for (size_t way = 0; way < kDequantizeWayCount; ++way) grid_d[way] = grid_of(reinterpret_cast<const void*>(kDequantizeWays[way].kernel));
  auto quantize = [&](size_t way) { kWays[way].kernel<<<grid_q[way], kWarps * 32>>>(raw, fwd, codes[way], norms[way], vectors); };
  auto dequantize = [&](size_t way) {
    const DequantizeWay& d = kDequantizeWays[way];
    d.kernel<<<grid_d[way], kWarps * 32>>>(codes_in, norms_in, inv, centroid[d.bytes - 1], back[way], vectors);
  };
  for (size_t way = 0; way < kWayCount; ++way) quantize(way);
  for (size_t way = 0; way < kDequantizeWayCount; ++way) dequantize(way);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<Quantized> got(kWayCount, Quantized(checked));
  for (size_t way = 0; way < kWayCount; ++way) {
    CUDA_OK(cudaMemcpy(got[way].codes.data(), codes[way], checked * kCodeBytes, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(got[way].norms.data(), norms[way], checked * sizeof(float), cudaMemcpyDeviceToHost));
  }
  std::vector<std::vector<uint16_t>> values(kDequantizeWayCount, std::vector<uint16_t>(checked * kDim));
  for (size_t way = 0; way < kDequantizeWayCount; ++way)
    CUDA_OK(cudaMemcpy(values[way].data(), back[way], checked * kDim * 2, cudaMemcpyDeviceToHost));
  const Verdict r = compare(models, host, got, values);
  double t_q[kWayCount], t_d[kDequantizeWayCount];
  for (size_t way = 0; way < kWayCount; ++way) t_q[way] = bench::median_ms([&] { quantize(way); }, 10);
  for (size_t way = 0; way < kDequantizeWayCount; ++way) t_d[way] = bench::median_ms([&] { dequantize(way); }, 10);
  // The stages: loads and stores, the fixed point (1 tile), then the products with 1, 2 and 4
  // tiles, for each operand width.
  struct StageKernel {
    const char* name;
    QuantizeKernel kernel;
  };
  const StageKernel stages[] = {{"loads and stores only", quantize_stage<2, Stage::kLoadStore, 1>},
                                {"and the 16-bit fixed point", quantize_stage<2, Stage::kFixedPoint, 1>},
                                {"and the 16-bit products (no codebook), 1 tile", quantize_stage<2, Stage::kRotate, 1>},
                                {"and the 16-bit products (no codebook), 2 tiles", quantize_stage<2, Stage::kRotate, 2>},
                                {"and the 8-bit fixed point", quantize_stage<1, Stage::kFixedPoint, 1>},
                                {"and the 8-bit products (no codebook), 1 tile", quantize_stage<1, Stage::kRotate, 1>},
                                {"and the 8-bit products (no codebook), 2 tiles", quantize_stage<1, Stage::kRotate, 2>},
                                {"and the 8-bit products (no codebook), 4 tiles", quantize_stage<1, Stage::kRotate, 4>}};
  std::vector<double> t_stage;
  for (const StageKernel& stage : stages) {
    const uint32_t grid = grid_of(reinterpret_cast<const void*>(stage.kernel));
    t_stage.push_back(bench::median_ms([&] { stage.kernel<<<grid, kWarps * 32>>>(raw, fwd, codes[0], norms[0], vectors); }, 10));
  }
  CUDA_OK(cudaGetLastError());
  const double t_copy = bench::median_ms([&] { CUDA_OK(cudaMemcpyAsync(copy, raw, raw_bytes, cudaMemcpyDeviceToDevice)); }, 10);
  const double moved = raw_bytes + code_bytes + norm_bytes, copy_gbps = 2.0 * raw_bytes / t_copy / 1e6;
  const auto gbps = [&](double ms) { return moved / ms / 1e6; };
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s, %d SMs; %u threads a CTA\n", prop.name, sms, kWarps * 32);
  report("GPU", checked, r);
  std::printf("| kernel | CTAs | GB/s (read + written) | D2D copy GB/s | of copy |\n|---|---|---|---|---|\n");
  for (size_t way = 0; way < kWayCount; ++way)
    std::printf("| 4-bit quantize, two rounds on int8 MMA, %d-bit operands, code by %s | %u | %.0f | %.0f | %.2f |\n",
                8 * kWays[way].bytes, kWays[way].name().c_str(), grid_q[way], gbps(t_q[way]), copy_gbps, gbps(t_q[way]) / copy_gbps);
  for (size_t way = 0; way < kDequantizeWayCount; ++way)
    std::printf("| 4-bit dequantize, two rounds on int8 MMA, %d-bit operands, %d tile%s, centroids in %s | %u | %.0f | %.0f | %.2f |\n",
                8 * kDequantizeWays[way].bytes, kDequantizeWays[way].tiles, kDequantizeWays[way].tiles == 1 ? "" : "s", kDequantizeWays[way].lookup,
                grid_d[way], gbps(t_d[way]), copy_gbps, gbps(t_d[way]) / copy_gbps);
  std::printf("\nWhere quantize's time goes (the same bytes in and out; no codes):\n\n| quantize up to | ms | GB/s | of copy |\n|---|---|---|---|\n");
  for (size_t i = 0; i < t_stage.size(); ++i)
    std::printf("| %s | %.3f | %.0f | %.2f |\n", stages[i].name, t_stage[i], gbps(t_stage[i]), gbps(t_stage[i]) / copy_gbps);
  if (FILE* json = std::fopen(argc > 1 ? argv[1] : "mma_probe.json", "w")) {
    std::fprintf(json,
                 "{\"gpu\": \"%s\", \"vectors\": %zu, \"checked\": %zu, \"gaussian_error_16bit\": %.6f, \"gaussian_error_8bit\": %.6f, "
                 "\"gaussian_error_polynomial_16bit\": %.6f, \"gaussian_error_polynomial_8bit\": %.6f, "
                 "\"copy_ms\": %.4f, \"copy_gbps\": %.1f, \"quantize\": [",
                 prop.name, vectors, checked, r.gaussian_error[0][1], r.gaussian_error[0][0], r.gaussian_error[1][1], r.gaussian_error[1][0], t_copy,
                 copy_gbps);
    for (size_t way = 0; way < kWayCount; ++way)
      std::fprintf(json, "%s{\"way\": \"%s\", \"operand_bits\": %d, \"differing\": %zu, \"ms\": %.4f, \"gbps\": %.1f}", way ? ", " : "",
                   kWays[way].name().c_str(), 8 * kWays[way].bytes, r.quantize_differing[way], t_q[way], gbps(t_q[way]));
    std::fprintf(json, "], \"dequantize\": [");
    for (size_t way = 0; way < kDequantizeWayCount; ++way)
      std::fprintf(json, "%s{\"tiles\": %d, \"operand_bits\": %d, \"centroids_in\": \"%s\", \"differing\": %zu, \"ms\": %.4f, \"gbps\": %.1f}",
                   way ? ", " : "", kDequantizeWays[way].tiles, 8 * kDequantizeWays[way].bytes, kDequantizeWays[way].lookup,
                   r.dequantize_differing[way], t_d[way], gbps(t_d[way]));
    std::fprintf(json, "], \"stages_ms\": [");
    for (size_t i = 0; i < t_stage.size(); ++i) std::fprintf(json, "%s{\"stage\": \"%s\", \"ms\": %.4f}", i ? ", " : "", stages[i].name, t_stage[i]);
    std::fprintf(json, "]}\n");
    std::fclose(json);
  }
  return agrees(r) ? 0 : 1;
}
