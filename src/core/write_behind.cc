#include "core/write_behind.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace bowstack {

WriteBehind::WriteBehind(std::shared_ptr<JobRunner> jobs, Options opts, Hooks hooks)
    : opts_(std::move(opts)), hooks_(std::move(hooks)), jobs_(std::move(jobs)), pending_(opts_.blocks) {
  commit_job_ = jobs_->start(
      opts_.name, Job::Kind::kService,
      [this](JobControl&) {
        commit_loop();
        return Status::Ok();
      },
      [this] { request_stop(); });
  if (opts_.apply_job) {
    // Its stop also stops the commit job: the runner stops jobs last
    // started first, and this one cannot end while that one still commits.
    apply_job_ = jobs_->start(
        "apply", Job::Kind::kService,
        [this](JobControl&) {
          apply_loop();
          return Status::Ok();
        },
        [this] { request_stop(); });
  }
}

WriteBehind::~WriteBehind() { stop(); }

void WriteBehind::request_stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  applied_cv_.notify_all();
  done_cv_.notify_all();
}

void WriteBehind::stop() {
  request_stop();
  if (commit_job_) commit_job_->stop();
  if (apply_job_) apply_job_->stop();
}

Status WriteBehind::fail(Status s) {
  std::lock_guard lock(mu_);
  if (failed_.ok()) {
    spdlog::error("{}; writes fail from now on", s.context().empty() ? s.message() : s.context());
    failed_ = s;
    failed_flag_.store(true, std::memory_order_release);
  }
  done_cv_.notify_all();
  return s;
}

Status WriteBehind::failure() const {
  std::lock_guard lock(mu_);
  return failed_;
}

WriteBehind::Stats WriteBehind::stats() const {
  std::lock_guard lock(mu_);
  return Stats{batches_, enqueued_, pending_bytes_, enqueued_ - applied_};
}

bool WriteBehind::batch_full_locked() const {
  return queue_.size() >= opts_.full_batch || pending_bytes_ >= opts_.max_pending_bytes / 2;
}

void WriteBehind::end_gathering_locked() {
  if (gathering_ && (commit_now_ || batch_full_locked())) {
    gathering_ = false;  // one wake-up is enough
    work_cv_.notify_one();
  }
}

Status WriteBehind::submit(std::shared_ptr<QueuedOp> op) {
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] {
    return stop_ || !failed_.ok() || pending_bytes_ == 0 || pending_bytes_ < opts_.max_pending_bytes;
  });
  if (!failed_.ok()) return Status::Error(EIO, why(failed_));
  if (stop_) return Status::Error(EIO, "the write-behind queue has stopped");
  if (opts_.blocks > 0 && op->first < op->end) {
    pending_.add(op->first, op->end, [&](uint64_t b) {
      if (hooks_.block_queued) hooks_.block_queued(*op, b);
    });
    pending_blocks_.store(pending_.held_blocks(), std::memory_order_release);
  }
  op->queued = true;
  pending_bytes_ += op->bytes;
  ++enqueued_;
  submitted_.fetch_add(1, std::memory_order_release);
  queue_.push_back(op);
  if (op->wait) commit_now_ = true;  // its submitter waits for the batch: no gathering
  if (commit_waiting_) {
    commit_waiting_ = false;
    work_cv_.notify_one();
  } else {
    end_gathering_locked();
  }
  if (!op->wait) return Status::Ok();
  done_cv_.wait(lock, [&] { return op->done; });
  return op->status;
}

Status WriteBehind::drain() {
  std::unique_lock lock(mu_);
  const uint64_t target = enqueued_;
  if (applied_ < target) {
    commit_now_ = true;  // the commit job must not gather while a drain waits
    end_gathering_locked();
  }
  done_cv_.wait(lock, [&] { return applied_ >= target; });
  return failed_;
}

void WriteBehind::wait_not_pending(uint64_t first, uint64_t end) {
  if (pending_blocks_.load(std::memory_order_acquire) == 0 || first >= end) return;
  std::unique_lock lock(mu_);
  done_cv_.wait(lock, [&] { return pending_.empty() || !pending_.overlaps(first, end); });
}

void WriteBehind::commit_loop() {
  for (;;) {
    Batch batch;
    {
      std::unique_lock lock(mu_);
      while (!stop_ && queue_.empty()) {
        commit_waiting_ = true;
        work_cv_.wait(lock);
      }
      commit_waiting_ = false;
      if (queue_.empty()) {  // stopping, and everything is handed over
        commit_ended_ = true;
        applied_cv_.notify_all();
        return;
      }
      if (opts_.gather_us > 0 && !stop_ && !commit_now_ && !batch_full_locked()) {
        gathering_ = true;
        work_cv_.wait_for(lock, std::chrono::microseconds(opts_.gather_us),
                          [this] { return stop_ || commit_now_ || batch_full_locked(); });
        gathering_ = false;
      }
      commit_now_ = false;
      batch.assign(queue_.begin(), queue_.end());
      queue_.clear();
      ++batches_;
    }
    Status st = failure();
    if (st.ok()) st = hooks_.commit(batch);
    uint64_t freed = 0;
    if (hooks_.committed) {
      uint64_t before = 0, after = 0;
      for (const auto& op : batch) before += op->bytes;
      hooks_.committed(batch);
      for (const auto& op : batch) after += op->bytes;
      freed = before - after;
    }
    if (!apply_job_) {
      if (freed > 0) {
        std::lock_guard lock(mu_);
        pending_bytes_ -= freed;
      }
      apply_and_release(batch, st);
      continue;
    }
    {
      std::lock_guard lock(mu_);
      pending_bytes_ -= freed;
      committed_.push_back(Committed{std::move(batch), std::move(st)});
      if (apply_waiting_) {
        apply_waiting_ = false;
        applied_cv_.notify_one();
      }
    }
    if (freed > 0) done_cv_.notify_all();
  }
}

void WriteBehind::apply_loop() {
  for (;;) {
    Committed next;
    {
      std::unique_lock lock(mu_);
      while (!commit_ended_ && committed_.empty()) {
        apply_waiting_ = true;
        applied_cv_.wait(lock);
      }
      apply_waiting_ = false;
      if (committed_.empty()) return;  // the commit job ended, and everything is applied
      next = std::move(committed_.front());
      committed_.pop_front();
    }
    apply_and_release(next.batch, next.status);
  }
}

void WriteBehind::apply_and_release(Batch& batch, const Status& committed) {
  hooks_.apply(batch, committed);
  {
    std::lock_guard lock(mu_);
    const bool healthy = failed_.ok();
    for (auto& op : batch) {
      if (opts_.blocks > 0 && op->first < op->end) {
        pending_.remove(op->first, op->end, [&](uint64_t b) {
          if (hooks_.block_released) hooks_.block_released(b, healthy);
        });
      }
      pending_bytes_ -= op->bytes;
      op->done = true;
      ++applied_;
    }
    pending_blocks_.store(pending_.held_blocks(), std::memory_order_release);
  }
  done_cv_.notify_all();
  if (hooks_.finished) hooks_.finished(batch);
}

}  // namespace bowstack
