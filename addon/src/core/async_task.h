// A promise-returning job that runs off the JS thread. Errors cross into JS as Error
// objects carrying a stable `code` (see runtime/errors.ts), never as aborts.
#pragma once
#include <napi.h>

#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace spillway {

// Thrown from worker code; `code` is one of the runtime's error codes.
struct CodedError : std::runtime_error {
  CodedError(std::string c, const std::string& message) : std::runtime_error(message), code(std::move(c)) {}
  std::string code;
};

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message);

class AsyncTask : public Napi::AsyncWorker {
 public:
  using Kept = std::vector<Napi::Reference<Napi::Value>>;
  using Work = std::function<void()>;
  // Builds the resolved value. JS values captured when the task was queued are not valid
  // any more; those in `keep` are, as `kept[i].Value()`.
  using Result = std::function<Napi::Value(Napi::Env, const Kept& kept)>;

  // `keep` holds JS objects (buffers) alive until the work is done.
  static Napi::Promise Run(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result = nullptr);

 private:
  AsyncTask(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result);
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

  Napi::Promise::Deferred deferred_;
  Kept keep_;
  Work work_;
  Result result_;
  std::string code_;
};

}  // namespace spillway
