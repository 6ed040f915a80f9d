// era: tracks which blocks of the origin were written in each era (like
// Linux dm-era). Behaviour in docs/targets/era.md, metadata format in
// docs/format/era.md.
//
// The rule: before the first write to a block in the current era reaches
// the origin, the block's bit is committed (written and flushed) to the
// on-disk writeset of that era. The in-core bit, which lets later writes to
// the block pass straight through, is set only after that commit.
//
// Concurrency design:
//  * Fast path: a write whose blocks are all marked (in-core bit set) goes
//    straight down; no lock is held across I/O, only the era gate (a counter
//    under gate_mu_) is entered and left around it.
//  * First writes are write-behind, through the core's WriteBehind: the
//    data is copied into an op, queued, and the write is acknowledged (it is
//    volatile until a flush, as on any disk). The commit job takes all
//    queued ops, commits all their new bits with one write_dirty_buffers
//    (writes + ONE metadata flush: group commit), and only then writes their
//    data to the origin in queue order. FUA writes, trims and write-zeroes
//    wait for that.
//  * While an op is queued, its blocks are pending in the pipeline: their
//    in-core bits are clear, so later writes to them queue behind it (order
//    kept), and reads of them wait until it is applied (read-your-writes).
//  * flush() waits until every op queued before it is applied, then flushes
//    the origin. No metadata flush is needed there: every bit was made
//    durable before its data was written.
//  * checkpoint / take_metadata_snap close the era gate (new writes wait,
//    the queue drains) only for the superblock commit that starts the new
//    era; the fold of the old writeset into the era array runs while writes
//    flow. admin_mu_ serialises them.
//  * A metadata failure is sticky: writes then fail with EIO, because their
//    blocks could no longer be tracked.
//
// Files: era_target.cc (construction, factory, messages, status),
// era_eras.cc (recovery, eras, snapshots, the gate, in-core bits),
// era_io.cc (the data path and the write-behind hooks).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/jobs.h"
#include "core/space_reserver.h"
#include "core/target_registry.h"
#include "core/write_behind.h"
#include "targets/era/era_metadata.h"

namespace bowstack::era {

struct EraOptions {
  uint32_t block_size = 4096;              // bytes of origin per tracked block
  bool block_size_given = false;           // an explicit block_size must match existing metadata
  uint64_t max_pending_bytes = 64u << 20;  // acknowledged first writes waiting for their commit
  BufioOptions bufio{};                    // metadata cache
  std::string metadata_path;               // for status only
  // Where the committer runs (shared with the core, which reports it);
  // null = a runner of the target's own.
  std::shared_ptr<JobRunner> jobs;
};

class EraTarget final : public StackedDevice {
 public:
  // Opens (formatting a blank metadata device first) and recovers: a
  // pending fold is redone, and a non-empty current writeset left by a
  // crash or a previous run is archived (the era advances). Both devices are
  // used only through BlockDevice calls; the metadata device's flushes are
  // the only metadata durability points.
  static Result<std::shared_ptr<EraTarget>> open(std::shared_ptr<BlockDevice> origin,
                                                 std::shared_ptr<BlockDevice> metadata, EraOptions opts);
  // Registry factory: slots data and metadata (created by the core, sized
  // for the origin, when absent or empty).
  static Result<std::shared_ptr<BlockDevice>> create(TargetContext& ctx, const TargetArgs& args);
  static TargetInfo info();
  ~EraTarget() override;

  std::string_view kind() const override { return "era"; }
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  // Waits until every queued write is applied (no flush).
  Status detach() override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Result<std::string> message(std::string_view text) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  // Archives the current writeset and starts a new era; returns it.
  Result<uint32_t> checkpoint();
  Status take_metadata_snap();
  Status drop_metadata_snap();

  uint32_t current_era() const { return era_.load(std::memory_order_acquire); }
  uint32_t block_size() const { return bs_; }
  uint64_t nr_blocks() const { return nr_blocks_; }
  // In-core: the block may be written without a commit (tests).
  bool marked(uint64_t block) const;
  // dm-era's status line: "<md block size in sectors> <used>/<total> <era> <held root|->".
  std::string dm_status() const;

  struct Stats {
    uint64_t commits = 0;         // metadata commits of writeset bits
    uint64_t committed_bits = 0;  // bits set in the current era's writeset
    uint64_t fast_writes = 0;
    uint64_t queued_writes = 0;
    uint64_t pending_bytes = 0;
    bool failed = false;
  };
  Stats stats() const;

 private:
  struct Op;
  EraTarget(std::shared_ptr<BlockDevice> origin, std::unique_ptr<EraMetadata> md, EraOptions opts,
            uint64_t nr_blocks);
  Status recover();
  Status finish_fold();
  Status advance_era();  // REQUIRES: admin_mu_ held, gate closed

  std::pair<uint64_t, uint64_t> block_range(uint64_t offset, uint64_t length) const;
  bool all_marked(uint64_t first, uint64_t end) const;
  void set_marked(uint64_t b);
  void clear_marked(uint64_t b);
  void start_write_behind();
  Status submit(std::shared_ptr<Op> op);
  void apply_batch(WriteBehind::Batch& batch, const Status& committed);
  Status range_op(bool zeroes, uint64_t offset, uint64_t length, uint32_t flags);
  Status range_op_gated(bool zeroes, uint64_t offset, uint64_t length, uint32_t flags);
  // Waits until no acknowledged write to [offset, offset+length) is queued.
  void wait_not_pending(uint64_t offset, uint64_t length);

  void gate_enter();
  void gate_leave(uint64_t n = 1);
  void gate_close();
  void gate_open();

  Status commit_bits(std::vector<uint64_t>& bits);
  Status fail(Status s);
  Status failure() const;

  const uint32_t bs_;
  const uint64_t nr_blocks_;
  const EraOptions opts_;
  const std::unique_ptr<EraMetadata> md_;

  // In-core bits of the current era. marked_: committed and not pending
  // (atomic: read lock-free by writers). committed_: exactly the on-disk
  // writeset; touched only by the committer, or by admin with the gate closed.
  std::vector<std::atomic<uint64_t>> marked_;
  std::vector<uint64_t> committed_;
  std::atomic<uint32_t> era_{kFirstEra};

  // Era gate: writes in flight (including queued ones) in the current era.
  std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  uint64_t active_ = 0;  // guarded by gate_mu_
  bool closed_ = false;  // guarded by gate_mu_

  // First writes wait here for their bits (the core's write-behind:
  // group commit on its job "commit", pending blocks, the memory bound and
  // the sticky metadata failure).
  std::shared_ptr<JobRunner> jobs_;
  std::unique_ptr<WriteBehind> wb_;
  // Origin space for queued first writes (they are acknowledged first);
  // trims and zeroes passed down may punch holes, so they forget().
  SpaceReserver space_;

  std::mutex admin_mu_;  // checkpoint, snapshots, recovery

  std::atomic<uint64_t> commits_{0}, committed_bits_{0}, fast_writes_{0}, queued_writes_{0};
};

}  // namespace bowstack::era
