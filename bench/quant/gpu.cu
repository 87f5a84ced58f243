// GPU quantizer bench: (a) agreement of the CUDA kernels with the C++ reference, code by
// code and value by value; (b) quantize/dequantize throughput over >= 1 GiB of bf16 KV
// beside a device-to-device copy of the same raw bytes in the same run.
// Usage: gpu [json path]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "cuda_bench.h"
#include "tq_halves.h"

#define TQ_OK(call)                                                       \
  do {                                                                    \
    char err_[256] = "";                                                  \
    int rc_ = (call);                                                     \
    if (rc_ != SW_TQ_OK) {                                                \
      std::fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, rc_, err_); \
      std::exit(2);                                                       \
    }                                                                     \
  } while (0)

namespace {

template <typename T> struct DeviceBuf {
  T* p = nullptr;
  explicit DeviceBuf(size_t n) { CUDA_OK(cudaMalloc(&p, n * sizeof(T))); }
  ~DeviceBuf() { cudaFree(p); }
};

// Gaussian keys with a few heavy channels, like real keys, so the fractional path's
// channel selection has something to find.
std::vector<float> random_kv(const sw_tq_params& p, size_t blocks, uint64_t seed) {
  bench::Rng rng(seed);
  std::vector<float> x(sw_tq_raw_bytes(&p) / bench::dtype_size(p.dtype) * blocks);
  for (size_t i = 0; i < x.size(); ++i) {
    uint32_t c = i % p.head_dim;
    x[i] = static_cast<float>(rng.normal() * (c % 17 == 3 ? 8.0 : 1.0));
  }
  return x;
}

struct Agreement {
  uint64_t vectors = 0, vectors_differing = 0, codes = 0, codes_differing = 0, qjl_bits_differing = 0;
  uint64_t norms_differing = 0, masks_differing = 0, bytes_differing = 0;
  uint32_t max_level_diff = 0;
  uint64_t values = 0, values_differing = 0;
  double max_value_diff = 0;  // relative to the vector set's rms
};

// Compares one block's records field by field: codes as levels (full codebook index).
void compare_block(const sw_tq_params& p, const uint8_t* gpu, const uint8_t* ref, Agreement& ag) {
  tq_layout layout;
  tq_make_layout(&p, &layout);
  for (uint32_t g = 0; g < sw_tq_groups(&p); ++g) {
    const tq_kind& k = *tq_group_kind(&p, &layout, g);
    const uint64_t off = tq_record_offset(&p, &layout, g);
    const uint8_t *a = gpu + off, *b = ref + off;
    if (k.fractional && std::memcmp(a, b, k.mask_bytes)) ag.masks_differing++;
    for (uint32_t t = 0; t < p.tokens; ++t)
      for (uint32_t s = 0; s < k.nsub; ++s) {
        const tq_sub_plan& sp = k.sub[s];
        const uint32_t ni = (t * k.nsub + s) * 4;
        bool differ = std::memcmp(a + k.norms_off + ni, b + k.norms_off + ni, 4) != 0;
        if (k.qjl) differ |= std::memcmp(a + k.rnorms_off + ni, b + k.rnorms_off + ni, 4) != 0;
        ag.norms_differing += differ;
        const size_t co = k.codes_off + static_cast<size_t>(t) * k.token_bytes + k.sub_off[s];
        const uint32_t pb = k.plane_bytes[s];
        auto bit = [&](const uint8_t* base, uint32_t plane, uint32_t j) {
          return (base[co + plane * pb + j / 8] >> (j % 8)) & 1u;
        };
        for (uint32_t j = 0; j < sp.dim; ++j) {
          if (sp.mse_bits) {
            auto level = [&](const uint8_t* base) {
              if (k.matrix) return (base[co + j / 2] >> (4 * (j % 2))) & 0xF;  // offset binary: the level itself
              if (k.halves) return static_cast<int>(halves::get_code(base + co, sp.mse_bits, j));
              uint32_t code = 0;
              for (uint32_t q = 0; q < sp.mse_bits; ++q) code |= bit(base, q, j) << q;
              const int half = 1 << (sp.mse_bits - 1), mag = code & (half - 1);
              return (code >> (sp.mse_bits - 1)) ? half - 1 - mag : half + mag;
            };
            const int la = level(a), lb = level(b);
            const uint32_t d = static_cast<uint32_t>(std::abs(la - lb));
            ag.codes++;
            ag.codes_differing += d != 0;
            ag.max_level_diff = std::max(ag.max_level_diff, d);
            differ |= d != 0;
          }
          if (sp.bits != sp.mse_bits && bit(a, sp.mse_bits, j) != bit(b, sp.mse_bits, j)) {
            ag.qjl_bits_differing++;
            differ = true;
          }
        }
        ag.vectors++;
        ag.vectors_differing += differ;
      }
  }
}

struct Config {
  uint32_t dim, tokens, dtype, kb, vb, variant;
  uint32_t blocks = 3, kv_heads = 2;  // many blocks: each warp of the head_dim-128 kernels walks several tiles
  uint32_t version = 0;               // 1 to 3: blocks in an older format, which the GPU still codes
  // outer layers: of `layers`, the first and last ones at their own K/V bits (x2)
  uint32_t layers = 2, outer_first = 0, outer_last = 0, outer_kb = 0, outer_vb = 0;
  bool non_finite = false;  // plant NaN, infinity and zero vectors
};

// Every 16th vector from the 3rd: one infinite value; from the 7th: one NaN; from the 11th: all
// zero; from the 13th: all NaN; from the 14th: one -infinity among small values.
void plant_non_finite(std::vector<float>& x, uint32_t dim) {
  for (size_t v = 0; v < x.size() / dim; ++v) {
    float* vec = &x[v * dim];
    switch (v % 16) {
      case 3: vec[5] = INFINITY; break;
      case 7: vec[9] = NAN; break;
      case 11: std::fill(vec, vec + dim, 0.f); break;
      case 13: std::fill(vec, vec + dim, NAN); break;
      case 14: std::fill(vec, vec + dim, 1e-3f), vec[dim - 1] = -INFINITY; break;
    }
  }
}

// Quantizes `blocks` random blocks on the GPU through shuffled slots and on the host, and
// compares; then dequantizes the same (GPU-made) bytes on both and compares the values.
void agree(const Config& c, Agreement& ag) {
  sw_tq_params p =
      bench::params(c.layers, c.kv_heads, c.dim, c.tokens, c.dtype, c.kb, c.vb, c.variant, 0x5EED + c.dim, c.version);
  p.outer_first = c.outer_first, p.outer_last = c.outer_last, p.outer_key_bits_x2 = c.outer_kb, p.outer_value_bits_x2 = c.outer_vb;
  const size_t blocks = c.blocks, rb = sw_tq_raw_bytes(&p), qb = sw_tq_quantized_bytes(&p);
  const size_t rstride = (rb + 15) / 16 * 16 + 16, qstride = (qb + 15) / 16 * 16 + 32;
  std::vector<uint8_t> raw;
  std::vector<float> values = random_kv(p, blocks, c.dim * 131 + c.kb * 7 + c.vb + c.dtype * 3 + c.variant);
  if (c.non_finite) plant_non_finite(values, c.dim);
  bench::encode(values, c.dtype, raw);
  std::vector<uint32_t> raw_slots(blocks), q_slots(blocks);  // shuffled: block b at raw_slots[b] and q_slots[b]
  std::iota(raw_slots.begin(), raw_slots.end(), 0u);
  std::iota(q_slots.begin(), q_slots.end(), 0u);
  std::mt19937 rng(blocks);
  std::shuffle(raw_slots.begin(), raw_slots.end(), rng);
  std::shuffle(q_slots.begin(), q_slots.end(), rng);
  std::vector<uint8_t> raw_strided(rstride * blocks, 0);
  for (size_t b = 0; b < blocks; ++b) std::memcpy(&raw_strided[raw_slots[b] * rstride], &raw[b * rb], rb);
  DeviceBuf<uint8_t> draw(rstride * blocks), dq(qstride * blocks), dout(rstride * blocks);
  DeviceBuf<uint32_t> drs(blocks), dqs(blocks);
  CUDA_OK(cudaMemcpy(draw.p, raw_strided.data(), raw_strided.size(), cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(drs.p, raw_slots.data(), blocks * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dqs.p, q_slots.data(), blocks * 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(dq.p, 0xAB, qstride * blocks));  // poison: every byte must be written
  CUDA_OK(cudaMemset(dout.p, 0xCD, rstride * blocks));
  TQ_OK(sw_tq_quantize_cuda(&p, draw.p, rstride, drs.p, dq.p, qstride, dqs.p, blocks, nullptr, err_, sizeof err_));
  TQ_OK(sw_tq_dequantize_cuda(&p, dq.p, qstride, dqs.p, dout.p, rstride, drs.p, blocks, nullptr, err_, sizeof err_));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<uint8_t> gq(qstride * blocks), gout(rstride * blocks);
  CUDA_OK(cudaMemcpy(gq.data(), dq.p, gq.size(), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(gout.data(), dout.p, gout.size(), cudaMemcpyDeviceToHost));
  for (size_t b = 0; b < blocks; ++b) {
    std::vector<uint8_t> block(raw.begin() + b * rb, raw.begin() + (b + 1) * rb);
    std::vector<uint8_t> ref = bench::quantize(p, block);
    const uint8_t* g = &gq[q_slots[b] * qstride];
    compare_block(p, g, ref.data(), ag);
    // every byte, header and padding included
    std::vector<uint8_t> gblock(g, g + qb);
    for (size_t i = 0; i < qb; ++i) ag.bytes_differing += gblock[i] != ref[i];
    // dequantize agreement on the GPU's own bytes
    std::vector<float> want, got, orig;
    bench::decode(bench::dequantize(p, gblock), c.dtype, want);
    bench::decode(std::vector<uint8_t>(&gout[raw_slots[b] * rstride], &gout[raw_slots[b] * rstride] + rb), c.dtype, got);
    bench::decode(block, c.dtype, orig);
    double rms = 0;
    for (float v : orig) rms += static_cast<double>(v) * v;
    rms = std::sqrt(rms / orig.size());
    for (size_t i = 0; i < want.size(); ++i) {
      ag.values++;
      if (std::memcmp(&want[i], &got[i], 4)) {
        ag.values_differing++;
        ag.max_value_diff = std::max(ag.max_value_diff, std::fabs(static_cast<double>(want[i]) - got[i]) / rms);
      }
    }
  }
}


}  // namespace

int main(int argc, char** argv) {
  FILE* json = argc > 1 ? std::fopen(argv[1], "w") : stdout;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::fprintf(json, "{\n  \"device\": \"%s\",\n  \"agreement\": [\n", prop.name);

  // (a) agreement
  std::vector<Config> configs;
  for (uint32_t dim : {16u, 64u, 128u, 256u, 512u})
    for (uint32_t dtype : {SW_DTYPE_BF16, SW_DTYPE_FP16, SW_DTYPE_FP32})
      for (uint32_t variant : {SW_TQ_MSE, SW_TQ_PROD}) {
        configs.push_back({dim, 37, dtype, 8, 5, variant});
        configs.push_back({dim, 16, dtype, 7, 4, variant});
        configs.push_back({dim, 16, dtype, 2, 3, variant});
        configs.push_back({dim, 5, dtype, 6, 6, variant});
        if (dim == 128) {  // more tile shapes of the head_dim-128 path: 1 and 32 tokens, long tile walks
          configs.push_back({dim, 32, dtype, 7, 3, variant});
          configs.push_back({dim, 1, dtype, 4, 8, variant});
          // 4-bit MSE: format 3's matrix kernels (runs of one tile at 24 tokens, of two at 16), and format 2's
          configs.push_back({dim, 24, dtype, 8, 8, variant, 40, 3});
          configs.push_back({dim, 16, dtype, 8, 8, variant, 40, 3, 2});
          // the matrix-coded kinds on NaN, infinity and zero vectors in more blocks: format 3's
          // matrix kinds, and in bf16 format 4's halves
          if (variant == SW_TQ_MSE) {
            for (uint32_t kb : {8u, 7u}) {
              if (kb == 7 && dtype != SW_DTYPE_BF16) continue;
              Config specials{dim, 16, dtype, kb, kb == 8 ? 8u : 5u, variant, 8, 3};
              specials.non_finite = true;
              configs.push_back(specials);
            }
          }
          if (dtype != SW_DTYPE_FP32) {
            configs.push_back({dim, 8, dtype, 8, 8, variant, 700, 3});
            configs.push_back({dim, 16, dtype, 7, 7, variant, 700, 3});
            configs.push_back({dim, 16, dtype, 8, 5, variant, 500, 3});
          }
        }
        if (dim == 64 || dim == 128) configs.push_back({dim, 16, dtype, 7, 4, variant, 3, 2, 1});  // format v1
        // outer layers at other rates: 6 layers, the first two and the last one at 4.0/4.0 or
        // 3.5/3.0, the inner ones at 3.0/2.5 (three layer ranges, launches per range and kind)
        configs.push_back({dim, 16, dtype, 6, 5, variant, 40, 3, 0, 6, 2, 1, 8, 8});
        configs.push_back({dim, 8, dtype, 6, 5, variant, 5, 2, 0, 6, 0, 3, 7, 6});
      }
  // every configuration again with NaN, infinite and zero vectors planted: each kind codes them
  // as the reference does (format 2's and the halves kinds as 0, the matrix kinds by their rule)
  const size_t finite_configs = configs.size();
  for (size_t i = 0; i < finite_configs; ++i) {
    if (configs[i].non_finite) continue;
    configs.push_back(configs[i]);
    configs.back().non_finite = true;
  }
  // TQ_BENCH_SPEED_ONLY=1 skips the agreement part (for profiling the speed part alone)
  const char* speed_only = std::getenv("TQ_BENCH_SPEED_ONLY");
  if (speed_only && std::atoi(speed_only)) configs.clear();
  Agreement total;
  std::printf("\n| head_dim | dtype | K/V bits | variant | format | tokens x kv heads x blocks | vectors | vectors differing | codes differing | max level diff | dequant values differing |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    Agreement ag;
    agree(c, ag);
    const char* dt[] = {"fp32", "fp16", "bf16"};
    char outer[64] = "";
    if (c.outer_first || c.outer_last)
      std::snprintf(outer, sizeof outer, " (layers %u+%u of %u: %.1f/%.1f)", c.outer_first, c.outer_last, c.layers,
                    c.outer_kb / 2.0, c.outer_vb / 2.0);
    if (c.non_finite) {
      const size_t used = std::strlen(outer);
      std::snprintf(outer + used, sizeof outer - used, " (NaN, infinite and zero vectors)");
    }
    std::printf("| %u | %s | %.1f/%.1f%s | %s | v%u | %u x %u x %u | %llu | %llu | %llu | %u | %llu of %llu |\n", c.dim,
                dt[c.dtype], c.kb / 2.0, c.vb / 2.0, outer, c.variant ? "prod" : "mse", c.version ? c.version : SW_TQ_FORMAT_VERSION, c.tokens, c.kv_heads, c.blocks, (unsigned long long)ag.vectors,
                (unsigned long long)ag.vectors_differing, (unsigned long long)ag.codes_differing, ag.max_level_diff,
                (unsigned long long)ag.values_differing, (unsigned long long)ag.values);
    if (ag.norms_differing || ag.masks_differing || ag.bytes_differing)
      std::printf("  norms differing %llu, masks differing %llu, bytes differing %llu\n",
                  (unsigned long long)ag.norms_differing, (unsigned long long)ag.masks_differing,
                  (unsigned long long)ag.bytes_differing);
    std::fprintf(json,
                 "%s    {\"head_dim\": %u, \"format\": %u, \"dtype\": \"%s\", \"key_bits\": %.1f, \"value_bits\": %.1f, \"variant\": \"%s\", "
                 "\"tokens\": %u, \"kv_heads\": %u, \"blocks\": %u, \"vectors\": %llu, \"vectors_differing\": %llu, \"codes\": %llu, \"codes_differing\": %llu, "
                 "\"max_level_diff\": %u, \"qjl_bits_differing\": %llu, \"norms_differing\": %llu, "
                 "\"masks_differing\": %llu, \"bytes_differing\": %llu, \"values\": %llu, "
                 "\"values_differing\": %llu, \"max_value_diff_rel_rms\": %.3g}",
                 i ? ",\n" : "", c.dim, c.version ? c.version : SW_TQ_FORMAT_VERSION, dt[c.dtype], c.kb / 2.0, c.vb / 2.0, c.variant ? "prod" : "mse", c.tokens,
                 c.kv_heads, c.blocks, (unsigned long long)ag.vectors, (unsigned long long)ag.vectors_differing,
                 (unsigned long long)ag.codes, (unsigned long long)ag.codes_differing, ag.max_level_diff,
                 (unsigned long long)ag.qjl_bits_differing, (unsigned long long)ag.norms_differing,
                 (unsigned long long)ag.masks_differing, (unsigned long long)ag.bytes_differing,
                 (unsigned long long)ag.values, (unsigned long long)ag.values_differing, ag.max_value_diff);
    total.vectors += ag.vectors, total.vectors_differing += ag.vectors_differing;
    total.codes += ag.codes, total.codes_differing += ag.codes_differing;
    total.max_level_diff = std::max(total.max_level_diff, ag.max_level_diff);
    total.values += ag.values, total.values_differing += ag.values_differing;
    total.bytes_differing += ag.bytes_differing;
  }
  std::printf("agreement total: %llu vectors, %llu differing; %llu of %llu codes differing, max level diff %u; "
              "%llu of %llu dequantized values differing; %llu quantized bytes differing\n",
              (unsigned long long)total.vectors, (unsigned long long)total.vectors_differing,
              (unsigned long long)total.codes_differing, (unsigned long long)total.codes, total.max_level_diff,
              (unsigned long long)total.values_differing, (unsigned long long)total.values,
              (unsigned long long)total.bytes_differing);

  // (b) speed: Llama-3-8B-like blocks, 1 GiB of bf16 raw KV
  const uint32_t n_blocks = 512;
  std::fprintf(json, "\n  ],\n  \"speed\": [\n");
  std::printf("\n| K/V bits | variant | raw GiB | quantize GB/s | dequantize GB/s | D2D copy GB/s | quantize / copy | dequantize / copy |\n|---|---|---|---|---|---|---|---|\n");
  bool first = true;
  // every rate and variant at K = V, then the outer-layer rule: layers 0-1 and 30-31 at 4 bits,
  // the others 3 for keys and 2.5 for values
  struct Rate {
    uint32_t kb, vb, outer, version;  // version 0: this build's format
    std::string name() const {
      char b[64];
      if (outer) std::snprintf(b, sizeof b, "%.1f/%.1f, outer 2+2 at 4.0", kb / 2.0, vb / 2.0);
      else if (version) std::snprintf(b, sizeof b, "%.1f, format %u", kb / 2.0, version);
      else std::snprintf(b, sizeof b, "%.1f", kb / 2.0);
      return b;
    }
  };
  std::vector<std::pair<uint32_t, Rate>> cases;
  for (uint32_t variant : {SW_TQ_MSE, SW_TQ_PROD}) {
    for (uint32_t bx2 : {8u, 7u, 6u, 5u, 4u}) cases.push_back({variant, {bx2, bx2, 0, 0}});
    cases.push_back({variant, {6, 5, 2, 0}});
  }
  // format 3 takes 4-bit MSE heads of 128 through its matrix, format 4 3.5- and 2.5-bit ones
  // through its halves: the kernels of the formats before beside them
  cases.insert(cases.begin() + 1, {SW_TQ_MSE, {8, 8, 0, 2}});
  cases.insert(cases.begin() + 3, {SW_TQ_MSE, {7, 7, 0, 3}});
  cases.insert(cases.begin() + 6, {SW_TQ_MSE, {5, 5, 0, 3}});
  for (const auto& [variant, rate] : cases) {
    const uint32_t bx2 = rate.kb;  // seeds the block's values
    sw_tq_params p = bench::params(32, 8, 128, 16, SW_DTYPE_BF16, rate.kb, rate.vb, variant, 7, rate.version);
    if (rate.outer) p.outer_first = p.outer_last = rate.outer, p.outer_key_bits_x2 = p.outer_value_bits_x2 = 8;
    const size_t rb = sw_tq_raw_bytes(&p), qb = (sw_tq_quantized_bytes(&p) + 15) / 16 * 16;
    std::vector<uint8_t> raw;
    bench::encode(random_kv(p, 1, bx2), SW_DTYPE_BF16, raw);  // one block, repeated
    DeviceBuf<uint8_t> draw(rb * n_blocks), dq(qb * n_blocks), dcopy(rb * n_blocks);
    for (uint32_t b = 0; b < n_blocks; ++b) CUDA_OK(cudaMemcpy(draw.p + b * rb, raw.data(), rb, cudaMemcpyHostToDevice));
    std::vector<uint32_t> slots(n_blocks);
    for (uint32_t b = 0; b < n_blocks; ++b) slots[b] = b;
    DeviceBuf<uint32_t> ds(n_blocks);
    CUDA_OK(cudaMemcpy(ds.p, slots.data(), n_blocks * 4, cudaMemcpyHostToDevice));
    const double bytes = static_cast<double>(rb + sw_tq_quantized_bytes(&p)) * n_blocks;
    const double tq = bench::median_ms([&] {
      TQ_OK(sw_tq_quantize_cuda(&p, draw.p, rb, ds.p, dq.p, qb, ds.p, n_blocks, nullptr, err_, sizeof err_));
    }, 10);
    const double td = bench::median_ms([&] {
      TQ_OK(sw_tq_dequantize_cuda(&p, dq.p, qb, ds.p, draw.p, rb, ds.p, n_blocks, nullptr, err_, sizeof err_));
    }, 10);
    const double tc = bench::median_ms([&] { CUDA_OK(cudaMemcpyAsync(dcopy.p, draw.p, rb * n_blocks, cudaMemcpyDeviceToDevice)); }, 10);
    CUDA_OK(cudaGetLastError());
    const double gq = bytes / tq / 1e6, gd = bytes / td / 1e6, gc = 2.0 * rb * n_blocks / tc / 1e6;
    const char* vname = variant ? "prod" : "mse";
    std::printf("| %s | %s | %.2f | %.0f | %.0f | %.0f | %.2f | %.2f |\n", rate.name().c_str(), vname,
                rb * static_cast<double>(n_blocks) / (1 << 30), gq, gd, gc, gq / gc, gd / gc);
    std::fprintf(json,
                 "%s    {\"bits\": \"%s\", \"variant\": \"%s\", \"raw_bytes\": %zu, \"quantized_bytes\": %zu, "
                 "\"quantize_ms\": %.4f, \"dequantize_ms\": %.4f, \"copy_ms\": %.4f, \"quantize_gbs\": %.1f, "
                 "\"dequantize_gbs\": %.1f, \"copy_gbs\": %.1f, \"quantize_vs_copy\": %.3f, \"dequantize_vs_copy\": %.3f}",
                 first ? "" : ",\n", rate.name().c_str(), vname, rb * n_blocks, sw_tq_quantized_bytes(&p) * n_blocks, tq, td, tc,
                 gq, gd, gc, gq / gc, gd / gc);
    first = false;
  }
  std::fprintf(json, "\n  ]\n}\n");
  if (json != stdout) std::fclose(json);
  // the two paths must agree exactly: any differing byte or value fails the run
  return total.bytes_differing || total.values_differing || total.codes_differing ? 1 : 0;
}
