#include "targets/mirror/write_pool.h"

#include <fmt/format.h>

namespace bowstack::mirror {

WritePool::WritePool(JobRunner& jobs, std::string prefix, size_t max_threads)
    : jobs_(jobs), prefix_(std::move(prefix)), max_threads_(max_threads) {}

void WritePool::submit(std::function<void()> work, std::function<void()> then) {
  std::unique_lock lock(mu_);
  if (stopping_ || max_threads_ == 0) {
    lock.unlock();
    work();
    then();
    return;
  }
  queue_.push_back(Task{std::move(work), std::move(then)});
  if (idle_ >= queue_.size()) {
    cv_.notify_one();
    return;
  }
  if (threads_.size() < max_threads_) {
    // Counted idle until it takes a task, so that the next submit does not
    // start another thread for the same task.
    ++idle_;
    const std::string name = fmt::format("{}{}", prefix_, threads_.size());
    threads_.push_back(jobs_.start(
        name, Job::Kind::kService, [this](JobControl&) { return body(); },
        [this] {
          std::lock_guard wake(mu_);
          stopping_ = true;
          cv_.notify_all();
        }));
  }
}

Status WritePool::body() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) {
      --idle_;
      return Status::Ok();  // stopping, and nothing is left to run
    }
    auto task = std::move(queue_.front());
    queue_.pop_front();
    --idle_;
    lock.unlock();
    task.work();
    lock.lock();
    ++idle_;
    lock.unlock();
    task.then();
    lock.lock();
  }
}

void WritePool::stop() {
  std::vector<Job*> threads;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
    threads = threads_;
  }
  for (Job* j : threads) j->stop();  // waits for each; they drain the queue first
}

size_t WritePool::threads() const {
  std::lock_guard lock(mu_);
  return threads_.size();
}

}  // namespace bowstack::mirror
