#include "core/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace spillway {
namespace {

struct Job {
  const std::function<void(uint32_t, uint32_t)>* fn;
  uint32_t n, chunk;
  std::atomic<uint32_t> next{0};
  std::atomic<uint32_t> done{0};
  std::mutex m;
  std::condition_variable finished;

  // Claims and runs chunks until none are left; returns when this thread has no more to do.
  void Drain() {
    for (;;) {
      uint32_t begin = next.fetch_add(chunk);
      if (begin >= n) return;
      uint32_t end = std::min(n, begin + chunk);
      (*fn)(begin, end);
      if (done.fetch_add(end - begin) + (end - begin) == n) {
        std::lock_guard<std::mutex> lock(m);
        finished.notify_all();
      }
    }
  }
};

class Pool {
 public:
  explicit Pool(unsigned threads) {
    for (unsigned i = 0; i < threads; i++) workers_.emplace_back([this] { Loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  unsigned size() const { return static_cast<unsigned>(workers_.size()) + 1; }

  void Run(const std::shared_ptr<Job>& job, unsigned helpers) {
    {
      std::lock_guard<std::mutex> lock(m_);
      for (unsigned i = 0; i < helpers; i++) queue_.push_back(job);
    }
    cv_.notify_all();
    job->Drain();
    std::unique_lock<std::mutex> lock(job->m);
    job->finished.wait(lock, [&] { return job->done.load() >= job->n; });
  }

 private:
  void Loop() {
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      job->Drain();
    }
  }

  std::vector<std::thread> workers_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
};

Pool& ThePool() {
  static Pool pool(std::max(1u, std::thread::hardware_concurrency()) - 1);
  return pool;
}

}  // namespace

unsigned PoolThreads() { return ThePool().size(); }

void ParallelFor(uint32_t n, const std::function<void(uint32_t, uint32_t)>& fn) {
  if (n == 0) return;
  Pool& pool = ThePool();
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  // A few chunks per thread balance uneven chunks without much queueing.
  job->chunk = std::max(1u, n / (pool.size() * 4));
  unsigned helpers = std::min(pool.size() - 1, (n + job->chunk - 1) / job->chunk - 1);
  pool.Run(job, helpers);
}

}  // namespace spillway
