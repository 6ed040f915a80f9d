#include "core/group_sync.h"

namespace bowstack {

Status GroupSync::sync() {
  std::unique_lock lock(mu_);
  // A barrier already running may have started before our caller's writes
  // completed, so we need the next one.
  const uint64_t target = started_ + 1;
  while (completed_ < target && failed_.ok()) {
    if (running_) {
      cv_.wait(lock);
      continue;
    }
    running_ = true;
    const uint64_t mine = ++started_;
    lock.unlock();
    Status s = barrier_();
    lock.lock();
    running_ = false;
    completed_ = mine;
    const bool first = !s.ok() && failed_.ok();
    if (first) failed_ = s;
    cv_.notify_all();
    if (first && on_failure_) {
      lock.unlock();
      on_failure_(s);
      lock.lock();
    }
  }
  return failed_;
}

Status GroupSync::failure() const {
  std::lock_guard lock(mu_);
  return failed_;
}

void GroupSync::poison(Status s) {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    first = failed_.ok();
    if (first) failed_ = s;
    cv_.notify_all();
  }
  if (first && on_failure_) on_failure_(s);
}

uint64_t GroupSync::barriers_run() const {
  std::lock_guard lock(mu_);
  return completed_;
}

}  // namespace bowstack
