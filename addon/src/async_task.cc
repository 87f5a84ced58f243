#include "async_task.h"

namespace spillway {

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

Napi::Promise AsyncTask::Run(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result) {
  auto* task = new AsyncTask(env, std::move(keep), std::move(work), std::move(result));
  Napi::Promise promise = task->deferred_.Promise();
  task->Queue();  // the worker deletes itself after OnOK/OnError
  return promise;
}

AsyncTask::AsyncTask(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result)
    : Napi::AsyncWorker(env, "spillway"), deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)), result_(std::move(result)) {
  for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
}

void AsyncTask::Execute() {
  try {
    work_();
  } catch (const CodedError& e) {
    code_ = e.code;
    SetError(e.what());
  } catch (const std::exception& e) {
    code_ = "INTERNAL";
    SetError(e.what());
  }
}

void AsyncTask::OnOK() {
  Napi::Env env = Env();
  deferred_.Resolve(result_ ? result_(env, keep_) : env.Undefined());
}

void AsyncTask::OnError(const Napi::Error& e) {
  deferred_.Reject(MakeError(Env(), code_.empty() ? "INTERNAL" : code_, e.Message()).Value());
}

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

void CheckRange(Napi::Env env, const Napi::Buffer<uint8_t>& buf, uint64_t offset, uint64_t length, const char* name) {
  if (offset > buf.Length() || length > buf.Length() - offset)
    throw Napi::RangeError::New(env, std::string(name) + ": range [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                         ") is outside the buffer of " + std::to_string(buf.Length()) + " bytes");
}

}  // namespace spillway
