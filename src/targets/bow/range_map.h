// The bow target's block map: every block of the device has one type, kept
// as maximal runs of equal type in an ordered map, plus an index of the free
// runs so allocation never scans.
//
// Costs: lookup, set and allocation are O(log n) in the number of runs, plus
// the runs a set() replaces. Memory: one map node per run.
// Thread-safety: none; the owner serialises access (BowTarget::mu_).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string_view>

namespace bowstack::bow {

enum class BlockType : uint8_t {
  kUnchanged = 0,   // holds checkpoint data not yet saved; must be saved before overwrite
  kFree = 1,        // free at checkpoint (trimmed) and unused since: may hold saved copies
  kChanged = 2,     // new data; its checkpoint contents (if any) are saved
  kBackup = 3,      // holds a saved copy that restore needs
  kSector0 = 4,     // block 0: holds the log
  kSector0Live = 5, // holds the live contents of block 0
};
inline constexpr int kBlockTypes = 6;
std::string_view block_type_name(BlockType t);

struct BlockRun {
  uint64_t start = 0;
  uint64_t count = 0;
  BlockType type = BlockType::kUnchanged;
};

class RangeMap {
 public:
  // REQUIRES: blocks > 0.
  explicit RangeMap(uint64_t blocks, BlockType initial = BlockType::kUnchanged);

  uint64_t blocks() const { return blocks_; }
  BlockType type_at(uint64_t block) const;
  // Sets [start, start+count) to `type`, merging with equal neighbours.
  // REQUIRES: start + count <= blocks(), count > 0.
  void set(uint64_t start, uint64_t count, BlockType type);
  // Calls fn(BlockRun) for each run overlapping [start, start+count), clipped to
  // that range, in address order. fn must not modify the map.
  template <typename Fn>
  void for_each(uint64_t start, uint64_t count, Fn&& fn) const;
  // The lowest-addressed free run, clipped to at most `max` blocks.
  std::optional<BlockRun> first_free(uint64_t max) const;

  uint64_t count(BlockType type) const { return counts_[static_cast<int>(type)]; }
  size_t run_count() const { return runs_.size() - 1; }  // minus the end sentinel
  size_t free_run_count() const { return free_starts_.size(); }
  // Checks every invariant (for tests): runs cover the device, neighbours
  // differ, counters and the free index agree with the runs.
  bool check_invariants() const;

 private:
  // Makes a run start exactly at `pos` (splitting the run covering it).
  void split_at(uint64_t pos);
  void erase_run(std::map<uint64_t, BlockType>::iterator it);
  uint64_t run_end(std::map<uint64_t, BlockType>::const_iterator it) const { return std::next(it)->first; }

  uint64_t blocks_;
  // start -> type; each run ends where the next begins. A sentinel at
  // blocks_ (type ignored) terminates the last run.
  std::map<uint64_t, BlockType> runs_;
  std::set<uint64_t> free_starts_;
  uint64_t counts_[kBlockTypes] = {};
};

template <typename Fn>
void RangeMap::for_each(uint64_t start, uint64_t count, Fn&& fn) const {
  const uint64_t end = start + count;
  auto it = std::prev(runs_.upper_bound(start));
  while (it->first < end && it->first < blocks_) {
    uint64_t run_start = std::max(it->first, start);
    uint64_t run_stop = std::min(run_end(it), end);
    fn(BlockRun{run_start, run_stop - run_start, it->second});
    ++it;
  }
}

}  // namespace bowstack::bow
