// Threads that write to a mirror's other legs while the client's thread
// writes to the first one, for legs with real latency (RBD, a disk opened
// O_DIRECT): there, writing the legs one after the other costs the sum of
// their latencies, and at once only the largest.
//
// The threads are service jobs of the mirror's JobRunner, started when the
// first task finds none idle, up to `max_threads`, and kept until stop():
// a mirror whose legs never need them starts none. Tasks run in submission
// order, as many at once as there are threads, so that a client queue of N
// writes keeps up to N writes in flight on a slow leg.
//
// Thread-safety: submit() may be called from any thread. Lifetime: stop()
// (or the destructor) before the JobRunner goes; after stop(), submit()
// runs the task on the caller.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "core/jobs.h"

namespace bowstack::mirror {

class WritePool {
 public:
  WritePool(JobRunner& jobs, std::string prefix, size_t max_threads);
  ~WritePool() { stop(); }
  WritePool(const WritePool&) = delete;
  WritePool& operator=(const WritePool&) = delete;

  // Runs `work`, then `then` once the thread counts as idle again, so that
  // a caller woken by `then` and submitting at once finds it idle rather
  // than starting another thread.
  void submit(std::function<void()> work, std::function<void()> then);
  // Stops the threads once they have run what was submitted.
  void stop();
  size_t threads() const;

 private:
  Status body();

  JobRunner& jobs_;
  const std::string prefix_;
  const size_t max_threads_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Task {
    std::function<void()> work, then;
  };
  std::deque<Task> queue_;     // guarded by mu_
  std::vector<Job*> threads_;  // guarded by mu_
  size_t idle_ = 0;            // guarded by mu_: threads waiting for a task
  bool stopping_ = false;      // guarded by mu_
};

// Counts tasks down; wait() returns when every one has called done().
class Latch {
 public:
  explicit Latch(size_t n) : left_(n) {}
  void done() {
    std::lock_guard lock(mu_);
    if (--left_ == 0) cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return left_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t left_;
};

}  // namespace bowstack::mirror
