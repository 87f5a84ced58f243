// Compares this tree's C++ reference quantizer with another build of it (compare-ref.sh
// links the other build with its C symbols renamed old_*), byte for byte: quantized blocks
// from the same raw blocks, and raw blocks dequantized from the same quantized bytes (also
// from random payloads). Inputs are random geometries, dtypes and rates with Gaussian data
// at several scales, with subnormals, signed zeros and values near the float limit; inputs
// with NaN or infinity are counted apart, since their bytes were never defined.
// Usage: compare_ref [seed] [cases]
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common.h"

extern "C" {
void old_sw_tq_write_header(const sw_tq_params* p, void* quantized);
void old_sw_tq_quantize_groups(const sw_tq_params* p, const void* raw, void* quantized, uint32_t first, uint32_t n);
void old_sw_tq_dequantize_groups(const sw_tq_params* p, const void* quantized, void* raw, uint32_t first, uint32_t n);
}

namespace {

enum Input { kGaussian, kTiny, kLarge, kEdges, kNonFinite, kInputs };

float sample(bench::Rng& rng, Input in) {
  const float x = static_cast<float>(rng.normal());
  const uint64_t r = rng.next() % 50;
  switch (in) {
    case kTiny: return x * 1e-30f;
    case kLarge: return x * 1e4f;
    case kEdges: return r == 0 ? 3e38f : r == 1 ? -1e-40f : r == 2 ? -0.0f : r == 3 ? 1e-42f : x;
    case kNonFinite: return r == 0 ? NAN : r == 1 ? -INFINITY : x;
    default: return x;
  }
}

}  // namespace

int main(int argc, char** argv) {
  bench::Rng rng(argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1);
  const long cases = argc > 2 ? std::atol(argv[2]) : 1000;
  const uint32_t dims[] = {16, 32, 64, 128, 256, 512}, tokens[] = {1, 3, 5, 8, 16, 17, 37};
  long differing = 0, nonfinite_differing = 0;
  for (long c = 0; c < cases; ++c) {
    const sw_tq_params p = bench::params(1 + rng.next() % 2, 1 + rng.next() % 3, dims[rng.next() % 6],
                                         tokens[rng.next() % 7], rng.next() % 3, 2 + rng.next() % 7,
                                         2 + rng.next() % 7, rng.next() % 2, rng.next());
    const Input in = static_cast<Input>(rng.next() % kInputs);
    std::vector<float> x(sw_tq_raw_bytes(&p) / bench::dtype_size(p.dtype));
    for (float& v : x) v = sample(rng, in);
    std::vector<uint8_t> raw;
    bench::encode(x, p.dtype, raw);
    const size_t qb = sw_tq_quantized_bytes(&p);
    std::vector<uint8_t> q_new(qb), q_old(qb), r_new(raw.size()), r_old(raw.size());
    sw_tq_write_header(&p, q_new.data());
    old_sw_tq_write_header(&p, q_old.data());
    sw_tq_quantize_groups(&p, raw.data(), q_new.data(), 0, sw_tq_groups(&p));
    old_sw_tq_quantize_groups(&p, raw.data(), q_old.data(), 0, sw_tq_groups(&p));
    bool differ = q_new != q_old;
    if (rng.next() % 3 == 0)  // a random payload behind a valid header
      for (size_t i = SW_TQ_HEADER_BYTES; i < qb; ++i) q_new[i] = static_cast<uint8_t>(rng.next());
    sw_tq_dequantize_groups(&p, q_new.data(), r_new.data(), 0, sw_tq_groups(&p));
    old_sw_tq_dequantize_groups(&p, q_new.data(), r_old.data(), 0, sw_tq_groups(&p));
    differ = differ || r_new != r_old;
    if (!differ) continue;
    if (in == kNonFinite) {
      ++nonfinite_differing;
      continue;
    }
    ++differing;
    std::printf("differs: head_dim %u tokens %u dtype %u bits x2 %u/%u variant %u input %d\n", p.head_dim, p.tokens,
                p.dtype, p.key_bits_x2, p.value_bits_x2, p.variant, static_cast<int>(in));
  }
  std::printf("%ld cases: %ld differing with finite input, %ld with NaN or infinity in the input\n", cases, differing,
              nonfinite_differing);
  return differing ? 1 : 0;
}
