// Host-path quantization bindings: the C++ reference quantizer run on the thread pool,
// one block per call, reading and writing inside caller-owned buffers (the tier arenas).
#include "host/quantize.h"

#include "core/args.h"
#include "core/async_task.h"
#include "core/errors.h"
#include "core/thread_pool.h"
#include "turboquant.h"
#include "turboquant_format.h"

namespace spillway {

sw_tq_params ParamsFromJs(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, "quantization params must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto field = [&](const char* name) { return FieldNumber(env, o, "params", name); };
  sw_tq_params p{};
  p.layers = static_cast<uint32_t>(field("layers"));
  p.kv_heads = static_cast<uint32_t>(field("kvHeads"));
  p.head_dim = static_cast<uint32_t>(field("headDim"));
  p.tokens = static_cast<uint32_t>(field("tokens"));
  p.dtype = static_cast<uint32_t>(field("dtype"));
  p.key_bits_x2 = static_cast<uint32_t>(field("keyBitsX2"));
  p.value_bits_x2 = static_cast<uint32_t>(field("valueBitsX2"));
  p.variant = static_cast<uint32_t>(field("variant"));
  p.seed = static_cast<uint64_t>(field("seed"));
  // the format to write; reads take it from the block's header
  if (o.Has("version")) p.version = static_cast<uint32_t>(field("version"));
  // outer layers at their own bit widths, where the rule names any
  if (o.Has("outerFirst")) {
    p.outer_first = static_cast<uint32_t>(field("outerFirst"));
    p.outer_last = static_cast<uint32_t>(field("outerLast"));
    p.outer_key_bits_x2 = static_cast<uint32_t>(field("outerKeyBitsX2"));
    p.outer_value_bits_x2 = static_cast<uint32_t>(field("outerValueBitsX2"));
  }
  char err[256];
  if (sw_tq_check_params(&p, err, sizeof err) != SW_TQ_OK) throw NewError(env, ErrorCode::kQuantParams, err);
  return p;
}

namespace {

// sizes(params) -> { raw, quantized, groups, records: [inner K, inner V, outer K, outer V] }
// (records: bytes of one group's record of each kind, norms and masks included)
Napi::Value Sizes(const Napi::CallbackInfo& info) {
  sw_tq_params p = ParamsFromJs(info.Env(), info[0]);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("raw", static_cast<double>(sw_tq_raw_bytes(&p)));
  o.Set("quantized", static_cast<double>(sw_tq_quantized_bytes(&p)));
  o.Set("groups", sw_tq_groups(&p));
  tq_layout layout;
  tq_make_layout(&p, &layout);
  Napi::Array records = Napi::Array::New(info.Env(), 4);
  for (uint32_t i = 0; i < 4; ++i) records.Set(i, layout.kind[i].record_bytes);
  o.Set("records", records);
  return o;
}

// quantize(params, src, srcOffset, dst, dstOffset) and dequantize(...): Promise<void>.
// Dequantize reads every format version this build knows and refuses bytes whose header
// names another version, bad magic or other parameters.
Napi::Value Convert(const Napi::CallbackInfo& info, bool quantize) {
  Napi::Env env = info.Env();
  sw_tq_params p = ParamsFromJs(env, info[0]);
  auto src = ArgBuffer(info, 1, "src");
  uint64_t src_off = ArgU64(info, 2, "srcOffset");
  auto dst = ArgBuffer(info, 3, "dst");
  uint64_t dst_off = ArgU64(info, 4, "dstOffset");
  size_t raw = sw_tq_raw_bytes(&p), quantized = sw_tq_quantized_bytes(&p);
  CheckRange(env, src, src_off, quantize ? raw : quantized, "src");
  CheckRange(env, dst, dst_off, quantize ? quantized : raw, "dst");
  const uint8_t* in = src.Data() + src_off;
  uint8_t* out = dst.Data() + dst_off;
  return AsyncTask::Run(env, {src, dst}, [p, in, out, quantize]() mutable {
    if (quantize) {
      sw_tq_write_header(&p, out);
    } else {
      // a block in an older format is read in the format it was written in
      p.version = sw_tq_header_version(in);
      char err[256];
      int rc = sw_tq_check_header(&p, in, err, sizeof err);
      if (rc == SW_TQ_EFORMAT) throw CodedError(ErrorCode::kQuantFormat, err);
      if (rc != SW_TQ_OK) throw CodedError(ErrorCode::kQuantMismatch, err);
    }
    ParallelFor(sw_tq_groups(&p), [&](uint32_t b, uint32_t e) {
      if (quantize) sw_tq_quantize_groups(&p, in, out, b, e - b);
      else sw_tq_dequantize_groups(&p, in, out, b, e - b);
    });
  });
}

}  // namespace

void InitQuantize(Napi::Env env, Napi::Object exports) {
  exports.Set("quantSizes", Napi::Function::New(env, Sizes, "quantSizes"));
  exports.Set("quantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Convert(info, true); }, "quantize"));
  exports.Set("dequantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return Convert(info, false); }, "dequantize"));
  exports.Set("poolThreads", Napi::Number::New(env, PoolThreads()));
}

}  // namespace spillway
