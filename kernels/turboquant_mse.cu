// The head_dim-128 kernels of the mse family (codes alone, the default): every rate's, instantiated here
// through their lookup (tq_fast_kernels.cuh), apart from the prod family's.
#include "tq_fast_kernels.cuh"

namespace tq_cuda {

const void* fast_kernel_mse(uint32_t dtype, bool quant, bool frac, uint32_t mse_bits) {
  return fast_kernel_of<false>(dtype, quant, frac, mse_bits);
}

}  // namespace tq_cuda
