// csum: a checksum per data block, kept crash-consistent and verified on
// every read (docs/format/csum.md; seeds 000 and 001). Modes `dual` (the
// default: the old+new scheme of seed 000), `journal` (data and checksum
// journalled first, replayed after a crash, csum_journal.cc) and `rebuild`
// (no crash protection: dirty regions recomputed after a crash,
// csum_rebuild.cc),
// over layout=csum (checksums on a metadata device, by default the sidecar
// IMAGE.csum).
//
// Concurrency and ordering (the format doc's section 5):
//  * Writes go through the core's write-behind (core/write_behind.h): the
//    writer computes its blocks' checksums in its own thread and queues the
//    write (acknowledged at once unless FUA). The commit job takes a batch,
//    puts each block's new checksum in the slot of its pair that does not
//    describe the data now durable, and makes the batch's pair sectors
//    durable with ONE metadata flush (group commit); only then does the
//    apply hook write the batch's data. So the checksum of any data that can
//    reach the device is on stable storage first.
//  * A block written again before a data flush made its previous write
//    durable would need a third slot: such a batch first flushes the data
//    device (settling every earlier write), then proceeds. Within a batch a
//    block gets one new checksum: the last write to it; earlier writes to it
//    in the batch are not written (the later data replaces them anyway).
//  * A data flush settles ("retires") the older checksum of every block
//    whose write completed before it: the pair then holds one checksum.
//    Reads accept either slot, so a read racing a commit sees a pair that
//    describes the data it read; a mismatch is re-checked once before it
//    fails, to rule out a write that landed between the read and the lookup.
//  * Reads of blocks with a queued write wait for it (the pipeline's
//    pending blocks), then read and verify. pairs_mu_ guards the pair
//    sectors' bytes in the cache and the pending map; it is never held
//    across data I/O.
//  * Lock order: the pipeline's lock, then pairs_mu_ (the pipeline never
//    holds its lock while calling the hooks that take pairs_mu_).
//
//  * Scrub (csum_scrub.cc) is a task job that reads and verifies through
//    the same rule as reads, never failing a client; its progress lives in
//    the superblock (admin_mu_ serialises superblock commits).
//
// layout=integrity is served by IntegrityTarget (integrity_target.h). Not
// yet (issue 17): requests smaller than a block (refused by the geometry).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/aligned_buf.h"
#include "core/block_device.h"
#include "core/jobs.h"
#include "core/target_registry.h"
#include "core/write_behind.h"
#include "targets/csum/checksum_op.h"
#include "targets/csum/csum_journal_reader.h"
#include "targets/csum/csum_metadata.h"

namespace bowstack::csum {

struct CsumOptions {
  uint32_t block_size = 4096;
  bool block_size_given = false;           // an explicit block_size must match existing metadata
  uint64_t max_pending_bytes = 64u << 20;  // acknowledged writes waiting for their checksums
  BufioOptions cache{};
  std::string metadata_path;        // for status only
  std::shared_ptr<JobRunner> jobs;  // null: a runner of the target's own
  uint64_t scrub_rate = 64u << 20;  // bytes/s a scrub reads at most (0: unlimited)
  Mode mode = Mode::kDual;
  bool mode_given = false;            // else the recorded mode is kept (a new volume: dual)
  uint64_t journal_size = 32u << 20;  // bytes of journal a new volume gets in mode journal
  bool verify = true;                 // false (verify=off): reads are not checked, for measuring only
  uint64_t now = 0;                   // unix seconds for a format (0: the clock)
};

class CsumTarget final : public StackedDevice {
 public:
  // Opens the target over `data` with its metadata device. Blank metadata
  // is formatted only when the data device holds no data (every block a
  // hole: certainly unwritten); otherwise the data would have to be
  // accepted explicitly, which serve never does. After an unclean stop the
  // data device is flushed first, and pairs left with two checksums are
  // read as either (the format's recovery: no scan).
  static Result<std::shared_ptr<CsumTarget>> open(std::shared_ptr<BlockDevice> data,
                                                  std::shared_ptr<BlockDevice> metadata, CsumOptions opts);
  static Result<std::shared_ptr<BlockDevice>> create(TargetContext& ctx, const TargetArgs& args);
  static TargetInfo info();
  // A clean close: drains, flushes the data, settles every pair, writes the
  // metadata and the superblock with CLEAN set. Errors are logged.
  ~CsumTarget() override;

  std::string_view kind() const override { return "csum"; }
  Geometry geometry() const override;
  Capabilities capabilities() const override;
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  // Applies the queue (no data flush). Its checksums are durable already:
  // each batch's were flushed before its data was written.
  Status detach() override;
  // "scrub [start|stop|pause|resume]", "scrub_rate=BYTES", "mismatches"
  // (JSON list), "rewrite BLOCK" (accept the block's current data).
  Result<std::string> message(std::string_view text) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  // A block found not to match its checksum, by a read or by scrub.
  struct BadBlock {
    uint64_t block = 0;
    bool metadata = false;  // its pair sector is damaged (not the data)
    const char* found_by = "read";
    uint64_t when = 0;  // unix seconds of the first finding
  };
  // Kept per run, at most kMaxListed (the count of findings goes on).
  static constexpr size_t kMaxListed = 65536;
  std::vector<BadBlock> bad_blocks() const;
  // Accepts the block's current data: flushes the data, then stores its
  // checksum settled (the explicit acceptance `csum rewrite` asks for).
  Status rewrite_block(uint64_t block);
  // Starts a scrub pass from block 0 (EBUSY while one runs or is paused).
  Status start_scrub();

  struct Stats {
    uint64_t mismatches = 0;       // reads that found data not matching its checksum
    uint64_t metadata_errors = 0;  // reads whose pair sector is damaged
    uint64_t commits = 0;          // metadata flushes of the write path
    uint64_t data_flushes = 0;     // data flushes forced by a rewrite before a flush
    uint64_t pending_blocks = 0;   // written since the last data flush (dual)
    uint64_t dirty_regions = 0;    // regions a crash would recompute (rebuild)
    bool failed = false;
  };
  Stats stats() const;
  const Layout& layout() const { return md_->layout(); }

 private:
  CsumTarget(std::shared_ptr<BlockDevice> data, std::unique_ptr<CsumMetadata> md, CsumOptions opts);
  Status start();
  Status queue(uint64_t first, uint64_t end, const std::byte* data, uint32_t flags, int kind);

  // Write-behind hooks.
  Status commit_batch(WriteBehind::Batch& batch);
  // The checksum each block of the batch ends with (its last write's; an
  // accept's is that of the device's data). Errors are sticky.
  Status final_checksums(WriteBehind::Batch& batch, std::unordered_map<uint64_t, uint32_t>* out);

  // Mode rebuild (csum_rebuild.cc, format section 7): pairs settled at
  // once, a region's dirty bit durable before its first write, bits
  // cleared lazily after a data and a metadata flush; after a crash the
  // dirty regions' checksums are recomputed from the data.
  Status commit_rebuild(const std::unordered_map<uint64_t, uint32_t>& fin);
  Status flush_rebuild();
  Status recover_rebuild();
  // Makes every pair durable and clears every region bit (close).
  Status settle_rebuild();

  // Mode journal (csum_journal.cc, format section 6).
  Status commit_journal(WriteBehind::Batch& batch, const std::unordered_map<uint64_t, uint32_t>& fin);
  // Places a record of n sectors after *pos given *used live sectors;
  // false when it does not fit before the tail.
  bool journal_fit(uint64_t* pos, uint64_t* used, uint64_t n) const;
  // Settles entries: pairs in the cache, then data in place. data[i] is
  // entry i's block (null for a ZERO run).
  Status journal_apply(const std::vector<JournalEntry>& entries, const std::vector<const std::byte*>& data);
  // Data flush, pairs durable, superblock tail moved to the head.
  Status journal_checkpoint();
  Status recover_journal();
  void apply_batch(WriteBehind::Batch& batch, const Status& committed);
  // Settles the pairs of pending blocks whose data a completed flush made
  // durable (committed in batch <= upto). REQUIRES: pairs_mu_ held.
  void retire_locked(uint64_t upto);
  // Verifies blocks [first, end) whose data is in `buf`; the first bad one
  // in *bad. EIO-free: returns false when one does not match.
  Status verify(uint64_t first, uint64_t end, std::span<const std::byte> buf, uint64_t* bad, bool* ok);
  Status close_cleanly();
  // Remembers a bad block for `mismatches`; true when it is new (to log).
  bool note_bad(uint64_t block, bool metadata, const char* found_by);

  // Scrub (csum_scrub.cc). REQUIRES for the *_locked: admin_mu_ held.
  Status start_scrub_locked(uint64_t from, bool paused);
  Status scrub_body(JobControl& jc, uint64_t from);
  // Checks blocks [first, end) as a read would, without failing anyone:
  // bad blocks are noted. *skipped when the range is unwritten and holes.
  Status scrub_range(uint64_t first, uint64_t end, AlignedBuf& buf, uint64_t* found);
  Status persist_scrub_locked(uint32_t state, bool finished);
  void describe_scrub(nlohmann::json* out) const;

  const CsumOptions opts_;
  const std::unique_ptr<CsumMetadata> md_;
  const uint32_t bs_;
  const uint64_t blocks_;
  Mode mode_ = Mode::kDual;  // set by start(), then constant
  std::shared_ptr<JobRunner> jobs_;
  std::unique_ptr<WriteBehind> wb_;

  mutable std::mutex pairs_mu_;
  // Guarded by pairs_mu_: blocks written since the data flush that would
  // settle them, with the batch that committed their newest checksum.
  std::unordered_map<uint64_t, uint64_t> pending_;
  // Guarded by pairs_mu_ (mode rebuild): per region, 0 when its bit is
  // clear, else the batch that last wrote into it; and when bits were last
  // cleared. The bits in the metadata cache change under pairs_mu_ too, so
  // a clear never overtakes a set.
  std::vector<uint64_t> region_seq_;
  std::chrono::steady_clock::time_point regions_cleared_{};
  // Mode journal, owned by the commit job (start and close run without it):
  // head and tail (sectors into the journal), live sectors, next sequence.
  uint64_t jhead_ = 0, jtail_ = 0, jused_ = 0, jseq_ = 0;
  uint64_t committed_seq_ = 0;  // guarded by pairs_mu_: batches committed
  uint64_t applied_seq_ = 0;    // guarded by pairs_mu_: batches whose data writes completed
  // Guarded by pairs_mu_: blocks found bad this run (bounded by kMaxListed).
  std::map<uint64_t, BadBlock> bad_;

  // Superblock commits after start (scrub progress, close) and the scrub's
  // job handle. Lock order: admin_mu_ before the pipeline's and pairs_mu_.
  mutable std::mutex admin_mu_;
  Job* scrub_job_ = nullptr;        // guarded by admin_mu_
  bool scrub_user_paused_ = false;  // guarded by admin_mu_: paused by "scrub pause"
  uint64_t scrub_rate_;             // guarded by admin_mu_
  std::atomic<bool> closing_{false};
  std::atomic<uint64_t> scrub_cursor_{0}, scrub_found_{0};
  std::atomic<uint64_t> scrub_found_run_{0};  // found by scrubs since this open (for mismatches_total)

  std::atomic<uint64_t> mismatches_{0}, metadata_errors_{0}, commits_{0}, data_flushes_{0};
  std::atomic<uint64_t> journal_checkpoints_{0};
  bool closed_ = false;  // touched by the destructor only
};

}  // namespace bowstack::csum
