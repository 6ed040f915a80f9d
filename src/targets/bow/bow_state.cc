// bow's state machine: TRIM -> CHECKPOINT -> COMMITTED, automatic commit,
// and resuming a checkpoint after a restart.
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
  // The unit a crash cannot tear: a sector at least, however small the unit
  // the device below serves (a file's is 1 byte).
  const uint32_t lbs = std::clamp<uint32_t>(lower_device()->geometry().logical_block_size, 512, bs_);
  // Where a write of block 0 can tear (device sectors smaller than a block),
  // the log is first rolled over so that it fits in the first sector; the
  // live contents then go to the other sectors first and the first sector
  // last, so block 0 is a valid log until the final write.
  std::optional<uint64_t> spare;
  bool spare_reserved = false;  // taken from the rollover reservations (else from free space)
  const bool tearable = lbs < bs_ && kHeaderSize + kEntrySize * log_header_.count > lbs;
  if (tearable) {
    if (!rollover_blocks_.empty()) {
      spare = *rollover_blocks_.begin();
      spare_reserved = true;
      rollover_blocks_.erase(rollover_blocks_.begin());
    } else if (auto f = map_.first_free(1)) {
      spare = f->start;
      map_.set(f->start, 1, BlockType::kBackup);
    }
  }
  lock.unlock();
  if (spare) {
    // The log is rolled over into the spare first: with no space behind it
    // in the backing store, refuse before anything is written (the
    // checkpoint stays as it was; commit again once there is space).
    if (Status r = space_.reserve(*spare * bs_, bs_); !r.ok()) {
      lock.lock();
      if (spare_reserved) {
        rollover_blocks_.insert(*spare);
      } else {
        map_.set(*spare, 1, BlockType::kFree);
      }
      transition_ = false;
      cv_.notify_all();
      return Status::Error(r.code(),
                           "bow: cannot commit: no space in the backing store for the log "
                           "rollover that makes the commit atomic: " +
                               why(r));
    }
    lock.lock();
    rollover_unbacked_.erase(*spare);
    lock.unlock();
  }

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
  if (j->tail_lost()) {
    // Trusting it would take blocks that received flushed data for free
    // space, and put saved copies over that data.
    return Status::Error(EINVAL,
                         fmt::format("bow: resume journal '{}' lost its tail: it holds {} valid records but "
                                     "its header says {} were made durable (the file was cut, or is an older "
                                     "copy); refusing to resume. Roll back with 'bowstack restore IMAGE' "
                                     "(the log in block 0 is intact)",
                                     path, j->valid_records, h.durable_records));
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
  // The writer switches block 0 by rewriting its first sector, so entry 0
  // must lie there. bowstack always writes 28-byte headers; a larger one
  // means block 0 was changed behind this checkpoint's back.
  if (log_header_.header_size + kEntrySize > std::min<uint32_t>(512, bs_)) {
    return Status::Error(EINVAL,
                         fmt::format("bow: cannot resume: the log's header size {} puts entry 0 outside "
                                     "its first sector (bowstack writes {}); restore or inspect the "
                                     "device offline",
                                     log_header_.header_size, kHeaderSize));
  }
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

}  // namespace bowstack::bow
