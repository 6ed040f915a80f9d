// csum over layout=integrity: one device in Linux dm-integrity's format
// (docs/format/csum.md section 11) served in mode rebuild, the "whole
// device" rule. The export is provided_data_sectors; block b's data and its
// crc32c tag c(b, D) live where the format module's Layout puts them.
//
// Crash rule: an open for writing sets RECALCULATING (recalc_sector 0)
// durably before its first write; a clean close makes every tag durable and
// clears it. An open that finds it set recomputes every tag from
// recalc_sector up (persisting progress there) before serving: the crash's
// own damage is accepted, which this mode cannot avoid. So while open no
// tag needs to be durable before its data, or at all before close.
//
// Concurrency:
//  * Writes go through the core's write-behind (core/write_behind.h), which
//    orders them: the commit job stores a batch's final tags in the cached
//    tag pages (last write of a block wins), the apply hook then writes the
//    data in queue order. Two writes of one block can never leave one's data
//    with the other's tag.
//  * Reads wait for queued writes of their blocks, read data then tags, and
//    check again once on a mismatch (a write may land between the two).
//  * tags_mu_ guards the bytes of tag pages in the cache (a page holds the
//    tags of up to 1024 blocks, read by many and written by the commit job);
//    it is never held across I/O.
//
// Not here: mode journal (the kernel's journal format), scrub, requests
// smaller than a block.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/bufio.h"
#include "core/jobs.h"
#include "core/target_registry.h"
#include "core/write_behind.h"
#include "targets/csum/checksum_op.h"
#include "targets/csum/integrity_format.h"

namespace bowstack::csum {

struct IntegrityOptions {
  uint32_t block_size = 0;  // 0: the superblock's; else it must match
  uint64_t max_pending_bytes = 64u << 20;
  uint64_t cache_bytes = 16u << 20;  // tag pages kept in memory
  std::shared_ptr<JobRunner> jobs;   // null: a runner of the target's own
  // How often a recomputation after a crash records its progress in
  // recalc_sector (each record costs two flushes).
  std::chrono::milliseconds recalc_persist_every{5000};
};

class IntegrityTarget final : public StackedDevice {
 public:
  // Opens a dm-integrity volume on `dev`. Refuses what the format module
  // refuses (no or a damaged superblock, unsupported features) and a kernel
  // journal with entries in use (ENOTSUP). Writable: rewrites a journal left
  // in another commit sequence as the empty one, recomputes tags if
  // RECALCULATING is set, then sets it (recalc_sector 0) and flushes, all
  // before returning. Read-only: writes nothing; blocks at or above
  // recalc_sector of a RECALCULATING volume read unverified, as the kernel
  // reads them.
  static Result<std::shared_ptr<IntegrityTarget>> open(std::shared_ptr<BlockDevice> dev,
                                                       IntegrityOptions opts);
  // The factory for `csum` with layout=integrity (dispatched from
  // CsumTarget::create); the metadata slot is never opened.
  static Result<std::shared_ptr<BlockDevice>> create(TargetContext& ctx, const TargetArgs& args);
  // A clean close: applies the queue, writes every tag, flushes, clears
  // RECALCULATING. On failure (logged) the flag stays and the next open
  // recomputes.
  ~IntegrityTarget() override;

  std::string_view kind() const override { return "csum"; }
  Geometry geometry() const override;
  Capabilities capabilities() const override;
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  // Applies the queue, then writes dirty tag pages and flushes the device
  // once (data and tags).
  Status flush() override;
  // Whole blocks only (advisory): zeroes that may unmap, tag z(b).
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  // Offsets below are not the export's: no forwarding of these.
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status cache(uint64_t offset, uint64_t length) override;
  Status reserve(uint64_t offset, uint64_t length) override;
  void will_write(uint64_t, uint64_t) noexcept override {}
  // Applies the queue and writes dirty tag pages (no flush).
  Status detach() override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  struct Stats {
    uint64_t mismatches = 0;         // reads failed because a block did not match its tag
    uint64_t discard_tags_read = 0;  // blocks read unverified: their tag is the discard marker
    uint64_t unverified_reads = 0;   // read-only open: blocks above recalc_sector
    uint64_t recomputed_blocks = 0;  // tags recomputed at open after an unclean stop
    bool recalculating = false;      // RECALCULATING is set on the device now
    bool failed = false;
  };
  Stats stats() const;
  const integrity::Layout& layout() const { return l_; }

 private:
  IntegrityTarget(std::shared_ptr<BlockDevice> dev, IntegrityOptions opts, integrity::Superblock sb,
                  integrity::Layout l, bool read_only);
  Status start();
  // Recomputes the tags from sb_.recalc_sector up, recording progress.
  Status recalculate();
  // Writes sb_ as the superblock and flushes.
  Status write_superblock();
  Status close_cleanly();

  // Data path (integrity_io.cc).
  uint64_t lsector(uint64_t block) const { return block << l_.log2_sectors_per_block; }
  // The byte offset of block b's data on the device.
  uint64_t data_offset(uint64_t block) const { return l_.data_sector(lsector(block)) * integrity::kSector; }
  // Blocks [first, end) whose data is contiguous on the device: up to the
  // end of first's area.
  uint64_t run_end(uint64_t first, uint64_t end) const;
  Status read_data(uint64_t first, uint64_t end, std::span<std::byte> buf);
  Status load_tags(uint64_t first, uint64_t end, std::vector<uint32_t>* out);
  Status store_tags(const std::map<uint64_t, uint32_t>& tags);
  Status queue(uint64_t first, uint64_t end, const std::byte* data, uint32_t flags, int kind);
  Status commit_batch(WriteBehind::Batch& batch);
  void apply_batch(WriteBehind::Batch& batch, const Status& committed);

  const IntegrityOptions opts_;
  const integrity::Layout l_;
  const uint32_t bs_;
  const uint64_t blocks_;  // exported blocks
  const bool read_only_;
  integrity::Superblock sb_;  // written by open and close only (one thread)
  std::shared_ptr<JobRunner> jobs_;
  std::unique_ptr<BufferCache> cache_;  // tag pages; outlives wb_
  std::unique_ptr<WriteBehind> wb_;     // null when read-only

  mutable std::mutex tags_mu_;
  std::set<uint64_t> logged_;  // guarded by tags_mu_: blocks whose mismatch was logged (bounded)

  std::atomic<uint64_t> mismatches_{0}, discard_tags_read_{0}, unverified_reads_{0}, recomputed_{0};
  std::atomic<bool> recalculating_{false};
  bool closed_ = false;  // touched by the destructor only
};

}  // namespace bowstack::csum
