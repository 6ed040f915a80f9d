// mirror: an N-way mirror (RAID1) whose legs carry Linux md's v1.2 metadata
// and internal write-intent bitmap (docs/format/mirror.md,
// docs/targets/mirror.md; seed 004).
//
// Ordering (what must be durable before what):
//  * Before a write goes to any leg, the bit of every region it touches is
//    set on every working leg and the array is marked active (dirty) there,
//    both behind one flush per leg (group commit: concurrent writers share
//    one metadata commit, led by whichever of them finds none running).
//  * A write completes when every working leg has it. A leg that fails it
//    is marked faulty in the other legs' superblocks (events + 1, durable)
//    before the write is acknowledged, so a crash can never bring the leg
//    back as if it were in sync. The last in-sync leg is never failed: its
//    error goes to the client.
//  * Bits are cleared lazily by the `intent` service job: a region idle for
//    5 s whose last write completed before a flush of every leg, and
//    only while no leg is missing (faulty or being rebuilt). After a second
//    of no writes the array is marked clean: legs flushed, then superblocks
//    with resync_offset = MaxSector.
//
// Overlapping writes wait for each other (a BlockSet of 4 KiB units), so
// that every leg gets them in one order.
//
// Copies (resync, recovery, repair, read-error correction) hold the region
// they copy exclusively (a BlockSet of regions): writes into it wait, and
// the copy waits for writes already in flight there. So no write is lost or
// overwritten by an older copy.
//
// Reads go to one leg that may serve the range: an in-sync leg, or a
// recovering one below its sync mark; regions awaiting resync are read from
// the primary (the first in-sync leg in table order) only, so that reads
// are consistent until the resync made the legs equal. A read error on one
// leg is answered from another and the range rewritten on the failing leg.
//
// Thread-safety: every BlockDevice method may be called concurrently. mu_
// guards leg states, the in-memory bitmap and region locks; it is never
// held across data I/O. Metadata I/O runs with mu_ released, by one
// committer at a time (committing_).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/block_device.h"
#include "core/block_set.h"
#include "core/jobs.h"
#include "core/target_registry.h"
#include "targets/mirror/leg_workers.h"
#include "targets/mirror/mirror_assemble.h"
#include "targets/mirror/write_pool.h"

namespace bowstack::mirror {

enum class ReadPolicy { kBalance, kRoundRobin, kFirst };
// How a write reaches the legs: one after the other on the client's thread,
// or the other legs on the write pool at once. kAuto does the latter when
// at least two legs of the write take longer than kSlowLegNs a write.
enum class ParallelWrites { kAuto, kOn, kOff };

struct MirrorOptions {
  uint32_t region_size = 0;  // 0: default (new arrays) or the array's
  ReadPolicy read_policy = ReadPolicy::kBalance;
  uint64_t sync_min = 16u << 20;  // bytes/s a sync job keeps under client I/O
  uint64_t sync_max = 0;          // bytes/s when idle; 0 unlimited
  std::vector<bool> write_mostly;
  ParallelWrites parallel_writes = ParallelWrites::kAuto;
  // Read errors a leg may have corrected before it is failed (md's
  // max_corr_read_errors); the count halves for every hour without one.
  // 0: never fail a leg for read errors.
  uint32_t max_read_errors = 20;
  std::string name = "mirror";
  std::shared_ptr<JobRunner> jobs;
};

class MirrorTarget final : public BlockDevice {
 public:
  static Result<std::shared_ptr<BlockDevice>> create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                     MirrorOptions opts);
  static TargetInfo info();
  ~MirrorTarget() override;

  std::string_view kind() const override { return "mirror"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override { return caps_; }
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status detach() override;
  void reattach() override;
  Result<std::string> message(std::string_view text) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

 private:
  struct Leg {
    std::shared_ptr<BlockDevice> dev;
    std::string name;   // the file below it, or "leg N"
    md::Superblock sb;  // as last written (events, roles: the array's)
    LegState state = LegState::kInSync;
    uint64_t mark = 0;          // bytes copied while recovering or stale
    uint64_t durable_mark = 0;  // what of `mark` a flush made durable: the recovery_offset written
    uint64_t offset = 0;        // byte where array byte 0 lives
    uint64_t bitmap_at = 0;     // byte of the bitmap superblock
    bool write_mostly = false;
    bool fua = false;           // the leg honours kFua (else a flush follows a FUA write)
    bool verifies = false;      // reads are checked below (csum): a good read is the truth
    bool new_metadata = false;  // start writes the whole bitmap area and bad-block log
    uint64_t corrected = 0;     // read errors fixed by rewriting (cnt_corrected_read)
    uint32_t read_errors = 0;   // recent read errors, decayed (md's rdev->read_errors)
    std::chrono::steady_clock::time_point last_read_error;
    std::atomic<uint64_t> write_ns{0};  // moving average of one write's time, for kAuto
    std::atomic<uint32_t> inflight{0};
    std::atomic<uint64_t> reads{0};
    std::atomic<uint64_t> errors{0};
    // Stale or recovering: copied only in the regions of lacking_ (md's
    // bitmap-guided re-add; feature bit 128 on its superblock). Its mark
    // then also moves over the regions it holds.
    bool guided = false;
    // Regions it lacked at start, for the status.
    uint64_t rebuild_regions = 0;
    // Faulty: it failed while in sync or in a guided copy, so the bits set
    // since (never cleared while it is missing) are all it lacks, and a
    // re-add by message may be guided by them.
    bool failed_guidable = false;
  };
  // Per bit that is set in memory or has writes in flight.
  struct BitInfo {
    uint32_t pending = 0;     // writes in flight in the region
    uint64_t done_epoch = 0;  // flush epoch when the last of them completed
    uint32_t idle_passes = 0;
  };
  enum class SyncAction { kIdle, kResync, kRecover, kCheck, kRepair };

  MirrorTarget(std::vector<std::shared_ptr<BlockDevice>> legs, MirrorOptions opts);
  Status start(Assembly a);
  // Clean stop (destructor, detach): stops the jobs, flushes, marks the
  // array clean when it can be, writes the superblocks.
  Status close();

  // --- metadata (mirror_meta.cc) ---
  // Waits until bits set up to generation `gen` and the active state are
  // durable, leading a commit when none runs. REQUIRES: lock holds mu_.
  Status wait_durable(std::unique_lock<std::mutex>& lock, uint64_t gen, bool need_active);
  // One commit: dirty bitmap pages, and with sb_change_ the superblocks
  // (events + 1), to every working leg, then a flush of each. Legs that fail
  // become faulty and the commit repeats. Waits for a commit already
  // running first. REQUIRES: lock holds mu_.
  Status commit_locked(std::unique_lock<std::mutex>& lock);
  Status write_leg_metadata(Leg& leg, const std::vector<std::byte>& area, const std::vector<uint64_t>& pages,
                            const md::Superblock* sb, uint64_t bitmap_events, uint64_t events_cleared);
  // Marks a leg faulty and makes that durable; false when it is the last
  // in-sync leg (then nothing changes). REQUIRES: lock holds mu_.
  bool fail_leg_locked(std::unique_lock<std::mutex>& lock, size_t i, const Status& why);
  // Commits until the superblock change asked for (sb_change_) is durable
  // on every working leg, or metadata failed for good (meta_failure_).
  // REQUIRES: lock holds mu_.
  void commit_sb_change_locked(std::unique_lock<std::mutex>& lock);
  // The `intent` service job: clears idle bits, marks the array clean.
  Status intent_body(JobControl& jc);
  // False when it cleared nothing because events_cleared must first be
  // made durable above every leg outside this array (a commit does that;
  // then call it again).
  bool clear_idle_bits_locked(bool all_flushed);
  Status mark_clean(std::unique_lock<std::mutex>& lock);
  bool degraded_locked() const;
  size_t in_sync_count_locked() const;
  // Flushes every working leg; legs that fail become faulty. REQUIRES: mu_
  // not held.
  Status flush_legs(bool record_epoch);
  // flush_legs(), then each leg's durable_mark is the mark it had before
  // the flush: the sync mark a superblock may record. REQUIRES: mu_ not
  // held.
  Status flush_settling_marks();

  // --- data path (mirror_io.cc) ---
  // Overlapping writes are ordered in units of this many bytes.
  static constexpr uint64_t kWriteUnit = 4096;
  // A leg write slower than this pays for a hand-off to another thread
  // (some 10-50 us on a busy machine) many times over: page-cache legs take
  // a few us, RBD and O_DIRECT disk legs hundreds.
  static constexpr uint64_t kSlowLegNs = 100'000;
  // Bytes of bits a sequential write stream sets ahead of itself.
  static constexpr uint64_t kIntentAhead = 8u << 20;
  struct WriteTicket {
    uint64_t first_bit = 0, end_bit = 0;
    uint64_t first_unit = 0, end_unit = 0;
    std::vector<size_t> legs;
  };
  Result<WriteTicket> begin_write(uint64_t offset, uint64_t length);
  void end_write(const WriteTicket& t);
  template <typename Op>
  Status write_all(uint64_t offset, uint64_t length, Op&& op);
  size_t pick_leg_locked(uint64_t offset, uint64_t length, const std::vector<bool>& tried);
  Status correct_read(size_t bad, size_t good, uint64_t offset, uint64_t length);
  // Counts a read error of leg i (md's check_decay_read_errors); true when
  // it passed max_read_errors, and the leg should then be failed rather
  // than corrected. REQUIRES: mu_ held.
  bool read_error_limit_locked(size_t i);
  // Runs op(leg, leg's byte for `offset`) on each leg of `legs`: on the
  // caller, or the others on the write pool at once; returns each Status.
  template <typename Op>
  std::vector<Status> on_legs(const std::vector<size_t>& legs, uint64_t offset, Op&& op);
  bool write_in_parallel(const std::vector<size_t>& legs) const;
  bool readable_locked(size_t i, uint64_t offset, uint64_t length) const;
  size_t primary_locked() const;
  // An in-sync leg other than `leg`, or legs_.size() when there is none.
  size_t other_in_sync_locked(size_t leg) const;

  // --- sync jobs (mirror_sync.cc) ---
  void lock_regions(std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end);
  void unlock_regions(uint64_t first, uint64_t end);
  void start_sync_jobs_locked();
  // The intent job, then the sync jobs that are due. REQUIRES: mu_ held.
  void start_jobs_locked();
  static int64_t now_ns();  // steady clock, for last_client_io_ns_
  Status resync_body(JobControl& jc);
  Status recover_body(JobControl& jc);
  Status scrub_body(JobControl& jc, bool repair);
  Status copy_range(JobControl* jc, size_t src, const std::vector<size_t>& dst, uint64_t offset,
                    uint64_t length);
  // --- which regions the recovery copies (mirror_rebuild.cc) ---
  // Whether rebuilt leg i must get the region at `pos` (`len` bytes)
  // copied. A guided leg that holds it has its mark moved up to the next
  // region it lacks instead. REQUIRES: mu_ held; the leg's mark is not
  // below `pos` (the recovery never leaves a leg behind it).
  bool needs_copy_locked(size_t i, uint64_t pos, uint64_t len);
  // Bytes the recovery copies from `pos` on. REQUIRES: mu_ held.
  uint64_t recover_total_locked(uint64_t pos) const;
  // Legs whose copy a flush made durable to the end are in sync now.
  // REQUIRES: mu_ held.
  void promote_recovered_locked();
  // `message re-add LEG`: a faulty leg back into the array, as md's hot
  // re-add; its role back, its superblock written (durable before this
  // returns), a guided or full recovery started. REQUIRES: lock holds mu_.
  Result<std::string> readd_leg_locked(std::unique_lock<std::mutex>& lock, size_t i);
  // Sets the job's rate from sync_min/sync_max; *rate is what it has.
  void pace(Job* job, uint64_t* rate);
  Result<std::string> start_scrub(bool repair);

  const std::vector<std::shared_ptr<BlockDevice>> devs_;
  MirrorOptions opts_;
  std::shared_ptr<JobRunner> jobs_;
  Geometry geometry_;
  Capabilities caps_;
  uint32_t chunk_ = 0;  // region size
  uint64_t bits_ = 0;
  uint64_t size_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable intent_cv_;                 // wakes the intent job (stop)
  std::vector<std::unique_ptr<Leg>> legs_;            // states guarded by mu_
  md::Superblock array_sb_;                           // guarded by mu_: roles, events, name
  std::vector<std::byte> area_;                       // guarded by mu_: bitmap area (sb + bits)
  std::vector<bool> dirty_pages_;                     // guarded by mu_
  std::unordered_map<uint64_t, BitInfo> active_;      // guarded by mu_
  BlockSet copying_;                                  // guarded by mu_: regions held by copies
  BlockSet writing_;                                  // guarded by mu_: kWriteUnits with a write in flight
  std::vector<bool> resync_;                          // guarded by mu_: bits awaiting resync
  uint64_t resync_left_ = 0;                          // guarded by mu_
  uint64_t events_cleared_ = 0;                       // guarded by mu_
  uint64_t set_gen_ = 0, durable_gen_ = 0;            // guarded by mu_
  bool active_on_disk_ = false;                       // guarded by mu_: superblocks say dirty
  bool want_active_ = false;                          // guarded by mu_
  bool sb_change_ = false;                            // guarded by mu_: superblocks must be rewritten
  bool committing_ = false;                           // guarded by mu_
  bool cleaning_ = false;                             // guarded by mu_: mark_clean runs
  uint64_t writes_inflight_ = 0;                      // guarded by mu_
  uint64_t epoch_ = 1, stable_epoch_ = 0;             // guarded by mu_: flush epochs
  std::chrono::steady_clock::time_point last_write_;  // guarded by mu_
  std::chrono::steady_clock::time_point last_recover_checkpoint_;  // guarded by mu_
  Status meta_failure_;                                            // guarded by mu_: sticky
  Status flush_failure_;                                           // guarded by mu_: sticky
  SyncAction action_ = SyncAction::kIdle;                          // guarded by mu_ (check/repair)
  uint64_t mismatch_cnt_ = 0;                                      // guarded by mu_: sectors
  std::string last_scrub_note_;                                    // guarded by mu_
  bool resync_running_ = false, recover_running_ = false;          // guarded by mu_
  std::unique_ptr<LegWorkers> workers_;                            // from start() on
  std::unique_ptr<WritePool> write_pool_;                          // from start() on
  Job* intent_job_ = nullptr;
  std::vector<Job*> sync_jobs_;  // guarded by mu_
  bool started_ = false;         // start() succeeded; set before any other thread may look
  std::atomic<bool> detached_{false};
  std::atomic<bool> closed_{false};
  std::atomic<uint64_t> rr_{0};
  std::atomic<int64_t> last_client_io_ns_{0};
  // Guarded by mu_: the events_cleared a commit made durable.
  uint64_t cleared_on_disk_ = 0;
  // Guarded by mu_: above the events of every leg outside this array (the
  // assembled events + 1); bits are cleared only once events_cleared is
  // durably at least this (mirror_readd.h).
  uint64_t min_cleared_ = 0;
  // Guarded by mu_: the regions a guided leg lacks (bits set at assembly).
  std::vector<bool> lacking_;
};

}  // namespace bowstack::mirror
