// bow's log writer: block 0's log, its entries and rollovers into
// reserved free blocks.
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
    bool backed = true;
    {
      std::lock_guard lock(mu_);
      if (rollover_blocks_.empty())
        return Status::Error(EIO, "bow: internal error: no block reserved for the log");
      // A block whose space a queued write reserved, when there is one
      // (there is, for the entries of writes queued so far).
      auto it = rollover_blocks_.begin();
      while (it != rollover_blocks_.end() && rollover_unbacked_.count(*it) != 0) ++it;
      if (it == rollover_blocks_.end()) {
        it = rollover_blocks_.begin();
        backed = false;
        rollover_unbacked_.erase(*it);
      }
      dest = *it;
      rollover_blocks_.erase(it);
      log_saving_.insert(dest);
    }
    if (!backed) {
      if (Status s = space_.reserve(dest * bs_, bs_); !s.ok()) return s;
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
    if (extra && !space_.reserve(*extra * bs_, bs_).ok()) {
      // No space behind it in the backing store: do without (two more
      // barriers below) rather than fail the batch.
      std::lock_guard lock(mu_);
      map_.set(*extra, 1, BlockType::kFree);
      log_saving_.erase(*extra);
      log_slots_ -= static_cast<int64_t>(rest);
      extra.reset();
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

}  // namespace bowstack::bow
