// Which regions the mirror's recovery copies to each leg being rebuilt: all
// of them from its mark for a full rebuild, only those it lacks for a
// guided one (md's bitmap-guided re-add, mirror_readd.h), and when a leg
// is in sync.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {

namespace {

bool rebuilt(LegState s) { return s == LegState::kStale || s == LegState::kRecovering; }

}  // namespace

bool MirrorTarget::needs_copy_locked(size_t i, uint64_t pos, uint64_t len) {
  Leg& l = *legs_[i];
  // A mark inside the region (one a kernel wrote) still needs the region.
  if (!rebuilt(l.state) || l.mark >= pos + len) return false;
  if (!l.guided) return true;
  uint64_t b = pos / chunk_;
  if (lacking_[b]) return true;
  // The leg holds every region up to the next one it lacks: no write
  // reached them since before it left (their bits would be set: bits are
  // not cleared while it is missing), and every write since went to it
  // too. So its mark, the bound below which it serves reads and which its
  // superblock records, may move there.
  while (b < bits_ && !lacking_[b]) ++b;
  l.mark = std::min(size_, b * chunk_);
  l.state = LegState::kRecovering;
  return false;
}

uint64_t MirrorTarget::recover_total_locked(uint64_t pos) const {
  uint64_t total = 0;
  for (uint64_t b = pos / chunk_; b < bits_; ++b) {
    const uint64_t end = std::min(size_, (b + 1) * chunk_);
    for (const auto& l : legs_) {
      if (rebuilt(l->state) && l->mark < end && (!l->guided || lacking_[b])) {
        total += end - b * chunk_;
        break;
      }
    }
  }
  return total;
}

void MirrorTarget::promote_recovered_locked() {
  for (auto& lp : legs_) {
    Leg& l = *lp;
    if (l.state != LegState::kRecovering || l.durable_mark < size_) continue;
    l.state = LegState::kInSync;
    l.mark = l.durable_mark = 0;
    l.guided = false;
    l.rebuild_regions = 0;
    spdlog::info("mirror: {} is in sync", l.name);
  }
}

Result<std::string> MirrorTarget::readd_leg_locked(std::unique_lock<std::mutex>& lock, size_t i) {
  Leg& l = *legs_[i];
  if (l.state != LegState::kFaulty) {
    return Status::Error(EINVAL, fmt::format("mirror: {} is {}; only a faulty leg can be re-added", l.name,
                                             leg_state_name(l.state)));
  }
  if (resync_running_ || recover_running_ || action_ != SyncAction::kIdle) {
    // A running copy has passed regions this leg would need.
    return Status::Error(EBUSY, fmt::format("mirror: a {} is running; re-add {} after it ends",
                                            resync_running_                 ? "resync"
                                            : recover_running_              ? "recovery"
                                            : action_ == SyncAction::kCheck ? "check"
                                                                            : "repair",
                                            l.name));
  }
  if (!meta_failure_.ok()) return meta_failure_;
  const uint16_t role = l.sb.role();
  if (role >= md::kRoleMax) {
    return Status::Error(EINVAL, fmt::format("mirror: {} never held an active role in this array", l.name));
  }
  const bool guided = l.failed_guidable;
  l.state = LegState::kStale;
  l.mark = l.durable_mark = 0;
  l.guided = guided;
  l.new_metadata = true;  // its bitmap area is as old as its failure
  l.read_errors = 0;
  l.rebuild_regions = 0;
  for (uint64_t b = 0; b < bits_; ++b) {
    // Every bit set now: set before any write it missed (bits are not
    // cleared while it is missing), whether that write is done or in
    // flight; writes from now on reach it.
    if (guided && md::test_bit(area_, b)) lacking_[b] = true;
    l.rebuild_regions += !guided || lacking_[b];
  }
  array_sb_.dev_roles[l.sb.dev_number] = role;
  sb_change_ = true;
  commit_sb_change_locked(lock);
  if (!meta_failure_.ok()) return meta_failure_;
  if (l.state == LegState::kFaulty) {
    return Status::Error(EIO,
                         fmt::format("mirror: {} failed again while its superblock was written", l.name));
  }
  spdlog::info("mirror: {} re-added with a {} recovery ({} of {} regions to copy)", l.name,
               guided ? "bitmap-guided" : "full", l.rebuild_regions, bits_);
  start_sync_jobs_locked();
  return fmt::format("{} re-added: {} recovery of {} of {} regions", l.name, guided ? "bitmap" : "full",
                     l.rebuild_regions, bits_);
}

}  // namespace bowstack::mirror
