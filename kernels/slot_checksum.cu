// The slot checksum on the GPU: each thread sums the mixed words it strides over, a warp
// reduces, one atomic per warp adds into the total; a one-thread kernel finalizes.
#include <cuda_runtime.h>

#include "slot_checksum.h"
#include "slot_checksum_mix.h"

namespace {

__global__ void mixsum_partial(const uint8_t* data, size_t length, unsigned long long* total) {
  size_t words = (length + 7) / 8;
  size_t full = length / 8;
  uint64_t sum = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t w = 0;
    if (i < full) {
      // Payloads start 8-byte aligned in the staging buffer (after the 64-byte header).
      w = reinterpret_cast<const uint64_t*>(data)[i];
    } else {
      for (size_t b = 0; b < length - i * 8; b++) w |= (uint64_t)data[i * 8 + b] << (8 * b);
    }
    sum += sw_mix64(w + (i + 1) * SW_MIX_PHI);
  }
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off);
  if ((threadIdx.x & 31) == 0) atomicAdd(total, (unsigned long long)sum);
}

__global__ void mixsum_finish(unsigned long long* total, size_t length) {
  *total = sw_mix64(*total ^ (uint64_t)length);
}

}  // namespace

extern "C" int sw_mixsum64_cuda(const void* d_data, size_t length, uint64_t* d_out, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  auto* total = reinterpret_cast<unsigned long long*>(d_out);
  cudaError_t rc = cudaMemsetAsync(total, 0, sizeof *total, s);
  if (rc != cudaSuccess) return rc;
  size_t words = (length + 7) / 8;
  unsigned blocks = (unsigned)((words + 1023) / 1024);
  if (blocks < 1) blocks = 1;
  if (blocks > 512) blocks = 512;
  mixsum_partial<<<blocks, 256, 0, s>>>(static_cast<const uint8_t*>(d_data), length, total);
  mixsum_finish<<<1, 1, 0, s>>>(total, length);
  return cudaGetLastError();
}
