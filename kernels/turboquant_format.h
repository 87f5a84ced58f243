/* Quantized block formats (v2 to v4, and v1 read for old blocks) and the per-sub-vector constants shared by the C++ reference
 * (turboquant_ref.cpp) and the CUDA kernels (turboquant_*.cu), so both compute the same codes.
 * docs/QUANTIZATION.md describes the format byte by byte. */
#ifndef SPILLWAY_TURBOQUANT_FORMAT_H
#define SPILLWAY_TURBOQUANT_FORMAT_H

#include <stdint.h>
#include <string.h>

#include "turboquant.h"

#ifdef __CUDACC__
#define TQ_HD static __host__ __device__ __forceinline__
#else
#define TQ_HD static inline
#endif

#define TQ_MAX_DIM 512u
#define TQ_MAX_SIGN_WORDS (TQ_MAX_DIM / 32u)

/* Elements one lane holds when a CUDA team works on one sub-vector: dim / TQ_LANE_ELEMS lanes.
 * Norms are summed lane by lane, then across lanes in a fixed tree, on both paths. */
TQ_HD uint32_t tq_lane_elems(uint32_t dim) { return dim < 32u ? dim : 32u; }

TQ_HD uint32_t tq_log2(uint32_t v) {
  uint32_t r = 0;
  while ((1u << r) < v) ++r;
  return r;
}

TQ_HD uint32_t tq_align16(uint32_t v) { return (v + 15u) & ~15u; }

/* splitmix64 (Steele, Lea, Flood 2014): output n of a generator seeded with `state`. */
TQ_HD uint64_t tq_splitmix64(uint64_t state, uint64_t n) {
  uint64_t z = state + (n + 1u) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Purposes of the sign diagonals. The stream index packs (dim << 4) | (sub << 1) | purpose;
 * rotation rounds after the first take purposes 4 and 5 (bit 2), which no v1 stream used. */
enum { TQ_SIGNS_ROTATION = 0, TQ_SIGNS_QJL = 1, TQ_SIGNS_ROUND2 = 4, TQ_SIGNS_ROUND3 = 5 };

#define TQ_MAX_ROUNDS 3u

/* 32 sign bits (bit j set: negate coordinate 32*word + j) of the random diagonal of one
 * randomized Hadamard transform, chosen by (seed, dim, sub-vector, purpose). */
TQ_HD uint32_t tq_sign_word(uint64_t seed, uint32_t dim, uint32_t sub, uint32_t purpose, uint32_t word) {
  uint64_t stream = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)((dim << 4) | (sub << 1) | purpose));
  return (uint32_t)(tq_splitmix64(stream, word / 2u) >> (32u * (word & 1u)));
}

/* Round-to-nearest-even float -> bfloat16 bits (quiet NaN kept). */
TQ_HD uint16_t tq_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

TQ_HD float tq_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* What one sub-vector of a K or V vector is quantized with. For an integer rate the
 * sub-vector is the whole head (dim = head_dim); for b + 0.5 there are two halves.
 * The rotation is `rounds` randomized Hadamard transforms with independent sign diagonals:
 * H D1 in v1, H D3 H D2 H D1 in v2. One round maps a one-hot vector to a flat one and a flat
 * one to a one-hot one, which sit on codebook boundaries; two rounds leave them on a lattice
 * of sums of +-1, whose error depends on the seed (up to 2.4x the Gaussian figure); after
 * three, structured inputs code like Gaussian ones (docs/QUANTIZATION.md). The unnormalized
 * transforms scale the norm by `gain` = sqrt(dim)^rounds, rounded to fp32. */
typedef struct tq_sub_plan {
  uint32_t dim, mse_bits, bits;        /* bits = mse_bits + 1 with a QJL sign plane */
  uint32_t rounds;                     /* rotation rounds: 1 (v1) or 3 */
  float gain, inv_gain, qjl_scale;     /* qjl_scale = sqrt(pi/2) / dim */
  float thr[7];                        /* positive codebook boundaries, ascending */
  float cent[8];                       /* nonnegative centroids by magnitude index */
  uint32_t rot_signs[TQ_MAX_ROUNDS][TQ_MAX_SIGN_WORDS]; /* applied before round r's transform */
  uint32_t qjl_signs[TQ_MAX_SIGN_WORDS];
} tq_sub_plan;

/* One K or V record of a group: [mask][norms][residual norms][codes], each 16-aligned. */
typedef struct tq_kind {
  uint32_t nsub, fractional, qjl;
  uint32_t matrix;       /* format 3's matrix rotation codes it (tq_matrix.h) */
  uint32_t halves;       /* format 4's halves kinds code it (tq_halves.h) */
  uint32_t mask_bytes, norms_off, rnorms_off, codes_off;
  uint32_t token_bytes;  /* packed code bytes of one token, sub-vectors in order */
  uint32_t sub_off[2];   /* byte offset of sub-vector s within a token's codes */
  uint32_t plane_bytes[2];
  uint32_t record_bytes;
  tq_sub_plan sub[2];
} tq_kind;

/* Host side: building the plans and the record layout. */
#include "codebooks.h"

/* The format version params ask for (0 means this build's). */
static inline uint32_t tq_version(const sw_tq_params* p) { return p->version ? p->version : SW_TQ_FORMAT_VERSION; }

static inline void tq_make_sub_plan(uint64_t seed, uint32_t dim, uint32_t sub, uint32_t bits, uint32_t qjl,
                                    uint32_t rounds, tq_sub_plan* sp) {
  memset(sp, 0, sizeof *sp);
  sp->dim = dim;
  sp->bits = bits;
  sp->mse_bits = bits - qjl;
  sp->rounds = rounds;
  sp->gain = (float)__builtin_pow(__builtin_sqrt((double)dim), (double)rounds);
  sp->inv_gain = 1.0f / sp->gain;
  sp->qjl_scale = (float)(1.2533141373155003 / dim); /* sqrt(pi/2) / d */
  if (sp->mse_bits > 0) {
    uint32_t half = 1u << (sp->mse_bits - 1);
    const float* c = TQ_CODEBOOK_CENTROIDS[tq_log2(dim) - 3][sp->mse_bits - 1];
    const float* b = TQ_CODEBOOK_BOUNDARIES[tq_log2(dim) - 3][sp->mse_bits - 1];
    for (uint32_t m = 0; m < half; ++m) sp->cent[m] = c[half + m];
    for (uint32_t m = 0; m + 1 < half; ++m) sp->thr[m] = b[half + m];
  }
  for (uint32_t w = 0; w < (dim + 31) / 32; ++w) {
    uint32_t keep = dim >= 32 ? 0xFFFFFFFFu : (1u << dim) - 1u;
    const uint32_t purpose[TQ_MAX_ROUNDS] = {TQ_SIGNS_ROTATION, TQ_SIGNS_ROUND2, TQ_SIGNS_ROUND3};
    for (uint32_t r = 0; r < rounds; ++r) sp->rot_signs[r][w] = tq_sign_word(seed, dim, sub, purpose[r], w) & keep;
    sp->qjl_signs[w] = tq_sign_word(seed, dim, sub, TQ_SIGNS_QJL, w) & keep;
  }
}

/* Whether a kind's records are coded through an integer matrix by kernels of their own (format 3's
 * matrix kinds, format 4's halves kinds), which the general and head_dim-128 kernels pass over. */
TQ_HD uint32_t tq_matrix_coded(const tq_kind* k) { return k->matrix || k->halves; }

/* Whether a layer is one of the outer ones (the first outer_first or the last outer_last). */
TQ_HD uint32_t tq_outer_layer(const sw_tq_params* p, uint32_t layer) {
  return layer < p->outer_first || layer + p->outer_last >= p->layers;
}

/* Bits per value times two of the keys (kv 0) or values (kv 1) of an outer or inner layer
 * (without outer layers, the outer kinds are the inner ones). */
static inline uint32_t tq_bits_x2(const sw_tq_params* p, uint32_t outer, uint32_t kv) {
  if (outer && (p->outer_first || p->outer_last)) return kv ? p->outer_value_bits_x2 : p->outer_key_bits_x2;
  return kv ? p->value_bits_x2 : p->key_bits_x2;
}

/* outer: the kind of an outer layer; kv: 0 = keys, 1 = values. Parameters must have passed
 * sw_tq_check_params. */
static inline void tq_make_kind(const sw_tq_params* p, uint32_t outer, uint32_t kv, tq_kind* k) {
  uint32_t bx2 = tq_bits_x2(p, outer, kv);
  memset(k, 0, sizeof *k);
  k->fractional = bx2 & 1u;
  k->nsub = 1u + k->fractional;
  k->qjl = p->variant == SW_TQ_PROD;
  uint32_t dim = p->head_dim / k->nsub;
  /* the outlier half (sub 0) gets the extra bit */
  uint32_t bits[2] = {(bx2 + 1u) / 2u, bx2 / 2u};
  uint32_t off = 0;
  for (uint32_t s = 0; s < k->nsub; ++s) {
    tq_make_sub_plan(p->seed, dim, s, bits[s], k->qjl, tq_version(p) >= 2u ? 3u : 1u, &k->sub[s]);
    k->plane_bytes[s] = dim / 8u;
    k->sub_off[s] = off;
    off += bits[s] * dim / 8u;
  }
  k->token_bytes = off;
  /* format 3 takes the matrix for 4-bit MSE codes of whole heads of 128 in tiles of 8 tokens;
   * any other kind is coded as format 2 codes it */
  k->matrix = tq_version(p) >= 3u && k->nsub == 1u && !k->qjl && bits[0] == 4u && p->head_dim == 128u && p->tokens % 8u == 0u;  /* tq_matrix::kDim, kTileVectors */
  /* format 4 takes the halves matrix for 3.5 and 2.5 bits of MSE codes of bf16 heads of 128 in
   * blocks of 16 tokens; their records are format 2's size, packed otherwise */
  k->halves = tq_version(p) >= 4u && k->fractional && !k->qjl && (bits[1] == 2u || bits[1] == 3u) && p->head_dim == 128u &&
              p->tokens == 16u && p->dtype == SW_DTYPE_BF16;  /* halves::kChannels, kTokens */
  k->mask_bytes = k->fractional ? tq_align16(p->head_dim / 8u) : 0u;
  k->norms_off = k->mask_bytes;
  uint32_t norms = tq_align16(p->tokens * k->nsub * 4u);
  k->rnorms_off = k->norms_off + norms;
  k->codes_off = k->rnorms_off + (k->qjl ? norms : 0u);
  k->record_bytes = k->codes_off + tq_align16(p->tokens * k->token_bytes);
}

/* The records of a block: kind[2 * outer + kv], and the bytes of one layer's records, of an
 * inner and of an outer layer. Layers lie in order, each its K records then its V records. */
typedef struct tq_layout {
  tq_kind kind[4];
  uint64_t layer_bytes[2];
} tq_layout;

static inline void tq_make_layout(const sw_tq_params* p, tq_layout* l) {
  for (uint32_t i = 0; i < 4; ++i) tq_make_kind(p, i / 2u, i % 2u, &l->kind[i]);
  for (uint32_t o = 0; o < 2; ++o)
    l->layer_bytes[o] = (uint64_t)p->kv_heads * (l->kind[2 * o].record_bytes + l->kind[2 * o + 1].record_bytes);
}

/* Byte offset of a layer's first record from the start of the quantized block. */
TQ_HD uint64_t tq_layer_offset(const sw_tq_params* p, const tq_layout* l, uint32_t layer) {
  uint32_t outer_before = (layer < p->outer_first ? layer : p->outer_first) +
                          (layer + p->outer_last > p->layers ? layer + p->outer_last - p->layers : 0u);
  return SW_TQ_HEADER_BYTES + (uint64_t)outer_before * l->layer_bytes[1] + (uint64_t)(layer - outer_before) * l->layer_bytes[0];
}

/* Group (layer, kv, head): its kind and its record's byte offset. */
TQ_HD const tq_kind* tq_kind_at(const sw_tq_params* p, const tq_layout* l, uint32_t layer, uint32_t kv) {
  return &l->kind[2u * tq_outer_layer(p, layer) + kv];
}
TQ_HD uint64_t tq_record_offset_at(const sw_tq_params* p, const tq_layout* l, uint32_t layer, uint32_t kv, uint32_t head) {
  const tq_kind* k = tq_kind_at(p, l, layer, 0u);
  return tq_layer_offset(p, l, layer) + (kv ? (uint64_t)p->kv_heads * k[0].record_bytes : 0u) +
         (uint64_t)head * k[kv].record_bytes;
}
/* The same of group g in raw order (g = (2 layer + kv) kv_heads + head). */
TQ_HD const tq_kind* tq_group_kind(const sw_tq_params* p, const tq_layout* l, uint32_t g) {
  return tq_kind_at(p, l, g / (2u * p->kv_heads), (g / p->kv_heads) % 2u);
}
TQ_HD uint64_t tq_record_offset(const sw_tq_params* p, const tq_layout* l, uint32_t g) {
  return tq_record_offset_at(p, l, g / (2u * p->kv_heads), (g / p->kv_heads) % 2u, g % p->kv_heads);
}

/* Quantized bytes of a block (header included). */
static inline uint64_t tq_block_bytes(const sw_tq_params* p, const tq_layout* l) { return tq_layer_offset(p, l, p->layers); }

#endif
