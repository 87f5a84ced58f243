// Device helpers that the general and the head_dim-128 kernels share: sign flips, the inputs'
// non-finite values, cp.async, selects without indexed registers.
#ifndef SPILLWAY_TQ_DEVICE_CUH
#define SPILLWAY_TQ_DEVICE_CUH

#include <cstdint>

namespace tq_cuda {

__device__ __forceinline__ float flip(float v, uint32_t bit31) { return __uint_as_float(__float_as_uint(v) ^ bit31); }

// An input value as format 2's coding takes it (the reference's load_finite): NaN and infinite
// values as +0, before any sign is applied.
__device__ __forceinline__ float finite_or_zero(float v) { return fabsf(v) <= 3.402823466e38f ? v : 0.0f; }

__device__ __forceinline__ uint32_t sign_bit(uint32_t word, int i) { return (word << (31 - i)) & 0x80000000u; }


__device__ __forceinline__ void cp_async16(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr), "l"(gmem));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  cp_async16((uint32_t)__cvta_generic_to_shared(smem), gmem);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_prior() { asm volatile("cp.async.wait_group 1;\n" ::); }

// All-ones if a > b (false for NaN, like the reference's comparison), else zero.
__device__ __forceinline__ uint32_t gt_mask(float a, float b) {
  uint32_t r;
  asm("set.gt.u32.f32 %0, %1, %2;" : "=r"(r) : "f"(a), "f"(b));
  return r;
}

__device__ __forceinline__ uint32_t select_bits(uint32_t mask, uint32_t if_set, uint32_t if_clear) {
  return (if_set & mask) | (if_clear & ~mask);
}

// v[index] for N values, the index given by N-1 bit masks, least significant first: pairs
// are merged by bit 0, then by bit 1, and so on (no indexed registers).
template <int N> __device__ __forceinline__ uint32_t select_tree(const uint32_t* v, const uint32_t* bit_masks) {
  uint32_t t[N];
#pragma unroll
  for (int k = 0; k < N; ++k) t[k] = v[k];
#pragma unroll
  for (int n = N, b = 0; n > 1; n /= 2, ++b)
#pragma unroll
    for (int k = 0; k < n / 2; ++k) t[k] = select_bits(bit_masks[b], t[2 * k + 1], t[2 * k]);
  return t[0];
}

}  // namespace tq_cuda

#endif
