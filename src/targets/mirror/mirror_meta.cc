// The mirror's metadata: group-committed bitmap and superblock writes to
// every working leg, failing a leg durably, and the `intent` job that
// clears idle bits and marks the array clean (docs/format/mirror.md §4).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <functional>

#include "core/aligned_buf.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {

namespace {

constexpr auto kIntentTick = std::chrono::milliseconds(250);
constexpr auto kCleanAfter = std::chrono::seconds(1);
// Passes a bit must stay idle before it is cleared: 5 s, md's daemon_sleep
// (md clears after two such periods). Shorter, and a region written every
// few seconds pays a bitmap commit each time.
constexpr uint32_t kIdlePasses = 20;

}  // namespace

bool MirrorTarget::degraded_locked() const {
  for (const auto& l : legs_) {
    if (l->state != LegState::kInSync) return true;
  }
  return false;
}

size_t MirrorTarget::in_sync_count_locked() const {
  size_t n = 0;
  for (const auto& l : legs_) n += l->state == LegState::kInSync ? 1 : 0;
  return n;
}

Status MirrorTarget::write_leg_metadata(Leg& leg, const std::vector<std::byte>& area,
                                        const std::vector<uint64_t>& pages, const md::Superblock* sb,
                                        uint64_t bitmap_events, uint64_t events_cleared) {
  BlockDevice& dev = *leg.dev;
  // Runs of consecutive pages, one write each; page 0 carries the bitmap
  // superblock with the events of this commit.
  size_t i = 0;
  while (i < pages.size()) {
    size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
    const uint64_t first = pages[i];
    const size_t bytes = (j - i) * md::kBitmapAlign;
    AlignedBuf buf(bytes);
    std::copy_n(area.begin() + static_cast<std::ptrdiff_t>(first * md::kBitmapAlign), bytes, buf.data());
    if (first == 0) {
      md::BitmapSuperblock bm = md::new_bitmap_superblock(array_sb_, chunk_);
      bm.events = bitmap_events;
      bm.events_cleared = events_cleared;
      md::encode_bitmap_superblock(bm, buf.span().subspan(0, md::kBitmapSbBytes));
    }
    if (Status s = dev.write(leg.bitmap_at + first * md::kBitmapAlign, buf.span(), 0); !s.ok()) return s;
    i = j;
  }
  if (leg.new_metadata) {
    // The bad-block log md reserves after the bitmap: empty.
    AlignedBuf log(md::kBblogSectors * md::kSector);
    std::fill_n(log.data(), log.size(), std::byte{md::kBblogEmptyByte});
    const uint64_t at = (md::kSuperOffset + static_cast<uint64_t>(leg.sb.bblog_offset)) * md::kSector;
    if (Status s = dev.write(at, log.span(), 0); !s.ok()) return s;
  }
  if (sb != nullptr) {
    AlignedBuf buf(4096);
    md::encode_superblock(*sb, buf.span());
    if (Status s = dev.write(md::kSuperOffset * md::kSector, buf.span(), 0); !s.ok()) return s;
  }
  return dev.flush();
}

Status MirrorTarget::commit_locked(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [this] { return !committing_; });
  committing_ = true;
  Status result = Status::Ok();
  for (;;) {
    const uint64_t gen = set_gen_;
    const bool write_sb = sb_change_ || want_active_ != active_on_disk_;
    const bool active = want_active_;
    std::vector<uint64_t> pages;
    for (size_t p = 0; p < dirty_pages_.size(); ++p) {
      if (dirty_pages_[p] || (write_sb && p == 0)) pages.push_back(p);
      dirty_pages_[p] = false;
    }
    std::vector<uint64_t> all_pages(dirty_pages_.size());
    for (size_t p = 0; p < all_pages.size(); ++p) all_pages[p] = p;
    if (write_sb) {
      ++array_sb_.events;
      array_sb_.utime = md::encode_time(static_cast<uint64_t>(std::time(nullptr)));
      array_sb_.resync_offset = active ? 0 : md::kMaxSector;
      sb_change_ = false;
    }
    struct Work {
      size_t index;
      md::Superblock sb;
      bool full;
    };
    std::vector<Work> work;
    for (size_t i = 0; i < legs_.size(); ++i) {
      Leg& l = *legs_[i];
      if (l.state == LegState::kFaulty) continue;
      md::Superblock sb = l.sb;
      sb.events = array_sb_.events;
      sb.utime = array_sb_.utime;
      sb.resync_offset = array_sb_.resync_offset;
      sb.dev_roles = array_sb_.dev_roles;
      sb.raid_disks = array_sb_.raid_disks;
      sb.cnt_corrected_read = static_cast<uint32_t>(std::min<uint64_t>(l.corrected, UINT32_MAX));
      if (l.state == LegState::kInSync) {
        sb.feature_map &= ~(md::kFeatureRecoveryOffset | md::kFeatureRecoveryBitmap);
        sb.recovery_offset = 0;
      } else {
        // Bit 128 tells that the copy is guided by the bitmap: after a
        // stop or crash it goes on as one (mirror_readd.h).
        sb.feature_map |= md::kFeatureRecoveryOffset;
        sb.feature_map &= ~md::kFeatureRecoveryBitmap;
        if (l.guided) sb.feature_map |= md::kFeatureRecoveryBitmap;
        sb.recovery_offset = l.durable_mark / md::kSector;
      }
      if (write_sb) l.sb = sb;
      work.push_back({i, sb, l.new_metadata});
    }
    const std::vector<std::byte> area = area_;
    const uint64_t events = array_sb_.events, cleared = events_cleared_;
    lock.unlock();
    // Every leg at once: one flush's wait for the commit, not one per leg.
    std::vector<std::function<Status()>> tasks(legs_.size());
    for (const Work& w : work) {
      if (!write_sb && pages.empty() && !w.full) continue;
      tasks[w.index] = [&, &w = w] {
        return write_leg_metadata(*legs_[w.index], area, w.full ? all_pages : pages,
                                  write_sb ? &w.sb : nullptr, events, cleared);
      };
    }
    const std::vector<Status> results = workers_->run(std::move(tasks));
    std::vector<std::pair<size_t, Status>> failed;
    for (const Work& w : work) {
      if (!results[w.index].ok()) failed.emplace_back(w.index, results[w.index]);
    }
    lock.lock();
    for (const Work& w : work) {
      if (w.full && std::none_of(failed.begin(), failed.end(), [&](auto& f) { return f.first == w.index; })) {
        legs_[w.index]->new_metadata = false;
      }
    }
    for (auto& [i, s] : failed) {
      Leg& l = *legs_[i];
      ++l.errors;
      if (l.state == LegState::kInSync && in_sync_count_locked() == 1) {
        meta_failure_ =
            Status::Error(s.code(), fmt::format("mirror: writing metadata to {}, the last in-sync "
                                                "leg: {}",
                                                l.name, why(s)));
        spdlog::error("{}", why(meta_failure_));
        result = meta_failure_;
        continue;
      }
      spdlog::error("mirror: {} failed writing metadata ({}); it is faulty now", l.name, why(s));
      l.state = LegState::kFaulty;
      array_sb_.dev_roles[l.sb.dev_number] = md::kRoleFaulty;
      sb_change_ = true;
    }
    if (!result.ok()) break;
    durable_gen_ = std::max(durable_gen_, gen);
    if (!pages.empty() && pages.front() == 0) cleared_on_disk_ = std::max(cleared_on_disk_, cleared);
    if (write_sb) active_on_disk_ = active;
    if (!sb_change_) break;
  }
  committing_ = false;
  cv_.notify_all();
  return result;
}

Status MirrorTarget::wait_durable(std::unique_lock<std::mutex>& lock, uint64_t gen, bool need_active) {
  for (;;) {
    if (!meta_failure_.ok()) return meta_failure_;
    if (durable_gen_ >= gen && (!need_active || active_on_disk_)) return Status::Ok();
    if (committing_) {
      cv_.wait(lock);
      continue;
    }
    if (need_active) want_active_ = true;
    if (Status s = commit_locked(lock); !s.ok()) return s;
  }
}

bool MirrorTarget::fail_leg_locked(std::unique_lock<std::mutex>& lock, size_t i, const Status& why_failed) {
  Leg& l = *legs_[i];
  if (l.state != LegState::kFaulty) {
    if (l.state == LegState::kInSync && in_sync_count_locked() == 1) {
      spdlog::error("mirror: {} failed ({}), but it is the last in-sync leg: the error goes to the client",
                    l.name, why(why_failed));
      return false;
    }
    spdlog::error("mirror: {} failed ({}); it is faulty now, I/O goes on with the other legs", l.name,
                  why(why_failed));
    l.failed_guidable = l.state == LegState::kInSync || l.guided;
    l.state = LegState::kFaulty;
    array_sb_.dev_roles[l.sb.dev_number] = md::kRoleFaulty;
    sb_change_ = true;
  }
  // Durable before the caller acknowledges anything that leg missed.
  commit_sb_change_locked(lock);
  return true;
}

void MirrorTarget::commit_sb_change_locked(std::unique_lock<std::mutex>& lock) {
  while (sb_change_ && meta_failure_.ok()) {
    if (committing_) {
      cv_.wait(lock);
      continue;
    }
    (void)commit_locked(lock);
  }
}

Status MirrorTarget::flush_legs(bool record_epoch) {
  std::vector<size_t> working;
  uint64_t e = 0;
  {
    std::lock_guard lock(mu_);
    e = ++epoch_;
    for (size_t i = 0; i < legs_.size(); ++i) {
      if (legs_[i]->state != LegState::kFaulty) working.push_back(i);
    }
  }
  std::vector<std::function<Status()>> tasks(legs_.size());
  for (size_t i : working) tasks[i] = [this, i] { return legs_[i]->dev->flush(); };
  const std::vector<Status> results = workers_->run(std::move(tasks));
  std::vector<std::pair<size_t, Status>> failed;
  for (size_t i : working) {
    if (!results[i].ok()) failed.emplace_back(i, results[i]);
  }
  std::unique_lock lock(mu_);
  Status result = Status::Ok();
  for (auto& [i, s] : failed) {
    ++legs_[i]->errors;
    if (!fail_leg_locked(lock, i, s)) result = s;
  }
  if (result.ok() && record_epoch) stable_epoch_ = std::max(stable_epoch_, e);
  return result;
}

bool MirrorTarget::clear_idle_bits_locked(bool ignore_idle) {
  if (degraded_locked()) return true;  // bits record what a missing leg lacks
  if (cleared_on_disk_ < min_cleared_) {
    // A leg outside this array (dropped by the table, or left behind
    // before this start) must never find its events >= an events_cleared
    // whose bits are gone: that would re-add it on a bitmap that lost what
    // it lacks. So events_cleared goes above them, durably, before the
    // first bit is cleared (a torn commit could otherwise keep the cleared
    // bits and lose the new events_cleared).
    if (events_cleared_ < min_cleared_) {
      events_cleared_ = array_sb_.events;
      dirty_pages_[0] = true;
    }
    return false;
  }
  bool cleared = false;
  for (auto it = active_.begin(); it != active_.end();) {
    const uint64_t b = it->first;
    BitInfo& bi = it->second;
    if (bi.pending != 0 || resync_[b] || copying_.overlaps(b, b + 1)) {
      ++it;
      continue;
    }
    if (!ignore_idle && bi.idle_passes < kIdlePasses) {
      ++bi.idle_passes;
      ++it;
      continue;
    }
    if (bi.done_epoch >= stable_epoch_) {  // not known durable on every leg
      ++it;
      continue;
    }
    md::set_bit(area_, b, false);
    dirty_pages_[md::bit_byte(b) / md::kBitmapAlign] = true;
    it = active_.erase(it);
    cleared = true;
  }
  if (cleared) {
    events_cleared_ = array_sb_.events;
    dirty_pages_[0] = true;
  }
  return true;
}

Status MirrorTarget::mark_clean(std::unique_lock<std::mutex>& lock) {
  cleaning_ = true;
  lock.unlock();
  Status s = flush_legs(true);
  lock.lock();
  if (s.ok()) {
    clear_idle_bits_locked(true);
    if (writes_inflight_ == 0 && resync_left_ == 0) {
      want_active_ = false;
      s = commit_locked(lock);
    }
  }
  cleaning_ = false;
  cv_.notify_all();
  return s;
}

Status MirrorTarget::intent_body(JobControl& jc) {
  std::unique_lock lock(mu_);
  auto last_flush = std::chrono::steady_clock::now();
  while (!jc.stopping()) {
    // Its own condition variable: the data path's notifications (one per
    // write) must not make it scan the bits thousands of times a second.
    intent_cv_.wait_for(lock, kIntentTick, [&] { return jc.stopping(); });
    if (jc.stopping() || closed_.load() || !meta_failure_.ok()) continue;
    if (committing_ || cleaning_) continue;
    const auto now = std::chrono::steady_clock::now();
    // Bits idle long enough but not yet known durable: flush, at most once
    // a second, so that they can be cleared without waiting for a client.
    bool unflushed = false;
    for (const auto& [b, bi] : active_) {
      if (bi.pending == 0 && bi.idle_passes >= kIdlePasses && bi.done_epoch >= stable_epoch_ && !resync_[b]) {
        unflushed = true;
        break;
      }
    }
    if (unflushed && now - last_flush >= std::chrono::seconds(1) && !degraded_locked()) {
      last_flush = now;
      lock.unlock();
      (void)flush_legs(true);
      lock.lock();
      if (committing_ || cleaning_) continue;
    }
    clear_idle_bits_locked(false);
    if (active_on_disk_ && writes_inflight_ == 0 && resync_left_ == 0 && now - last_write_ >= kCleanAfter) {
      (void)mark_clean(lock);
      continue;
    }
    if (std::find(dirty_pages_.begin(), dirty_pages_.end(), true) != dirty_pages_.end()) {
      (void)commit_locked(lock);
    }
  }
  return Status::Ok();
}

}  // namespace bowstack::mirror
