/* splitmix64's finalizer, shared by the host and device checksum code. */
#ifndef SPILLWAY_SLOT_CHECKSUM_MIX_H
#define SPILLWAY_SLOT_CHECKSUM_MIX_H
#include <stdint.h>

#ifdef __CUDACC__
#define SW_HD __host__ __device__ __forceinline__
#else
#define SW_HD inline
#endif

#define SW_MIX_PHI 0x9E3779B97F4A7C15ull

SW_HD uint64_t sw_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
#endif
