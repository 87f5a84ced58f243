// What one warp does to one group of the fractional-rate probe (halves_model.h says what is
// computed), written once for the GPU (HalvesDeviceWarp, halves_probe.cu) and for the emulated
// warp (mma_warps.cuh), which checks the lane orders against the model without a GPU.
//
// Quantize reads the group from shared memory (16 tokens of 128 bf16, kRowStride apart):
//  - lane l takes channels 4l .. 4l + 3: their energies, then the 64 largest keys by a radix
//    search over the keys' 15 bits (a warp sum a bit: redux.sync on the GPU), the lower channel
//    first among equals; an exclusive scan over lanes gives each channel its place in its half,
//    and the warp writes the half-order channel list (128 bytes) to shared memory;
//  - then as format 3's tile code does at dim 128, at dim 64 for each half: lane (g, c) takes 16
//    consecutive elements of token g of each tile (tokens 0-7, 8-15) through the list, in fixed
//    point on 8 bits; M (int16) is two int8 products a tile, its high bytes signed and its low
//    bytes unsigned; the accumulators of m-tile mt hold coordinates 8g + 2mt + h of tokens 2c
//    and 2c + 1, so a lane's eight coordinates of a token are byte g of every plane.
// Dequantize builds the same list from the record's mask, feeds each lane's 16 coordinates'
// centroids as B fragments, multiplies by M^T the same way, and scatters each value to its
// channel in shared memory.
#pragma once
#include "halves_model.h"
#include "tq_matrix_tile.cuh"

namespace halves {

using tq_matrix::bit_cast;
using tq_matrix::byte_perm;
using tq_matrix::dot4_s8;
using tq_matrix::pack_codes;

// The fragment orders at dim 64 (tq_matrix_tile.cuh's at 128): lane (g, c) feeds elements
// 16c .. 16c + 15 of vector g; m-tile mt's accumulators hold rows 8g + 2mt + h.
__host__ __device__ constexpr uint32_t contiguous_k(uint32_t k) { return 16 * ((k / 4) % 4) + 8 * (k / 32) + 4 * ((k / 16) % 2) + k % 4; }
__host__ __device__ constexpr uint32_t contiguous_row(uint32_t r) { return 8 * (r % 8) + 2 * (r / 16) + (r / 8) % 2; }

constexpr uint32_t kMtiles = 4, kKtiles = 2, kFrags = kMtiles * kKtiles * 32;  // uint4 a lane and fragment
// A staged group's tokens lie kRowStride values apart: 16 bytes more than a token, so that the
// same channel of the eight tokens a warp reads at once falls in eight different banks.
constexpr uint32_t kRowStride = kChannels + 8;

// A fragments of M's (or M^T's) high bytes (signed) and low bytes (unsigned), rows and columns in MMA order.
inline std::vector<uint32_t> a_fragments(const Plan& plan, bool high, bool transpose = false) {
  std::vector<uint32_t> f(kFrags * 4);
  for (uint32_t mt = 0; mt < kMtiles; ++mt)
    for (uint32_t t = 0; t < kKtiles; ++t)
      for (uint32_t lane = 0; lane < 32; ++lane)
        for (uint32_t reg = 0; reg < 4; ++reg) {
          const uint32_t row = 16 * mt + lane / 4 + 8 * (reg % 2), k0 = 32 * t + 16 * (reg / 2) + 4 * (lane % 4);
          uint32_t word = 0;
          for (uint32_t i = 0; i < 4; ++i) {
            const uint32_t r = contiguous_row(row), k = contiguous_k(k0 + i);
            const int m = transpose ? plan.matrix[k][r] : plan.matrix[r][k];
            word |= static_cast<uint32_t>((high ? m >> 8 : m) & 0xFF) << (8 * i);
          }
          f[((mt * kKtiles + t) * 32 + lane) * 4 + reg] = word;
        }
  return f;
}

// The sum of v over the lanes below this one.
template <typename W> __host__ __device__ inline int lanes_below(W& warp, uint32_t lane, int v) {
  int inclusive = v;
  for (uint32_t d = 1; d < 32; d *= 2) {
    const int other = warp.shfl(inclusive, static_cast<int>(lane >= d ? lane - d : lane));
    if (lane >= d) inclusive += other;
  }
  return inclusive - v;
}

// Bit p of each of 8 codes (code j at nibble j of w) as one byte, bit j from code j.
__host__ __device__ inline uint32_t plane_byte(uint32_t w, uint32_t p) {
  uint32_t x = (w >> p) & 0x11111111u;
  x = (x | x >> 3) & 0x03030303u;
  return (x * 0x01041040u) >> 24;
}

__host__ __device__ inline int popcount(uint32_t v) {
#ifdef __CUDA_ARCH__
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

// The half-order channel list from this lane's outlier bits (channels 4 lane .. + 3): outliers
// first, then the rest, each ascending.
template <typename W> __host__ __device__ inline void place_channels(W& warp, uint32_t lane, uint32_t outlier, uint8_t* list) {
  int place = lanes_below(warp, lane, popcount(outlier));
  for (int i = 0; i < 4; ++i) {
    const uint32_t channel = 4 * lane + i;
    const bool out = (outlier >> i) & 1u;
    list[out ? place : kDim + channel - place] = static_cast<uint8_t>(channel);
    place += out;
  }
}

// M's m-tile mt (both k-tiles, high and low bytes), loaded once for both tiles of a group.
struct MtileFragments {
  uint32_t hi[kKtiles][4], lo[kKtiles][4];
};
__host__ __device__ inline MtileFragments load_mtile(uint32_t lane, const uint4* a_hi, const uint4* a_lo, uint32_t mt) {
  MtileFragments a;
  for (uint32_t t = 0; t < kKtiles; ++t) {
    const uint4 fh = a_hi[(mt * kKtiles + t) * 32 + lane], fl = a_lo[(mt * kKtiles + t) * 32 + lane];
    a.hi[t][0] = fh.x, a.hi[t][1] = fh.y, a.hi[t][2] = fh.z, a.hi[t][3] = fh.w;
    a.lo[t][0] = fl.x, a.lo[t][1] = fl.y, a.lo[t][2] = fl.z, a.lo[t][3] = fl.w;
  }
  return a;
}

// An m-tile of M times a tile's B fragments b, exact: 256 (A's high bytes) + its low bytes.
template <typename W> __host__ __device__ inline void product_mtile(W& warp, const MtileFragments& a, const uint32_t (&b)[4], int (&acc)[4]) {
  int acc_hi[4] = {}, acc_lo[4] = {};
  for (uint32_t t = 0; t < kKtiles; ++t) {
    warp.template mma<false, false>(acc_hi, a.hi[t], b[2 * t], b[2 * t + 1]);
    warp.template mma<false, true>(acc_lo, a.lo[t], b[2 * t], b[2 * t + 1]);
  }
  for (int r = 0; r < 4; ++r) acc[r] = acc_hi[r] * 256 + acc_lo[r];
}

// One half's part of a tile in this lane: its B fragments and the vector's nq and stored norm.
struct HalfInput {
  uint32_t b[4];
  float nq, norm;
};

template <typename W>
__host__ __device__ inline HalfInput half_input(W& warp, const uint16_t* token, const uint8_t* list) {
  uint32_t src[4];
  memcpy(src, list, 16);
  float x[16], top = 0.f;
  for (int i = 0; i < 16; ++i) {
    const uint32_t channel = (src[i / 4] >> (8 * (i % 4))) & 0xFF;
    x[i] = bit_cast<float>(static_cast<uint32_t>(token[channel]) << 16);
    top = fmaxf(top, fabsf(x[i]));
  }
  top = fmaxf(top, warp.shfl_xor(top, 1));
  top = fmaxf(top, warp.shfl_xor(top, 2));
  const float f = tq_matrix::input_factor(top);
  int q[16];
  for (int i = 0; i < 16; ++i) q[i] = tq_matrix::round_to_low_byte(x[i], f);  // finite input: exact
  HalfInput in;
  int sum2 = 0;
  for (int w = 0; w < 4; ++w) {
    in.b[w] = byte_perm(byte_perm(q[4 * w], q[4 * w + 1], 0x0040u), byte_perm(q[4 * w + 2], q[4 * w + 3], 0x0040u), 0x5410u);
    sum2 = dot4_s8(in.b[w], in.b[w], sum2);
  }
  sum2 += warp.shfl_xor(sum2, 1);
  sum2 += warp.shfl_xor(sum2, 2);
  in.nq = sqrtf(static_cast<float>(sum2));
  in.norm = f == 0.f ? 0.f : in.nq / f;
  return in;
}

// Half s (0: the outliers, at kHalfBits = kBits + 1; 1: the rest, at kBits) of the group's
// two tiles, once the channel list is in place: norms and code planes into the record.
#pragma nv_exec_check_disable
template <uint32_t kHalfBits, uint32_t kBits, typename W>
__host__ __device__ void code_half(W& warp, uint32_t lane, uint32_t s, const uint16_t* x, const uint8_t* list, const uint4* a_hi,
                                   const uint4* a_lo, const Book& book, uint8_t* record) {
  const uint32_t g = lane / 4, c = lane % 4;
  float* norms = reinterpret_cast<float*>(record + kMaskBytes);
  HalfInput in[2];
  Coder coder[2][2];  // [tile][vector 2c + v]
  for (int i = 0; i < 2; ++i) {
    in[i] = half_input(warp, x + (8 * i + g) * kRowStride, list + s * kDim + 16 * c);
    if (c == 0) norms[(8 * i + g) * 2 + s] = in[i].norm;
    for (int v = 0; v < 2; ++v) coder[i][v] = coder_for(book, warp.shfl(in[i].nq, static_cast<int>(4 * (2 * c + v))));
  }
  uint32_t nibbles[2][2] = {};  // [tile][vector]: coordinates 8g + 2mt + h, the first m-tile's pair at the top
  for (uint32_t mt = 0; mt < kMtiles; ++mt) {
    const MtileFragments a = load_mtile(lane, a_hi, a_lo, mt);
    for (int i = 0; i < 2; ++i) {
      // acc[v], acc[v + 2]: coordinates 8g + 2mt and 8g + 2mt + 1 of vector 2c + v
      int acc[4];
      product_mtile(warp, a, in[i].b, acc);
      for (int v = 0; v < 2; ++v)
        nibbles[i][v] = pack_codes(unclamped_code<kHalfBits>(coder[i][v], acc[v + 2]), unclamped_code<kHalfBits>(coder[i][v], acc[v]), nibbles[i][v]);
    }
  }
  uint8_t* codes = record + kMaskBytes + kNormBytes;
  for (int i = 0; i < 2; ++i)
    for (int v = 0; v < 2; ++v) {
      const uint32_t w = byte_perm(nibbles[i][v], 0, 0x0123u);  // code j at nibble j
      uint8_t* planes = codes + (8 * i + 2 * c + v) * 8 * (2 * kBits + 1) + s * 8 * (kBits + 1);
      for (uint32_t p = 0; p < kHalfBits; ++p) planes[8 * p + g] = static_cast<uint8_t>(plane_byte(w, p));
    }
}

// The group staged at x (16 tokens kRowStride apart) into its record (record_bytes(kBits) bytes), as lane
// `lane`; list: 128 bytes of scratch shared by the warp; a_hi, a_lo: M's fragments.
#pragma nv_exec_check_disable
template <uint32_t kBits, typename W>
__host__ __device__ void quantize_group_tiles(W& warp, uint32_t lane, const uint16_t* x, uint8_t* list, const uint4* a_hi,
                                              const uint4* a_lo, const Book& outlier_book, const Book& rest_book, uint8_t* record) {
  // Keys of channels 4 lane .. + 3, and the 64th largest by a radix search.
  uint32_t key[4];
  {
    float e[4] = {};
    for (uint32_t t = 0; t < kTokens; ++t) {
      uint2 w;
      memcpy(&w, x + t * kRowStride + 4 * lane, 8);
      const float v[4] = {bit_cast<float>(w.x << 16), bit_cast<float>(w.x & 0xFFFF0000u), bit_cast<float>(w.y << 16),
                          bit_cast<float>(w.y & 0xFFFF0000u)};
      for (int i = 0; i < 4; ++i) e[i] = fmaf(v[i], v[i], e[i]);
    }
    for (int i = 0; i < 4; ++i) key[i] = bit_cast<uint32_t>(e[i]) >> 16;
  }
  uint32_t threshold = 0;
  for (int bit = 14; bit >= 0; --bit) {
    const uint32_t candidate = threshold | 1u << bit;
    int at_least = 0;
    for (int i = 0; i < 4; ++i) at_least += key[i] >= candidate;
    if (warp.reduce_add(at_least) >= static_cast<int>(kDim)) threshold = candidate;
  }
  int above = 0, equal = 0;
  for (int i = 0; i < 4; ++i) above += key[i] > threshold, equal += key[i] == threshold;
  int room = static_cast<int>(kDim) - warp.reduce_add(above) - lanes_below(warp, lane, equal);  // equal keys this lane may take
  uint32_t outlier = 0;
  for (int i = 0; i < 4; ++i) {
    const bool taken = key[i] > threshold || (key[i] == threshold && room-- > 0);
    outlier |= static_cast<uint32_t>(taken) << i;
  }
  place_channels(warp, lane, outlier, list);
  const uint32_t pair = outlier | warp.shfl_xor(outlier, 1) << 4;
  if (lane % 2 == 0) record[lane / 2] = static_cast<uint8_t>(pair);
  warp.sync();

  code_half<kBits + 1, kBits>(warp, lane, 0, x, list, a_hi, a_lo, outlier_book, record);
  code_half<kBits, kBits>(warp, lane, 1, x, list, a_hi, a_lo, rest_book, record);
}

// Bits p of 8 codes (bit j from code j) spread to bit p of nibble j: plane_byte's inverse.
__host__ __device__ inline uint32_t nibble_bits(uint32_t byte, uint32_t p) {
  uint32_t x = (byte | byte << 12) & 0x000F000Fu;
  x = (x | x << 6) & 0x03030303u;
  x = (x | x << 3) & 0x11111111u;
  return x << p;
}

// Four codes (nibbles of sel, 0..15) to their centroids' bytes: prmt selects by a code's low 3
// bits from table[0..1] (codes 0-7) or table[2..3] (8-15), and its top bit chooses.
template <uint32_t kBits> __host__ __device__ inline uint32_t centroid_bytes(const uint32_t (&table)[4], uint32_t sel) {
  if constexpr (kBits < 4) return byte_perm(table[0], table[1], sel);
  const uint32_t low = byte_perm(table[0], table[1], sel & 0x7777u), high = byte_perm(table[2], table[3], sel & 0x7777u);
  uint32_t top = (sel >> 3) & 0x1111u;  // bits 0, 4, 8, 12 to bytes 0..3
  top = (top | top << 8) & 0x00110011u;
  top = ((top | top << 4) & 0x01010101u) * 0xFFu;
  return (high & top) | (low & ~top);
}

__host__ __device__ inline uint16_t to_bf16(float v) {
#ifdef __CUDA_ARCH__
  return __bfloat16_as_ushort(__float2bfloat16_rn(v));
#else
  return tq_f32_to_bf16(v);
#endif
}

// Half s of the group's two tiles back into x (16 tokens kRowStride apart) through the channel list;
// table: the half's centroid bytes in code order.
#pragma nv_exec_check_disable
template <uint32_t kHalfBits, uint32_t kBits, typename W>
__host__ __device__ void decode_half(W& warp, uint32_t lane, uint32_t s, const uint8_t* record, const uint8_t* list, const uint4* a_hi,
                                     const uint4* a_lo, const uint32_t (&table)[4], int shift, uint16_t* x) {
  const uint32_t g = lane / 4, c = lane % 4;
  const float* norms = reinterpret_cast<const float*>(record + kMaskBytes);
  const uint8_t* codes = record + kMaskBytes + kNormBytes;
  uint32_t b[2][4];  // [tile]: coordinates 16c .. 16c + 15 of token 8 tile + g, as B fragments
  for (int i = 0; i < 2; ++i) {
    const uint8_t* planes = codes + (8 * i + g) * 8 * (2 * kBits + 1) + s * 8 * (kBits + 1) + 2 * c;
    uint32_t nib[2] = {};
    for (uint32_t p = 0; p < kHalfBits; ++p) nib[0] |= nibble_bits(planes[8 * p], p), nib[1] |= nibble_bits(planes[8 * p + 1], p);
    for (int f = 0; f < 4; ++f) b[i][f] = centroid_bytes<kHalfBits>(table, (nib[f / 2] >> (16 * (f % 2))) & 0xFFFFu);
  }
  // this lane's elements 8g .. 8g + 7 of the half: their channels, and its tokens' scales
  uint2 channels;
  memcpy(&channels, list + s * kDim + 8 * g, 8);
  float scale[2][2];  // [tile][token 2c + v]
  for (int i = 0; i < 2; ++i)
    for (int v = 0; v < 2; ++v) scale[i][v] = half_scale(norms[(8 * i + 2 * c + v) * 2 + s], shift);
  for (uint32_t mt = 0; mt < kMtiles; ++mt) {
    const MtileFragments a = load_mtile(lane, a_hi, a_lo, mt);
    for (int i = 0; i < 2; ++i) {
      int acc[4];
      product_mtile(warp, a, b[i], acc);
      // acc[v + 2h]: element 8g + 2mt + h of the half, token 8i + 2c + v
      for (int r = 0; r < 4; ++r) {
        const uint32_t token = 8 * i + 2 * c + r % 2, e = 2 * mt + r / 2;
        const uint32_t channel = ((e < 4 ? channels.x : channels.y) >> (8 * (e % 4))) & 0xFF;
        x[token * kRowStride + channel] = to_bf16(static_cast<float>(acc[r]) * scale[i][r % 2]);
      }
    }
  }
}

// A record (record_bytes(kBits)) back into its group x (16 tokens kRowStride apart), as lane `lane`; list:
// 128 bytes of scratch shared by the warp; a_hi, a_lo: M^T's fragments; tables: the halves'
// centroid bytes (outlier half first).
#pragma nv_exec_check_disable
template <uint32_t kBits, typename W>
__host__ __device__ void dequantize_group_tiles(W& warp, uint32_t lane, const uint8_t* record, uint8_t* list, const uint4* a_hi,
                                                const uint4* a_lo, const uint32_t (&tables)[2][4], const int (&shifts)[2], uint16_t* x) {
  place_channels(warp, lane, (record[lane / 2] >> (4 * (lane % 2))) & 0xFu, list);
  warp.sync();
  decode_half<kBits + 1, kBits>(warp, lane, 0, record, list, a_hi, a_lo, tables[0], shifts[0], x);
  decode_half<kBits, kBits>(warp, lane, 1, record, list, a_hi, a_lo, tables[1], shifts[1], x);
}

// A half's centroids as the byte tables centroid_bytes reads.
inline void centroid_table(const Centroids& c, uint32_t (&table)[4]) {
  for (int w = 0; w < 4; ++w) {
    table[w] = 0;
    for (int i = 0; i < 4; ++i) table[w] |= static_cast<uint32_t>(c.value[4 * w + i] & 0xFF) << (8 * i);
  }
}

}  // namespace halves
