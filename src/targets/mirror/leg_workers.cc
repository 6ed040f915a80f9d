#include "targets/mirror/leg_workers.h"

namespace bowstack::mirror {

LegWorkers::LegWorkers(JobRunner& jobs, size_t legs) {
  for (size_t i = 1; i < legs; ++i) {
    auto w = std::make_unique<Worker>();
    Worker* raw = w.get();
    raw->job = jobs.start(
        "leg" + std::to_string(i), Job::Kind::kService,
        [raw](JobControl&) {
          std::unique_lock lock(raw->mu);
          for (;;) {
            raw->cv.wait(lock, [raw] { return raw->stopping || !raw->queue.empty(); });
            if (raw->queue.empty()) return Status::Ok();  // stopping, nothing left
            auto task = std::move(raw->queue.front());
            raw->queue.pop_front();
            lock.unlock();
            task();
            lock.lock();
          }
        },
        [raw] {
          std::lock_guard lock(raw->mu);
          raw->stopping = true;
          raw->cv.notify_all();
        });
    workers_.push_back(std::move(w));
  }
}

std::vector<Status> LegWorkers::run(std::vector<std::function<Status()>> tasks) {
  std::vector<Status> out(tasks.size());
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
  } wait;
  bool inline_all = false;
  {
    std::lock_guard lock(stop_mu_);
    inline_all = stopped_;
  }
  for (size_t i = 1; i < tasks.size(); ++i) {
    if (!tasks[i]) continue;
    if (inline_all || i - 1 >= workers_.size()) {
      out[i] = tasks[i]();
      continue;
    }
    Worker& w = *workers_[i - 1];
    {
      std::lock_guard l(wait.mu);
      ++wait.left;
    }
    std::lock_guard lock(w.mu);
    if (w.stopping) {  // stopped meanwhile: run it here
      std::lock_guard l(wait.mu);
      --wait.left;
      out[i] = tasks[i]();
      continue;
    }
    w.queue.push_back([&, i] {
      Status s = tasks[i]();
      std::lock_guard l(wait.mu);
      out[i] = std::move(s);
      if (--wait.left == 0) wait.cv.notify_all();
    });
    w.cv.notify_one();
  }
  if (!tasks.empty() && tasks[0]) out[0] = tasks[0]();
  std::unique_lock l(wait.mu);
  wait.cv.wait(l, [&] { return wait.left == 0; });
  return out;
}

void LegWorkers::stop() {
  {
    std::lock_guard lock(stop_mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  for (auto& w : workers_) w->job->stop();  // drains what was queued first
}

}  // namespace bowstack::mirror
