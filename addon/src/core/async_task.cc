#include "core/async_task.h"

#include <deque>
#include <mutex>

namespace spillway {
namespace {

constexpr size_t kMaxTimings = 1 << 16;

// Timings of finished tasks, (queued, run, returned) seconds each. Recorded on the JS thread
// of whichever environment ran the task; the lock is for several environments (worker threads).
std::mutex timings_mu;
std::deque<double> timings;

double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

TaskOutcome RunCatching(const std::function<void()>& work) {
  TaskOutcome out;
  try {
    work();
  } catch (const CodedError& e) {
    out = {true, e.code, e.what()};
  } catch (const std::exception& e) {
    out = {true, ErrorCode::kInternal, e.what()};
  }
  return out;
}

std::function<void()> CountedDown(std::atomic<int>& in_flight, std::function<void()> work) {
  return [&in_flight, work = std::move(work)] {
    struct Done {
      std::atomic<int>& n;
      ~Done() { n--; }
    } done{in_flight};
    work();
  };
}

void RecordTaskTimings(std::chrono::steady_clock::time_point queued, std::chrono::steady_clock::time_point started,
                       std::chrono::steady_clock::time_point finished) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(timings_mu);
  if (timings.size() >= 3 * kMaxTimings) timings.erase(timings.begin(), timings.begin() + 3);
  timings.insert(timings.end(), {Seconds(started - queued), Seconds(finished - started), Seconds(now - finished)});
}

Napi::Promise AsyncTask::Run(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result) {
  auto* task = new AsyncTask(env, std::move(keep), std::move(work), std::move(result));
  Napi::Promise promise = task->deferred_.Promise();
  task->queued_ = std::chrono::steady_clock::now();
  task->Queue();  // the worker deletes itself after OnOK/OnError
  return promise;
}

AsyncTask::AsyncTask(Napi::Env env, std::vector<Napi::Value> keep, Work work, Result result)
    : Napi::AsyncWorker(env, "spillway"), deferred_(Napi::Promise::Deferred::New(env)),
      work_(std::move(work)), result_(std::move(result)) {
  for (auto& v : keep) keep_.push_back(Napi::Persistent(v));
}

void AsyncTask::Execute() {
  started_ = std::chrono::steady_clock::now();
  const TaskOutcome outcome = RunCatching(work_);
  finished_ = std::chrono::steady_clock::now();
  if (outcome.failed) {
    code_ = outcome.code;
    SetError(outcome.message);
  }
}

Napi::Value AsyncTask::TakeTimings(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> lock(timings_mu);
  auto out = Napi::Float64Array::New(info.Env(), timings.size());
  std::copy(timings.begin(), timings.end(), out.Data());
  timings.clear();
  return out;
}

void AsyncTask::OnOK() {
  RecordTaskTimings(queued_, started_, finished_);
  Napi::Env env = Env();
  deferred_.Resolve(result_ ? result_(env, keep_) : env.Undefined());
}

void AsyncTask::OnError(const Napi::Error& e) {
  RecordTaskTimings(queued_, started_, finished_);
  deferred_.Reject(NewError(Env(), code_, e.Message()).Value());
}

}  // namespace spillway
