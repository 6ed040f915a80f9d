// bow's front end: reads, writes, trims, zeroes and flushes as they
// arrive, the busy set that orders overlapping ones, and physical I/O.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/parse.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/bow_target_internal.h"

namespace bowstack::bow {

using namespace internal;

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
    if (!failed_.ok()) return Status::Error(EIO, "bow: device failed earlier");
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
  if (st == State::kCheckpoint) {
    // Space in the backing store for what is written after this write is
    // acknowledged (saved copies, the overwrite, log rollovers) and for its
    // claims in the journal: a full disk fails this write, nothing else.
    Status r;
    if (!plan.copies.empty()) r = reserve_backing(first, count, plan);
    if (r.ok() && journal && !plan.claims.empty()) r = journal->reserve(plan.claims.size());
    if (!r.ok()) {
      abandon_plan(plan, spans);
      return Status::Error(r.code(), "bow: no space in the backing store for this write: " + why(r) +
                                         " (reads and writes that save nothing go on; free space "
                                         "there, or commit)");
    }
    maybe_auto_commit();
  }

  std::span<const std::byte> data = buf;
  AlignedBuf merged;
  if (!aligned) {
    // Read-modify-write: the blocks are ours (busy), so nothing changes them meanwhile.
    merged = pool_.get(count * bs_);
    Status s = read_blocks_physical(first, count, merged.span(), s0c);
    if (!s.ok()) {
      if (st == State::kCheckpoint) {
        abandon_plan(plan, spans);
      } else {
        release_busy(spans);
      }
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
      abandon_plan(plan, spans);
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
  p->data_block = first;
  p->data = pool_.get(data.size());
  std::memcpy(p->data.span().data(), data.data(), data.size());
  p->flags = flags;
  uint64_t bytes = p->data.size();
  for (const auto& sv : p->saved) bytes += sv.data.size();
  p->bytes = bytes;

  p->wait = (flags & kFua) != 0;  // acknowledged at once otherwise; durable at the next flush
  return wb_->submit(std::move(p));
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
  if (journal && !released.empty()) {
    // Without space for the records the blocks stay changed in the journal:
    // a resumed checkpoint then treats them as changed, which only forgoes
    // their reuse as free space.
    if (Status r = journal->reserve(released.size()); !r.ok()) {
      spdlog::warn("bow: trim not recorded in the resume journal: {}", why(r));
      return Status::Ok();
    }
    for (const auto& [s, n] : released) journal->append(JournalRecord::kRelease, s, n);
  }
  return Status::Ok();
}

Status BowTarget::flush() {
  if (!failure().ok()) return Status::Error(EIO, "bow: device failed earlier");
  // Every write acknowledged before this flush must be applied first
  // (bow's failures are its own: the pipeline's drain never fails).
  (void)wb_->drain();
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

}  // namespace bowstack::bow
