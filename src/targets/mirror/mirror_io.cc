// The mirror's data path: writes to every working leg behind the
// write-intent bitmap, reads from one leg with fallback and read-error
// correction, flushes across legs.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/aligned_buf.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {

int64_t MirrorTarget::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

size_t MirrorTarget::primary_locked() const {
  for (size_t i = 0; i < legs_.size(); ++i) {
    if (legs_[i]->state == LegState::kInSync) return i;
  }
  return 0;  // assembly guarantees one; a last leg is never failed
}

size_t MirrorTarget::other_in_sync_locked(size_t leg) const {
  for (size_t i = 0; i < legs_.size(); ++i) {
    if (i != leg && legs_[i]->state == LegState::kInSync) return i;
  }
  return legs_.size();
}

bool MirrorTarget::readable_locked(size_t i, uint64_t offset, uint64_t length) const {
  const Leg& l = *legs_[i];
  if (l.state == LegState::kInSync) return true;
  return l.state == LegState::kRecovering && offset + length <= l.mark;
}

size_t MirrorTarget::pick_leg_locked(uint64_t offset, uint64_t length, const std::vector<bool>& tried) {
  // Regions awaiting resync differ between legs: read the primary's copy,
  // the one the resync spreads, so that every read agrees.
  if (resync_left_ > 0) {
    const md::BitRange r{offset / chunk_, (offset + length - 1) / chunk_ + 1};
    for (uint64_t b = r.first; b < r.end; ++b) {
      if (resync_[b]) {
        const size_t p = primary_locked();
        if (!tried[p]) return p;
        break;  // the primary failed: any other copy beats an error
      }
    }
  }
  std::vector<size_t> cand;
  bool any_fast = false;
  for (size_t i = 0; i < legs_.size(); ++i) {
    if (tried[i] || !readable_locked(i, offset, length)) continue;
    cand.push_back(i);
    any_fast = any_fast || !legs_[i]->write_mostly;
  }
  if (any_fast) std::erase_if(cand, [this](size_t i) { return legs_[i]->write_mostly; });
  if (cand.empty()) return legs_.size();
  switch (opts_.read_policy) {
    case ReadPolicy::kFirst:
      return cand.front();
    case ReadPolicy::kRoundRobin:
      return cand[rr_.fetch_add(1, std::memory_order_relaxed) % cand.size()];
    case ReadPolicy::kBalance: {
      // Fewest reads in flight; ties rotate, so that an idle mirror still
      // spreads sequential streams over its legs.
      const size_t start = rr_.fetch_add(1, std::memory_order_relaxed) % cand.size();
      size_t best = cand[start];
      for (size_t k = 1; k < cand.size(); ++k) {
        const size_t i = cand[(start + k) % cand.size()];
        if (legs_[i]->inflight.load(std::memory_order_relaxed) <
            legs_[best]->inflight.load(std::memory_order_relaxed))
          best = i;
      }
      return best;
    }
  }
  return cand.front();
}

Status MirrorTarget::read(uint64_t offset, std::span<std::byte> buf) {
  if (detached_.load(std::memory_order_relaxed)) reattach();
  last_client_io_ns_.store(now_ns(), std::memory_order_relaxed);
  std::vector<bool> tried(legs_.size(), false);
  std::vector<size_t> bad;
  Status last = Status::Error(EIO, "mirror: no leg can serve the read");
  for (;;) {
    size_t i = 0;
    {
      std::lock_guard lock(mu_);
      i = pick_leg_locked(offset, buf.size(), tried);
    }
    if (i == legs_.size()) return last;
    Leg& l = *legs_[i];
    l.inflight.fetch_add(1, std::memory_order_relaxed);
    Status s = l.dev->read(l.offset + offset, buf);
    l.inflight.fetch_sub(1, std::memory_order_relaxed);
    if (s.ok()) {
      l.reads.fetch_add(1, std::memory_order_relaxed);
      for (size_t b : bad) (void)correct_read(b, i, offset, buf.size());
      return s;
    }
    l.errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("mirror: {}: read of {} bytes at {} failed ({}); trying another leg", l.name, buf.size(),
                 offset, why(s));
    tried[i] = true;
    last = s;
    std::unique_lock lock(mu_);
    if (!read_error_limit_locked(i)) {
      bad.push_back(i);
    } else if (!fail_leg_locked(lock, i, s)) {
      bad.push_back(i);  // the last in-sync leg: corrected, never failed
    }
  }
}

bool MirrorTarget::read_error_limit_locked(size_t i) {
  Leg& l = *legs_[i];
  const auto now = std::chrono::steady_clock::now();
  if (l.read_errors > 0) {
    const auto hours = std::chrono::duration_cast<std::chrono::hours>(now - l.last_read_error).count();
    l.read_errors = hours >= 32 ? 0 : l.read_errors >> hours;
  }
  l.last_read_error = now;
  ++l.read_errors;
  if (opts_.max_read_errors == 0 || l.read_errors <= opts_.max_read_errors) return false;
  spdlog::error(
      "mirror: {}: {} read errors within the decay window, more than max_read_errors={}; failing it", l.name,
      l.read_errors, opts_.max_read_errors);
  return true;
}

Status MirrorTarget::correct_read(size_t bad, size_t good, uint64_t offset, uint64_t length) {
  // md's read-error correction: write the good copy over the bad one. Under
  // the region lock, and from a fresh read, so that a write racing this one
  // is neither lost nor overwritten by what was read before it.
  const uint64_t first = offset / chunk_, end = (offset + length - 1) / chunk_ + 1;
  {
    std::unique_lock lock(mu_);
    if (legs_[bad]->state == LegState::kFaulty) return Status::Ok();
    lock_regions(lock, first, end);
  }
  AlignedBuf buf(length);
  Status s = legs_[good]->dev->read(legs_[good]->offset + offset, buf.span());
  Status w = s.ok() ? legs_[bad]->dev->write(legs_[bad]->offset + offset, buf.span(), 0) : Status::Ok();
  unlock_regions(first, end);
  std::unique_lock lock(mu_);
  Leg& l = *legs_[bad];
  if (!s.ok()) return s;
  if (!w.ok()) {
    ++l.errors;
    (void)fail_leg_locked(lock, bad, w);
    return w;
  }
  ++l.corrected;
  spdlog::warn("mirror: {}: rewrote {} bytes at {} from {} after a read error ({} corrected so far)", l.name,
               length, offset, legs_[good]->name, l.corrected);
  return Status::Ok();
}

Result<MirrorTarget::WriteTicket> MirrorTarget::begin_write(uint64_t offset, uint64_t length) {
  WriteTicket t;
  t.first_bit = offset / chunk_;
  t.end_bit = (offset + std::max<uint64_t>(length, 1) - 1) / chunk_ + 1;
  t.first_unit = offset / kWriteUnit;
  t.end_unit = (offset + std::max<uint64_t>(length, 1) - 1) / kWriteUnit + 1;
  std::unique_lock lock(mu_);
  // Overlapping writes go one after the other, so that every leg sees them
  // in the same order: concurrent ones could otherwise land in different
  // orders on different legs and leave them differing where no bit says so.
  cv_.wait(lock, [&] {
    return !cleaning_ && !copying_.overlaps(t.first_bit, t.end_bit) &&
           !writing_.overlaps(t.first_unit, t.end_unit);
  });
  if (!meta_failure_.ok()) return meta_failure_;
  writing_.mark(t.first_unit, t.end_unit);
  bool need = false;
  for (uint64_t b = t.first_bit; b < t.end_bit; ++b) {
    BitInfo& bi = active_[b];
    ++bi.pending;
    bi.idle_passes = 0;
    if (!md::test_bit(area_, b)) {
      md::set_bit(area_, b, true);
      dirty_pages_[md::bit_byte(b) / md::kBitmapAlign] = true;
      need = true;
    }
  }
  if (need && t.first_bit > 0 && md::test_bit(area_, t.first_bit - 1)) {
    // A sequential stream: set the bits ahead of it in the same commit, so
    // that it pays one metadata commit per kIntentAhead bytes rather than
    // one per region. Harmless when the stream stops: the extra bits are
    // idle and cleared like any other.
    const uint64_t ahead = std::max<uint64_t>(1, kIntentAhead / chunk_);
    for (uint64_t b = t.end_bit; b < std::min(bits_, t.end_bit + ahead); ++b) {
      if (md::test_bit(area_, b)) continue;
      md::set_bit(area_, b, true);
      dirty_pages_[md::bit_byte(b) / md::kBitmapAlign] = true;
      active_[b].done_epoch = epoch_;
    }
  }
  ++writes_inflight_;
  last_write_ = std::chrono::steady_clock::now();
  const uint64_t gen = need ? ++set_gen_ : 0;
  if (Status s = wait_durable(lock, gen, true); !s.ok()) {
    lock.unlock();
    end_write(t);
    return s;
  }
  for (size_t i = 0; i < legs_.size(); ++i) {
    if (legs_[i]->state != LegState::kFaulty) t.legs.push_back(i);
  }
  return t;
}

void MirrorTarget::end_write(const WriteTicket& t) {
  std::lock_guard lock(mu_);
  for (uint64_t b = t.first_bit; b < t.end_bit; ++b) {
    BitInfo& bi = active_[b];
    --bi.pending;
    bi.done_epoch = epoch_;
  }
  writing_.clear(t.first_unit, t.end_unit);
  --writes_inflight_;
  last_write_ = std::chrono::steady_clock::now();
  cv_.notify_all();
}

template <typename Op>
Status MirrorTarget::write_all(uint64_t offset, uint64_t length, Op&& op) {
  if (detached_.load(std::memory_order_relaxed)) reattach();
  last_client_io_ns_.store(now_ns(), std::memory_order_relaxed);
  {
    std::lock_guard lock(mu_);
    if (!flush_failure_.ok()) return flush_failure_;
  }
  auto t = begin_write(offset, length);
  if (!t.ok()) return t.status();
  std::vector<Status> done = on_legs(t->legs, offset, op);
  Status result = Status::Ok();
  std::unique_lock lock(mu_);
  for (size_t k = 0; k < done.size(); ++k) {
    if (done[k].ok()) continue;
    const size_t i = t->legs[k];
    ++legs_[i]->errors;
    if (!fail_leg_locked(lock, i, done[k])) result = done[k];
  }
  lock.unlock();
  end_write(*t);
  return result;
}

bool MirrorTarget::write_in_parallel(const std::vector<size_t>& legs) const {
  if (legs.size() < 2 || opts_.parallel_writes == ParallelWrites::kOff) return false;
  if (opts_.parallel_writes == ParallelWrites::kOn) return true;
  size_t slow = 0;
  for (size_t i : legs) {
    if (legs_[i]->write_ns.load(std::memory_order_relaxed) >= kSlowLegNs) ++slow;
  }
  return slow >= 2;
}

template <typename Op>
std::vector<Status> MirrorTarget::on_legs(const std::vector<size_t>& legs, uint64_t offset, Op&& op) {
  std::vector<Status> out(legs.size());
  auto one = [&](size_t k) {
    Leg& l = *legs_[legs[k]];
    const auto t0 = std::chrono::steady_clock::now();
    out[k] = op(l, l.offset + offset);
    // A moving average over about 8 writes; a lost update between racing
    // writers only delays the switch by a write.
    const auto ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    const uint64_t avg = l.write_ns.load(std::memory_order_relaxed);
    l.write_ns.store(avg - avg / 8 + ns / 8, std::memory_order_relaxed);
  };
  if (!write_in_parallel(legs)) {
    for (size_t k = 0; k < legs.size(); ++k) one(k);
    return out;
  }
  // `one` and `out` live until the latch opens: every task has run by then.
  Latch latch(legs.size() - 1);
  for (size_t k = 1; k < legs.size(); ++k) {
    write_pool_->submit([&, k] { one(k); }, [&] { latch.done(); });
  }
  one(0);
  latch.wait();
  return out;
}

Status MirrorTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  return write_all(offset, buf.size(), [&](Leg& l, uint64_t at) -> Status {
    const bool fua = (flags & kFua) != 0;
    const bool leg_fua = l.fua;
    if (Status s = l.dev->write(at, buf, fua && leg_fua ? uint32_t{kFua} : 0u); !s.ok()) return s;
    return fua && !leg_fua ? l.dev->flush() : Status::Ok();
  });
}

Status MirrorTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  return write_all(offset, length, [&](Leg& l, uint64_t at) -> Status {
    const bool fua = (flags & kFua) != 0;
    const bool leg_fua = l.fua;
    const uint32_t f = (flags & (kNoHole | kFastZero)) | (fua && leg_fua ? uint32_t{kFua} : 0u);
    if (Status s = l.dev->write_zeroes(at, length, f); !s.ok()) return s;
    return fua && !leg_fua ? l.dev->flush() : Status::Ok();
  });
}

Status MirrorTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  // Legs must stay equal, and a trimmed range reads as anything: zeroes that
  // may deallocate keep every leg the same and still free the space.
  return write_zeroes(offset, length, flags & kFua);
}

Status MirrorTarget::flush() {
  if (detached_.load(std::memory_order_relaxed)) reattach();
  {
    std::lock_guard lock(mu_);
    if (!flush_failure_.ok()) return flush_failure_;
    if (!meta_failure_.ok()) return meta_failure_;
  }
  Status s = flush_legs(true);
  if (!s.ok()) {
    std::lock_guard lock(mu_);
    if (flush_failure_.ok()) flush_failure_ = s;
  }
  return s;
}

Status MirrorTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  size_t p = 0;
  {
    std::lock_guard lock(mu_);
    p = primary_locked();
  }
  Leg& l = *legs_[p];
  return l.dev->block_status(l.offset + offset, length, out);
}

}  // namespace bowstack::mirror
