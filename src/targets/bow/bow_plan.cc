// bow's backup planner: which blocks a write must save, where, and the
// log entries and claims that go with them.
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
    rollover_unbacked_.erase(b);
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
    rollover_unbacked_.insert(f->start);  // the writer reserves its space (reserve_backing)
    log_slots_ += cap - 1;
  }
  if (!ok) {
    undo_plan_locked(*plan);
    for (const auto& [s, e] : plan->claims) map_.set(s, e - s, BlockType::kFree);
    for (uint64_t b : plan->unreserved) {
      map_.set(b, 1, BlockType::kBackup);
      rollover_blocks_.insert(b);
      rollover_unbacked_.insert(b);  // perhaps backed before; reserving again costs little
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
  if (!plan->copies.empty()) plan->unbacked.assign(rollover_unbacked_.begin(), rollover_unbacked_.end());
  return Status::Ok();
}

// A write that saves data is acknowledged before the commit and apply jobs
// write its saved copies, its overwrite and any log block rolled over for
// its entries. On a sparse backing file, any of those may need space the
// host filesystem no longer has; reserving it here turns a full disk into
// ENOSPC for this write (still refusable, nothing changed yet) instead of a
// failed acknowledged write later, which would fail the whole device.
// Rollover blocks reserved so far are backed too: the log may roll over
// into any of them for this write's entries.
Status BowTarget::reserve_backing(uint64_t first, uint64_t count, const Plan& plan) {
  for (const auto& c : plan.copies) {
    if (Status s = space_.reserve(c.dest * bs_, c.count * bs_); !s.ok()) return s;
  }
  if (Status s = space_.reserve(first * bs_, count * bs_); !s.ok()) return s;
  if (plan.unbacked.empty()) return Status::Ok();
  for (uint64_t b : plan.unbacked) {
    if (Status s = space_.reserve(b * bs_, bs_); !s.ok()) return s;
  }
  std::lock_guard lock(mu_);
  for (uint64_t b : plan.unbacked) rollover_unbacked_.erase(b);
  return Status::Ok();
}

void BowTarget::abandon_plan(const Plan& plan, SpanRefs spans) {
  const int64_t cap = log_capacity(bs_, kHeaderSize);
  std::lock_guard lock(mu_);
  undo_plan_locked(plan);
  // The claimed blocks are still busy (this write's own), so nobody has
  // seen them changed: they go back to what they were.
  for (const auto& [s, e] : plan.claims) map_.set(s, e - s, BlockType::kFree);
  for (uint64_t b : plan.unreserved) {
    map_.set(b, 1, BlockType::kBackup);
    rollover_blocks_.insert(b);
    rollover_unbacked_.insert(b);
    log_slots_ += cap - 1;
  }
  for (const auto& [b, e] : spans) busy_.clear(b, e);
  for (const auto& c : plan.copies) busy_.clear(c.dest, c.dest + c.count);
  cv_.notify_all();
}

void BowTarget::undo_plan_locked(const Plan& plan) {
  for (const auto& c : plan.copies) map_.set(c.dest, c.count, BlockType::kFree);
  log_slots_ += static_cast<int64_t>(plan.slots);
}

}  // namespace bowstack::bow
