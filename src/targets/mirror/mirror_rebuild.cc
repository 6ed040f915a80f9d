// Which regions the mirror's recovery copies to each leg being rebuilt: all
// of them from its mark for a full rebuild, only those it lacks for a
// guided one (md's bitmap-guided re-add, mirror_readd.h), and when a leg
// is in sync.
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

}  // namespace bowstack::mirror
