#include "core/jobs.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "core/parse.h"
#include "core/thread_name.h"

namespace bowstack {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kRunning:
      return "running";
    case JobState::kPaused:
      return "paused";
    case JobState::kDone:
      return "done";
    case JobState::kFailed:
      return "failed";
    case JobState::kStopped:
      return "stopped";
  }
  return "unknown";
}

bool JobControl::stopping() const { return job_->stopping_.load(std::memory_order_acquire); }

bool JobControl::wait_while_paused() {
  std::unique_lock lock(job_->mu_);
  if (job_->paused_ && !job_->stop_requested_) job_->state_ = JobState::kPaused;
  job_->cv_.wait(lock, [this] { return !job_->paused_ || job_->stop_requested_; });
  if (job_->state_ == JobState::kPaused) job_->state_ = JobState::kRunning;
  // A pause does not count against the rate.
  job_->rate_start_ = std::chrono::steady_clock::now();
  job_->rate_done_ = 0;
  return !job_->stop_requested_;
}

void JobControl::set_total(uint64_t bytes) {
  std::lock_guard lock(job_->mu_);
  job_->total_ = bytes;
}

void JobControl::done(uint64_t bytes) {
  std::unique_lock lock(job_->mu_);
  job_->done_ += bytes;
  job_->rate_done_ += bytes;
  if (job_->kind_ != Job::Kind::kTask) return;
  // Sleep until the bytes done since rate_start_ fit the rate. A stop or a
  // pause ends the sleep (the body then stops or waits in
  // wait_while_paused); a rate change starts it over at the new rate.
  for (;;) {
    if (job_->rate_ == 0 || job_->stop_requested_ || job_->paused_) return;
    const auto due = job_->rate_start_ + std::chrono::microseconds(job_->rate_done_ * 1000000 / job_->rate_);
    if (std::chrono::steady_clock::now() >= due) return;
    const uint64_t gen = job_->rate_gen_;
    job_->cv_.wait_until(
        lock, due, [this, gen] { return job_->stop_requested_ || job_->paused_ || job_->rate_gen_ != gen; });
  }
}

Job::Job(std::string name, Kind kind, std::function<void()> wake)
    : name_(std::move(name)), kind_(kind), wake_(std::move(wake)) {
  rate_start_ = std::chrono::steady_clock::now();
  started_ = rate_start_;
}

Job::~Job() { stop(); }

JobState Job::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

void Job::run(Body body, std::string thread_name) {
  thread_ = std::thread([this, body = std::move(body), thread_name = std::move(thread_name)] {
    set_thread_name(thread_name.c_str());
    JobControl control(this);
    Status s = body(control);
    std::lock_guard lock(mu_);
    if (!s.ok()) {
      state_ = JobState::kFailed;
      error_ = s.message();
      spdlog::error("job {} failed: {}", name_, error_);
    } else {
      state_ = stop_requested_ ? JobState::kStopped : JobState::kDone;
    }
  });
}

void Job::stop() {
  std::lock_guard join(join_mu_);
  // Once joined, the wake function is never called again: it may point
  // into a target that is gone (a runner outlives its target).
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stop_requested_ = true;
    stopping_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
  if (wake_) wake_();
  thread_.join();
}

void Job::pause() {
  if (kind_ != Kind::kTask) return;
  {
    std::lock_guard lock(mu_);
    paused_ = true;
  }
  cv_.notify_all();  // ends a rate sleep, so the body reaches its pause point
}

void Job::resume() {
  {
    std::lock_guard lock(mu_);
    paused_ = false;
  }
  cv_.notify_all();
}

void Job::set_rate(uint64_t bytes_per_s) {
  {
    std::lock_guard lock(mu_);
    rate_ = bytes_per_s;
    rate_start_ = std::chrono::steady_clock::now();
    rate_done_ = 0;
    ++rate_gen_;
  }
  cv_.notify_all();
}

void Job::describe(nlohmann::json* out) const {
  std::lock_guard lock(mu_);
  auto& j = *out;
  j["name"] = name_;
  j["kind"] = kind_ == Kind::kService ? "service" : "task";
  j["state"] = job_state_name(state_);
  j["done_bytes"] = done_;
  j["total_bytes"] = total_;
  j["rate_bytes_s"] = rate_;
  j["error"] = error_.empty() ? nlohmann::json(nullptr) : nlohmann::json(error_);
  // Seconds left at the average speed so far (pauses included): null until
  // there is progress to go by, or when the job is not running.
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  if (state_ == JobState::kRunning && kind_ == Kind::kTask && done_ > 0 && total_ > done_ && elapsed > 0) {
    j["eta_s"] =
        static_cast<uint64_t>(static_cast<double>(total_ - done_) * elapsed / static_cast<double>(done_));
  } else {
    j["eta_s"] = nullptr;
  }
}

JobRunner::~JobRunner() { stop_all(); }

Job* JobRunner::start(std::string name, Job::Kind kind, Job::Body body, std::function<void()> wake) {
  std::string thread_name = owner_.empty() ? name : owner_ + "-" + name;
  auto job = std::unique_ptr<Job>(new Job(std::move(name), kind, std::move(wake)));
  Job* raw = job.get();
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  }
  raw->run(std::move(body), std::move(thread_name));
  return raw;
}

void JobRunner::stop_all() {
  std::vector<Job*> jobs;
  {
    std::lock_guard lock(mu_);
    for (auto& j : jobs_) jobs.push_back(j.get());
  }
  for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) (*it)->stop();
}

void JobRunner::pause_tasks() {
  std::lock_guard lock(mu_);
  for (auto& j : jobs_) j->pause();
}

void JobRunner::resume_tasks() {
  std::lock_guard lock(mu_);
  for (auto& j : jobs_) j->resume();
}

Job* JobRunner::find(std::string_view name) const {
  std::lock_guard lock(mu_);
  for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) {
    if ((*it)->name() == name) return it->get();
  }
  return nullptr;
}

nlohmann::json JobRunner::describe() const {
  nlohmann::json arr = nlohmann::json::array();
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_) {
    nlohmann::json one;
    j->describe(&one);
    arr.push_back(std::move(one));
  }
  return arr;
}

Result<std::string> JobRunner::message(std::string_view text) {
  // "job NAME VERB"
  if (text.substr(0, 4) != "job ") return Status::Error(ENOTSUP);
  std::string_view rest = text.substr(4);
  const size_t space = rest.find(' ');
  if (space == std::string_view::npos) {
    return Status::Error(EINVAL, "usage: job NAME pause|resume|stop|rate=BYTES_PER_S");
  }
  const std::string name(rest.substr(0, space));
  const std::string_view verb = rest.substr(space + 1);
  Job* job = find(name);
  if (!job) return Status::Error(ENOTSUP);  // maybe another node's job
  if (verb == "pause") {
    if (job->kind() != Job::Kind::kTask) {
      return Status::Error(EINVAL,
                           fmt::format("job {} is a service of its target and cannot be paused", name));
    }
    job->pause();
    return std::string("paused");
  }
  if (verb == "resume") {
    job->resume();
    return std::string("resumed");
  }
  if (verb == "stop") {
    if (job->kind() != Job::Kind::kTask) {
      return Status::Error(EINVAL,
                           fmt::format("job {} is a service of its target and cannot be stopped", name));
    }
    job->stop();
    return std::string("stopped");
  }
  if (verb.substr(0, 5) == "rate=") {
    auto rate = parse_size(verb.substr(5), "job rate");
    if (!rate.ok()) return rate.status();
    job->set_rate(*rate);
    return fmt::format("rate {} bytes/s", *rate);
  }
  return Status::Error(
      EINVAL, fmt::format("job {}: unknown verb '{}' (pause, resume, stop, rate=BYTES_PER_S)", name, verb));
}

}  // namespace bowstack
