// The head_dim-128 kernels of the prod family (a (b-1)-bit code and the 1-bit QJL sketch of its residual): every rate's, instantiated here
// through their lookup (tq_fast_kernels.cuh), apart from the mse family's.
#include "tq_fast_kernels.cuh"

namespace tq_cuda {

const void* fast_kernel_prod(uint32_t dtype, bool quant, bool frac, uint32_t mse_bits) {
  return fast_kernel_of<true>(dtype, quant, frac, mse_bits);
}

}  // namespace tq_cuda
