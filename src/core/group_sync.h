// Group commit for durability barriers (the LevelDB DBImpl::Write pattern,
// reduced to the sync itself).
//
// Many threads call sync(); each needs a barrier that *starts after* its own
// call, so that everything it completed before calling is covered. Callers
// that arrive while a barrier is running queue up; when it ends, one of them
// becomes the leader and runs a single barrier for all of them. So N
// concurrent callers cost two barriers at most, never N.
//
// A failed barrier is sticky: that caller, every caller waiting on it and
// every later caller get the failure, because once a flush has failed the
// device can no longer promise that earlier writes are stable.
//
// Thread-safety: sync() and failed() may be called from any thread.
// The barrier function is never run by two threads at once.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>

#include "core/status.h"

namespace bowstack {

class GroupSync {
 public:
  // `on_failure` (may be empty) is called once, when the failure becomes
  // sticky, on the thread that hit it and without the lock held: where the
  // owner logs it (a sticky failure that nobody logs is found too late).
  explicit GroupSync(std::function<Status()> barrier, std::function<void(const Status&)> on_failure = {})
      : barrier_(std::move(barrier)), on_failure_(std::move(on_failure)) {}

  // Returns when a barrier that started after this call has completed.
  Status sync();
  // The sticky failure, if any (OK otherwise).
  Status failure() const;
  // Records a durability failure that happened outside a barrier (a failed
  // synchronous write): sticky like a failed barrier. REQUIRES: !s.ok().
  void poison(Status s);
  // How many barriers actually ran (for tests and status).
  uint64_t barriers_run() const;

 private:
  const std::function<Status()> barrier_;
  const std::function<void(const Status&)> on_failure_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t started_ = 0;    // guarded by mu_: barriers started so far
  uint64_t completed_ = 0;  // guarded by mu_: barriers completed so far
  bool running_ = false;    // guarded by mu_
  Status failed_;           // guarded by mu_: sticky failure
};

}  // namespace bowstack
