#include "core/args.h"

namespace spillway {

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 4294967295.0) || v != static_cast<double>(static_cast<uint32_t>(v)))
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an unsigned 32-bit integer");
  return static_cast<uint32_t>(v);
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i < info.Length() && info[i].IsBigInt()) {
    bool lossless = false;
    uint64_t v = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::TypeError::New(info.Env(), std::string(name) + " must fit in 64 bits");
    return v;
  }
  if (i >= info.Length() || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number or bigint");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!(v >= 0 && v <= 9007199254740991.0) || v != static_cast<double>(static_cast<uint64_t>(v)))
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a non-negative safe integer");
  return static_cast<uint64_t>(v);
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

Napi::Buffer<uint8_t> OutBuffer(const Napi::CallbackInfo& info, size_t i, size_t bytes, const char* name) {
  if (i >= info.Length() || info[i].IsUndefined()) return Napi::Buffer<uint8_t>::New(info.Env(), bytes);
  auto out = ArgBuffer(info, i, name);
  if (out.Length() != bytes) throw Napi::RangeError::New(info.Env(), std::string(name) + " must be " + std::to_string(bytes) + " bytes, not " + std::to_string(out.Length()));
  return out;
}

void CheckRange(Napi::Env env, const Napi::Buffer<uint8_t>& buf, uint64_t offset, uint64_t length, const char* name) {
  if (offset > buf.Length() || length > buf.Length() - offset)
    throw Napi::RangeError::New(env, std::string(name) + ": range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                         ") is outside the buffer of " + std::to_string(buf.Length()) + " bytes");
}

double FieldNumber(Napi::Env env, const Napi::Object& o, const char* object, const char* field) {
  Napi::Value v = o.Get(field);
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(object) + "." + field + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::string FieldString(Napi::Env env, const Napi::Object& o, const char* object, const char* field) {
  Napi::Value v = o.Get(field);
  if (!v.IsString()) throw Napi::TypeError::New(env, std::string(object) + "." + field + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace spillway
