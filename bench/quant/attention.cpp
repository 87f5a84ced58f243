// Attention-level quality of the quantized cache: the relative error of
// softmax(q K^T / sqrt(d)) V with K and V quantized by the reference (so also by the GPU
// kernels, which write the same bytes) against the exact result, over long synthetic
// contexts that hold an attention-sink token and outlier key channels. Per rate and variant
// (mse, prod), with only K, only V and both quantized; format 2 against format 1 at mse.
// Usage: attention [json path] [markdown path]
#include <algorithm>
#include <cstdio>
#include <string>

#include "common.h"
#include "rotation_sim.h"

namespace {

constexpr uint32_t kDim = 128, kHeads = 4, kTokensPerBlock = 16, kQueries = 32;
constexpr uint32_t kSinkChannel = 5;
constexpr uint32_t kOutlierChannels[] = {11, 47, 90, 126};

// One head's context: keys and values [token][dim], queries [query][dim].
struct Head {
  std::vector<float> k, v, q;
};

// Keys N(0, 1) with four outlier channels (3 + 4 N(0, 1), a fixed bias like pre-RoPE keys'),
// token 0 an attention sink: its key has one massive channel that every query leans on,
// so it takes a large share of the attention. Values N(0, 1). Queries N(0, 1) with a mean of
// 1.5 on the sink channel.
Head make_head(uint32_t tokens, uint64_t seed) {
  bench::Rng rng(seed);
  Head h{std::vector<float>(static_cast<size_t>(tokens) * kDim), std::vector<float>(static_cast<size_t>(tokens) * kDim),
         std::vector<float>(static_cast<size_t>(kQueries) * kDim)};
  for (uint32_t t = 0; t < tokens; ++t)
    for (uint32_t c = 0; c < kDim; ++c) {
      const bool outlier = std::find(std::begin(kOutlierChannels), std::end(kOutlierChannels), c) != std::end(kOutlierChannels);
      double key = outlier ? 3.0 + 4.0 * rng.normal() : rng.normal();
      if (t == 0 && c == kSinkChannel) key = 40.0;
      h.k[static_cast<size_t>(t) * kDim + c] = static_cast<float>(key);
      h.v[static_cast<size_t>(t) * kDim + c] = static_cast<float>(rng.normal());
    }
  for (uint32_t i = 0; i < kQueries; ++i)
    for (uint32_t c = 0; c < kDim; ++c)
      h.q[i * kDim + c] = static_cast<float>(rng.normal() + (c == kSinkChannel ? 1.5 : 0.0));
  return h;
}

// softmax(q K^T / sqrt(d)) V for every query, in double precision.
std::vector<double> attend(const Head& h, const std::vector<float>& k, const std::vector<float>& v, uint32_t tokens,
                           double* sink_share) {
  std::vector<double> out(static_cast<size_t>(kQueries) * kDim, 0.0), s(tokens);
  double sink = 0;
  for (uint32_t i = 0; i < kQueries; ++i) {
    double top = -1e300;
    for (uint32_t t = 0; t < tokens; ++t) {
      double dot = 0;
      for (uint32_t c = 0; c < kDim; ++c) dot += static_cast<double>(h.q[i * kDim + c]) * k[static_cast<size_t>(t) * kDim + c];
      s[t] = dot / std::sqrt(static_cast<double>(kDim));
      top = std::max(top, s[t]);
    }
    double sum = 0;
    for (uint32_t t = 0; t < tokens; ++t) sum += (s[t] = std::exp(s[t] - top));
    sink += s[0] / sum;
    for (uint32_t t = 0; t < tokens; ++t)
      for (uint32_t c = 0; c < kDim; ++c) out[i * kDim + c] += s[t] / sum * v[static_cast<size_t>(t) * kDim + c];
  }
  if (sink_share) *sink_share = sink / kQueries;
  return out;
}

// Keys and values of all heads through the reference, in blocks of kTokensPerBlock tokens
// (one layer each, bf16), and back.
void round_trip(std::vector<Head>& heads, uint32_t tokens, uint32_t bits_x2, uint32_t variant, uint32_t version,
                std::vector<std::vector<float>>& k_out, std::vector<std::vector<float>>& v_out) {
  const sw_tq_params p =
      bench::params(1, kHeads, kDim, kTokensPerBlock, SW_DTYPE_BF16, bits_x2, bits_x2, variant, 0x5EED, version);
  const size_t run = static_cast<size_t>(kTokensPerBlock) * kDim;  // one head's tokens of one block
  k_out.assign(kHeads, std::vector<float>(static_cast<size_t>(tokens) * kDim));
  v_out = k_out;
  std::vector<float> block(2 * kHeads * run), back;
  std::vector<uint8_t> raw;
  for (uint32_t t0 = 0; t0 < tokens; t0 += kTokensPerBlock) {
    for (uint32_t kv = 0; kv < 2; ++kv)  // the raw layout: [kv][head][token][dim]
      for (uint32_t h = 0; h < kHeads; ++h) {
        const std::vector<float>& src = kv ? heads[h].v : heads[h].k;
        std::copy_n(&src[static_cast<size_t>(t0) * kDim], run, &block[(kv * kHeads + h) * run]);
      }
    bench::encode(block, SW_DTYPE_BF16, raw);
    bench::decode(bench::dequantize(p, bench::quantize(p, raw)), SW_DTYPE_BF16, back);
    for (uint32_t kv = 0; kv < 2; ++kv)
      for (uint32_t h = 0; h < kHeads; ++h)
        std::copy_n(&back[(kv * kHeads + h) * run], run, &(kv ? v_out : k_out)[h][static_cast<size_t>(t0) * kDim]);
  }
}

// Keys and values of all heads through the format the tensor-core rotation points to
// (docs/QUANTIZATION.md, "A rotation for the tensor cores"): two screened Hadamard rounds at
// `bits`, with the integer operands `ops`, bf16 out. A simulation in double precision, not a
// kernel's bytes: it measures what the operands' precision costs, nothing else.
void integer_round_trip(const std::vector<Head>& heads, uint32_t tokens, uint32_t bits, const bench::IntegerOperands& ops,
                        std::vector<std::vector<float>>& k_out, std::vector<std::vector<float>>& v_out) {
  static const bench::Matrix q = bench::hadamard_rotation(kDim, 0, bench::screened_seed(kDim, 0x5EED, 2), 2);
  k_out.assign(kHeads, std::vector<float>(static_cast<size_t>(tokens) * kDim));
  v_out = k_out;
  for (uint32_t h = 0; h < kHeads; ++h)
    for (uint32_t kv = 0; kv < 2; ++kv)
      for (uint32_t t = 0; t < tokens; ++t) {
        const float* x = &(kv ? heads[h].v : heads[h].k)[static_cast<size_t>(t) * kDim];
        const std::vector<double> back = bench::integer_round_trip(q, std::vector<double>(x, x + kDim), bits, ops);
        float* out = &(kv ? v_out : k_out)[h][static_cast<size_t>(t) * kDim];
        for (uint32_t c = 0; c < kDim; ++c) out[c] = tq_bf16_to_f32(tq_f32_to_bf16(static_cast<float>(back[c])));
      }
}

// Relative error |o - o^| / |o| per query, over all queries of all heads: mean and worst.
struct Error {
  double mean = 0, worst = 0;
};

Error compare(const std::vector<std::vector<double>>& exact, const std::vector<std::vector<double>>& approx) {
  Error e;
  double n = 0;
  for (size_t h = 0; h < exact.size(); ++h)
    for (uint32_t i = 0; i < kQueries; ++i) {
      double num = 0, den = 0;
      for (uint32_t c = 0; c < kDim; ++c) {
        const double a = exact[h][i * kDim + c], b = approx[h][i * kDim + c];
        num += (a - b) * (a - b), den += a * a;
      }
      const double r = std::sqrt(num / den);
      e.mean += r, e.worst = std::max(e.worst, r), n += 1;
    }
  e.mean /= n;
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  FILE* json = std::fopen(argc > 1 ? argv[1] : "attention.json", "w");
  FILE* md = std::fopen(argc > 2 ? argv[2] : "attention.md", "w");
  if (!json || !md) return 2;
  std::fprintf(md, "| context | format | variant | bits | K only: mean / worst | V only: mean / worst | K and V: mean / worst |\n"
                   "|---|---|---|---|---|---|---|\n");
  std::fprintf(json, "{\n  \"attention\": [\n");
  bool first = true;
  for (uint32_t tokens : {4096u, 16384u}) {
    std::vector<Head> heads;
    for (uint32_t h = 0; h < kHeads; ++h) heads.push_back(make_head(tokens, 1000 * tokens + h));
    // exact inputs: the bf16 values the quantizer sees
    for (Head& h : heads) {
      std::vector<uint8_t> raw;
      for (std::vector<float>* x : {&h.k, &h.v}) bench::encode(*x, SW_DTYPE_BF16, raw), bench::decode(raw, SW_DTYPE_BF16, *x);
    }
    std::vector<std::vector<double>> exact;
    double sink_share = 0;
    for (const Head& h : heads) {
      double share;
      exact.push_back(attend(h, h.k, h.v, tokens, &share));
      sink_share += share / kHeads;
    }
    std::printf("context %u tokens: the sink token takes %.1f%% of the attention\n", tokens, 100 * sink_share);
    // One row: the error of o with only K, only V and both quantized as kq and vq.
    auto row = [&](const std::string& format, const char* variant, double bits, const std::vector<std::vector<float>>& kq,
                   const std::vector<std::vector<float>>& vq) {
      std::vector<std::vector<double>> k_only, v_only, both;
      for (uint32_t h = 0; h < kHeads; ++h) {
        k_only.push_back(attend(heads[h], kq[h], heads[h].v, tokens, nullptr));
        v_only.push_back(attend(heads[h], heads[h].k, vq[h], tokens, nullptr));
        both.push_back(attend(heads[h], kq[h], vq[h], tokens, nullptr));
      }
      const Error ek = compare(exact, k_only), ev = compare(exact, v_only), eb = compare(exact, both);
      std::fprintf(md, "| %u | %s | %s | %.1f | %.4f / %.4f | %.4f / %.4f | %.4f / %.4f |\n", tokens, format.c_str(), variant, bits,
                   ek.mean, ek.worst, ev.mean, ev.worst, eb.mean, eb.worst);
      std::fprintf(json,
                   "%s    {\"tokens\": %u, \"format\": \"%s\", \"variant\": \"%s\", \"bits\": %.1f, \"sink_share\": %.4f, "
                   "\"k_only_mean\": %.6f, \"k_only_worst\": %.6f, \"v_only_mean\": %.6f, \"v_only_worst\": %.6f, "
                   "\"both_mean\": %.6f, \"both_worst\": %.6f}",
                   first ? "" : ",\n", tokens, format.c_str(), variant, bits, sink_share, ek.mean, ek.worst, ev.mean, ev.worst,
                   eb.mean, eb.worst);
      first = false;
      std::fflush(md);
    };
    std::vector<std::vector<float>> kq, vq;
    // format 4 (its 4-bit heads through format 3's matrix, 3.5 and 2.5 bits through its halves;
    // the prod variant as format 2 codes it), format 2, format 1
    for (uint32_t version : {4u, 2u, 1u})
      for (uint32_t variant : {SW_TQ_MSE, SW_TQ_PROD}) {
        if (version != 2 && variant == SW_TQ_PROD) continue;
        for (uint32_t bx2 : {8u, 7u, 6u, 5u, 4u}) {
          round_trip(heads, tokens, bx2, variant, version, kq, vq);
          row(std::to_string(version), variant == SW_TQ_PROD ? "prod" : "mse", bx2 / 2.0, kq, vq);
        }
      }
    // The integer operands the tensor-core kernels could take (one int8 MMA a product with
    // 8-bit operands, two with 16-bit), at 4 bits, where their rounding weighs most.
    const std::pair<const char*, bench::IntegerOperands> operands[] = {
        {"two rounds, exact operands", {0, false, 0}},
        {"two rounds, 16-bit input and centroids", {16, false, 16}},
        {"two rounds, 8-bit input (full range), 16-bit centroids", {8, true, 16}},
        {"two rounds, 8-bit input (full range) and centroids", {8, true, 8}}};
    for (const auto& [name, ops] : operands) {
      integer_round_trip(heads, tokens, 4, ops, kq, vq);
      row(name, "mse", 4.0, kq, vq);
    }
  }
  std::fprintf(json, "\n  ]\n}\n");
  std::fclose(json);
  std::fclose(md);
  return 0;
}
