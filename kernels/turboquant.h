/* TurboQuant-style KV block quantization: the C ABI shared by the C++ reference
 * (turboquant_ref.cpp), the CUDA kernels (turboquant_*.cu) and the addon.
 *
 * A raw block is [layer][kv: 0 = K, 1 = V][kv_head][token][head_dim] of `dtype`.
 * A "group" is one (layer, kv, kv_head): `tokens` vectors of `head_dim` values, the unit
 * of work that threads and CUDA blocks share out. The quantized block format is
 * documented in docs/QUANTIZATION.md and versioned by SW_TQ_FORMAT_VERSION.
 */
#ifndef SPILLWAY_TURBOQUANT_H
#define SPILLWAY_TURBOQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SW_TQ_FORMAT_VERSION 4u         /* written by this build: 3.5- and 2.5-bit bf16 heads of 128 through a matrix per half */
#define SW_TQ_OLDEST_FORMAT_VERSION 1u  /* still read (and written on request): one round, one rate */
#define SW_TQ_HEADER_BYTES 64u

enum sw_dtype { SW_DTYPE_FP32 = 0, SW_DTYPE_FP16 = 1, SW_DTYPE_BF16 = 2 };
enum sw_tq_variant { SW_TQ_MSE = 0, SW_TQ_PROD = 1 };

enum sw_tq_status {
  SW_TQ_OK = 0,
  SW_TQ_EPARAMS = 1,    /* parameters out of range */
  SW_TQ_EFORMAT = 2,    /* quantized bytes carry another format version or a bad magic */
  SW_TQ_EMISMATCH = 3,  /* header geometry/bits/seed differ from the parameters given */
  SW_TQ_ECUDA = 4       /* a CUDA call failed (message says which) */
};

typedef struct sw_tq_params {
  uint32_t layers;
  uint32_t kv_heads;
  uint32_t head_dim;      /* power of two, 16..512 */
  uint32_t tokens;        /* tokens per block */
  uint32_t dtype;         /* enum sw_dtype */
  uint32_t key_bits_x2;   /* bits per key value, times two: 2..8 (1.0 to 4.0 in halves) */
  uint32_t value_bits_x2; /* likewise for values */
  /* Outer layers (format 2): the first `outer_first` and the last `outer_last` layers take
   * outer_key_bits_x2 / outer_value_bits_x2 instead; all four zero when there are none. */
  uint32_t outer_first, outer_last, outer_key_bits_x2, outer_value_bits_x2;
  uint32_t variant;       /* enum sw_tq_variant */
  uint32_t version;       /* format version written or read: 0 = SW_TQ_FORMAT_VERSION */
  uint64_t seed;          /* random rotation seed */
} sw_tq_params;

/* SW_TQ_OK or SW_TQ_EPARAMS with a message naming the field. */
int sw_tq_check_params(const sw_tq_params* p, char* err, size_t err_len);
size_t sw_tq_raw_bytes(const sw_tq_params* p);
size_t sw_tq_quantized_bytes(const sw_tq_params* p);
uint32_t sw_tq_groups(const sw_tq_params* p); /* layers * 2 * kv_heads */

/* The format version a quantized block's header names (0 without the magic): a reader sets
 * params.version to it, then checks the header. */
uint32_t sw_tq_header_version(const void* quantized);

/* Reference (host) path. A block is quantized by writing its header once and its groups
 * in any split across threads; groups touch disjoint bytes. */
void sw_tq_write_header(const sw_tq_params* p, void* quantized);
int sw_tq_check_header(const sw_tq_params* p, const void* quantized, char* err, size_t err_len);
void sw_tq_quantize_groups(const sw_tq_params* p, const void* raw, void* quantized,
                           uint32_t first_group, uint32_t n_groups);
void sw_tq_dequantize_groups(const sw_tq_params* p, const void* quantized, void* raw,
                             uint32_t first_group, uint32_t n_groups);

/* CUDA path (turboquant_launch.cu, compiled only where nvcc is found). Many blocks per
 * launch: block i is read from base + slots[i] * stride. Slot arrays live in device
 * memory. `stream` is a cudaStream_t. Header and codes are identical to the reference's
 * up to ties at codebook boundaries (one level at most). */
int sw_tq_quantize_cuda(const sw_tq_params* p, const void* raw_base, size_t raw_stride,
                        const uint32_t* raw_slots, void* q_base, size_t q_stride,
                        const uint32_t* q_slots, uint32_t n_blocks, void* stream,
                        char* err, size_t err_len);
int sw_tq_dequantize_cuda(const sw_tq_params* p, const void* q_base, size_t q_stride,
                          const uint32_t* q_slots, void* raw_base, size_t raw_stride,
                          const uint32_t* raw_slots, uint32_t n_blocks, void* stream,
                          char* err, size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
