// A promise-returning job that runs off the JS thread. Errors cross into JS as the
// runtime's error class with a stable code (core/errors.h), never as aborts: a CodedError
// keeps its code, any other exception is INTERNAL.
#pragma once
#include <napi.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/errors.h"

namespace spillway {

// How a task's work ended: the error it threw, if any (a CodedError keeps its code; any other
// exception is INTERNAL).
struct TaskOutcome {
  bool failed = false;
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
};
TaskOutcome RunCatching(const std::function<void()>& work);

// Adds a finished task's (queued, run, returned) seconds to those TakeTimings hands out;
// called on the JS thread as the task settles.
void RecordTaskTimings(std::chrono::steady_clock::time_point queued, std::chrono::steady_clock::time_point started,
                       std::chrono::steady_clock::time_point finished);

// `work`, counting `in_flight` down as it ends, thrown or not (the caller counted it up as it
// queued the work, so that an owner's Close() sees it from then on).
std::function<void()> CountedDown(std::atomic<int>& in_flight, std::function<void()> work);

class AsyncTask : public Napi::AsyncWorker {
 public:
  using Kept = std::vector<Napi::Reference<Napi::Value>>;
  using Work = std::function<void()>;
  // Builds the resolved value. JS values captured when the task was queued are not valid
  // any more; those in `keep` are, as `kept[i].Value()`.
  using Result = std::function<Napi::Value(Napi::Env, const Kept& kept)>;

  // `keep` holds JS objects (buffers) alive until the work is done.
  static Napi::Promise Run(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result = nullptr);

  // taskTimings(): Float64Array of (queued, run, returned) seconds per task finished since the
  // last call, oldest first: waiting for a worker thread, on it, and waiting for the JS thread
  // to take the result. Where a task's time goes when it is slow; at most kMaxTimings tasks
  // are kept between calls (the oldest go).
  static Napi::Value TakeTimings(const Napi::CallbackInfo& info);

 private:
  AsyncTask(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result);
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

  Napi::Promise::Deferred deferred_;
  Kept keep_;
  Work work_;
  Result result_;
  ErrorCode code_ = ErrorCode::kInternal;  // a CodedError's code; INTERNAL for any other exception
  std::chrono::steady_clock::time_point queued_, started_, finished_;
};

}  // namespace spillway
