#include "targets/bow/bow_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/file_device.h"
#include "core/parse.h"
#include "core/thread_name.h"
#include "targets/bow/bow_log.h"

namespace bowstack::bow {

namespace {

using Spans = std::vector<std::pair<uint64_t, uint64_t>>;  // [start, end) in blocks

constexpr uint64_t kZeroChunk = 1u << 20;
// The planner never hands out the last free blocks: commit needs one for an
// atomic final log rollover (see commit()).
constexpr uint64_t kCommitSpare = 1;
// Writes that make a batch worth committing without gathering more: the two
// barriers then cost little per write.
constexpr size_t kGatherWrites = 64;

}  // namespace

const char* state_name(State s) {
  switch (s) {
    case State::kTrim:
      return "TRIM";
    case State::kCheckpoint:
      return "CHECKPOINT";
    case State::kCommitted:
      return "COMMITTED";
  }
  return "?";
}

// One acknowledged write waiting for its log entries to become durable.
struct BowTarget::Pending {
  struct Saved {
    uint64_t dest = 0;  // block
    AlignedBuf data;    // the checkpoint data to save there
  };
  std::vector<Saved> saved;  // written by the committer, before the log; dropped once written
  std::vector<LogEntry> entries;
  Spans sources;           // ranges that become kChanged once durable (blocks)
  bool moves_s0c = false;  // this write moved the live block 0
  uint64_t old_s0c = 0, new_s0c = 0;
  Spans busy;          // released once applied
  uint64_t first = 0;  // logical block of `data`
  AlignedBuf data;
  uint32_t flags = 0;
  uint64_t bytes = 0;       // guarded by q_mu_ once queued: memory held (data + saved copies)
  bool has_claims = false;  // FUA must also make the journal durable
  bool done = false;        // guarded by q_mu_
  Status status;            // guarded by q_mu_
};

// What a checkpoint write needs: saved copies to make, blocks to claim.
struct BowTarget::Plan {
  struct Copy {
    uint64_t src = 0;   // physical block to save
    uint64_t dest = 0;  // free block receiving the copy
    uint64_t count = 0;
    bool s0c_move = false;
  };
  std::vector<Copy> copies;
  SpanList claims;                   // free -> changed
  Spans sources;                     // saved ranges (logical == physical; never block 0)
  std::vector<uint64_t> unreserved;  // log rollover reservations taken back (now claimed)
  bool moves_s0c = false;
  uint64_t old_s0c = 0, new_s0c = 0;
  uint64_t slots = 0;  // log entries reserved
};

BowTarget::BowTarget(std::shared_ptr<BlockDevice> lower, BowOptions opts, uint64_t blocks)
    : StackedDevice(std::move(lower)),
      opts_(std::move(opts)),
      env_(opts_.env != nullptr ? opts_.env : Env::posix()),
      jobs_(opts_.jobs ? opts_.jobs : std::make_shared<JobRunner>("bow")),
      bs_(opts_.block_size),
      pool_(opts_.block_size, opts_.max_pending_bytes / opts_.block_size + 64),
      spb_(opts_.block_size / 512),
      blocks_(blocks),
      map_(blocks),
      busy_(blocks) {
  geometry_ = lower_device()->geometry();
  geometry_.size = blocks_ * bs_;
  geometry_.logical_block_size = bs_;
  geometry_.preferred_block_size = std::max(bs_, geometry_.preferred_block_size);
  geometry_.max_io_size = std::max<uint32_t>(bs_, geometry_.max_io_size / bs_ * bs_);
  geometry_.accepts_unaligned = true;
}

BowTarget::~BowTarget() {
  // In this order: the automatic commit uses the committer; the applier
  // stops once the committer has drained its queue into logged_.
  if (auto_commit_) auto_commit_->stop();
  if (committer_) committer_->stop();
  if (applier_) applier_->stop();
}

Result<std::shared_ptr<BowTarget>> BowTarget::open(std::shared_ptr<BlockDevice> lower, BowOptions opts) {
  if (opts.block_size < 512 || opts.block_size > 4096 || (opts.block_size & (opts.block_size - 1)) != 0) {
    return Status::Error(
        EINVAL, fmt::format("bow: block_size {} must be a power of two from 512 to 4096", opts.block_size));
  }
  // A resumed checkpoint dictates the block size.
  auto probed = probe(*lower);
  if (!probed.ok()) return probed.status();
  if (*probed == ProbeResult::kInterruptedRestore) {
    return Status::Error(EBUSY,
                         "bow: the image holds an interrupted restore (magic WOB); finish it with "
                         "'bowstack restore IMAGE' before serving it");
  }
  std::optional<LogChain> chain;
  if (*probed == ProbeResult::kCheckpoint) {
    auto c = read_and_validate(*lower, ValidateOptions{.verify_checksums = false});
    if (!c.ok()) {
      return Status::Error(c.status().code(),
                           "bow: the image holds a checkpoint log that cannot be resumed (" +
                               c.status().message() +
                               "); run 'bowstack restore IMAGE' (add --roll-forward to keep "
                               "the changes)");
    }
    if (opts.block_size_given && opts.block_size != c->block_size) {
      return Status::Error(EINVAL,
                           fmt::format("bow: block_size={} given, but the image's checkpoint log uses {}",
                                       opts.block_size, c->block_size));
    }
    opts.block_size = c->block_size;
    chain = std::move(c.value());
  }
  const Geometry lg = lower->geometry();
  if (opts.block_size % lg.logical_block_size != 0) {
    return Status::Error(EINVAL,
                         fmt::format("bow: block_size {} is not a multiple of the device's block size {}",
                                     opts.block_size, lg.logical_block_size));
  }
  uint64_t blocks = lg.size / opts.block_size;
  if (blocks < 4) {
    return Status::Error(EINVAL,
                         fmt::format("bow: the device below is too small ({} bytes): bow needs at least "
                                     "4 blocks of {} bytes",
                                     lg.size, opts.block_size));
  }
  auto t = std::shared_ptr<BowTarget>(new BowTarget(std::move(lower), std::move(opts), blocks));
  if (chain) {
    if (Status s = t->resume_from(*chain); !s.ok()) return s;
  } else if (!t->opts_.meta_path.empty()) {
    // No checkpoint on the device: any journal is left over from a finished
    // (committed) or never-completed checkpoint.
    if (Status s = ResumeJournal::remove(t->env_, t->opts_.meta_path); !s.ok()) return s;
  }
  t->start_committer();
  return t;
}

Result<std::shared_ptr<BlockDevice>> BowTarget::create(TargetContext& ctx, const TargetArgs& args) {
  BowOptions o;
  auto bs = args.get_size("block_size", 4096);
  if (!bs.ok()) return bs.status();
  if (*bs > 4096) return Status::Error(EINVAL, fmt::format("bow: block_size {} must be 512..4096", *bs));
  o.block_size = static_cast<uint32_t>(*bs);
  o.block_size_given = args.has("block_size");
  auto below = args.get_size("auto_commit_below", 0);
  if (!below.ok()) return below.status();
  o.auto_commit_below = *below;
  auto gather = args.get_size("gather_us", o.gather_us);
  if (!gather.ok()) return gather.status();
  if (*gather > 100000) {
    return Status::Error(EINVAL, fmt::format("bow: gather_us {} must be at most 100000 (0.1 s)", *gather));
  }
  o.gather_us = static_cast<uint32_t>(*gather);
  o.meta_path = ctx.side_file("metadata");
  o.env = ctx.env();
  o.jobs = ctx.jobs();
  auto t = open(ctx.data(), std::move(o));
  if (!t.ok()) return t.status();
  if (t.value()->opts_.meta_path.empty()) {
    spdlog::warn(
        "bow: no resume journal (metadata slot off): a crash during a checkpoint can be restored but not "
        "resumed");
  }
  return std::shared_ptr<BlockDevice>(t.value());
}

TargetInfo BowTarget::info() {
  return TargetInfo{
      "bow",
      "backup on write: checkpoint the device in its own free space, then commit or restore (Android dm-bow)",
      {
          {"block_size", "block size in bytes, 512..4096 (default 4096; a resumed checkpoint keeps its own)"},
          {"auto_commit_below",
           "commit automatically when free space falls below this many bytes (default: "
           "never; writes fail with ENOSPC instead)"},
          {"gather_us",
           "microseconds the committer waits to gather acknowledged overwrites into one log commit "
           "(default 500; 0: commit at once; flushes and FUA writes never wait)"},
      },
      {{"data", SlotKind::kDevice, true, "", "", "the device to checkpoint"},
       {"metadata", SlotKind::kSideFile, false, ".bowmeta", "meta",
        "the resume journal (default IMAGE.bowmeta beside the data image; null: none, a crash can then be "
        "restored but not resumed)"}},
      &BowTarget::create,
  };
}

Capabilities BowTarget::capabilities() const {
  Capabilities c = lower_device()->capabilities();
  c.trim = !c.read_only;
  c.write_zeroes = !c.read_only;
  c.fast_zero = false;
  return c;
}

void BowTarget::start_committer() {
  committer_ = jobs_->start(
      "commit", Job::Kind::kService,
      [this](JobControl&) {
        committer_loop();
        return Status::Ok();
      },
      [this] {
        {
          std::lock_guard lock(q_mu_);
          stop_ = true;
        }
        work_cv_.notify_all();
      });
  applier_ = jobs_->start(
      "apply", Job::Kind::kService,
      [this](JobControl&) {
        applier_loop();
        return Status::Ok();
      },
      [this] {
        {
          std::lock_guard lock(q_mu_);
          applier_stop_ = true;
        }
        logged_cv_.notify_all();
      });
}

Status BowTarget::fail(Status s) {
  std::lock_guard lock(mu_);
  if (failed_.ok()) {
    spdlog::error("bow: {}; all further I/O fails until the server is restarted", s.message());
    failed_ = s;
  }
  cv_.notify_all();
  return s;
}

Status BowTarget::failure() const {
  std::lock_guard lock(mu_);
  return failed_;
}

// ---- Busy set -----------------------------------------------------------

bool BowTarget::overlaps_busy_locked(uint64_t start, uint64_t end) const {
  return busy_.overlaps(start, end);
}

void BowTarget::release_busy(SpanRefs spans) {
  std::lock_guard lock(mu_);
  for (const auto& [s, e] : spans) busy_.clear(s, e);
  cv_.notify_all();
}

void BowTarget::wait_quiescent_locked(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [this] { return busy_.empty() && reads_in_flight_ == 0; });
}

namespace {
// The busy spans an operation on logical blocks [first, end) needs while the
// live block 0 is at `s0c` (0: not redirected): its own blocks, plus block 0
// and the live copy when either is involved, since they move together. At
// most two, sorted.
SpanList spans_for(uint64_t first, uint64_t end, uint64_t s0c) {
  SpanList spans;
  spans.emplace_back(first, end);
  if (s0c != 0) {
    bool has0 = first == 0;
    bool has_live = s0c >= first && s0c < end;
    if (has0 && !has_live) spans.emplace_back(s0c, s0c + 1);
    if (has_live && !has0) spans.emplace_back(0, 1);
  }
  if (spans.size() == 2 && spans.data()[1] < spans.data()[0]) std::swap(spans.data()[0], spans.data()[1]);
  return spans;
}
}  // namespace

// ---- Physical I/O -------------------------------------------------------

Status BowTarget::read_blocks_physical(uint64_t first, uint64_t count, std::span<std::byte> out,
                                       uint64_t s0c) {
  if (first == 0 && s0c != 0) {
    if (Status s = lower_device()->read(s0c * bs_, out.first(bs_)); !s.ok()) return s;
    if (count == 1) return Status::Ok();
    return lower_device()->read(bs_, out.subspan(bs_));
  }
  return lower_device()->read(first * bs_, out);
}

Status BowTarget::write_physical(uint64_t first, std::span<const std::byte> data, uint32_t flags,
                                 uint64_t s0c) {
  if (first == 0 && s0c != 0) {
    if (Status s = lower_device()->write(s0c * bs_, data.first(bs_), flags); !s.ok()) return s;
    if (data.size() == bs_) return Status::Ok();
    return lower_device()->write(bs_, data.subspan(bs_), flags);
  }
  return lower_device()->write(first * bs_, data, flags);
}

// ---- Reads ----------------------------------------------------------------

Status BowTarget::read(uint64_t offset, std::span<std::byte> buf) {
  const bool aligned = offset % bs_ == 0 && buf.size() % bs_ == 0;
  if (state() == State::kCommitted && aligned) return lower_device()->read(offset, buf);
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size() + bs_ - 1) / bs_;
  std::unique_lock lock(mu_);
  if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
  // Wait until the blocks hold their newest data (no overwrite pending) and
  // no state change is running.
  SpanList spans;
  uint64_t s0c;
  for (;;) {
    s0c = state_ == State::kCheckpoint ? s0c_ : 0;
    spans = spans_for(first, end, s0c);
    bool clear = !transition_;
    for (const auto& [s, e] : spans) clear = clear && !overlaps_busy_locked(s, e);
    if (clear) break;
    cv_.wait(lock);
  }
  // Reading block 0 follows the live copy, which a writer may move: hold it.
  const bool hold = s0c != 0 && first == 0;
  if (hold) {
    for (const auto& [s, e] : spans) busy_.mark(s, e);
  } else {
    ++reads_in_flight_;
  }
  lock.unlock();

  Status st;
  if (aligned) {
    st = read_blocks_physical(first, end - first, buf, s0c);
  } else {
    AlignedBuf tmp = pool_.get((end - first) * bs_);
    st = read_blocks_physical(first, end - first, tmp.span(), s0c);
    if (st.ok()) std::memcpy(buf.data(), tmp.span().data() + (offset - first * bs_), buf.size());
  }

  if (hold) {
    release_busy(spans);
  } else {
    std::lock_guard relock(mu_);
    if (--reads_in_flight_ == 0) cv_.notify_all();
  }
  return st;
}

Status BowTarget::cache(uint64_t offset, uint64_t length) {
  if (state() == State::kCommitted || offset >= bs_) return lower_device()->cache(offset, length);
  return Status::Ok();
}

Status BowTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  // Outside COMMITTED, block 0 is redirected and free blocks may hold saved
  // copies: the device below cannot describe this device's contents.
  if (state() == State::kCommitted) return lower_device()->block_status(offset, length, out);
  return BlockDevice::block_status(offset, length, out);
}

// ---- Writes ---------------------------------------------------------------

void BowTarget::will_write(uint64_t offset, uint64_t length) noexcept {
  (void)length;
  // RangeMap::prefetch bounds-checks the block and needs no lock.
  if (state() == State::kCheckpoint) map_.prefetch(offset / bs_);
}

Status BowTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  const bool aligned = offset % bs_ == 0 && buf.size() % bs_ == 0;
  if (state() == State::kCommitted && aligned) return lower_device()->write(offset, buf, flags);
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size() + bs_ - 1) / bs_;
  const uint64_t count = end - first;

  // The first block's type is a likely cache miss (a random block of a big
  // map); start it before the lock rather than inside the critical section,
  // for callers that sent no hint earlier (for those that did, the line is
  // already on its way and this costs one instruction).
  will_write(offset, buf.size());
  // One critical section marks the blocks busy and, in CHECKPOINT, claims
  // free ones, allocates saved-copy space and marks it busy too: no block
  // is ever busy-but-unclaimed (which the allocator could hand out) or
  // allocated-but-not-busy (which another writer could read half written).
  std::unique_lock lock(mu_);
  if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
  SpanList spans;
  uint64_t s0c;
  for (;;) {  // the live block 0 may move while we wait: recompute each time
    s0c = state_ == State::kCheckpoint ? s0c_ : 0;
    spans = spans_for(first, end, s0c);
    bool clear = !transition_;
    for (const auto& [b, e] : spans) {
      clear = clear && !overlaps_busy_locked(b, e);
      auto saving = log_saving_.lower_bound(b);
      clear = clear && (saving == log_saving_.end() || *saving >= e);
    }
    if (clear) break;
    cv_.wait(lock);
  }
  for (const auto& [b, e] : spans) busy_.mark(b, e);
  const State st = state_;
  Plan plan;
  // Not a counted reference (an atomic round trip per write on one shared
  // line): the journal outlives this write, because commit() drops it only
  // once no block is busy, and this write holds its blocks until it is done.
  ResumeJournal* journal = nullptr;
  if (st == State::kTrim) {
    // The blocks hold data again: they must not be used as free space.
    std::vector<BlockRun> taken;
    map_.for_each(first, count, [&](const BlockRun& r) {
      if (r.type == BlockType::kFree) taken.push_back(r);
    });
    for (const BlockRun& r : taken) map_.set(r.start, r.count, BlockType::kUnchanged);
  } else if (st == State::kCheckpoint) {
    Status planned = plan_backups_locked(first, count, &plan);
    if (!planned.ok()) {
      for (const auto& [b, e] : spans) busy_.clear(b, e);
      cv_.notify_all();
      if (planned.code() != ENOSPC || opts_.auto_commit_below == 0) return planned;
      // Android's commit-on-full: commit, then the write passes through.
      lock.unlock();
      start_auto_commit();
      lock.lock();
      cv_.wait(lock, [this] { return state_ != State::kCheckpoint || !failed_.ok() || auto_commit_failed_; });
      if (state_ == State::kCheckpoint || !failed_.ok()) return planned;
      lock.unlock();
      return write(offset, buf, flags);
    }
    for (const auto& c : plan.copies) busy_.mark(c.dest, c.dest + c.count);
    journal = journal_.get();
  }
  lock.unlock();
  if (st == State::kCheckpoint) maybe_auto_commit();

  std::span<const std::byte> data = buf;
  AlignedBuf merged;
  if (!aligned) {
    // Read-modify-write: the blocks are ours (busy), so nothing changes them meanwhile.
    merged = pool_.get(count * bs_);
    Status s = read_blocks_physical(first, count, merged.span(), s0c);
    if (!s.ok()) {
      if (st == State::kCheckpoint) {
        std::lock_guard relock(mu_);
        undo_plan_locked(plan);
        for (const auto& c : plan.copies) busy_.clear(c.dest, c.dest + c.count);
      }
      release_busy(spans);
      return s;
    }
    std::memcpy(merged.span().data() + (offset - first * bs_), buf.data(), buf.size());
    data = merged.span();
  }
  if (st != State::kCheckpoint) {
    Status s = write_physical(first, data, flags, 0);
    release_busy(spans);
    return s;
  }
  if (plan.copies.empty()) {
    // Nothing to save: free or already-changed blocks, or block 0's live copy.
    return write_direct(first, data, flags, s0c, spans, plan.claims, journal);
  }
  return write_saving(first, data, flags, spans, plan, journal);
}

Status BowTarget::write_direct(uint64_t first, std::span<const std::byte> data, uint32_t flags, uint64_t s0c,
                               SpanRefs spans, SpanRefs claims, ResumeJournal* journal) {
  if (journal) {
    for (const auto& [b, e] : claims) journal->append(JournalRecord::kClaim, b, e - b);
  }
  Status st = write_physical(first, data, flags, s0c);
  // A FUA write into free space is only safe once its claim is durable too.
  if (st.ok() && (flags & kFua) && journal && !claims.empty()) st = journal->sync();
  release_busy(spans);
  return st;
}

Status BowTarget::plan_backups_locked(uint64_t first, uint64_t count, Plan* plan) {
  const int64_t cap = log_capacity(bs_, kHeaderSize);
  // Claim free blocks first so the allocator cannot hand them out as backup
  // space for this same write. Blocks reserved for log rollovers are free
  // space to the filesystem: a write takes them back like any free block.
  Spans needs;
  auto need = [&](uint64_t s, uint64_t e) {
    if (s < e) needs.emplace_back(s, e);
  };
  map_.for_each(first, count, [&](const BlockRun& r) {
    const uint64_t end = r.start + r.count;
    switch (r.type) {
      case BlockType::kFree:
        plan->claims.emplace_back(r.start, end);
        break;
      case BlockType::kBackup: {
        uint64_t pos = r.start;
        for (auto it = rollover_blocks_.lower_bound(r.start); it != rollover_blocks_.end() && *it < end;
             ++it) {
          need(pos, *it);
          plan->unreserved.push_back(*it);
          plan->claims.emplace_back(*it, *it + 1);
          pos = *it + 1;
        }
        need(pos, end);
        break;
      }
      case BlockType::kUnchanged:
        need(r.start, end);
        break;
      case BlockType::kSector0Live:
        plan->moves_s0c = true;
        plan->old_s0c = r.start;
        break;
      case BlockType::kChanged:
      case BlockType::kSector0:  // logical block 0: its checkpoint copy was saved at checkpoint
        break;
    }
  });
  for (uint64_t b : plan->unreserved) {
    rollover_blocks_.erase(b);
    log_slots_ -= cap - 1;
  }
  for (const auto& [s, e] : plan->claims) map_.set(s, e - s, BlockType::kChanged);

  auto allocate = [&](uint64_t src, uint64_t n, bool s0c_move) -> bool {
    while (n > 0) {
      if (map_.count(BlockType::kFree) <= kCommitSpare) return false;
      auto f = map_.first_free(std::min(n, map_.count(BlockType::kFree) - kCommitSpare));
      if (!f) return false;
      map_.set(f->start, f->count, BlockType::kBackup);
      plan->copies.push_back({src, f->start, f->count, s0c_move});
      src += f->count;
      n -= f->count;
    }
    return true;
  };
  bool ok = true;
  if (plan->moves_s0c) ok = allocate(plan->old_s0c, 1, true);
  for (const auto& [s, e] : needs) {
    if (!ok) break;
    ok = allocate(s, e - s, false);
    plan->sources.emplace_back(s, e);
  }
  if (plan->moves_s0c && ok) plan->new_s0c = plan->copies.front().dest;
  // Reserve log space: a full log block needs a free block to be saved to.
  const int64_t want = static_cast<int64_t>(plan->copies.size());
  while (ok && log_slots_ < want) {
    if (map_.count(BlockType::kFree) <= kCommitSpare) {
      ok = false;
      break;
    }
    auto f = map_.first_free(1);
    map_.set(f->start, 1, BlockType::kBackup);
    rollover_blocks_.insert(f->start);
    log_slots_ += cap - 1;
  }
  if (!ok) {
    undo_plan_locked(*plan);
    for (const auto& [s, e] : plan->claims) map_.set(s, e - s, BlockType::kFree);
    for (uint64_t b : plan->unreserved) {
      map_.set(b, 1, BlockType::kBackup);
      rollover_blocks_.insert(b);
      log_slots_ += cap - 1;
    }
    plan->claims.clear();
    plan->unreserved.clear();
    return Status::Error(ENOSPC,
                         "bow: no free space left to save checkpoint data (the checkpoint is intact; "
                         "commit to continue writing)");
  }
  log_slots_ -= want;
  plan->slots = plan->copies.size();
  return Status::Ok();
}

void BowTarget::undo_plan_locked(const Plan& plan) {
  for (const auto& c : plan.copies) map_.set(c.dest, c.count, BlockType::kFree);
  log_slots_ += static_cast<int64_t>(plan.slots);
}

void BowTarget::maybe_auto_commit() {
  if (opts_.auto_commit_below == 0) return;
  {
    std::lock_guard lock(mu_);
    if (state_ != State::kCheckpoint || map_.count(BlockType::kFree) * bs_ >= opts_.auto_commit_below) return;
  }
  start_auto_commit();
}

void BowTarget::start_auto_commit() {
  if (auto_commit_started_.exchange(true)) return;
  spdlog::warn("bow: free space below {} bytes: committing the checkpoint", opts_.auto_commit_below);
  auto_commit_ = jobs_->start("auto-commit", Job::Kind::kService, [this](JobControl&) {
    Status s = commit();
    if (!s.ok()) {
      spdlog::error("bow: automatic commit failed: {}", s.message());
      std::lock_guard lock(mu_);
      auto_commit_failed_ = true;
      cv_.notify_all();
    }
    return s;
  });
}

Status BowTarget::write_saving(uint64_t first, std::span<const std::byte> data, uint32_t flags,
                               SpanRefs spans, const Plan& plan, ResumeJournal* journal) {
  // Read the checkpoint data to save, in this thread (in parallel with other
  // writers); the committer writes it, batched, before the log.
  auto p = std::make_shared<Pending>();
  for (const auto& c : plan.copies) {
    AlignedBuf tmp = pool_.get(c.count * bs_);
    Status s = lower_device()->read(c.src * bs_, tmp.span());
    uint32_t crc = 0;
    if (s.ok() && !c.s0c_move) crc = entry_checksum(c.src * spb_, bs_, tmp.span());
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      undo_plan_locked(plan);
      for (const auto& [b, e] : spans) busy_.clear(b, e);
      for (const auto& cp : plan.copies) busy_.clear(cp.dest, cp.dest + cp.count);
      cv_.notify_all();
      return s;
    }
    p->entries.push_back(LogEntry{c.src * spb_, c.dest * spb_, static_cast<uint32_t>(c.count * bs_), crc});
    p->saved.push_back({c.dest, std::move(tmp)});
  }
  if (journal) {
    for (const auto& [b, e] : plan.claims) journal->append(JournalRecord::kClaim, b, e - b);
  }
  p->has_claims = !plan.claims.empty();
  p->sources = plan.sources;
  p->moves_s0c = plan.moves_s0c;
  p->old_s0c = plan.old_s0c;
  p->new_s0c = plan.new_s0c;
  p->busy.assign(spans.begin(), spans.end());
  for (const auto& c : plan.copies) p->busy.emplace_back(c.dest, c.dest + c.count);  // marked when planned
  p->first = first;
  p->data = pool_.get(data.size());
  std::memcpy(p->data.span().data(), data.data(), data.size());
  p->flags = flags;
  uint64_t bytes = p->data.size();
  for (const auto& sv : p->saved) bytes += sv.data.size();
  p->bytes = bytes;

  std::unique_lock q(q_mu_);
  // With nothing pending at all a write larger than the limit still goes.
  space_cv_.wait(q,
                 [this] { return pending_bytes_ < opts_.max_pending_bytes || pending_bytes_ == 0 || stop_; });
  pending_bytes_ += bytes;
  queue_.push_back(p);
  ++enqueued_;
  if (flags & kFua) commit_now_ = true;  // its writer waits for the batch: no gathering
  if (committer_waiting_) {
    committer_waiting_ = false;
    work_cv_.notify_one();
  } else {
    end_gathering_locked();
  }
  if (!(flags & kFua)) return Status::Ok();  // acknowledged; durable at the next flush
  done_cv_.wait(q, [&] { return p->done; });
  return p->status;
}

Status BowTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  if (flags & kFastZero) return Status::Error(ENOTSUP, "bow: no fast zeroing");
  const bool aligned = offset % bs_ == 0 && length % bs_ == 0;
  if (state() == State::kCommitted && aligned && lower_device()->capabilities().write_zeroes) {
    return lower_device()->write_zeroes(offset, length, flags);
  }
  // Outside COMMITTED zeroes are data like any other: they need saved copies.
  static const AlignedBuf zeroes = [] {
    AlignedBuf b(kZeroChunk);
    std::memset(b.span().data(), 0, kZeroChunk);
    return b;
  }();
  while (length > 0) {
    uint64_t n = std::min<uint64_t>(length, kZeroChunk);
    if (Status s = write(offset, zeroes.span().first(n), flags & kFua); !s.ok()) return s;
    offset += n;
    length -= n;
  }
  return Status::Ok();
}

Status BowTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  if (state() == State::kCommitted) {
    if (!lower_device()->capabilities().trim) return Status::Ok();
    return lower_device()->trim(offset, length, flags);
  }
  // Only whole blocks can be free; block 0 never is (it becomes the log).
  const uint64_t first = std::max<uint64_t>(1, (offset + bs_ - 1) / bs_);
  const uint64_t end = (offset + length) / bs_;
  if (first >= end) return Status::Ok();
  Spans released;
  std::shared_ptr<ResumeJournal> journal;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !transition_ && !overlaps_busy_locked(first, end); });
    if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
    if (state_ == State::kTrim) {
      // Free space for the coming checkpoint; not passed down, as in dm-bow.
      Spans unchanged;
      map_.for_each(first, end - first, [&](const BlockRun& r) {
        if (r.type == BlockType::kUnchanged) unchanged.emplace_back(r.start, r.count);
      });
      for (const auto& [s, n] : unchanged) map_.set(s, n, BlockType::kFree);
    } else if (state_ == State::kCheckpoint) {
      // Checkpoint data (unchanged, saved copies, the log) is kept and costs
      // no backup space; new data that was discarded becomes free space again.
      // Reusing such a block for a later saved copy is safe: restore applies
      // the later entry first.
      map_.for_each(first, end - first, [&](const BlockRun& r) {
        if (r.type == BlockType::kChanged) released.emplace_back(r.start, r.count);
      });
      for (const auto& [s, n] : released) map_.set(s, n, BlockType::kFree);
      journal = journal_;
    } else {
      lock.unlock();
      return trim(offset, length, flags);  // committed meanwhile
    }
  }
  if (journal) {
    for (const auto& [s, n] : released) journal->append(JournalRecord::kRelease, s, n);
  }
  return Status::Ok();
}

Status BowTarget::flush() {
  if (!failure().ok()) return Status::Error(EIO, "bow: device failed earlier");
  {
    // Every write acknowledged before this flush must be applied first.
    std::unique_lock q(q_mu_);
    const uint64_t target = enqueued_;
    if (target > applied_) {
      commit_now_ = true;  // the committer must not gather while a flush waits
      end_gathering_locked();
    }
    done_cv_.wait(q, [&] { return applied_ >= target; });
  }
  std::shared_ptr<ResumeJournal> journal;
  {
    std::lock_guard lock(mu_);
    if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
    journal = journal_;
  }
  if (journal) {
    if (Status s = journal->sync(); !s.ok()) return fail(s);
  }
  return lower_device()->flush();
}

// ---- Committer ------------------------------------------------------------

bool BowTarget::batch_full_locked() const {
  return queue_.size() >= kGatherWrites || pending_bytes_ >= opts_.max_pending_bytes / 2;
}

void BowTarget::end_gathering_locked() {
  if (committer_gathering_ && (commit_now_ || batch_full_locked())) {
    committer_gathering_ = false;  // one wake-up is enough
    work_cv_.notify_one();
  }
}

void BowTarget::committer_loop() {
  for (;;) {
    std::vector<std::shared_ptr<Pending>> batch;
    {
      std::unique_lock q(q_mu_);
      while (!stop_ && queue_.empty()) {
        committer_waiting_ = true;
        work_cv_.wait(q);
      }
      committer_waiting_ = false;
      if (queue_.empty()) return;  // stopping, and drained
      // Group commit, gathered: a batch costs two barriers however many
      // writes it holds, and these writes are acknowledged already, so
      // waiting briefly for more costs no client anything, while waking
      // per handful of writes cost a context switch and two barriers each
      // (docs/performance.md, run 9). A flush or FUA write, a full batch,
      // pressure on the pending memory or stopping ends the wait at once.
      if (opts_.gather_us > 0 && !stop_ && !commit_now_ && !batch_full_locked()) {
        committer_gathering_ = true;
        work_cv_.wait_for(q, std::chrono::microseconds(opts_.gather_us),
                          [this] { return stop_ || commit_now_ || batch_full_locked(); });
        committer_gathering_ = false;
      }
      commit_now_ = false;
      batch.assign(queue_.begin(), queue_.end());
      queue_.clear();
    }
    uint64_t new_s0c = 0;
    Status s = log_batch(batch, &new_s0c);
    // The saved copies are on disk (or failed): their memory can go now.
    uint64_t freed = 0;
    {
      std::lock_guard q(q_mu_);
      for (auto& p : batch) {
        uint64_t n = 0;
        for (const auto& sv : p->saved) n += sv.data.size();
        p->saved.clear();
        p->bytes -= n;
        freed += n;
      }
      pending_bytes_ -= freed;
      logged_.push_back(Logged{std::move(batch), std::move(s), new_s0c});
      if (applier_waiting_) {
        applier_waiting_ = false;
        logged_cv_.notify_one();
      }
    }
    if (freed > 0) space_cv_.notify_all();
  }
}

Status BowTarget::log_batch(std::vector<std::shared_ptr<Pending>>& batch, uint64_t* new_s0c) {
  Status s = failure();
  if (!s.ok()) return s;
  std::vector<LogEntry> entries;
  std::optional<size_t> move;
  for (auto& p : batch) {
    for (size_t i = 0; i < p->entries.size(); ++i) {
      // A write that moves the live block 0 has that entry first.
      if (p->moves_s0c && i == 0) move = entries.size();
      entries.push_back(p->entries[i]);
    }
    if (p->moves_s0c) *new_s0c = p->new_s0c;
  }
  // The saved copies become durable together with the log writes that
  // must precede the new header (append_entries decides the grouping).
  std::vector<WriteRef> saved;
  for (auto& p : batch) {
    for (auto& sv : p->saved) saved.push_back({sv.dest * bs_, sv.data.span()});
  }
  std::lock_guard log_lock(log_mu_);
  return append_entries(entries, move, std::move(saved));
}

void BowTarget::applier_loop() {
  for (;;) {
    Logged next;
    {
      std::unique_lock q(q_mu_);
      while (!applier_stop_ && logged_.empty()) {
        applier_waiting_ = true;
        logged_cv_.wait(q);
      }
      applier_waiting_ = false;
      if (logged_.empty()) return;  // stopping, and drained
      next = std::move(logged_.front());
      logged_.pop_front();
    }
    Status s = apply_batch(next.batch, std::move(next.status), next.new_s0c);
    {
      std::lock_guard q(q_mu_);
      for (auto& p : next.batch) {
        p->done = true;
        p->status = s;
        pending_bytes_ -= p->bytes;
      }
      applied_ += next.batch.size();
    }
    done_cv_.notify_all();
    space_cv_.notify_all();
  }
}

Status BowTarget::apply_batch(std::vector<std::shared_ptr<Pending>>& batch, Status s, uint64_t new_s0c) {
  // The log covers every saved copy of this batch: the overwrites may go.
  // Batches are applied in log order, so s0c_ already reflects every
  // earlier move of the live block 0.
  uint64_t s0c;
  std::shared_ptr<ResumeJournal> journal;
  {
    std::lock_guard lock(mu_);
    s0c = new_s0c != 0 ? new_s0c : s0c_;
    journal = journal_;
    if (s.ok() && !failed_.ok()) s = Status::Error(EIO, "bow: device failed earlier");
  }
  bool fua = false, claims = false;
  for (auto& p : batch) {
    fua = fua || (p->flags & kFua);
    claims = claims || p->has_claims;
  }
  for (auto& p : batch) {
    if (!s.ok()) break;
    s = write_physical(p->first, p->data.span(), p->flags & kFua, s0c);
  }
  if (s.ok() && fua && claims && journal) s = journal->sync();
  if (!s.ok()) (void)fail(s);

  std::lock_guard lock(mu_);
  if (s.ok()) {
    for (auto& p : batch) {
      for (const auto& [b, e] : p->sources) map_.set(b, e - b, BlockType::kChanged);
      if (p->moves_s0c) {
        map_.set(p->old_s0c, 1, BlockType::kChanged);
        map_.set(p->new_s0c, 1, BlockType::kSector0Live);
        s0c_ = p->new_s0c;
      }
    }
  }
  for (auto& p : batch) {
    for (const auto& [b, e] : p->busy) busy_.clear(b, e);
  }
  cv_.notify_all();
  return s;
}

Status BowTarget::write_log() { return lower_device()->write(0, log_.span(), kFua); }

Status BowTarget::rollover_locked_log(uint64_t dest) {
  // Save the full log block, durably, before block 0 is reused.
  const uint32_t crc = entry_checksum(0, bs_, log_.span());
  if (Status s = lower_device()->write(dest * bs_, log_.span(), kFua); !s.ok()) return s;
  // The new block's header and entry 0 lie in its first 52 bytes; the rest
  // of block 0 is left as it is on disk, so only the first sector changes.
  LogHeader h = log_header_;
  h.sequence += 1;
  h.count = 1;
  pack_header(h, log_.span());
  pack_entry(LogEntry{0, dest * spb_, bs_, crc}, log_.span().subspan(h.header_size, kEntrySize));
  if (Status s = write_log(); !s.ok()) return s;
  log_header_ = h;
  log_blocks_.store(h.sequence + 1);
  log_entries_.fetch_add(1);
  backed_up_bytes_.fetch_add(bs_);
  return Status::Ok();
}

Status BowTarget::append_entries(const std::vector<LogEntry>& entries, std::optional<size_t> move,
                                 std::vector<WriteRef> durable) {
  const uint32_t cap = log_capacity(bs_, log_header_.header_size);
  const uint32_t first_sector = std::min<uint32_t>(512, bs_);
  size_t i = 0;
  auto pack_entries = [&](std::span<std::byte> blk, LogHeader& h, size_t n) {
    for (size_t j = 0; j < n; ++j) {
      size_t at = h.header_size + kEntrySize * (h.count + j);
      pack_entry(entries[i + j], blk.subspan(at, kEntrySize));
    }
    if (move && *move >= i && *move < i + n) h.sector0 = entries[*move].dest;
    h.count += static_cast<uint32_t>(n);
    log_entries_.fetch_add(n);
    for (size_t j = 0; j < n; ++j) backed_up_bytes_.fetch_add(entries[i + j].size);
    i += n;
  };
  // However this ends, writers waiting on saved log blocks may go.
  struct SavingDone {
    BowTarget* t;
    ~SavingDone() {
      std::lock_guard lock(t->mu_);
      if (!t->log_saving_.empty()) {
        t->log_saving_.clear();
        t->cv_.notify_all();
      }
    }
  } saving_done{this};

  LogHeader h = log_header_;
  if (entries.size() <= cap - h.count) {
    // Everything fits: the entries go beyond `count` (invisible to readers;
    // the header bytes are unchanged), durable with the saved copies in one
    // barrier; then the header publishes them.
    pack_entries(log_.span(), h, entries.size());
    durable.push_back({0, log_.span()});
    if (Status s = lower_device()->write_batch(durable, kFua); !s.ok()) return s;
    pack_header(h, log_.span());
    if (Status s = write_log(); !s.ok()) return s;
    log_header_ = h;
    return Status::Ok();
  }

  // Entries that do not fit fill the current log block, which is saved to a
  // reserved block, and so on: every intermediate log block exists only as
  // a saved copy, reachable through entry 0 of its successor. The saved log
  // blocks are durable with the saved data in one barrier; then block 0
  // switches once, changing only its first sector.
  std::vector<AlignedBuf> saved_logs;
  AlignedBuf blk(bs_);
  std::memcpy(blk.span().data(), log_.data(), bs_);
  // Saves `blk` (header packed) to `dest` within the barrier and starts the
  // next log block in `blk`, with entry 0 pointing at it.
  auto save_block = [&](uint64_t dest) {
    const uint32_t crc = entry_checksum(0, bs_, blk.span());
    AlignedBuf full(bs_);
    std::memcpy(full.span().data(), blk.span().data(), bs_);
    durable.push_back({dest * bs_, full.span()});
    saved_logs.push_back(std::move(full));
    h.sequence += 1;
    h.count = 0;
    pack_entry(LogEntry{0, dest * spb_, bs_, crc}, blk.span().subspan(h.header_size, kEntrySize));
    h.count = 1;
    log_entries_.fetch_add(1);
    backed_up_bytes_.fetch_add(bs_);
  };
  while (entries.size() - i > cap - h.count) {
    pack_entries(blk.span(), h, cap - h.count);
    pack_header(h, blk.span());
    uint64_t dest;
    {
      std::lock_guard lock(mu_);
      if (rollover_blocks_.empty())
        return Status::Error(EIO, "bow: internal error: no block reserved for the log");
      dest = *rollover_blocks_.begin();
      rollover_blocks_.erase(rollover_blocks_.begin());
      log_saving_.insert(dest);
    }
    save_block(dest);
  }
  // Block 0 switches by rewriting only its first sector. Entries beyond it
  // would need two more barriers (appended beyond `count`, then published).
  // Instead the last block is saved too, partly filled (readers go by
  // `count`), into one more free block when there is one, so that the new
  // block 0 holds just its entry 0: two barriers per batch in all.
  const size_t in_sector = (first_sector - h.header_size) / kEntrySize;
  const size_t rest = entries.size() - i;
  if (rest > (in_sector > h.count ? in_sector - h.count : 0)) {
    std::optional<uint64_t> extra;
    {
      std::lock_guard lock(mu_);
      if (map_.count(BlockType::kFree) > kCommitSpare) {
        extra = map_.first_free(1)->start;
        map_.set(*extra, 1, BlockType::kBackup);
        log_saving_.insert(*extra);
        // The new block 0 has room for `rest` more entries than the
        // reservations assumed (they counted on it holding them).
        log_slots_ += static_cast<int64_t>(rest);
      }
    }
    if (extra) {
      pack_entries(blk.span(), h, rest);
      pack_header(h, blk.span());
      save_block(*extra);
    }
  }
  // Whatever else fits in the first sector goes with the switch.
  pack_entries(blk.span(), h, std::min(entries.size() - i, in_sector > h.count ? in_sector - h.count : 0));
  pack_header(h, blk.span());
  if (Status s = lower_device()->write_batch(durable, kFua); !s.ok()) return s;
  {
    std::lock_guard lock(mu_);  // the saved log blocks are durable
    log_saving_.clear();
    cv_.notify_all();
  }
  std::memcpy(log_.data(), blk.span().data(), first_sector);
  if (Status s = write_log(); !s.ok()) return s;
  log_header_ = h;
  log_blocks_.store(h.sequence + 1);
  if (i == entries.size()) return Status::Ok();

  // The rest: beyond `count`, then the header (first sector) publishes them.
  h = log_header_;
  pack_entries(log_.span(), h, entries.size() - i);
  if (Status s = write_log(); !s.ok()) return s;
  pack_header(h, log_.span());
  if (Status s = write_log(); !s.ok()) return s;
  log_header_ = h;
  return Status::Ok();
}

// ---- State transitions ----------------------------------------------------

Status BowTarget::checkpoint() {
  std::unique_lock lock(mu_);
  if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
  if (state_ != State::kTrim) {
    return Status::Error(EINVAL,
                         fmt::format("bow: cannot checkpoint in state {}: a device is checkpointed once, "
                                     "from TRIM (restart the server after a commit for a new checkpoint)",
                                     state_name(state_)));
  }
  if (transition_) return Status::Error(EBUSY, "bow: another state change is running");
  transition_ = true;
  wait_quiescent_locked(lock);
  auto finish = [&](Status s) {
    transition_ = false;
    cv_.notify_all();
    return s;
  };
  if (map_.type_at(0) == BlockType::kFree) map_.set(0, 1, BlockType::kUnchanged);
  if (map_.count(BlockType::kFree) < 2 + kCommitSpare) {
    return finish(
        Status::Error(ENOSPC, fmt::format("bow: only {} free blocks known, at least {} needed: trim "
                                          "the filesystem (fstrim) before the checkpoint",
                                          map_.count(BlockType::kFree), 2 + kCommitSpare)));
  }
  const uint64_t s0c = map_.first_free(1)->start;
  map_.set(s0c, 1, BlockType::kSector0Live);
  const uint64_t dest = map_.first_free(1)->start;
  map_.set(dest, 1, BlockType::kBackup);
  map_.set(0, 1, BlockType::kSector0);
  std::vector<JournalExtent> free_extents;
  map_.for_each(0, blocks_, [&](const BlockRun& r) {
    if (r.type == BlockType::kFree) free_extents.push_back({JournalRecord::kFree, r.start, r.count});
  });
  lock.unlock();

  Status s;
  std::shared_ptr<ResumeJournal> journal;
  {
    std::lock_guard log_lock(log_mu_);
    AlignedBuf b0(bs_);
    s = lower_device()->read(0, b0.span());
    if (s.ok()) s = lower_device()->write(s0c * bs_, b0.span(), 0);
    if (s.ok()) s = lower_device()->write(dest * bs_, b0.span(), 0);
    const uint32_t crc = entry_checksum(0, bs_, b0.span());
    if (s.ok() && !opts_.meta_path.empty()) {
      // The journal must be durable before block 0 says "checkpoint".
      auto j = ResumeJournal::create(env_, opts_.meta_path,
                                     JournalHeader{bs_, blocks_, s0c, dest * spb_, crc}, free_extents);
      if (j.ok()) {
        journal = std::move(j.value());
      } else {
        s = j.status();
      }
    }
    if (s.ok()) s = lower_device()->flush();
    if (s.ok()) {
      // Keep block 0's own bytes beyond the header and entry 0, so that a
      // torn write of the log changes only its first sector.
      log_ = AlignedBuf(bs_);
      std::memcpy(log_.data(), b0.data(), bs_);
      log_header_ = LogHeader{kMagic, kHeaderVersion, kHeaderSize, bs_, 1, 0, s0c * spb_};
      pack_header(log_header_, log_.span());
      pack_entry(LogEntry{0, dest * spb_, bs_, crc}, log_.span().subspan(kHeaderSize, kEntrySize));
      s = write_log();
      if (s.ok()) s = lower_device()->flush();
      if (!s.ok()) {
        // Block 0 may be half written: put its contents back.
        Status back = lower_device()->write(0, b0.span(), 0);
        if (back.ok()) back = lower_device()->flush();
        if (!back.ok()) (void)fail(back);
      }
    }
  }
  lock.lock();
  if (!s.ok()) {
    map_.set(s0c, 1, BlockType::kFree);
    map_.set(dest, 1, BlockType::kFree);
    map_.set(0, 1, BlockType::kUnchanged);
    lock.unlock();
    if (!opts_.meta_path.empty()) (void)ResumeJournal::remove(env_, opts_.meta_path);
    lock.lock();
    return finish(s);
  }
  s0c_ = s0c;
  journal_ = std::move(journal);
  log_slots_ = log_capacity(bs_, kHeaderSize) - 1;
  log_blocks_.store(1);
  log_entries_.store(1);
  backed_up_bytes_.store(bs_);
  state_.store(State::kCheckpoint, std::memory_order_release);
  spdlog::info("bow: checkpoint taken ({} of free space)", format_size(map_.count(BlockType::kFree) * bs_));
  return finish(Status::Ok());
}

Status BowTarget::commit() {
  std::unique_lock lock(mu_);
  if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
  if (state_ != State::kCheckpoint) {
    return Status::Error(EINVAL,
                         fmt::format("bow: cannot commit in state {}: {}", state_name(state_),
                                     state_ == State::kTrim ? "there is no checkpoint (checkpoint first)"
                                                            : "already committed"));
  }
  if (transition_) return Status::Error(EBUSY, "bow: another state change is running");
  transition_ = true;
  // Every acknowledged write keeps its blocks busy until it is applied, so
  // this also drains the committer.
  wait_quiescent_locked(lock);
  const uint64_t s0c = s0c_;
  const uint32_t lbs = std::min<uint32_t>(bs_, lower_device()->geometry().logical_block_size);
  // Where a write of block 0 can tear (device sectors smaller than a block),
  // the log is first rolled over so that it fits in the first sector; the
  // live contents then go to the other sectors first and the first sector
  // last, so block 0 is a valid log until the final write.
  std::optional<uint64_t> spare;
  const bool tearable = lbs < bs_ && kHeaderSize + kEntrySize * log_header_.count > lbs;
  if (tearable) {
    if (!rollover_blocks_.empty()) {
      spare = *rollover_blocks_.begin();
      rollover_blocks_.erase(rollover_blocks_.begin());
    } else if (auto f = map_.first_free(1)) {
      spare = f->start;
      map_.set(f->start, 1, BlockType::kBackup);
    }
  }
  lock.unlock();

  Status s;
  {
    std::lock_guard log_lock(log_mu_);
    AlignedBuf live(bs_);
    s = lower_device()->read(s0c * bs_, live.span());
    if (s.ok() && spare) s = rollover_locked_log(*spare);
    if (s.ok() && spare) {
      s = lower_device()->write(lbs, live.span().subspan(lbs), 0);
      if (s.ok()) s = lower_device()->flush();
      if (s.ok()) s = lower_device()->write(0, live.span().first(lbs), 0);
    } else if (s.ok()) {
      if (tearable) spdlog::warn("bow: no free block for an atomic commit; writing block 0 in one piece");
      s = lower_device()->write(0, live.span(), 0);
    }
    if (s.ok()) s = lower_device()->flush();
  }
  lock.lock();
  transition_ = false;
  cv_.notify_all();
  if (!s.ok()) {
    lock.unlock();
    return fail(s);
  }
  state_.store(State::kCommitted, std::memory_order_release);
  journal_.reset();
  lock.unlock();
  if (!opts_.meta_path.empty()) {
    // Harmless if it fails: with block 0 committed a journal is ignored.
    if (Status r = ResumeJournal::remove(env_, opts_.meta_path); !r.ok())
      spdlog::warn("bow: {}", r.message());
  }
  spdlog::info("bow: checkpoint committed");
  return Status::Ok();
}

Status BowTarget::resume_from(const LogChain& chain) {
  const std::string& path = opts_.meta_path;
  const uint64_t seq = chain.blocks.size() - 1;
  if (path.empty()) {
    return Status::Error(EINVAL,
                         fmt::format("bow: the image holds a checkpoint (log sequence {}) but no resume "
                                     "journal is configured (meta=PATH): restore it with 'bowstack "
                                     "restore IMAGE' (add --roll-forward to keep the changes)",
                                     seq));
  }
  auto j = ResumeJournal::load(env_, path);
  if (!j.ok()) {
    return Status::Error(j.status().code(),
                         fmt::format("bow: the image holds a checkpoint but its resume "
                                     "journal cannot be used ({}): restore it with "
                                     "'bowstack restore IMAGE' (add --roll-forward to keep "
                                     "the changes)",
                                     j.status().message()));
  }
  const JournalHeader& h = j->header;
  const LogEntry& e0 = chain.blocks.front().entries.front();
  if (h.block_size != bs_ || h.blocks != blocks_ || h.log0_dest != e0.dest || h.log0_crc != e0.checksum ||
      h.s0c_initial == 0 || h.s0c_initial >= blocks_) {
    return Status::Error(
        EINVAL, fmt::format("bow: resume journal '{}' belongs to another checkpoint or device "
                            "(journal/log: block size {}/{}, blocks {}/{}, first entry dest "
                            "{}/{}, checksum {:#010x}/{:#010x}); restore with 'bowstack restore "
                            "IMAGE'",
                            path, h.block_size, bs_, h.blocks, blocks_, h.log0_dest, e0.dest, h.log0_crc,
                            e0.checksum));
  }
  for (const JournalExtent& x : j->extents) {
    if (x.count == 0 || x.start == 0 || x.start >= blocks_ || x.count > blocks_ - x.start) {
      return Status::Error(EINVAL,
                           fmt::format("bow: resume journal '{}' is corrupt: extent {}+{} outside the "
                                       "device",
                                       path, x.start, x.count));
    }
    map_.set(x.start, x.count, x.type == JournalRecord::kClaim ? BlockType::kChanged : BlockType::kFree);
  }
  uint64_t s0c = h.s0c_initial;
  map_.set(s0c, 1, BlockType::kSector0Live);
  map_.set(0, 1, BlockType::kSector0);
  uint64_t entries = 0, bytes = 0;
  for (const LogBlock& lb : chain.blocks) {
    for (size_t i = 0; i < lb.entries.size(); ++i) {
      const LogEntry& e = lb.entries[i];
      const uint64_t src = e.source / spb_, dst = e.dest / spb_, n = e.size / bs_;
      ++entries;
      bytes += e.size;
      if (i == 0) {  // the original block 0, or the previous log block
        map_.set(dst, n, BlockType::kBackup);
        continue;
      }
      if (src == 0) return Status::Error(EINVAL, "bow: log entry other than entry 0 saves block 0");
      if (e.checksum == 0 && n == 1 && src == s0c) {  // the live block 0 moved
        map_.set(src, 1, BlockType::kChanged);
        map_.set(dst, 1, BlockType::kSector0Live);
        s0c = dst;
        continue;
      }
      map_.set(src, n, BlockType::kChanged);
      map_.set(dst, n, BlockType::kBackup);
    }
  }
  if (chain.sector0 != s0c * spb_) {
    return Status::Error(EINVAL,
                         fmt::format("bow: cannot resume: the log says the live block 0 is at sector {}, "
                                     "replaying the journal and log gives {}",
                                     chain.sector0, s0c * spb_));
  }
  log_ = AlignedBuf(bs_);
  AlignedBuf b0(bs_);
  if (Status s = lower_device()->read(0, b0.span()); !s.ok()) return s;
  std::memcpy(log_.data(), b0.span().data(), bs_);
  log_header_ = chain.blocks.back().header;
  auto reopened = ResumeJournal::reopen(env_, path, j->valid_records);
  if (!reopened.ok()) return reopened.status();
  journal_ = std::move(reopened.value());
  s0c_ = s0c;
  log_slots_ = log_capacity(bs_, log_header_.header_size) - log_header_.count;
  log_blocks_.store(seq + 1);
  log_entries_.store(entries);
  backed_up_bytes_.store(bytes);
  state_.store(State::kCheckpoint, std::memory_order_release);
  spdlog::info("bow: resumed the checkpoint: {} log blocks, {} entries, {} free", seq + 1, entries,
               format_size(map_.count(BlockType::kFree) * bs_));
  return Status::Ok();
}

// ---- Control --------------------------------------------------------------

Result<std::string> BowTarget::message(std::string_view text) {
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text == "checkpoint") {
    if (Status s = checkpoint(); !s.ok()) return s;
    return std::string("checkpoint taken");
  }
  if (text == "commit") {
    if (Status s = commit(); !s.ok()) return s;
    return std::string("committed");
  }
  return BlockDevice::message(text);
}

BowTarget::Stats BowTarget::stats() const {
  std::lock_guard lock(mu_);
  Stats s{};
  s.state = state_;
  s.block_size = bs_;
  s.free_bytes = state_ == State::kCommitted ? 0 : map_.count(BlockType::kFree) * bs_;
  s.backed_up_bytes = state_ == State::kCheckpoint ? backed_up_bytes_.load() : 0;
  s.log_blocks = state_ == State::kCheckpoint ? log_blocks_.load() : 0;
  s.log_entries = state_ == State::kCheckpoint ? log_entries_.load() : 0;
  s.range_count = map_.run_count();
  s.sector0_block = state_ == State::kCheckpoint ? s0c_ : 0;
  s.failed = !failed_.ok();
  {
    std::lock_guard q(q_mu_);
    s.pending_bytes = pending_bytes_;
  }
  return s;
}

BlockType BowTarget::block_type(uint64_t block) const {
  std::lock_guard lock(mu_);
  return map_.type_at(block);
}

void BowTarget::describe(nlohmann::json* out) const {
  Stats s = stats();
  auto& j = *out;
  j["state"] = state_name(s.state);
  j["block_size"] = s.block_size;
  j["free_bytes"] = s.free_bytes;
  j["backed_up_bytes"] = s.backed_up_bytes;
  j["log_blocks"] = s.log_blocks;
  j["log_entries"] = s.log_entries;
  j["range_count"] = s.range_count;
  j["pending_bytes"] = s.pending_bytes;
  j["sector0_block"] = s.sector0_block;
  j["resume_journal"] = opts_.meta_path;
  j["auto_commit_below"] = opts_.auto_commit_below;
  j["failed"] = s.failed;
}

std::string BowTarget::status_line() const {
  Stats s = stats();
  return fmt::format("{}, block size {}, free {}, backed up {}, {} log blocks ({} entries), {} ranges{}",
                     state_name(s.state), s.block_size, format_size(s.free_bytes),
                     format_size(s.backed_up_bytes), s.log_blocks, s.log_entries, s.range_count,
                     s.failed ? ", FAILED" : "");
}

}  // namespace bowstack::bow
