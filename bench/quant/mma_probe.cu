// A probe of the tensor-core rotation that docs/QUANTIZATION.md ("A rotation for the tensor
// cores") proposes for a future format, before any format is built on it: 4-bit MSE codes of
// head_dim-128 bf16 vectors through two randomized Hadamard rounds taken as one int8 matrix,
// both ways. M = 128 H D2 H D1 (entries at most 48, the quantizer's sign diagonals), with its
// rows and columns put in the orders the MMA fragments want (a relabelling, below).
// Quantize, per vector (the C++ model below does the same arithmetic):
//  1. E = the exponent of the largest magnitude plus one; every value times 2^(15 - E),
//     rounded to nearest even: 16-bit integers q (|q| < 2^15). E below -112 codes as zero.
//  2. q = 256 hi + lo: hi = q >> 8 as int8, lo = the low byte as uint8.
//  3. acc = M q = 256 (M hi) + M lo, exact in int32: m16n8k32 MMAs, s8 x s8 and s8 x u8.
//  4. nq = sqrt((float) sum q^2); thresholds T_k = beta_k * (128 nq) for the 7 positive
//     boundaries beta_k of the dim-128 4-bit codebook; code = (number of T_k below
//     (float)|acc|) + 8 if acc < 0; stored norm = nq * 2^(E - 15).
//     Codes are nibbles, coordinate j at nibble j of the vector's 64 bytes; norms fp32 apart.
// Dequantize: each code's centroid as a fixed-point integer (centroid * 2^15, rounded), split
// into bytes the same way; acc = M^T c, exact; value = bf16((float)acc * norm * 2^-22).
// Two ways of finding a code are timed: counting the thresholds below |acc| (7 compares) and a
// binary search over them (3); they give the same codes.
// The probe checks the first vectors' codes, norms and dequantized values against the model,
// byte for byte, then times both kernels beside a device-to-device copy of the same bf16 bytes.
// Usage: mma_probe [json path]        (exit 1 if the GPU and the model disagree)
//        mma_probe --emulate [vectors] (the tile code on CPU threads against the model; no GPU)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"
#include "cuda_bench.h"
#include "rotation_sim.h"

namespace {

constexpr uint32_t kDim = 128;
constexpr uint32_t kTileVectors = 8;  // the MMA's n
constexpr uint32_t kWarps = 4;        // per CTA
constexpr uint32_t kCodeBytes = kDim / 2;
constexpr uint32_t kFrags = 8 * 4 * 32;  // A fragments: 8 m-tiles x 4 k-tiles x 32 lanes, 16 bytes each
constexpr int kMinExponent = -112;       // below: coded as zero (2^(15 - E) must be a normal float)
constexpr int kCentroidShift = 15;       // centroids as integers: centroid * 2^15

// The orders that give each lane consecutive elements. Lane (g = lane / 4, c = lane % 4)
// feeds the B fragment of vector g with k = 32t + 16s + 4c + i (k-tile t, half s, byte i):
// element contiguous_k(k) = 32c + 8t + 4s + i of the vector, so each lane takes 32
// consecutive ones. The accumulator of m-tile mt holds rows 16mt + g + 8h (h = 0, 1) of
// vectors 2c and 2c + 1: elements contiguous_row(row) = 16g + 2mt + h, 16 consecutive ones
// per lane. Quantize's k are channels and its rows coordinates; dequantize's the reverse.
__host__ __device__ constexpr uint32_t contiguous_k(uint32_t k) {
  return 32 * ((k / 4) % 4) + 8 * (k / 32) + 4 * ((k / 16) % 2) + k % 4;
}
__host__ __device__ constexpr uint32_t contiguous_row(uint32_t r) {
  return 16 * (r % 8) + 2 * (r / 16) + (r / 8) % 2;
}

// Bit casts and roundings with the same results on both sides of the probe.
template <typename To, typename From> __host__ __device__ inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
  To out;
  memcpy(&out, &v, sizeof out);
  return out;
}
__host__ __device__ inline int round_to_int(float x) {
#ifdef __CUDA_ARCH__
  return __float2int_rn(x);
#else
  return static_cast<int>(std::nearbyint(x));
#endif
}
__host__ __device__ inline float u64_to_float(unsigned long long x) {
#ifdef __CUDA_ARCH__
  return __ull2float_rn(x);
#else
  return static_cast<float>(x);
#endif
}

// The B fragments of 32 integers below 2^15 in magnitude (this lane's elements, in
// contiguous_k order) as bytes: v = 256 hi + lo, hi = v >> 8 (int8), lo = v & 0xFF (uint8).
__host__ __device__ inline void split_bytes(const int (&v)[32], uint32_t (&hi)[8], uint32_t (&lo)[8]) {
  for (int f = 0; f < 8; ++f) {
    hi[f] = lo[f] = 0;
    for (int i = 0; i < 4; ++i) {
      hi[f] |= static_cast<uint32_t>((v[4 * f + i] >> 8) & 0xFF) << (8 * i);
      lo[f] |= static_cast<uint32_t>(v[4 * f + i] & 0xFF) << (8 * i);
    }
  }
}

// Two bf16 (round to nearest even) in one word, the first in the low half.
__host__ __device__ inline uint32_t bf16_pair(float first, float second) {
#ifdef __CUDA_ARCH__
  return bit_cast<uint32_t>(__floats2bfloat162_rn(first, second));
#else
  return tq_f32_to_bf16(first) | static_cast<uint32_t>(tq_f32_to_bf16(second)) << 16;
#endif
}

// How many of the 7 ascending thresholds lie below mag: by counting, or by a binary search.
template <bool kSearch> __host__ __device__ inline uint32_t thresholds_below(float mag, const float (&t)[7]) {
  if (!kSearch) {
    uint32_t n = 0;
    for (int k = 0; k < 7; ++k) n += mag > t[k] ? 1u : 0u;
    return n;
  }
  const bool four = mag > t[3];
  const bool two = mag > (four ? t[5] : t[1]);
  const float last = four ? (two ? t[6] : t[4]) : (two ? t[2] : t[0]);
  return (four ? 4u : 0u) + (two ? 2u : 0u) + (mag > last ? 1u : 0u);
}

// One m-tile of M times the tile's 8 vectors, exact: 256 (A hi) + A lo.
template <typename W>
__host__ __device__ inline void product_mtile(W& warp, const uint4* a_frags, uint32_t lane, int mt, const uint32_t (&hi)[8],
                                              const uint32_t (&lo)[8], int (&acc)[4]) {
  uint32_t a[4][4];
  for (int t = 0; t < 4; ++t) {
    const uint4 f = a_frags[(mt * 4 + t) * 32 + lane];
    a[t][0] = f.x, a[t][1] = f.y, a[t][2] = f.z, a[t][3] = f.w;
  }
  for (int r = 0; r < 4; ++r) acc[r] = 0;
  for (int t = 0; t < 4; ++t) warp.template mma<false>(acc, a[t], hi[2 * t], hi[2 * t + 1]);
  for (int r = 0; r < 4; ++r) acc[r] *= 256;
  for (int t = 0; t < 4; ++t) warp.template mma<true>(acc, a[t], lo[2 * t], lo[2 * t + 1]);
}

// The tile code below runs on one side per instantiation: the GPU's warp (DeviceWarp) on the
// device, an emulation of its collectives on CPU threads (EmulatedWarp) on the host, which
// checks these lane orders against the model without a GPU.

// This lane's input of a tile: vector g's channels 32c .. 32c + 31.
struct TileInput {
  uint4 words[4];
};
__host__ __device__ inline TileInput load_input(const uint16_t* raw, uint32_t lane) {
  TileInput in;
  for (int w = 0; w < 4; ++w) in.words[w] = reinterpret_cast<const uint4*>(raw + (lane / 4) * kDim + 32 * (lane % 4))[w];
  return in;
}

// This lane's part of a tile in fixed point (steps 1-2 of quantize): the B fragments of its
// 32 values' bytes, and its vector's exponent and integer norm.
struct FixedPoint {
  uint32_t hi[8], lo[8];
  int e;
  bool zero;  // coded as zero: q = 0
  float nq;   // sqrt((float) sum q^2) over the whole vector
};

#pragma nv_exec_check_disable
template <typename W> __host__ __device__ FixedPoint to_fixed_point(W& warp, const TileInput& in) {
  const uint32_t* pairs = reinterpret_cast<const uint32_t*>(in.words);
  float x[32];
  float top = 0.f;
  for (int i = 0; i < 16; ++i) {
    x[2 * i] = bit_cast<float>(pairs[i] << 16);
    x[2 * i + 1] = bit_cast<float>(pairs[i] & 0xFFFF0000u);
    top = fmaxf(top, fmaxf(fabsf(x[2 * i]), fabsf(x[2 * i + 1])));
  }
  top = fmaxf(top, warp.shfl_xor(top, 1));
  top = fmaxf(top, warp.shfl_xor(top, 2));
  FixedPoint fp;
  // ilogb + 1 for normal floats; subnormal and zero tops fall below kMinExponent.
  fp.e = top == 0.f ? -127 : static_cast<int>((bit_cast<uint32_t>(top) >> 23) & 0xFF) - 126;
  fp.zero = fp.e < kMinExponent;
  const float factor = fp.zero ? 0.f : bit_cast<float>(static_cast<uint32_t>(127 + 15 - fp.e) << 23);
  int q[32];
  unsigned long long sum2 = 0;
  for (int i = 0; i < 32; ++i) {
    q[i] = round_to_int(x[i] * factor);
    sum2 += static_cast<unsigned long long>(q[i] * q[i]);
  }
  split_bytes(q, fp.hi, fp.lo);
  sum2 += warp.shfl_xor(sum2, 1);
  sum2 += warp.shfl_xor(sum2, 2);
  fp.nq = sqrtf(u64_to_float(sum2));
  return fp;
}

// Quantizes one tile of 8 vectors, as lane `lane` of the warp.
//   in: this lane's part of the tile's 8 x 128 bf16; a_frags: M's A fragments; codes: 8 x 64
//   bytes; norms: 8; boundary: the codebook's 7 positive inner boundaries.
#pragma nv_exec_check_disable
template <bool kSearch, typename W>
__host__ __device__ void quantize_tile(W& warp, uint32_t lane, const TileInput& in, const uint4* a_frags, uint8_t* codes,
                                       float* norms, const float* boundary) {
  const uint32_t g = lane / 4, c = lane % 4;
  const FixedPoint fp = to_fixed_point(warp, in);
  // A vector coded as zero has q = 0, so nq = 0, acc = 0 and every code 0 below.
  if (c == 0) norms[g] = fp.zero ? 0.f : ldexpf(fp.nq, fp.e - 15);
  // The thresholds of the two vectors this lane codes, 2c and 2c + 1: lanes 8c and 8c + 4 hold their nq.
  float thr[2][7];
  for (int v = 0; v < 2; ++v) {
    const float scale = 128.f * warp.shfl(fp.nq, 8 * c + 4 * v);
    for (int k = 0; k < 7; ++k) thr[v][k] = boundary[k] * scale;
  }
  uint32_t nibbles[2][2] = {{0, 0}, {0, 0}};  // [vector][m-tiles 0-3, 4-7]
  for (int mt = 0; mt < 8; ++mt) {
    int acc[4];
    product_mtile(warp, a_frags, lane, mt, fp.hi, fp.lo, acc);
    // acc[0], acc[1]: row g of vectors 2c, 2c + 1; acc[2], acc[3]: row g + 8.
    for (int r = 0; r < 4; ++r) {
      const int v = r % 2, h = r / 2;
      const float mag = static_cast<float>(acc[r] < 0 ? -acc[r] : acc[r]);
      const uint32_t code = thresholds_below<kSearch>(mag, thr[v]) | (acc[r] < 0 ? 8u : 0u);
      nibbles[v][mt / 4] |= code << (4 * (2 * (mt % 4) + h));  // coordinate 16g + 2mt + h
    }
  }
  for (int v = 0; v < 2; ++v)
    reinterpret_cast<uint2*>(codes + (2 * c + v) * kCodeBytes)[g] = make_uint2(nibbles[v][0], nibbles[v][1]);
}

// Dequantizes one tile of 8 vectors, as lane `lane` of the warp.
//   codes, norms: as quantize_tile writes them; a_frags: M^T's A fragments; raw: 8 x 128 bf16;
//   centroid: the 16 codes' centroids as integers (centroid * 2^15, negative for codes 8-15).
#pragma nv_exec_check_disable
template <typename W>
__host__ __device__ void dequantize_tile(W& warp, uint32_t lane, const uint8_t* codes, const float* norms, const uint4* a_frags,
                                         uint16_t* raw, const int* centroid) {
  const uint32_t g = lane / 4, c = lane % 4;
  const uint4 packed = reinterpret_cast<const uint4*>(codes + g * kCodeBytes)[c];  // coordinates 32c .. 32c + 31
  const uint32_t nib[4] = {packed.x, packed.y, packed.z, packed.w};
  int value[32];
  for (int i = 0; i < 32; ++i) value[i] = centroid[(nib[i / 8] >> (4 * (i % 8))) & 0xF];
  uint32_t hi[8], lo[8];
  split_bytes(value, hi, lo);
  float scale[2];
  for (int v = 0; v < 2; ++v) scale[v] = ldexpf(norms[2 * c + v], -7 - kCentroidShift);
  uint32_t out[2][8];  // [vector][m-tile]: channels 16g + 2mt and 16g + 2mt + 1
  for (int mt = 0; mt < 8; ++mt) {
    int acc[4];
    product_mtile(warp, a_frags, lane, mt, hi, lo, acc);
    for (int v = 0; v < 2; ++v)
      out[v][mt] = bf16_pair(static_cast<float>(acc[v]) * scale[v], static_cast<float>(acc[v + 2]) * scale[v]);
  }
  for (int v = 0; v < 2; ++v) {
    uint4* dst = reinterpret_cast<uint4*>(raw + (2 * c + v) * kDim + 16 * g);
    dst[0] = make_uint4(out[v][0], out[v][1], out[v][2], out[v][3]);
    dst[1] = make_uint4(out[v][4], out[v][5], out[v][6], out[v][7]);
  }
}

struct DeviceWarp {
  template <typename T> __device__ T shfl_xor(T v, int mask) { return __shfl_xor_sync(0xFFFFFFFFu, v, mask); }
  template <typename T> __device__ T shfl(T v, int src) { return __shfl_sync(0xFFFFFFFFu, v, src); }
  // d += A B, A int8; B uint8 where kUnsignedB, else int8.
  template <bool kUnsignedB> __device__ void mma(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    if (kUnsignedB)
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
          : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
};

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

class EmulatedWarp {
 public:
  template <typename T> T shfl_xor(T v, int mask) { return exchange(v, [&](uint32_t lane) { return lane ^ mask; }); }
  template <typename T> T shfl(T v, int src) { return exchange(v, [&](uint32_t) { return static_cast<uint32_t>(src); }); }
  template <bool kUnsignedB> void mma(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const uint32_t lane = current_lane;
    for (int r = 0; r < 4; ++r) a_[lane][r] = a[r], c_[lane][r] = d[r];
    b_[lane][0] = b0, b_[lane][1] = b1;
    arrive();
    for (int r = 0; r < 4; ++r) {
      const uint32_t row = lane / 4 + 8 * (r / 2), col = 2 * (lane % 4) + r % 2;
      int64_t sum = c_[(row % 8) * 4 + col / 2][(row / 8) * 2 + col % 2];
      for (uint32_t k = 0; k < 32; ++k) sum += static_cast<int64_t>(a_at(row, k)) * b_at(k, col, kUnsignedB);
      d[r] = static_cast<int>(sum);
    }
    arrive();
  }
  static thread_local uint32_t current_lane;

 private:
  int a_at(uint32_t row, uint32_t k) const {
    const uint32_t lane = (row % 8) * 4 + (k % 16) / 4, reg = (row / 8) + 2 * (k / 16);
    return static_cast<int8_t>(a_[lane][reg] >> (8 * (k % 4)));
  }
  int b_at(uint32_t k, uint32_t col, bool is_unsigned) const {
    const uint32_t lane = col * 4 + (k % 16) / 4, reg = k / 16;
    const uint32_t byte = (b_[lane][reg] >> (8 * (k % 4))) & 0xFF;
    return is_unsigned ? static_cast<int>(byte) : static_cast<int8_t>(byte);
  }
  template <typename T, typename Src> T exchange(T v, Src src) {
    const uint32_t lane = current_lane;
    std::memcpy(&slots_[lane], &v, sizeof v);
    arrive();
    T out;
    std::memcpy(&out, &slots_[src(lane)], sizeof out);
    arrive();
    return out;
  }
  void arrive() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == 32) {
      arrived_ = 0, ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != generation; });
    }
  }
  uint32_t a_[32][4], b_[32][2];
  int c_[32][4];
  unsigned long long slots_[32];
  std::mutex mutex_;
  std::condition_variable cv_;
  uint32_t arrived_ = 0;
  uint64_t generation_ = 0;
};
thread_local uint32_t EmulatedWarp::current_lane = 0;

// ---- the C++ model ------------------------------------------------------------------------

struct Model {
  // Both matrices in MMA order: forward[row][k] = 128 Q[contiguous_row(row)][contiguous_k(k)]
  // (rows coordinates, k channels); inverse[row][k] = 128 Q[contiguous_k(k)][contiguous_row(row)].
  std::vector<int> forward, inverse;
  float boundary[7];
  int centroid[16];

  explicit Model(uint64_t seed) : forward(kDim * kDim), inverse(kDim * kDim) {
    const bench::Matrix q = bench::hadamard_rotation(kDim, 0, seed, 2);
    for (uint32_t r = 0; r < kDim; ++r)
      for (uint32_t k = 0; k < kDim; ++k) {
        forward[r * kDim + k] = static_cast<int>(std::lround(q[contiguous_row(r) * kDim + contiguous_k(k)] * kDim));
        inverse[r * kDim + k] = static_cast<int>(std::lround(q[contiguous_k(k) * kDim + contiguous_row(r)] * kDim));
      }
    const float* bound = TQ_CODEBOOK_BOUNDARIES[tq_log2(kDim) - 3][3];
    const float* cent = TQ_CODEBOOK_CENTROIDS[tq_log2(kDim) - 3][3];
    for (int k = 0; k < 7; ++k) boundary[k] = bound[8 + k];
    for (int code = 0; code < 16; ++code)
      centroid[code] = static_cast<int>(std::lround(std::ldexp(static_cast<double>(cent[8 + code % 8]), kCentroidShift))) * (code < 8 ? 1 : -1);
  }

  int largest_entry() const {
    int top = 0;
    for (int v : forward) top = std::max(top, std::abs(v));
    return top;
  }

  // One vector's 64 code bytes and norm.
  void quantize(const uint16_t* raw, uint8_t* codes, float* norm) const {
    float x[kDim], top = 0.f;
    for (uint32_t i = 0; i < kDim; ++i) top = std::max(top, std::fabs(x[i] = tq_bf16_to_f32(raw[i])));
    const int e = top == 0.f ? -127 : std::ilogb(top) + 1;
    std::fill(codes, codes + kCodeBytes, 0);
    *norm = 0.f;
    if (e < kMinExponent) return;  // subnormal tops included
    const float factor = std::ldexp(1.f, 15 - e);
    int q[kDim];
    unsigned long long sum2 = 0;
    for (uint32_t k = 0; k < kDim; ++k) {
      q[k] = static_cast<int>(std::nearbyint(x[contiguous_k(k)] * factor));
      sum2 += static_cast<unsigned long long>(q[k] * q[k]);
    }
    const float nq = std::sqrt(static_cast<float>(sum2));
    *norm = std::ldexp(nq, e - 15);
    for (uint32_t r = 0; r < kDim; ++r) {
      int64_t acc = 0;
      for (uint32_t k = 0; k < kDim; ++k) acc += static_cast<int64_t>(forward[r * kDim + k]) * q[k];
      const float mag = static_cast<float>(std::llabs(acc));
      uint32_t code = 0;
      for (int k = 0; k < 7; ++k) code += mag > boundary[k] * (128.f * nq) ? 1u : 0u;
      code |= acc < 0 ? 8u : 0u;
      const uint32_t j = contiguous_row(r);
      codes[j / 2] |= static_cast<uint8_t>(code << (4 * (j % 2)));
    }
  }

  // One vector's 128 bf16 values from its codes and norm.
  void dequantize(const uint8_t* codes, float norm, uint16_t* raw) const {
    int value[kDim];
    for (uint32_t k = 0; k < kDim; ++k) {
      const uint32_t j = contiguous_k(k);
      value[k] = centroid[(codes[j / 2] >> (4 * (j % 2))) & 0xF];
    }
    const float scale = std::ldexp(norm, -7 - kCentroidShift);
    for (uint32_t r = 0; r < kDim; ++r) {
      int64_t acc = 0;
      for (uint32_t k = 0; k < kDim; ++k) acc += static_cast<int64_t>(inverse[r * kDim + k]) * value[k];
      raw[contiguous_row(r)] = tq_f32_to_bf16(static_cast<float>(acc) * scale);
    }
  }

  // A fragments of m16n8k32 (row-major A): register 0 row g, bytes k = 4c..4c+3; register 1
  // row g + 8; registers 2 and 3 the same at k + 16.
  static std::vector<uint32_t> a_fragments(const std::vector<int>& m) {
    std::vector<uint32_t> f(kFrags * 4);
    for (uint32_t mt = 0; mt < 8; ++mt)
      for (uint32_t t = 0; t < 4; ++t)
        for (uint32_t lane = 0; lane < 32; ++lane)
          for (uint32_t reg = 0; reg < 4; ++reg) {
            const uint32_t row = 16 * mt + lane / 4 + 8 * (reg % 2), k0 = 32 * t + 16 * (reg / 2) + 4 * (lane % 4);
            uint32_t word = 0;
            for (uint32_t i = 0; i < 4; ++i) word |= static_cast<uint32_t>(m[row * kDim + k0 + i] & 0xFF) << (8 * i);
            f[((mt * 4 + t) * 32 + lane) * 4 + reg] = word;
          }
    return f;
  }
};


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

int main(int argc, char** argv) {
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
