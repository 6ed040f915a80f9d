// The mirror's task jobs: resync (regions a crash may have left different),
// recover (copy to legs being rebuilt, behind their sync marks), check and
// repair (md's sync_action). Every copy holds its region exclusively.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "core/aligned_buf.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {

namespace {

constexpr uint64_t kCopyPiece = 1u << 20;
constexpr auto kCheckpointEvery = std::chrono::seconds(5);
constexpr uint32_t kComparePage = 4096;

}  // namespace

void MirrorTarget::lock_regions(std::unique_lock<std::mutex>& lock, uint64_t first, uint64_t end) {
  cv_.wait(lock, [&] { return !copying_.overlaps(first, end); });
  copying_.mark(first, end);
  // Writes already past the gate finish first; new ones wait at it.
  cv_.wait(lock, [&] {
    for (uint64_t b = first; b < end; ++b) {
      auto it = active_.find(b);
      if (it != active_.end() && it->second.pending != 0) return false;
    }
    return true;
  });
}

void MirrorTarget::unlock_regions(uint64_t first, uint64_t end) {
  std::lock_guard lock(mu_);
  copying_.clear(first, end);
  cv_.notify_all();
}

void MirrorTarget::pace(Job* job, uint64_t* rate) {
  if (job == nullptr) return;
  // md's speed_limit_min/max: full speed while clients are idle, the
  // minimum while they are not.
  const bool busy = now_ns() - last_client_io_ns_.load(std::memory_order_relaxed) < 1'000'000'000;
  uint64_t want = 0;
  {
    std::lock_guard lock(mu_);
    want = busy ? opts_.sync_min : opts_.sync_max;
  }
  if (want != *rate) {
    *rate = want;
    job->set_rate(want);
  }
}

Status MirrorTarget::copy_range(JobControl* jc, size_t src, const std::vector<size_t>& dst, uint64_t offset,
                                uint64_t length) {
  Leg& s = *legs_[src];
  AlignedBuf buf(std::min<uint64_t>(kCopyPiece, length));
  for (uint64_t done = 0; done < length;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), length - done);
    const uint64_t at = offset + done;
    // Holes in the source stay holes: a sparse leg is copied at the speed
    // of its data, not its size.
    bool holes = false;
    if (s.dev->capabilities().block_status) {
      auto h = only_holes(*s.dev, s.offset + at, n);
      holes = h.ok() && *h;
    }
    if (!holes) {
      if (Status r = s.dev->read(s.offset + at, buf.span().subspan(0, n)); !r.ok()) return r;
    }
    for (size_t d : dst) {
      Leg& l = *legs_[d];
      {
        std::lock_guard lock(mu_);
        if (l.state == LegState::kFaulty) continue;
      }
      Status w = holes ? l.dev->write_zeroes(l.offset + at, n, 0)
                       : l.dev->write(l.offset + at, buf.span().subspan(0, n), 0);
      if (!w.ok()) {
        std::unique_lock lock(mu_);
        ++l.errors;
        (void)fail_leg_locked(lock, d, w);
      }
    }
    done += n;
    if (jc != nullptr && jc->stopping()) break;
  }
  return Status::Ok();
}

Status MirrorTarget::flush_settling_marks() {
  std::vector<uint64_t> marks;
  {
    std::lock_guard lock(mu_);
    for (const auto& l : legs_) marks.push_back(l->mark);
  }
  Status flushed = flush_legs(true);
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < legs_.size() && flushed.ok(); ++i) legs_[i]->durable_mark = marks[i];
  return flushed;
}

void MirrorTarget::start_sync_jobs_locked() {
  if (closed_.load()) return;
  if (resync_left_ > 0 && !resync_running_) {
    resync_running_ = true;
    sync_jobs_.push_back(jobs_->start(
        "resync", Job::Kind::kTask, [this](JobControl& jc) { return resync_body(jc); },
        [this] { cv_.notify_all(); }));
  }
  bool rebuild = false;
  for (const auto& l : legs_)
    rebuild = rebuild || l->state == LegState::kStale || l->state == LegState::kRecovering;
  if (rebuild && !recover_running_) {
    recover_running_ = true;
    sync_jobs_.push_back(jobs_->start(
        "recover", Job::Kind::kTask, [this](JobControl& jc) { return recover_body(jc); },
        [this] { cv_.notify_all(); }));
  }
}

Status MirrorTarget::resync_body(JobControl& jc) {
  Job* job = jobs_->find("resync");
  uint64_t rate = 0;
  {
    std::lock_guard lock(mu_);
    jc.set_total(resync_left_ * chunk_);
  }
  Status result = Status::Ok();
  uint64_t corrected_bit = UINT64_MAX;
  for (uint64_t b = 0; b < bits_ && !jc.stopping(); ++b) {
    if (!jc.wait_while_paused()) break;
    std::unique_lock lock(mu_);
    if (!resync_[b]) continue;
    lock_regions(lock, b, b + 1);
    const size_t src = primary_locked();
    std::vector<size_t> dst;
    for (size_t i = 0; i < legs_.size(); ++i) {
      if (i != src && legs_[i]->state != LegState::kFaulty) dst.push_back(i);
    }
    lock.unlock();
    const uint64_t off = b * chunk_, len = std::min<uint64_t>(chunk_, size_ - off);
    Status s = copy_range(&jc, src, dst, off, len);
    if (!s.ok()) {
      unlock_regions(b, b + 1);
      // A read error on the source is corrected as a client's read would
      // be (md's fix for a read error during resync): the region from
      // another in-sync leg written over it, once, then the region again.
      if (corrected_bit != b) {
        corrected_bit = b;
        lock.lock();
        const size_t alt = other_in_sync_locked(src);
        ++legs_[src]->errors;
        lock.unlock();
        if (alt != legs_.size() && correct_read(src, alt, off, len).ok()) {
          --b;
          continue;
        }
        lock.lock();
      } else {
        lock.lock();
        ++legs_[src]->errors;
      }
      // Still unreadable: the source fails, and the region is tried again
      // from the next in-sync leg (or the error ends the job).
      if (!fail_leg_locked(lock, src, s)) {
        result = s;
        break;
      }
      --b;
      continue;
    }
    unlock_regions(b, b + 1);
    if (jc.stopping()) break;
    lock.lock();
    resync_[b] = false;
    --resync_left_;
    active_[b].done_epoch = epoch_;
    lock.unlock();
    pace(job, &rate);
    jc.done(len);
  }
  std::lock_guard lock(mu_);
  resync_running_ = false;
  if (resync_left_ == 0) spdlog::info("mirror: resync done");
  cv_.notify_all();
  return result;
}

Status MirrorTarget::recover_body(JobControl& jc) {
  Job* job = jobs_->find("recover");
  uint64_t rate = 0;
  Status result = Status::Ok();
  uint64_t pos = UINT64_MAX;
  uint64_t corrected_pos = UINT64_MAX;
  {
    std::lock_guard lock(mu_);
    for (const auto& l : legs_) {
      if (l->state == LegState::kStale || l->state == LegState::kRecovering) pos = std::min(pos, l->mark);
    }
    if (pos != UINT64_MAX) {
      pos -= pos % chunk_;
      jc.set_total(recover_total_locked(pos));
    }
  }
  while (pos < size_ && !jc.stopping()) {
    if (!jc.wait_while_paused()) break;
    const uint64_t b = pos / chunk_;
    const uint64_t len = std::min<uint64_t>(chunk_, size_ - pos);
    std::unique_lock lock(mu_);
    std::vector<size_t> dst;
    for (size_t i = 0; i < legs_.size(); ++i) {
      if (needs_copy_locked(i, pos, len)) dst.push_back(i);
    }
    if (dst.empty()) {
      // Every leg left is ahead of pos (or none is left).
      uint64_t next = UINT64_MAX;
      for (const auto& l : legs_) {
        if (l->state == LegState::kStale || l->state == LegState::kRecovering) next = std::min(next, l->mark);
      }
      if (next >= size_) break;
      pos = next - next % chunk_;  // what was skipped is not copied: not progress
      continue;
    }
    lock_regions(lock, b, b + 1);
    const size_t src = primary_locked();
    lock.unlock();
    Status s = copy_range(&jc, src, dst, pos, len);
    unlock_regions(b, b + 1);
    lock.lock();
    if (!s.ok()) {
      ++legs_[src]->errors;
      // As in the resync: corrected from another in-sync leg once, then
      // copied again; the source fails only if that does not help.
      const size_t alt = other_in_sync_locked(src);
      if (corrected_pos != pos && alt != legs_.size()) {
        corrected_pos = pos;
        lock.unlock();
        const bool fixed = correct_read(src, alt, pos, len).ok();
        lock.lock();
        if (fixed) continue;
      }
      if (!fail_leg_locked(lock, src, s)) {
        result = s;
        break;
      }
      continue;  // again from the next in-sync leg
    }
    if (jc.stopping()) break;
    bool finished = false;
    for (size_t i : dst) {
      Leg& l = *legs_[i];
      if (l.state == LegState::kFaulty) continue;
      l.state = LegState::kRecovering;
      l.mark = pos + len;
      // In sync once the flush below made the copy durable.
      finished = finished || l.mark >= size_;
    }
    const auto now = std::chrono::steady_clock::now();
    if (finished || now - last_recover_checkpoint_ >= kCheckpointEvery) {
      // The sync mark on disk, so that a restart goes on from here. What
      // it covers must be durable first: the mark goes out with the
      // superblock, and a flush behind both would let a crash keep the
      // mark and lose the copy.
      last_recover_checkpoint_ = now;
      lock.unlock();
      const bool flushed = flush_settling_marks().ok();
      lock.lock();
      if (flushed) promote_recovered_locked();
      sb_change_ = true;
      (void)commit_locked(lock);
    }
    lock.unlock();
    pos += len;
    pace(job, &rate);
    jc.done(len);
  }
  // What the last mark covers, before it; a guided leg's mark may have
  // reached the end with no copy (it lacked nothing past it).
  const bool flushed = flush_settling_marks().ok();
  std::unique_lock lock(mu_);
  if (flushed) promote_recovered_locked();
  sb_change_ = true;
  (void)commit_locked(lock);
  recover_running_ = false;
  cv_.notify_all();
  return result;
}

Result<std::string> MirrorTarget::start_scrub(bool repair) {
  std::lock_guard lock(mu_);
  if (resync_running_ || recover_running_) {
    return Status::Error(EBUSY,
                         fmt::format("mirror: a {} is running; {} after it ends",
                                     resync_running_ ? "resync" : "recovery", repair ? "repair" : "check"));
  }
  if (action_ != SyncAction::kIdle) {
    return Status::Error(EBUSY, fmt::format("mirror: a {} is running ('idle' stops it)",
                                            action_ == SyncAction::kCheck ? "check" : "repair"));
  }
  if (in_sync_count_locked() < 2)
    return Status::Error(EINVAL, "mirror: fewer than two in-sync legs: nothing to compare");
  action_ = repair ? SyncAction::kRepair : SyncAction::kCheck;
  mismatch_cnt_ = 0;
  const char* name = repair ? "repair" : "check";
  sync_jobs_.push_back(jobs_->start(
      name, Job::Kind::kTask, [this, repair](JobControl& jc) { return scrub_body(jc, repair); },
      [this] { cv_.notify_all(); }));
  return std::string(name) + " started";
}

Status MirrorTarget::scrub_body(JobControl& jc, bool repair) {
  Job* job = jobs_->find(repair ? "repair" : "check");
  uint64_t rate = 0;
  jc.set_total(size_);
  uint64_t repaired = 0;
  bool guessed = false;
  Status result = Status::Ok();
  std::vector<AlignedBuf> copies;
  for (uint64_t b = 0; b < bits_ && !jc.stopping(); ++b) {
    if (!jc.wait_while_paused()) break;
    const uint64_t off = b * chunk_, len = std::min<uint64_t>(chunk_, size_ - off);
    std::unique_lock lock(mu_);
    lock_regions(lock, b, b + 1);
    std::vector<size_t> legs;
    for (size_t i = 0; i < legs_.size(); ++i) {
      if (legs_[i]->state == LegState::kInSync) legs.push_back(i);
    }
    lock.unlock();
    for (uint64_t done = 0; done < len && legs.size() > 1;) {
      const uint64_t n = std::min<uint64_t>(kCopyPiece, len - done);
      copies.resize(legs.size());
      std::vector<bool> good(legs.size(), false);
      size_t ref = legs.size();
      for (size_t k = 0; k < legs.size(); ++k) {
        Leg& l = *legs_[legs[k]];
        if (copies[k].size() != kCopyPiece) copies[k] = AlignedBuf(kCopyPiece);
        good[k] = l.dev->read(l.offset + off + done, copies[k].span().subspan(0, n)).ok();
        // The truth: the first leg whose reads are verified below, else the
        // first that read.
        if (good[k] && (ref == legs.size() || (l.verifies && !legs_[legs[ref]]->verifies))) ref = k;
      }
      if (ref == legs.size()) {
        result = Status::Error(EIO, fmt::format("mirror: no leg could read {} bytes at {}", n, off + done));
        break;
      }
      for (size_t k = 0; k < legs.size(); ++k) {
        if (k == ref) continue;
        Leg& l = *legs_[legs[k]];
        const std::byte* want = copies[ref].data();
        if (!good[k]) {
          // A read error is corrected in check and repair alike (md does),
          // unless the leg has had too many: then it is failed.
          {
            std::unique_lock l2(mu_);
            ++l.errors;
            if (read_error_limit_locked(legs[k]) &&
                fail_leg_locked(l2, legs[k], Status::Error(EIO, "too many read errors"))) {
              continue;
            }
          }
          Status w = l.dev->write(l.offset + off + done, copies[ref].span().subspan(0, n), 0);
          std::unique_lock l2(mu_);
          if (w.ok()) {
            ++l.corrected;
            spdlog::warn("mirror: {}: rewrote {} bytes at {} after a read error", l.name, n, off + done);
          } else {
            ++l.errors;
            (void)fail_leg_locked(l2, legs[k], w);
          }
          continue;
        }
        for (uint64_t p = 0; p < n; p += kComparePage) {
          const uint64_t m = std::min<uint64_t>(kComparePage, n - p);
          if (std::memcmp(copies[k].data() + p, want + p, m) == 0) continue;
          {
            std::lock_guard l2(mu_);
            mismatch_cnt_ += m / md::kSector;
          }
          if (!legs_[legs[ref]]->verifies) guessed = true;
          if (!repair) continue;
          Status w = l.dev->write(l.offset + off + done + p, std::span<const std::byte>(want + p, m), 0);
          std::unique_lock l2(mu_);
          if (w.ok()) {
            ++repaired;
          } else {
            ++l.errors;
            (void)fail_leg_locked(l2, legs[k], w);
          }
        }
      }
      done += n;
    }
    unlock_regions(b, b + 1);
    if (!result.ok()) break;
    pace(job, &rate);
    jc.done(len);
  }
  std::lock_guard lock(mu_);
  last_scrub_note_ =
      fmt::format("{} {}: {} sectors differed{}{}", repair ? "repair" : "check",
                  jc.stopping() ? "stopped" : (result.ok() ? "done" : "failed"), mismatch_cnt_,
                  repair ? fmt::format(", {} pages rewritten", repaired) : "",
                  mismatch_cnt_ == 0 ? ""
                  : guessed ? "; no leg verifies its reads (no csum below), so the first in-sync leg was "
                              "taken as the truth: which copy was right could not be known"
                            : "; the truth came from a leg whose reads are verified (csum below)");
  spdlog::info("mirror: {}", last_scrub_note_);
  action_ = SyncAction::kIdle;
  cv_.notify_all();
  return result;
}

}  // namespace bowstack::mirror
