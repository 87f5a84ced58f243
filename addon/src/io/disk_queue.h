// The disk tier's reads and writes, on threads of their own: as many at once as the tier's
// depth (tiers.disk.inFlight), in the order they were asked for. A thread that finishes an
// operation starts the next queued one with no turn of the JS thread between them, so a JS
// thread busy with requests and answers does not leave the disk idle; only each result goes
// back through it, settling the operation's promise as AsyncTask's are settled.
//
// Results cross into JS through a thread-safe function. It keeps the event loop alive only
// while operations are unsettled, is released once the queue is shut down and the last result
// settled, and is never touched after Node finalized it (at the environment's teardown).
#pragma once
#include <napi.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/async_task.h"

namespace spillway {

enum class DiskDirection : uint8_t { kRead = 0, kWrite = 1 };

constexpr uint32_t kDefaultDiskInFlight = 16;
// options.inFlight: the operations run at once, 1 to 1024 (tiers.disk.inFlight).
uint32_t DiskInFlightOption(Napi::Env env, const Napi::Object& options);

class DiskQueue {
 public:
  DiskQueue(Napi::Env env, unsigned depth);
  ~DiskQueue();  // Shutdown()
  DiskQueue(const DiskQueue&) = delete;
  DiskQueue& operator=(const DiskQueue&) = delete;

  // Queues `work`; the promise settles on the JS thread with `result` (or undefined), or
  // rejects with the error the work threw. `keep` holds JS values alive until then.
  Napi::Promise Run(Napi::Env env, DiskDirection direction, std::vector<Napi::Value> keep, AsyncTask::Work work,
                    AsyncTask::Result result = nullptr);

  // (direction, start, end) of each operation finished since the last call, start and end in
  // seconds of the steady clock: how long each held a thread (its turn), and which overlapped.
  Napi::Value TakeRuns(Napi::Env env);

  // Lets the running operations finish and joins the threads; operations not yet started are
  // dropped unsettled (an owner shuts down only with none in flight, or at teardown). JS thread.
  void Shutdown();

 private:
  struct Shared;
  struct Op;
  static void Settle(Napi::Env env, Napi::Function, Shared* shared, Op* op);
  static void Drop(Op* op);
  void Loop();

  std::shared_ptr<Shared> shared_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Op*> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace spillway
