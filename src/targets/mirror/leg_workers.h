// Runs one task per leg at once: the calling thread takes the first, a
// service job per further leg the others. Used where every leg waits on its
// device (metadata commits and flushes: one fdatasync per leg), so that N
// legs cost one wait, not N. Data writes stay on the caller's thread: on
// page-cache legs a hand-off costs more than the write.
//
// Thread-safety: run() may be called from several threads; each worker
// runs one task at a time, in submission order.
// Lifetime: stop() (or the destructor) before the runner's owner goes; the
// JobRunner outlives this.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/jobs.h"
#include "core/status.h"

namespace bowstack::mirror {

class LegWorkers {
 public:
  // Starts legs - 1 service jobs named "leg1", "leg2", ...
  LegWorkers(JobRunner& jobs, size_t legs);
  ~LegWorkers() { stop(); }
  LegWorkers(const LegWorkers&) = delete;
  LegWorkers& operator=(const LegWorkers&) = delete;

  // Runs tasks[i] for leg i (empty functions are skipped), all at once;
  // returns each one's Status. After stop(), runs them on the caller.
  std::vector<Status> run(std::vector<std::function<Status()>> tasks);
  void stop();

 private:
  struct Worker {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> queue;  // guarded by mu
    bool stopping = false;                    // guarded by mu
    Job* job = nullptr;
  };
  std::vector<std::unique_ptr<Worker>> workers_;  // index i serves leg i + 1
  std::mutex stop_mu_;
  bool stopped_ = false;  // guarded by stop_mu_
};

}  // namespace bowstack::mirror
