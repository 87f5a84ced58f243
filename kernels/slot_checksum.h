/* The disk slot checksum the GPU computes: a position-mixed sum of 64-bit words,
 *
 *   sum = Σ_i mix64(w_i + (i + 1) · φ)  (mod 2^64),   checksum = mix64(sum ^ length)
 *
 * with w_i the payload's little-endian 64-bit words (the tail zero-padded), φ the golden
 * ratio constant and mix64 splitmix64's finalizer, a bijection. A sum parallelizes over
 * any number of threads (CRC-32C does not, simply), and a change to any one word always
 * changes the sum. The host path keeps CRC-32C; the slot header says which one a slot uses.
 */
#ifndef SPILLWAY_SLOT_CHECKSUM_H
#define SPILLWAY_SLOT_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

uint64_t sw_mixsum64_ref(const void* data, size_t length);

/* Writes the checksum of `length` bytes of device memory to *d_out (device memory),
 * on `stream` (a cudaStream_t). Returns 0 or a CUDA error code. */
int sw_mixsum64_cuda(const void* d_data, size_t length, uint64_t* d_out, void* stream);

#ifdef __cplusplus
}
#endif
#endif
