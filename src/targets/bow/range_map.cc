#include "targets/bow/range_map.h"

namespace bowstack::bow {

std::string_view block_type_name(BlockType t) {
  switch (t) {
    case BlockType::kUnchanged: return "unchanged";
    case BlockType::kFree: return "free";
    case BlockType::kChanged: return "changed";
    case BlockType::kBackup: return "backup";
    case BlockType::kSector0: return "sector0";
    case BlockType::kSector0Live: return "sector0-live";
  }
  return "?";
}

RangeMap::RangeMap(uint64_t blocks, BlockType initial) : blocks_(blocks) {
  runs_.emplace(0, initial);
  runs_.emplace(blocks_, BlockType::kUnchanged);  // sentinel
  counts_[static_cast<int>(initial)] = blocks_;
  if (initial == BlockType::kFree) free_starts_.insert(0);
}

BlockType RangeMap::type_at(uint64_t block) const { return std::prev(runs_.upper_bound(block))->second; }

void RangeMap::split_at(uint64_t pos) {
  auto it = std::prev(runs_.upper_bound(pos));
  if (it->first == pos) return;
  runs_.emplace_hint(std::next(it), pos, it->second);
  if (it->second == BlockType::kFree) free_starts_.insert(pos);
}

void RangeMap::erase_run(std::map<uint64_t, BlockType>::iterator it) {
  if (it->second == BlockType::kFree) free_starts_.erase(it->first);
  runs_.erase(it);
}

void RangeMap::set(uint64_t start, uint64_t count, BlockType type) {
  const uint64_t end = start + count;
  split_at(start);
  split_at(end);
  // Replace every run in [start, end) by one run of `type`.
  auto it = runs_.find(start);
  while (it->first < end) {
    auto next = std::next(it);
    counts_[static_cast<int>(it->second)] -= next->first - it->first;
    erase_run(it);
    it = next;
  }
  counts_[static_cast<int>(type)] += count;
  auto cur = runs_.emplace(start, type).first;
  if (type == BlockType::kFree) free_starts_.insert(start);
  // Merge with the following run, then the preceding one.
  auto next = std::next(cur);
  if (next->first < blocks_ && next->second == type) erase_run(next);
  if (cur != runs_.begin()) {
    auto prev = std::prev(cur);
    if (prev->second == type) erase_run(cur);
  }
}

std::optional<BlockRun> RangeMap::first_free(uint64_t max) const {
  if (free_starts_.empty() || max == 0) return std::nullopt;
  uint64_t start = *free_starts_.begin();
  auto it = runs_.find(start);
  uint64_t len = run_end(it) - start;
  return BlockRun{start, std::min(len, max), BlockType::kFree};
}

bool RangeMap::check_invariants() const {
  if (runs_.empty() || runs_.begin()->first != 0 || std::prev(runs_.end())->first != blocks_) return false;
  uint64_t counts[kBlockTypes] = {};
  size_t free_runs = 0;
  for (auto it = runs_.begin(); it->first < blocks_; ++it) {
    auto next = std::next(it);
    if (next->first <= it->first) return false;
    if (next->first < blocks_ && next->second == it->second) return false;  // not merged
    counts[static_cast<int>(it->second)] += next->first - it->first;
    if (it->second == BlockType::kFree) {
      ++free_runs;
      if (!free_starts_.count(it->first)) return false;
    }
  }
  if (free_runs != free_starts_.size()) return false;
  for (int i = 0; i < kBlockTypes; ++i) {
    if (counts[i] != counts_[i]) return false;
  }
  return true;
}

}  // namespace bowstack::bow
