// era: recovery at open, starting eras (checkpoint), metadata snapshots,
// the era gate and the in-core bits.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include "targets/era/era_target.h"

namespace bowstack::era {

// ---- Recovery, eras -------------------------------------------------------

Status EraTarget::recover() {
  std::lock_guard admin(admin_mu_);
  for (int region = 0; region < 2; ++region) {
    if (Status s = md_->scan_region(region, nullptr); !s.ok()) {
      return Status::Error(s.code(),
                           "era: the metadata is damaged: " + why(s) + " (see 'bowstack era check')");
    }
  }
  era_.store(md_->superblock().current_era, std::memory_order_release);
  if (md_->superblock().fold_era != 0) {
    spdlog::info("era: finishing the interrupted archive of era {}", md_->superblock().fold_era);
    if (Status s = finish_fold(); !s.ok()) return s;
  }
  // A crash (or a previous run) leaves the current writeset on disk: archive
  // it under its era, so nothing written in it is ever lost.
  std::vector<uint64_t> words;
  if (Status s = md_->read_writeset(era_.load(), &words); !s.ok()) return s;
  uint64_t bits = 0;
  for (uint64_t w : words) bits += static_cast<uint64_t>(std::popcount(w));
  if (bits > 0) {
    const uint32_t e = era_.load();
    if (Status s = advance_era(); !s.ok()) return s;
    if (Status s = finish_fold(); !s.ok()) return s;
    spdlog::info("era: recovered the writeset of era {} ({} blocks written) and archived it; now era {}", e,
                 bits, era_.load());
  }
  return Status::Ok();
}

Status EraTarget::advance_era() {
  const uint32_t e = era_.load();
  if (e == UINT32_MAX) return Status::Error(EOVERFLOW, "era: the era counter is exhausted");
  Superblock next = md_->superblock();
  next.current_era = e + 1;
  next.fold_era = e;
  if (Status s = md_->commit_superblock(next); !s.ok()) return s;
  for (auto& w : marked_) w.store(0, std::memory_order_relaxed);
  std::fill(committed_.begin(), committed_.end(), 0);
  committed_bits_.store(0);
  era_.store(e + 1, std::memory_order_release);
  return Status::Ok();
}

Status EraTarget::finish_fold() {
  Superblock sb = md_->superblock();
  if (sb.fold_era == 0) return Status::Ok();
  if (Status s = md_->fold(sb.fold_era); !s.ok()) return s;
  sb = md_->superblock();
  sb.fold_era = 0;
  return md_->commit_superblock(sb);
}

Result<uint32_t> EraTarget::checkpoint() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  if (md_->superblock().fold_era != 0) {
    if (Status s = finish_fold(); !s.ok()) return fail(s);
  }
  if (era_.load() == UINT32_MAX) return Status::Error(EOVERFLOW, "era: the era counter is exhausted");
  gate_close();
  Status s = advance_era();
  gate_open();
  if (!s.ok()) return fail(s);
  if (Status f = finish_fold(); !f.ok()) return fail(f);
  return era_.load();
}

Status EraTarget::take_metadata_snap() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  if (md_->superblock().snap_held) {
    return Status::Error(EBUSY,
                         fmt::format("era: a metadata snapshot is already held (at block {}); drop it first",
                                     md_->layout().snap_writeset(0)));
  }
  if (md_->superblock().fold_era != 0) {
    if (Status s = finish_fold(); !s.ok()) return fail(s);
  }
  // The queue drained and nothing new admitted: committed_ is exactly the
  // durable current writeset, and every write acknowledged so far is in it.
  gate_close();
  std::vector<uint64_t> words = committed_;
  const uint32_t e = era_.load();
  gate_open();
  const uint64_t snap_id = md_->superblock().generation + 1;  // the generation of the commit below
  if (Status s = md_->write_snapshot(words, e, snap_id); !s.ok()) return fail(s);
  Superblock next = md_->superblock();
  next.snap_held = true;
  next.snap_era = e;
  next.snap_id = snap_id;
  if (Status s = md_->commit_superblock(next); !s.ok()) return fail(s);
  return Status::Ok();
}

Status EraTarget::drop_metadata_snap() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  Superblock next = md_->superblock();
  if (!next.snap_held) return Status::Error(EINVAL, "era: no metadata snapshot is held");
  next.snap_held = false;
  if (Status s = md_->commit_superblock(next); !s.ok()) return fail(s);
  return Status::Ok();
}

// ---- Gate -----------------------------------------------------------------

void EraTarget::gate_enter() {
  std::unique_lock lock(gate_mu_);
  gate_cv_.wait(lock, [this] { return !closed_; });
  ++active_;
}

void EraTarget::gate_leave(uint64_t n) {
  std::lock_guard lock(gate_mu_);
  active_ -= n;
  if (active_ == 0 && closed_) gate_cv_.notify_all();
}

void EraTarget::gate_close() {
  std::unique_lock lock(gate_mu_);
  closed_ = true;
  gate_cv_.wait(lock, [this] { return active_ == 0; });
}

void EraTarget::gate_open() {
  std::lock_guard lock(gate_mu_);
  closed_ = false;
  gate_cv_.notify_all();
}

// ---- Bits -----------------------------------------------------------------

std::pair<uint64_t, uint64_t> EraTarget::block_range(uint64_t offset, uint64_t length) const {
  const uint64_t first = offset / bs_;
  if (length == 0) return {first, first};
  return {first, std::min(nr_blocks_, (offset + length - 1) / bs_ + 1)};
}

bool EraTarget::all_marked(uint64_t first, uint64_t end) const {
  for (uint64_t b = first; b < end; ++b) {
    if (((marked_[b / 64].load(std::memory_order_acquire) >> (b % 64)) & 1) == 0) return false;
  }
  return true;
}

bool EraTarget::marked(uint64_t block) const { return block < nr_blocks_ && all_marked(block, block + 1); }

void EraTarget::set_marked(uint64_t b) {
  marked_[b / 64].fetch_or(uint64_t{1} << (b % 64), std::memory_order_release);
}

void EraTarget::clear_marked(uint64_t b) {
  marked_[b / 64].fetch_and(~(uint64_t{1} << (b % 64)), std::memory_order_release);
}

}  // namespace bowstack::era
