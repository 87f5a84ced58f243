// What one warp does to one record of format 4's halves kinds (tq_halves.h says what is computed),
// written once for the GPU (HalvesDeviceWarp: turboquant_halves.cu, bench/quant/halves_probe.cu)
// and for the emulated warp (bench/quant/mma_warps.cuh), which checks the lane orders against the
// C++ reference without a GPU.
//
// Quantize reads the group from shared memory (16 tokens of 128 bf16, kRowStride apart):
//  - lane l takes channels 4l .. 4l + 3: their energies (where one is not finite, the group's
//    non-finite values are taken as 0 first), then the 64 largest keys by a radix
//    search over the keys' 15 bits (a warp sum a bit: redux.sync on the GPU), the lower channel
//    first among equals; an exclusive scan over lanes gives each channel its place in its half,
//    and each lane moves its channels there in every token's row, so that the rows lie in half
//    order (a token's outliers, then the rest, each ascending);
//  - then as format 3's tile code does at dim 128, at dim 64 for each half: lane (g, c) takes 16
//    consecutive elements of token g of each tile (tokens 0-7, 8-15), two 16-byte loads, in fixed
//    point on 8 bits; M (int16) is two int8 products a tile, its high bytes signed and its low
//    bytes unsigned; the accumulators of m-tile mt hold coordinates 8g + 2mt + h of tokens 2c
//    and 2c + 1, so a lane's eight coordinates of a token are one 32-bit word of nibbles, written
//    as the record packs them (halves_model.h's put_code).
// Dequantize finds each channel's half and place from the record's mask, feeds each lane's 16
// coordinates' centroids as B fragments and multiplies by M^T the same way, both halves under one
// load of each m-tile of M^T. The products go to shared memory in half order (HalfOrder: two
// tokens' bf16 values a word), one store a word, in distinct banks; then each lane gathers 8
// channels of two tokens at a time through the channels' places and writes them as 16-byte words.
#pragma once
#include <cfloat>

#include "tq_halves.h"
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

// The low two bits of each of 8 codes (code j at nibble j of w) as 16 bits, code j at bits 2j.
__host__ __device__ inline uint32_t low_pairs(uint32_t w) {
  uint32_t x = w & 0x33333333u;
  x = (x | x >> 2) & 0x0F0F0F0Fu;
  x = (x | x >> 4) & 0x00FF00FFu;
  return byte_perm(x, 0, 0x0020u) & 0xFFFFu;
}

// 8 codes (code j at nibble j of w) into a half's record at coordinates 8g .. 8g + 7 (tq_halves.cpp's put_code).
template <uint32_t kBits> __host__ __device__ inline void put_codes(uint8_t* half, uint32_t g, uint32_t w) {
  if constexpr (kBits == 4) {
    reinterpret_cast<uint32_t*>(half)[g] = w;
  } else {
    reinterpret_cast<uint16_t*>(half)[g] = static_cast<uint16_t>(low_pairs(w));
    if constexpr (kBits == 3) half[16 + g] = static_cast<uint8_t>(plane_byte(w, 2));
  }
}

__host__ __device__ inline int popcount(uint32_t v) {
#ifdef __CUDA_ARCH__
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

// Where this lane's channels (4 lane + i) go in half order: outliers first (places 0 ..
// kDim - 1), then the rest (kDim and up), each ascending.
// below: the outliers in the lanes below this one; outlier: bit i set for an outlier channel 4 lane + i.
__host__ __device__ inline void places_after(uint32_t lane, int below, uint32_t outlier, uint32_t (&place)[4]) {
  for (int i = 0; i < 4; ++i) {
    const bool out = (outlier >> i) & 1u;
    place[i] = out ? below : kDim + 4 * lane + i - below;
    below += out;
  }
}
template <typename W> __host__ __device__ inline void channel_places(W& warp, uint32_t lane, uint32_t outlier, uint32_t (&place)[4]) {
  places_after(lane, lanes_below(warp, lane, popcount(outlier)), outlier, place);
}

// How many of four keys are at least c (< 2^15): packed two a word, each key (< 2^15) with bit 15
// set, so that one subtraction a word leaves bit 15 of a key set exactly where it is.
__host__ __device__ inline int keys_at_least(const uint32_t (&packed)[2], uint32_t c) {
  const uint32_t both = c * 0x10001u;
  return popcount(((packed[0] - both) & 0x80008000u) | (((packed[1] - both) >> 1) & 0x40004000u));
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

// One half's 16 elements of a token in this lane (two bf16 values a word, finite), and their
// vector's largest magnitude (over the vector's four lanes).
struct HalfElements {
  uint32_t pairs[8];
  float top;
};

// The larger of each 16-bit half of a and b, as unsigned integers.
__host__ __device__ inline uint32_t max_u16x2(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __vmaxu2(a, b);
#else
  const uint32_t lo = (a & 0xFFFFu) > (b & 0xFFFFu) ? a & 0xFFFFu : b & 0xFFFFu, hi = a >> 16 > b >> 16 ? a >> 16 : b >> 16;
  return lo | hi << 16;
#endif
}

// elements: 16 consecutive bf16 values of a token's half, 16-byte aligned. Finite values'
// magnitudes order as their bits do, so the largest is found two at a time among integers.
template <typename W>
__host__ __device__ inline HalfElements half_elements(W& warp, const uint16_t* elements) {
  HalfElements e;
  memcpy(e.pairs, elements, 32);
  uint32_t top = 0;
  for (int w = 0; w < 8; ++w) top = max_u16x2(top, e.pairs[w] & 0x7FFF7FFFu);
  e.top = bit_cast<float>(max_u16x2(top, top >> 16) << 16);
  e.top = fmaxf(e.top, warp.shfl_xor(e.top, 1));
  e.top = fmaxf(e.top, warp.shfl_xor(e.top, 2));
  return e;
}

// The elements in fixed point (x f rounded, 8 bits) as B fragments; returns their vector's sum of
// squares (over its four lanes).
template <typename W> __host__ __device__ inline int fixed_point(W& warp, const HalfElements& e, float f, uint32_t (&b)[4]) {
  int q[16];
  for (int i = 0; i < 16; ++i) q[i] = fixed_point_byte(bit_cast<float>(i % 2 ? e.pairs[i / 2] & 0xFFFF0000u : e.pairs[i / 2] << 16), f);
  int sum2 = 0;
  for (int w = 0; w < 4; ++w) {
    b[w] = byte_perm(byte_perm(q[4 * w], q[4 * w + 1], 0x0040u), byte_perm(q[4 * w + 2], q[4 * w + 3], 0x0040u), 0x5410u);
    sum2 = dot4_s8(b[w], b[w], sum2);
  }
  sum2 += warp.shfl_xor(sum2, 1);
  return sum2 + warp.shfl_xor(sum2, 2);
}

// Lane src's coder, where the lanes' books are kBits ones (only the fields it uses).
template <uint32_t kBits, typename W> __host__ __device__ inline Coder shfl_coder(W& warp, const Coder& k, int src) {
  Coder out{};
  for (uint32_t j = 0; j < degree_for(kBits); ++j) out.c[j] = warp.shfl(k.c[j], src);
  if (kBits != 4) out.cap = warp.shfl(k.cap, src);
  return out;
}

// Half s (0: the outliers, at kHalfBits = kBits + 1; 1: the rest, at kBits) of the group's
// two tiles, once the rows are in half order: norms and codes into the record.
#pragma nv_exec_check_disable
template <uint32_t kHalfBits, uint32_t kBits, typename W>
__host__ __device__ void code_half(W& warp, uint32_t lane, uint32_t s, const uint16_t* x, const uint4* a_hi,
                                   const uint4* a_lo, const Book& book, uint8_t* record) {
  const uint32_t g = lane / 4, c = lane % 4;
  HalfElements e[2];  // tokens g and 8 + g
  for (int i = 0; i < 2; ++i) e[i] = half_elements(warp, x + (8 * i + g) * kRowStride + s * kDim + 16 * c);
  // A vector's scalars (its factor, norm and coder) are worked out by the lanes of its four whose
  // c % 2 is its tile, once a lane instead of once a tile, and shuffled to the lanes that use them.
  const bool second = c % 2;
  const float f_own = tq_matrix::input_factor(second ? e[1].top : e[0].top);
  uint32_t b[2][4];
  int sum2[2];
  for (int i = 0; i < 2; ++i) sum2[i] = fixed_point(warp, e[i], warp.shfl(f_own, static_cast<int>(4 * g + i)), b[i]);
  const float nq_own = sqrtf(static_cast<float>(second ? sum2[1] : sum2[0]));
  if (c < 2) reinterpret_cast<float*>(record + kMaskBytes)[(8 * c + g) * 2 + s] = f_own == 0.f ? 0.f : nq_own / f_own;
  const Coder mine = coder_for<kHalfBits>(book, nq_own);
  Coder coder[2][2];  // [tile][vector 2c + v]: lane 4 (2c + v) + i works it out
  for (int i = 0; i < 2; ++i)
    for (int v = 0; v < 2; ++v) coder[i][v] = shfl_coder<kHalfBits>(warp, mine, static_cast<int>(4 * (2 * c + v) + i));
  uint32_t nibbles[2][2] = {};  // [tile][vector]: coordinates 8g + 2mt + h, the first m-tile's pair at the top
  for (uint32_t mt = 0; mt < kMtiles; ++mt) {
    const MtileFragments a = load_mtile(lane, a_hi, a_lo, mt);
    for (int i = 0; i < 2; ++i) {
      // acc[v], acc[v + 2]: coordinates 8g + 2mt and 8g + 2mt + 1 of vector 2c + v
      int acc[4];
      product_mtile(warp, a, b[i], acc);
      for (int v = 0; v < 2; ++v)
        nibbles[i][v] = pack_codes(unclamped_code<kHalfBits>(coder[i][v], acc[v + 2]), unclamped_code<kHalfBits>(coder[i][v], acc[v]), nibbles[i][v]);
    }
  }
  uint8_t* codes = record + kMaskBytes + kNormBytes;
  for (int i = 0; i < 2; ++i)
    for (int v = 0; v < 2; ++v) {
      const uint32_t w = byte_perm(nibbles[i][v], 0, 0x0123u);  // code j at nibble j
      put_codes<kHalfBits>(codes + (8 * i + 2 * c + v) * 8 * (2 * kBits + 1) + s * 8 * (kBits + 1), g, w);
    }
}

// Two bf16 values a word with the non-finite ones (exponent all ones) taken as +0: a value's
// exponent bits plus one carry into its bit 15 exactly when they are all ones, and no further.
__host__ __device__ inline uint32_t finite_bf16x2(uint32_t w) {
  const uint32_t carried = (w & 0x7F807F80u) + 0x00800080u;
  return w & ~(((carried >> 15) & 0x00010001u) * 0xFFFFu);
}

// Channels 4 lane .. 4 lane + 3 of each token of a staged group, two bf16 values a word.
using LaneChannels = uint2[kTokens];

// Their energies, summed over the tokens in order.
__host__ __device__ inline void channel_energies(const LaneChannels& v, float (&e)[4]) {
  for (int i = 0; i < 4; ++i) e[i] = 0.f;
  for (uint32_t t = 0; t < kTokens; ++t) {
    const float f[4] = {bit_cast<float>(v[t].x << 16), bit_cast<float>(v[t].x & 0xFFFF0000u), bit_cast<float>(v[t].y << 16),
                        bit_cast<float>(v[t].y & 0xFFFF0000u)};
    for (int i = 0; i < 4; ++i) e[i] = fmaf(f[i], f[i], e[i]);
  }
}

// The group staged at x (16 tokens kRowStride apart) into its record (record_bytes(kBits) bytes), as lane
// `lane`, leaving the rows in half order; a_hi, a_lo: M's fragments.
#pragma nv_exec_check_disable
template <uint32_t kBits, typename W>
__host__ __device__ void quantize_group_tiles(W& warp, uint32_t lane, uint16_t* x, const uint4* a_hi,
                                              const uint4* a_lo, const Book& outlier_book, const Book& rest_book, uint8_t* record) {
  // The lane's channels are read once, for their energies, the check and the move into half order.
  LaneChannels v;
  for (uint32_t t = 0; t < kTokens; ++t) memcpy(&v[t], x + t * kRowStride + 4 * lane, 8);
  float e[4];
  channel_energies(v, e);
  // A non-finite value makes its channel's energy non-finite (and so may a large finite one):
  // only then are the group's non-finite values taken as 0, as the reference takes them
  // everywhere, and the energies summed again.
  if (warp.reduce_add(!(e[0] <= FLT_MAX && e[1] <= FLT_MAX && e[2] <= FLT_MAX && e[3] <= FLT_MAX)) > 0) {
    for (uint32_t t = 0; t < kTokens; ++t) v[t].x = finite_bf16x2(v[t].x), v[t].y = finite_bf16x2(v[t].y);
    channel_energies(v, e);
  }
  // Keys of channels 4 lane .. + 3: the top 16 bits of their energies.
  uint32_t key[4];
  for (int i = 0; i < 4; ++i) key[i] = bit_cast<uint32_t>(e[i]) >> 16;
  // The 64th largest key by a radix search (keys are below 2^15: energies are not negative).
  const uint32_t packed[2] = {key[0] | key[1] << 16 | 0x80008000u, key[2] | key[3] << 16 | 0x80008000u};
  uint32_t threshold = 0;
  for (int bit = 14; bit >= 0; --bit) {
    const uint32_t candidate = threshold | 1u << bit;
    if (warp.reduce_add(keys_at_least(packed, candidate)) >= static_cast<int>(kDim)) threshold = candidate;
  }
  // The outliers: every key above the threshold, then those equal to it, lower channels first,
  // while room is left; one scan counts both kinds in the lanes below.
  const int above = keys_at_least(packed, threshold + 1), equal = keys_at_least(packed, threshold) - above;
  const int room = static_cast<int>(kDim) - warp.reduce_add(above);
  const int below = lanes_below(warp, lane, above | equal << 16);
  int equal_left = room - (below >> 16);  // equal keys this lane may take
  uint32_t outlier = 0;
  for (int i = 0; i < 4; ++i) {
    const bool taken = key[i] > threshold || (key[i] == threshold && equal_left-- > 0);
    outlier |= static_cast<uint32_t>(taken) << i;
  }
  uint32_t place[4];
  places_after(lane, (below & 0xFFFF) + min(below >> 16, room), outlier, place);
  // Every row in half order, in place, once every lane has read its channels.
  warp.sync();
  for (uint32_t t = 0; t < kTokens; ++t) {
    uint16_t* row = x + t * kRowStride;
    row[place[0]] = static_cast<uint16_t>(v[t].x), row[place[1]] = static_cast<uint16_t>(v[t].x >> 16);
    row[place[2]] = static_cast<uint16_t>(v[t].y), row[place[3]] = static_cast<uint16_t>(v[t].y >> 16);
  }
  const uint32_t pair = outlier | warp.shfl_xor(outlier, 1) << 4;
  if (lane % 2 == 0) record[lane / 2] = static_cast<uint8_t>(pair);
  warp.sync();

  code_half<kBits + 1, kBits>(warp, lane, 0, x, a_hi, a_lo, outlier_book, record);
  code_half<kBits, kBits>(warp, lane, 1, x, a_hi, a_lo, rest_book, record);
}

// Bits p of 8 codes (bit j from code j) spread to bit p of nibble j: plane_byte's inverse.
__host__ __device__ inline uint32_t nibble_bits(uint32_t byte, uint32_t p) {
  uint32_t x = (byte | byte << 12) & 0x000F000Fu;
  x = (x | x << 6) & 0x03030303u;
  x = (x | x << 3) & 0x11111111u;
  return x << p;
}

// 8 codes' low two bits (code j at bits 2j) spread to nibble j: low_pairs' inverse.
__host__ __device__ inline uint32_t pair_nibbles(uint32_t pairs) {
  uint32_t x = (pairs | pairs << 8) & 0x00FF00FFu;
  x = (x | x << 4) & 0x0F0F0F0Fu;
  return (x | x << 2) & 0x33333333u;
}

// Coordinates 16c .. 16c + 15 of a half's record as two words of nibbles (put_codes' inverse).
template <uint32_t kBits> __host__ __device__ inline void get_codes(const uint8_t* half, uint32_t c, uint32_t (&nib)[2]) {
  if constexpr (kBits == 4) {
    const uint2 w = reinterpret_cast<const uint2*>(half)[c];
    nib[0] = w.x, nib[1] = w.y;
  } else {
    const uint32_t pairs = reinterpret_cast<const uint32_t*>(half)[c];
    nib[0] = pair_nibbles(pairs & 0xFFFFu), nib[1] = pair_nibbles(pairs >> 16);
    if constexpr (kBits == 3) {
      const uint32_t top = reinterpret_cast<const uint16_t*>(half + 16)[c];
      nib[0] |= nibble_bits(top & 0xFFu, 2), nib[1] |= nibble_bits(top >> 8, 2);
    }
  }
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

// Dequantize's products in half order: word (s, pair, e) holds element e of half s of tokens
// 2 pair (low 16 bits) and 2 pair + 1 (high), as bf16. Pairs lie 69 words apart and elements 32 ..
// 63 four words further on, so that a warp's 32 stores (lanes (g, c): element 8g + .., pair c)
// fall in 32 banks and the 8 pairs of one element in 8.
struct HalfOrder {
  static constexpr uint32_t kPairWords = 69, kHalfWords = 7 * kPairWords + kDim + 4, kWords = 2 * kHalfWords;
  __host__ __device__ static constexpr uint32_t word(uint32_t s, uint32_t pair, uint32_t e) { return s * kHalfWords + pair * kPairWords + e + 4 * (e / 32); }
};

// Both halves' B fragments for tile i: coordinates 16c .. 16c + 15 of token 8i + g, each half's
// codes looked up in its centroid table.
template <uint32_t kBits>
__host__ __device__ inline void centroid_fragments(uint32_t lane, uint32_t i, const uint8_t* codes, const uint32_t (&tables)[2][4], uint32_t (&b)[2][4]) {
  const uint32_t g = lane / 4, c = lane % 4;
  for (uint32_t s = 0; s < 2; ++s) {
    const uint8_t* half = codes + (8 * i + g) * 8 * (2 * kBits + 1) + s * 8 * (kBits + 1);
    uint32_t nib[2];
    if (s == 0) get_codes<kBits + 1>(half, c, nib);
    else get_codes<kBits>(half, c, nib);
    for (int f = 0; f < 4; ++f) {
      const uint32_t sel = (nib[f / 2] >> (16 * (f % 2))) & 0xFFFFu;
      b[s][f] = s == 0 ? centroid_bytes<kBits + 1>(tables[0], sel) : centroid_bytes<kBits>(tables[1], sel);
    }
  }
}

// A record (record_bytes(kBits)) back into its group (16 tokens of kChannels values at x), as lane
// `lane`; where: 128 words and scratch: HalfOrder::kWords words, both shared by the warp;
// a_hi, a_lo: M^T's fragments; tables: the halves' centroid bytes (outlier half first).
#pragma nv_exec_check_disable
template <uint32_t kBits, typename W>
__host__ __device__ void dequantize_group_tiles(W& warp, uint32_t lane, const uint8_t* record, uint32_t* where, uint32_t* scratch, const uint4* a_hi,
                                                const uint4* a_lo, const uint32_t (&tables)[2][4], const int (&shifts)[2], uint16_t* x) {
  const uint32_t g = lane / 4, c = lane % 4;
  {
    uint32_t place[4];
    channel_places(warp, lane, (record[lane / 2] >> (4 * (lane % 2))) & 0xFu, place);
    for (int i = 0; i < 4; ++i) where[4 * lane + i] = 4 * HalfOrder::word(place[i] / kDim, 0, place[i] % kDim);  // a byte offset
  }
  const float* norms = reinterpret_cast<const float*>(record + kMaskBytes);
  const uint8_t* codes = record + kMaskBytes + kNormBytes;
  uint32_t b[2][2][4];  // [tile][half]
  float scale[2][2][2];  // [tile][half][token 2c + v]
  for (uint32_t i = 0; i < 2; ++i) {
    centroid_fragments<kBits>(lane, i, codes, tables, b[i]);
    for (uint32_t s = 0; s < 2; ++s)
      for (uint32_t v = 0; v < 2; ++v) scale[i][s][v] = half_scale(norms[(8 * i + 2 * c + v) * 2 + s], shifts[s]);
  }
  for (uint32_t mt = 0; mt < kMtiles; ++mt) {
    const MtileFragments a = load_mtile(lane, a_hi, a_lo, mt);
    for (uint32_t i = 0; i < 2; ++i)
      for (uint32_t s = 0; s < 2; ++s) {
        int acc[4];
        product_mtile(warp, a, b[i][s], acc);
        // acc[v + 2h]: element 8g + 2mt + h of half s, token 8i + 2c + v
        for (uint32_t h = 0; h < 2; ++h)
          scratch[HalfOrder::word(s, 4 * i + c, 8 * g + 2 * mt + h)] =
              tq_matrix::Element<SW_DTYPE_BF16>::pair(static_cast<float>(acc[2 * h]) * scale[i][s][0], static_cast<float>(acc[2 * h + 1]) * scale[i][s][1]);
      }
  }
  warp.sync();
  // lane (pair, q): channels 8 (4m + q) .. + 7 of tokens 2 pair and 2 pair + 1, for m = 0 .. 3
  const uint32_t pair = lane / 4, q = lane % 4;
  const uint8_t* pair_words = reinterpret_cast<const uint8_t*>(scratch) + 4 * HalfOrder::word(0, pair, 0);
  for (uint32_t m = 0; m < 4; ++m) {
    const uint32_t first = 8 * (4 * m + q);
    const uint4 at[2] = {reinterpret_cast<const uint4*>(where + first)[0], reinterpret_cast<const uint4*>(where + first)[1]};
    const uint32_t offsets[8] = {at[0].x, at[0].y, at[0].z, at[0].w, at[1].x, at[1].y, at[1].z, at[1].w};
    uint32_t w[8];
    for (int k = 0; k < 8; ++k) w[k] = *reinterpret_cast<const uint32_t*>(pair_words + offsets[k]);
    uint4 even, odd;  // tokens 2 pair (the words' low halves) and 2 pair + 1 (high)
    even.x = byte_perm(w[0], w[1], 0x5410u), even.y = byte_perm(w[2], w[3], 0x5410u), even.z = byte_perm(w[4], w[5], 0x5410u), even.w = byte_perm(w[6], w[7], 0x5410u);
    odd.x = byte_perm(w[0], w[1], 0x7632u), odd.y = byte_perm(w[2], w[3], 0x7632u), odd.z = byte_perm(w[4], w[5], 0x7632u), odd.w = byte_perm(w[6], w[7], 0x7632u);
    *reinterpret_cast<uint4*>(x + 2 * pair * kChannels + first) = even;
    *reinterpret_cast<uint4*>(x + (2 * pair + 1) * kChannels + first) = odd;
  }
}

#ifdef __CUDACC__
// ---- a CTA's side, on the GPU: the kernels over records (turboquant_halves.cu) and over the
// probe's arrays of groups (bench/quant/halves_probe.cu) --------------------------------------

// 3.5 bits' quantize held to 72 registers, 7 CTAs an SM (82 and 5 without the bound): 1.5-2 % faster
// in turns on an H100 (bench/quant/results/h100-halves-probe-6/). 2.5 bits' gets 72 by itself,
// and a bound of one CTA would give it 96.
template <uint32_t kBits> constexpr int kQuantizeMinCtas = kBits == 3 ? 7 : 0;

// The GPU's warp, with a warp barrier and a warp sum.
struct HalvesDeviceWarp : tq_matrix::DeviceWarp {
  __device__ void sync() { __syncwarp(); }
  __device__ int reduce_add(int v) { return __reduce_add_sync(0xFFFFFFFFu, v); }
};

// A CTA's shared memory: M's (or M^T's) fragments, and each warp's group (quantize's staged rows,
// dequantize's products in half order), record and channels (dequantize's places as byte
// offsets), so that global memory sees whole 16-byte words only.
constexpr uint32_t kGroupWords = kTokens * kChannels * 2 / 16;  // uint4 a group of bf16
template <uint32_t kBits, uint32_t kWarps> struct GroupShared {
  static constexpr uint32_t kRecordWords = record_bytes(kBits) / 16, kStagedWords = std::max(kTokens * kRowStride / 8, (HalfOrder::kWords + 3) / 4);
  uint4 hi[kFrags], lo[kFrags];
  uint4 group[kWarps][kStagedWords], record[kWarps][kRecordWords], channels[kWarps][kChannels / 4];
  __device__ void load_fragments(const uint4* a_hi, const uint4* a_lo) {
    for (uint32_t i = threadIdx.x; i < kFrags; i += blockDim.x) hi[i] = a_hi[i], lo[i] = a_lo[i];
    __syncthreads();
  }
};

__device__ inline void copy_words(uint4* to, const uint4* from, uint32_t words, uint32_t lane) {
  for (uint32_t i = lane; i < words; i += 32) to[i] = from[i];
  __syncwarp();
}

// A group from global memory (tokens one after another) to its staged rows (kRowStride apart).
constexpr uint32_t kTokenWords = kChannels / 8, kRowWords = kRowStride / 8;
__device__ inline void stage_group(uint4* rows, const uint4* group, uint32_t lane) {
  for (uint32_t i = lane; i < kGroupWords; i += 32) rows[i / kTokenWords * kRowWords + i % kTokenWords] = group[i];
  __syncwarp();
}
#endif

}  // namespace halves
