#include "core/async_task.h"

namespace spillway {

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
    SetError(e.what());
  }
}

void AsyncTask::OnOK() {
  Napi::Env env = Env();
  deferred_.Resolve(result_ ? result_(env, keep_) : env.Undefined());
}

void AsyncTask::OnError(const Napi::Error& e) {
  deferred_.Reject(NewError(Env(), code_, e.Message()).Value());
}

}  // namespace spillway
