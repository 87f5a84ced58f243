#include "io/disk_queue.h"

#include <algorithm>
#include <chrono>

#include "core/errors.h"

namespace spillway {
namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxRuns = 1 << 16;  // kept between takeDiskRuns() calls; the oldest go

double Seconds(Clock::time_point t) { return std::chrono::duration<double>(t.time_since_epoch()).count(); }

}  // namespace

uint32_t DiskInFlightOption(Napi::Env env, const Napi::Object& options) {
  Napi::Value v = options.Get("inFlight");
  if (v.IsUndefined()) return kDefaultDiskInFlight;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
  if (d < 1 || d > 1024 || d != static_cast<uint32_t>(d)) throw Napi::TypeError::New(env, "options.inFlight must be an integer from 1 to 1024");
  return static_cast<uint32_t>(d);
}

// What the queue's threads, the operations and the thread-safe function share. It outlives the
// queue for as long as Node holds the thread-safe function, whose finalizer lets go of it last.
struct DiskQueue::Shared {
  using Tsfn = Napi::TypedThreadSafeFunction<Shared, Op, &DiskQueue::Settle>;
  Tsfn tsfn;
  std::mutex m;           // guards `alive`; held by the threads while they hand a result over
  bool alive = true;      // false once Node finalized tsfn
  bool released = false;  // the rest: JS thread only
  bool closing = false;   // shut down: tsfn goes once nothing is unsettled
  uint32_t unsettled = 0;
  std::mutex runs_mu;
  std::deque<double> runs;

  // Called from the queue's threads with a finished operation.
  void Deliver(Op* op) {
    std::lock_guard<std::mutex> lock(m);
    if (!alive || tsfn.NonBlockingCall(op) != napi_ok) Drop(op);  // the environment is going away
  }
  void ReleaseWhenDone() {
    if (!closing || unsettled > 0 || released) return;
    released = true;
    std::lock_guard<std::mutex> lock(m);
    if (alive) tsfn.Release();
  }
};

struct DiskQueue::Op {
  Op(Napi::Env env, DiskDirection d, AsyncTask::Work w, AsyncTask::Result r)
      : deferred(Napi::Promise::Deferred::New(env)), work(std::move(w)), result(std::move(r)), direction(d), queued(Clock::now()) {}
  Napi::Promise::Deferred deferred;
  AsyncTask::Kept keep;
  AsyncTask::Work work;
  AsyncTask::Result result;
  DiskDirection direction;
  TaskOutcome outcome;
  Clock::time_point queued, started, finished;
};

DiskQueue::DiskQueue(Napi::Env env, unsigned depth) : shared_(std::make_shared<Shared>()) {
  auto* holder = new std::shared_ptr<Shared>(shared_);
  shared_->tsfn = Shared::Tsfn::New(
      env, "spillway disk queue", 0, 1, shared_.get(),
      [](Napi::Env, std::shared_ptr<Shared>* h, Shared*) {
        {
          std::lock_guard<std::mutex> lock((*h)->m);
          (*h)->alive = false;
        }
        delete h;
      },
      holder);
  shared_->tsfn.Unref(env);  // referenced only while operations are unsettled
  for (unsigned i = 0; i < std::max(1u, depth); i++) threads_.emplace_back([this] { Loop(); });
}

DiskQueue::~DiskQueue() { Shutdown(); }

Napi::Promise DiskQueue::Run(Napi::Env env, DiskDirection direction, std::vector<Napi::Value> keep, AsyncTask::Work work,
                             AsyncTask::Result result) {
  if (shared_->closing) throw NewError(env, ErrorCode::kClosed, "the disk queue is shut down");
  auto* op = new Op(env, direction, std::move(work), std::move(result));
  for (auto& v : keep) op->keep.push_back(Napi::Persistent(v));
  Napi::Promise promise = op->deferred.Promise();
  if (shared_->unsettled++ == 0) shared_->tsfn.Ref(env);
  {
    std::lock_guard<std::mutex> lock(m_);
    queue_.push_back(op);
  }
  cv_.notify_one();
  return promise;
}

void DiskQueue::Loop() {
  for (;;) {
    Op* op;
    {
      std::unique_lock<std::mutex> lock(m_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      op = queue_.front();
      queue_.pop_front();
    }
    op->started = Clock::now();
    op->outcome = RunCatching(op->work);
    op->finished = Clock::now();
    {
      std::lock_guard<std::mutex> lock(shared_->runs_mu);
      std::deque<double>& runs = shared_->runs;
      if (runs.size() >= 3 * kMaxRuns) runs.erase(runs.begin(), runs.begin() + 3);
      runs.insert(runs.end(), {static_cast<double>(op->direction), Seconds(op->started), Seconds(op->finished)});
    }
    shared_->Deliver(op);
  }
}

void DiskQueue::Settle(Napi::Env env, Napi::Function, Shared* shared, Op* op) {
  if (static_cast<napi_env>(env) == nullptr) {  // Node is finalizing the function at teardown
    Drop(op);
    return;
  }
  RecordTaskTimings(op->queued, op->started, op->finished);
  if (op->outcome.failed) {
    op->deferred.Reject(NewError(env, op->outcome.code, op->outcome.message).Value());
  } else {
    op->deferred.Resolve(op->result ? op->result(env, op->keep) : env.Undefined());
  }
  delete op;
  if (--shared->unsettled == 0) shared->tsfn.Unref(env);
  shared->ReleaseWhenDone();
}

// An operation that will not settle: its references are let go of without the environment.
void DiskQueue::Drop(Op* op) {
  for (auto& ref : op->keep) ref.SuppressDestruct();
  delete op;
}

Napi::Value DiskQueue::TakeRuns(Napi::Env env) {
  std::lock_guard<std::mutex> lock(shared_->runs_mu);
  auto out = Napi::Float64Array::New(env, shared_->runs.size());
  std::copy(shared_->runs.begin(), shared_->runs.end(), out.Data());
  shared_->runs.clear();
  return out;
}

void DiskQueue::Shutdown() {
  if (shared_->closing) return;
  {
    std::lock_guard<std::mutex> lock(m_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  shared_->closing = true;
  for (Op* op : queue_) {
    Drop(op);
    shared_->unsettled--;
  }
  queue_.clear();
  shared_->ReleaseWhenDone();
}

}  // namespace spillway
