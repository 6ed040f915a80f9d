// bow: backup on write (Android dm-bow compatible; format in
// docs/format/bow.md, behaviour in docs/targets/bow.md).
//
// States: TRIM (trims mark free space and are not passed down) ->
// CHECKPOINT (the first overwrite of checkpoint data saves it to free space
// and logs it in block 0) -> COMMITTED (pass-through).
//
// Concurrency design (the shipped dm-bow held one mutex across all backup
// I/O; this does not):
//  * mu_ guards the block map, the busy set, the state and the live-block-0
//    location. It is held only for bookkeeping, never across I/O.
//  * Every write (and trim) in TRIM/CHECKPOINT marks its blocks busy for its
//    duration; overlapping operations wait, others run in parallel.
//  * A write that must save checkpoint data reads it in its own thread, then
//    hands the saved copy, its log entries and its new data to the core's
//    write-behind (core/write_behind.h) and returns (unless FUA). Its
//    commit job (the committer) gathers: with fewer
//    than a full batch queued it waits up to gather_us for more (the writes
//    are acknowledged; flushes and FUA writes end the wait). For a whole
//    batch the committer makes the saved copies and the new log entries
//    (beyond `count`) durable behind one barrier (BlockDevice::write_batch:
//    on a file, writeback of just those ranges and one device flush, not an
//    fdatasync of the whole image),
//    then publishes the entries with a FUA write of the header: two barriers
//    per batch, also when the batch overflows the log block (while a free
//    block is left for a partly filled log block). Only then does
//    it pass the batch to the apply job (the applier), which writes the batch's
//    overwrites and updates the map: the saved copy and its log entry are
//    stable before the overwrite can reach the backing store. The applier
//    works on one batch while the committer waits for the next one's
//    barriers. The blocks stay busy until applied, so reads of them wait
//    for the new data.
//  * flush() waits until every write acknowledged before it is applied, makes
//    the resume journal durable, then flushes the device below.
//
// Lock order: log_mu_, then mu_, then the pipeline's lock (inside
// WriteBehind). A thread holding one of them may take only those after it
// (the log writer takes mu_ to update the map; stats() asks the pipeline
// under mu_); none is held across I/O except log_mu_, which serialises the
// log block's writers (committer and transitions). The pipeline calls bow's
// hooks with no lock of its own held.
// Condition variable: cv_ with mu_.
//
// Files, one job each: bow_target.cc (construction, jobs, status,
// messages), bow_io.cc (the front end: reads, writes, trims, flushes, the
// busy set), bow_plan.cc (the backup planner), bow_commit.cc (the commit and
// apply hooks), bow_log_writer.cc (block 0's log and rollovers), bow_state.cc
// (TRIM -> CHECKPOINT -> COMMITTED, automatic commit, resume);
// bow_target_internal.h holds what they share.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/aligned_buf.h"
#include "core/block_device.h"
#include "core/block_set.h"
#include "core/jobs.h"
#include "core/space_reserver.h"
#include "core/target_registry.h"
#include "core/write_behind.h"
#include "targets/bow/bow_format.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/range_map.h"
#include "targets/bow/resume_journal.h"
#include "targets/bow/span_list.h"

namespace bowstack::bow {

enum class State : int { kTrim = 0, kCheckpoint = 1, kCommitted = 2 };
const char* state_name(State s);

struct BowOptions {
  uint32_t block_size = 4096;
  bool block_size_given = false;           // an explicit block_size must match a resumed log
  uint64_t auto_commit_below = 0;          // bytes of free space; 0 = never commit automatically
  std::string meta_path;                   // resume journal; empty = a crash cannot be resumed
  uint64_t max_pending_bytes = 64u << 20;  // acknowledged overwrites waiting for their log commit
  // How long the committer waits for more acknowledged writes before it
  // commits a small batch (flushes and FUA writes never wait); 0 = never.
  uint32_t gather_us = 500;
  Env* env = nullptr;  // where the resume journal lives; null = the real filesystem
  // Where the committer, applier and automatic commit run (shared with the
  // core, which reports them); null = a runner of the target's own.
  std::shared_ptr<JobRunner> jobs;
};

class BowTarget final : public StackedDevice {
 public:
  // Opens the target over `lower`: a fresh device starts in TRIM; a device
  // whose block 0 holds a bow log resumes its checkpoint (needs the journal).
  static Result<std::shared_ptr<BowTarget>> open(std::shared_ptr<BlockDevice> lower, BowOptions opts);
  // Registry factory: slot data, side file metadata (the resume journal).
  static Result<std::shared_ptr<BlockDevice>> create(TargetContext& ctx, const TargetArgs& args);
  static TargetInfo info();
  ~BowTarget() override;

  std::string_view kind() const override { return "bow"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override;
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  // A flush: the resume journal's claims must be durable before bow goes,
  // and nothing below would sync them later.
  Status detach() override { return flush(); }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status cache(uint64_t offset, uint64_t length) override;
  // In CHECKPOINT, prefetches the first block's map type (the line
  // write() plans with; a miss on a random block of a big map). Lock-free.
  void will_write(uint64_t offset, uint64_t length) noexcept override;
  Result<std::string> message(std::string_view text) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  // State transitions (also reachable as messages "checkpoint"/"commit").
  Status checkpoint();
  Status commit();
  State state() const { return state_.load(std::memory_order_acquire); }

  struct Stats {
    State state;
    uint32_t block_size;
    uint64_t free_bytes;
    uint64_t backed_up_bytes;
    uint64_t log_blocks;   // log blocks written in this checkpoint (sequence + 1)
    uint64_t log_entries;  // entries in all log blocks
    uint64_t range_count;
    uint64_t pending_bytes;
    uint64_t sector0_block;  // where the live block 0 is (0 outside CHECKPOINT)
    bool failed;
  };
  Stats stats() const;
  // Diagnostics (tests, inspect): the map's type of one block.
  BlockType block_type(uint64_t block) const;

 private:
  struct Pending;
  struct Plan;
  class OpGuard;

  BowTarget(std::shared_ptr<BlockDevice> lower, BowOptions opts, uint64_t blocks);
  void start_write_behind();

  using SpanRefs = std::span<const std::pair<uint64_t, uint64_t>>;  // [start, end) in blocks
  void release_busy(SpanRefs spans);
  bool overlaps_busy_locked(uint64_t start, uint64_t end) const;
  void wait_quiescent_locked(std::unique_lock<std::mutex>& lock);

  // A checkpoint write whose plan saves data: reads it, hands everything
  // to the committer (which releases `spans` and the plan's destinations).
  Status write_saving(uint64_t first, std::span<const std::byte> data, uint32_t flags, SpanRefs spans,
                      const Plan& plan, ResumeJournal* journal);
  // A checkpoint write that saves nothing: claims `claims` (already typed
  // changed in the map) in the journal, writes, releases `spans`.
  Status write_direct(uint64_t first, std::span<const std::byte> data, uint32_t flags, uint64_t s0c,
                      SpanRefs spans, SpanRefs claims, ResumeJournal* journal);
  Status read_blocks_physical(uint64_t first, uint64_t count, std::span<std::byte> out, uint64_t s0c);
  Status write_physical(uint64_t first, std::span<const std::byte> data, uint32_t flags, uint64_t s0c);
  Status plan_backups_locked(uint64_t first, uint64_t count, Plan* plan);
  // Reserves backing space for what a saving write leaves to the jobs
  // (BlockDevice::reserve): ENOSPC when the backing store is full.
  Status reserve_backing(uint64_t first, uint64_t count, const Plan& plan);
  void undo_plan_locked(const Plan& plan);
  // Gives back everything a plan took (destinations, claims, rollover
  // reservations) and the write's busy spans, for a write that fails before
  // it is queued. Takes mu_.
  void abandon_plan(const Plan& plan, SpanRefs spans);

  // Commit hook: makes a batch's saved copies and log entries durable and
  // publishes them (two barriers per batch).
  Status log_batch(WriteBehind::Batch& batch);
  // Apply hook: writes the overwrites of a logged batch and updates the
  // map. Batches come in log order.
  Status apply_batch(WriteBehind::Batch& batch, Status logged);
  // Appends a batch's entries to the log. `durable` (the batch's saved
  // copies) is made durable together with the log writes that must precede
  // the header that publishes the entries. REQUIRES: log_mu_ held.
  Status append_entries(const std::vector<LogEntry>& entries, std::optional<size_t> s0c_move,
                        std::vector<WriteRef> durable);
  Status rollover_locked_log(uint64_t dest);
  Status write_log();
  Status fail(Status s);
  Status failure() const;

  void maybe_auto_commit();
  void start_auto_commit();
  Status resume_from(const LogChain& chain);

  const BowOptions opts_;
  Env* const env_;
  const std::shared_ptr<JobRunner> jobs_;
  const uint32_t bs_;  // block size
  // One-block buffers (saved copies, data of small writes). It keeps up to
  // max_pending_bytes of idle buffers: what a burst of pending overwrites
  // held at its peak anyway, kept rather than returned to malloc and asked
  // for again (heap growth showed in profiles as page faults). Declared
  // early: it must outlive every Pending that holds its buffers.
  BufferPool pool_;
  const uint32_t spb_;  // 512-byte sectors per block
  const uint64_t blocks_;
  Geometry geometry_;

  mutable std::mutex mu_;
  std::condition_variable cv_;              // busy_/transition_/reads_ changes
  std::atomic<State> state_{State::kTrim};  // written under mu_
  RangeMap map_;                            // guarded by mu_ (but prefetch())
  BlockSet busy_;                           // guarded by mu_
  bool transition_ = false;                 // guarded by mu_
  uint64_t reads_in_flight_ = 0;            // guarded by mu_
  uint64_t s0c_ = 0;                        // guarded by mu_: live block 0 location (block)
  // Guarded by mu_: entries the log can still take (room in the current log
  // block plus cap-1 per reserved block) minus entries promised to writes
  // not yet committed. Signed: releasing a reservation may dip below zero
  // until the next plan reserves again.
  int64_t log_slots_ = 0;
  // Guarded by mu_: free blocks reserved to save full log blocks into. They
  // stay free space to the filesystem: a write to one takes it back.
  std::set<uint64_t> rollover_blocks_;
  // Guarded by mu_: rollover blocks whose space in the backing store no
  // writer has reserved yet (reserve_backing). The log writer prefers the
  // others, which every write queued so far made sure of.
  std::set<uint64_t> rollover_unbacked_;
  // Guarded by mu_: reserved blocks the committer is writing a full log
  // block into. A writer whose range holds one waits until the copy is
  // durable before it plans (it must save what restore will read there).
  std::set<uint64_t> log_saving_;
  Status failed_;                    // guarded by mu_: sticky
  bool auto_commit_failed_ = false;  // guarded by mu_

  // Acknowledged overwrites waiting for their log commit: the core's
  // write-behind, with jobs "commit" and "apply" and gathering.
  std::unique_ptr<WriteBehind> wb_;
  // Backing space for what is written after an acknowledgement (saved
  // copies, overwrites, log rollovers); bow never deallocates below.
  SpaceReserver space_;

  // Log state: only the committer thread and transitions (with the committer
  // idle) touch these.
  std::mutex log_mu_;
  AlignedBuf log_;  // the current log block, as on disk (aligned: it goes out with direct I/O)
  LogHeader log_header_;

  std::shared_ptr<ResumeJournal> journal_;  // guarded by mu_; null without meta_path or a checkpoint
  std::atomic<uint64_t> backed_up_bytes_{0};
  std::atomic<uint64_t> log_entries_{0};
  std::atomic<uint64_t> log_blocks_{0};
  std::atomic<bool> auto_commit_started_{false};
  Job* auto_commit_ = nullptr;  // set once, by the writer that starts it (auto_commit_started_)
};

}  // namespace bowstack::bow
