// Background work of a stack, run and reported by the core.
//
// A target never starts a thread itself: it asks its JobRunner (handed to
// it by the core through the TargetContext) to start a job. Two kinds:
//  * service jobs (bow's committer, era's metadata writeback) live as long
//    as their target and do the work its data path queues; they are never
//    paused, because a suspend's flush needs them;
//  * task jobs (scrub, resync, recovery) have a size and progress; they are
//    paused while the volume is suspended and on request, can be
//    rate-limited, and end as done, failed (with the error) or stopped.
// Each job reports {"name","kind","state","done_bytes","total_bytes",
// "rate_bytes_s","eta_s","error"} in its node's status.
//
// Thread-safety: every method may be called from any thread. A job's body
// runs on a thread of its own, named "<target>-<job>".
// Lifetime: stop_all() (or the destructor) stops jobs in the reverse order
// of their start and joins them; a target must stop the jobs that use its
// members before those members die (Job::stop() or JobRunner::stop_all()
// in its destructor).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"

namespace bowstack {

enum class JobState { kRunning, kPaused, kDone, kFailed, kStopped };
const char* job_state_name(JobState s);

class Job;

// What a job's body sees of its job.
class JobControl {
 public:
  explicit JobControl(Job* job) : job_(job) {}
  // True once the job was asked to stop; the body should return soon.
  bool stopping() const;
  // Blocks while the job is paused; returns false when it should stop.
  bool wait_while_paused();
  // Progress: the whole size of the work, and bytes done so far. done()
  // also sleeps as long as the rate limit requires (a task job only).
  void set_total(uint64_t bytes);
  void done(uint64_t bytes);

 private:
  Job* job_;
};

class Job {
 public:
  enum class Kind { kService, kTask };
  using Body = std::function<Status(JobControl&)>;

  ~Job();
  const std::string& name() const { return name_; }
  Kind kind() const { return kind_; }
  JobState state() const;

  // Asks the job to stop (calls the wake function given at start, so a body
  // waiting on a condition variable of its own sees stopping()), then joins
  // it. Idempotent: after the first call the wake function is not called
  // again. A job that already finished keeps its state.
  void stop();
  // Task jobs only; ignored for service jobs.
  void pause();
  void resume();
  // Bytes per second; 0 = unlimited.
  void set_rate(uint64_t bytes_per_s);
  void describe(nlohmann::json* out) const;

 private:
  friend class JobRunner;
  friend class JobControl;
  Job(std::string name, Kind kind, std::function<void()> wake);
  void run(Body body, std::string thread_name);

  const std::string name_;
  const Kind kind_;
  const std::function<void()> wake_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  JobState state_ = JobState::kRunning;               // guarded by mu_
  bool stop_requested_ = false;                       // guarded by mu_
  bool paused_ = false;                               // guarded by mu_
  uint64_t rate_ = 0;                                 // guarded by mu_
  uint64_t total_ = 0;                                // guarded by mu_
  uint64_t done_ = 0;                                 // guarded by mu_
  std::chrono::steady_clock::time_point rate_start_;  // guarded by mu_
  std::chrono::steady_clock::time_point started_;     // set at construction
  uint64_t rate_done_ = 0;                            // guarded by mu_: bytes since rate_start_
  uint64_t rate_gen_ = 0;                             // guarded by mu_: +1 per set_rate()
  std::string error_;                                 // guarded by mu_
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // joined by stop() only (one caller: guarded by join_mu_)
  std::mutex join_mu_;
};

class JobRunner {
 public:
  // `owner` names the threads ("bow" -> "bow-commit").
  explicit JobRunner(std::string owner = {}) : owner_(std::move(owner)) {}
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Starts `body` on a new thread. `wake` (may be empty) is called by
  // stop() after the stop flag is set. The returned job stays owned by the
  // runner and valid until the runner is destroyed.
  Job* start(std::string name, Job::Kind kind, Job::Body body, std::function<void()> wake = {});
  // Stops every job, last started first.
  void stop_all();
  // Task jobs: pause (suspend) and resume them all.
  void pause_tasks();
  void resume_tasks();
  // The job of that name started last, or nullptr.
  Job* find(std::string_view name) const;
  // [{"name":..,"kind":..,"state":..,...}, ...] in start order.
  nlohmann::json describe() const;
  // "job NAME pause|resume|stop|rate=BYTES": the control messages every
  // node with jobs understands. ENOTSUP when the text is not a job message.
  Result<std::string> message(std::string_view text);

 private:
  const std::string owner_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Job>> jobs_;  // guarded by mu_
};

}  // namespace bowstack
