// Write-behind with group commit: the core's one copy of the machinery that
// lets a target acknowledge a write before the metadata it needs is
// durable, and still write that metadata first.
//
// A target queues operations (its own subclass of QueuedOp). The commit
// job takes everything queued as one batch and calls the target's commit
// hook, which makes the whole batch's metadata durable behind one barrier
// (era's writeset bits, bow's saved copies and log entries, csum's
// checksums, a mirror's bitmap bits): N queued writes cost one metadata
// flush, not N. Only then does the apply hook write the batch's data, in
// queue order. So the metadata is always on stable storage before the data
// it describes can reach the device below.
//
// What the pipeline keeps for its targets:
//  * Pending blocks. With Options::blocks set, every queued operation holds
//    its block range [first, end) in a counted BlockSet until applied. The
//    target learns (under the pipeline's lock) which blocks became held and
//    which became free, so it can route later writes to those blocks
//    through the queue (order kept) and let reads wait for them
//    (wait_not_pending: read-your-writes).
//  * A memory bound: submit() waits while max_pending_bytes are held by
//    acknowledged operations not yet applied (one operation may exceed it
//    when nothing else is pending).
//  * Gathering: with gather_us > 0 the commit job waits that long for a
//    fuller batch (the queued writes are acknowledged already, so waiting
//    costs no client anything); a full batch, memory pressure, an operation
//    whose submitter waits, a drain() and stopping end the wait at once.
//  * An apply job of its own (Options::apply_job): the commit job then
//    commits the next batch while this one's data is written.
//  * A sticky failure: after fail(), submit() refuses new operations with
//    EIO and drain() returns the failure. Queued operations are still
//    handed to apply (with the failed status) so that none is forgotten.
//
// Lock order: a target may call submit(), drain() and wait_not_pending()
// holding none of its own locks that its hooks take. The hooks
// block_queued and block_released run under the pipeline's lock and must
// not block or call back into the pipeline; commit, committed, apply and
// finished run on the jobs with no pipeline lock held.
//
// Thread-safety: every public method may be called from any thread.
// Lifetime: stop() (or the destructor) applies everything queued, then
// stops the jobs; the hooks are not called after it returns. A target
// stops its pipeline before its members die.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/block_set.h"
#include "core/jobs.h"
#include "core/status.h"

namespace bowstack {

// One acknowledged (or waited-for) operation in a write-behind queue. A
// target derives its own operation type from this.
struct QueuedOp {
  virtual ~QueuedOp() = default;
  // Blocks held in the pending set while queued (empty when first == end,
  // or when the pipeline tracks no blocks).
  uint64_t first = 0, end = 0;
  // Memory the operation holds until applied. The committed hook may lower
  // it for memory it let go (on the commit job, before apply).
  uint64_t bytes = 0;
  // The submitter waits until the operation is applied (FUA, trim): its
  // batch is committed without gathering.
  bool wait = false;

  // Set by the pipeline. Read them only after submit() returned (for a
  // waited operation) or after a drain() that covers the operation.
  bool queued = false;  // accepted by submit()
  bool done = false;    // applied (or failed)
  Status status;        // the apply hook's verdict
};

class WriteBehind {
 public:
  using Batch = std::vector<std::shared_ptr<QueuedOp>>;

  struct Options {
    uint64_t max_pending_bytes = 64u << 20;
    uint32_t gather_us = 0;  // 0: commit what is queued at once
    size_t full_batch = 64;  // operations that make a batch worth committing without gathering
    bool apply_job = false;  // apply on a job of its own ("apply"), beside the commit job
    uint64_t blocks = 0;     // size of the pending set in the target's blocks; 0: none
    std::string name = "commit";
  };

  struct Hooks {
    // Under the pipeline's lock, as an operation is queued: each block of
    // its range that no queued operation held before. Optional.
    std::function<void(QueuedOp& op, uint64_t block)> block_queued;
    // Commit job: make the batch's metadata durable (one barrier for the
    // batch). Its result is passed to apply. Required.
    std::function<Status(Batch& batch)> commit;
    // Commit job, after commit: let go of memory the batch no longer needs
    // and lower the operations' bytes by it. Optional.
    std::function<void(Batch& batch)> committed;
    // Apply: write the batch's data in order and set every operation's
    // status. `committed` is the commit hook's result; on failure apply must
    // fail the operations without writing their data. Required.
    std::function<void(Batch& batch, const Status& committed)> apply;
    // Under the pipeline's lock, after apply: each block that no queued
    // operation holds any more. `healthy`: no sticky failure. Optional.
    std::function<void(uint64_t block, bool healthy)> block_released;
    // After the batch's operations are done and released, with no lock
    // held. Optional.
    std::function<void(Batch& batch)> finished;
  };

  // Starts the jobs (Options::name, and "apply" with apply_job) on `jobs`.
  WriteBehind(std::shared_ptr<JobRunner> jobs, Options opts, Hooks hooks);
  ~WriteBehind();
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // Queues `op` once the memory bound allows (op->queued then true);
  // returns at once unless op->wait, in which case it returns the
  // operation's status once applied. After a failure or a stop the
  // operation is refused (EIO, op->queued false) and nothing of it is held.
  // REQUIRES: op->first <= op->end <= Options::blocks when blocks are kept.
  Status submit(std::shared_ptr<QueuedOp> op);
  // Returns once every operation submitted before the call is applied
  // (their batches go without gathering), with the sticky failure if any.
  Status drain();
  // Returns once no queued operation holds a block of [first, end).
  void wait_not_pending(uint64_t first, uint64_t end);
  // Applies everything queued, then stops the jobs. Idempotent.
  void stop();

  // The sticky failure: logged once, refuses later submissions.
  Status fail(Status s);
  Status failure() const;
  bool failed() const { return failed_flag_.load(std::memory_order_acquire); }

  struct Stats {
    uint64_t batches = 0;        // commit hook calls
    uint64_t ops = 0;            // operations queued so far
    uint64_t pending_bytes = 0;  // held now
    uint64_t pending_ops = 0;    // queued, not yet applied
  };
  Stats stats() const;
  // Operations submitted so far, without the lock: a reader that finds a
  // mismatch tells by it whether a write was queued since it began (and
  // may have changed the checksums under it) or the mismatch is real.
  uint64_t submitted() const { return submitted_.load(std::memory_order_acquire); }

 private:
  void commit_loop();
  void apply_loop();
  void apply_and_release(Batch& batch, const Status& committed);
  bool batch_full_locked() const;
  // Wakes a gathering commit job if it should stop waiting. REQUIRES: mu_.
  void end_gathering_locked();
  void request_stop();

  const Options opts_;
  const Hooks hooks_;
  const std::shared_ptr<JobRunner> jobs_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;              // commit job: queue non-empty / stop / gather end
  std::condition_variable applied_cv_;           // apply job: committed_ non-empty / stop
  std::condition_variable done_cv_;              // an operation was applied; memory freed; failure
  std::deque<std::shared_ptr<QueuedOp>> queue_;  // guarded by mu_
  struct Committed {
    Batch batch;
    Status status;
  };
  std::deque<Committed> committed_;          // guarded by mu_: for the apply job, in commit order
  BlockSet pending_;                         // guarded by mu_
  std::atomic<uint64_t> pending_blocks_{0};  // pending_.held_blocks(), for reads' fast check
  // Guarded by mu_: a job waiting for work is flagged so that only the first
  // submitter to find it so wakes it (a futex call per write cost much).
  bool commit_waiting_ = false;
  bool apply_waiting_ = false;
  std::atomic<uint64_t> submitted_{0};
  bool gathering_ = false;      // guarded by mu_: the commit job waits for a fuller batch
  bool commit_now_ = false;     // guarded by mu_: a waiter wants the next batch without gathering
  bool stop_ = false;           // guarded by mu_: no new operations; jobs drain and end
  bool commit_ended_ = false;   // guarded by mu_: the commit job has handed over its last batch
  uint64_t pending_bytes_ = 0;  // guarded by mu_
  uint64_t enqueued_ = 0;       // guarded by mu_
  uint64_t applied_ = 0;        // guarded by mu_
  uint64_t batches_ = 0;        // guarded by mu_
  Status failed_;               // guarded by mu_
  std::atomic<bool> failed_flag_{false};
  Job* commit_job_ = nullptr;
  Job* apply_job_ = nullptr;
};

}  // namespace bowstack
