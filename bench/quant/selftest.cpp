// Self-test of the C++ reference quantizer without the addon: format checks, round-trip
// error against the codebooks' distortion, determinism. Exits non-zero on a failure.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "common.h"

static int failures = 0;
#define CHECK(cond, ...)                        \
  do {                                          \
    if (!(cond)) {                              \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                 \
      std::printf("\n");                        \
      ++failures;                               \
    }                                           \
  } while (0)

// Relative squared error ||x - x^||^2 / ||x||^2 over all vectors of a block of Gaussians.
static double round_trip_error(const sw_tq_params& p, uint64_t seed) {
  bench::Rng rng(seed);
  std::vector<float> x(sw_tq_raw_bytes(&p) / bench::dtype_size(p.dtype)), y;
  for (auto& v : x) v = static_cast<float>(rng.normal());
  std::vector<uint8_t> raw;
  bench::encode(x, p.dtype, raw);
  bench::decode(raw, p.dtype, x);  // compare against what the quantizer saw
  bench::decode(bench::dequantize(p, bench::quantize(p, raw)), p.dtype, y);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * (x[i] - y[i]), den += x[i] * x[i];
  return num / den;
}

int main() {
  char err[256];
  // format: header round trip and refusals
  {
    sw_tq_params p = bench::params(2, 2, 64, 16, SW_DTYPE_BF16, 5, 4, SW_TQ_MSE, 42);
    CHECK(sw_tq_check_params(&p, err, sizeof err) == SW_TQ_OK, "valid params refused: %s", err);
    std::vector<uint8_t> raw(sw_tq_raw_bytes(&p), 0);
    std::vector<uint8_t> q = bench::quantize(p, raw);
    CHECK(sw_tq_check_header(&p, q.data(), err, sizeof err) == SW_TQ_OK, "own header refused: %s", err);
    auto bad = q;
    bad[0] = 'X';
    CHECK(sw_tq_check_header(&p, bad.data(), err, sizeof err) == SW_TQ_EFORMAT, "bad magic accepted");
    bad = q;
    bad[4] = SW_TQ_FORMAT_VERSION + 1;
    CHECK(sw_tq_check_header(&p, bad.data(), err, sizeof err) == SW_TQ_EFORMAT, "a future version accepted");
    std::printf("version message: %s\n", err);
    sw_tq_params other = p;
    other.seed = 43;
    CHECK(sw_tq_check_header(&other, q.data(), err, sizeof err) == SW_TQ_EMISMATCH, "other seed accepted");
    std::printf("mismatch message: %s\n", err);
    other = p;
    other.version = 1;  // an old block is read with the version its header names
    CHECK(sw_tq_check_header(&other, q.data(), err, sizeof err) == SW_TQ_EMISMATCH, "other version accepted");
    CHECK(sw_tq_header_version(q.data()) == SW_TQ_FORMAT_VERSION, "header version %u", sw_tq_header_version(q.data()));
    std::vector<uint8_t> old = bench::quantize(other, raw);
    CHECK(sw_tq_check_header(&other, old.data(), err, sizeof err) == SW_TQ_OK, "v1 header refused: %s", err);
    CHECK(sw_tq_header_version(old.data()) == 1, "v1 header names version %u", sw_tq_header_version(old.data()));
    other = p;
    other.key_bits_x2 = 6;
    CHECK(sw_tq_check_header(&other, q.data(), err, sizeof err) == SW_TQ_EMISMATCH, "other bits accepted");
    other = p;
    other.head_dim = 24;
    CHECK(sw_tq_check_params(&other, err, sizeof err) == SW_TQ_EPARAMS, "head_dim 24 accepted");
    other = p;
    other.key_bits_x2 = 9;
    CHECK(sw_tq_check_params(&other, err, sizeof err) == SW_TQ_EPARAMS, "9 half-bits accepted");
    CHECK(q.size() % 16 == 0, "quantized size %zu not a multiple of 16", q.size());
  }
  // round trip: error within 1.3x the codebook distortion (the bf16/fp16 input and output
  // rounding and the Hadamard rotation standing in for a uniform one add a little)
  for (uint32_t dtype : {SW_DTYPE_FP32, SW_DTYPE_FP16, SW_DTYPE_BF16})
    for (uint32_t bx2 = 2; bx2 <= 8; ++bx2)
      for (uint32_t variant : {SW_TQ_MSE, SW_TQ_PROD}) {
        sw_tq_params p = bench::params(2, 2, 128, 64, dtype, bx2, bx2, variant, 7);
        double e = round_trip_error(p, 100 + bx2);
        uint32_t b = bx2 / 2;
        double expect = TQ_CODEBOOK_DISTORTION[4][b - 1];
        if (bx2 & 1) expect = 0.5 * (TQ_CODEBOOK_DISTORTION[3][b - 1] + TQ_CODEBOOK_DISTORTION[3][b]);
        std::printf("dtype %u bits %.1f %s: rel err %.5f (codebook %.5f)\n", dtype, bx2 / 2.0,
                    variant ? "prod" : "mse ", e, expect);
        if (variant == SW_TQ_MSE) CHECK(e < 1.3 * expect && e > 0.7 * expect, "error %.5f vs %.5f", e, expect);
      }
  // determinism
  {
    sw_tq_params p = bench::params(1, 4, 128, 32, SW_DTYPE_BF16, 7, 5, SW_TQ_PROD, 9);
    bench::Rng rng(5);
    std::vector<float> x(sw_tq_raw_bytes(&p) / 2);
    for (auto& v : x) v = static_cast<float>(rng.normal());
    std::vector<uint8_t> raw;
    bench::encode(x, p.dtype, raw);
    CHECK(bench::quantize(p, raw) == bench::quantize(p, raw), "quantize not deterministic");
  }
  std::printf(failures ? "%d FAILED\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}
