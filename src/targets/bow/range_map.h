// The bow target's block map: the type of every block of the device, and an
// index of where the free blocks are, so allocation never scans the map.
//
// Layout: blocks are grouped in chunks of kChunkBlocks. A chunk whose blocks
// all have one type is stored as that type alone (no memory per block); a
// mixed chunk holds one byte per block. A two-level bitmap marks the chunks
// that hold free blocks, and a hint remembers the lowest such chunk.
//
// Costs: type_at O(1); set and for_each O(blocks touched) (a whole uniform
// chunk counts as one); first_free O(1) amortized (bitmap words, then one
// chunk). Memory: ~32 bytes per chunk plus kChunkBlocks bytes per mixed chunk,
// so at most ~1 byte per block however fragmented the map gets (the old
// tree of runs needed ~48 bytes per run and a cache miss per tree level).
// Thread-safety: none; the owner serialises access (BowTarget::mu_).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

namespace bowstack::bow {

enum class BlockType : uint8_t {
  kUnchanged = 0,    // holds checkpoint data not yet saved; must be saved before overwrite
  kFree = 1,         // free at checkpoint (trimmed) and unused since: may hold saved copies
  kChanged = 2,      // new data; its checkpoint contents (if any) are saved
  kBackup = 3,       // holds a saved copy that restore needs
  kSector0 = 4,      // block 0: holds the log
  kSector0Live = 5,  // holds the live contents of block 0
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
  static constexpr unsigned kChunkShift = 12;
  static constexpr uint64_t kChunkBlocks = uint64_t{1} << kChunkShift;

  // REQUIRES: blocks > 0.
  explicit RangeMap(uint64_t blocks, BlockType initial = BlockType::kUnchanged);

  uint64_t blocks() const { return blocks_; }
  // Starts loading the cache line that holds `block`'s type. A hint only:
  // unlike everything else here it may be called without the owner's lock
  // (it reads nothing the owner writes but an atomic per chunk), and may
  // fetch a line the map has just given back, which is harmless. The bow
  // target calls it before taking its lock, so that the miss on a random
  // block's type is not paid inside the critical section.
  void prefetch(uint64_t block) const {
    if (block >= blocks_) return;
    const BlockType* t = prefetch_[block >> kChunkShift].load(std::memory_order_relaxed);
    if (t != nullptr) __builtin_prefetch(t + (block & (kChunkBlocks - 1)));
  }
  BlockType type_at(uint64_t block) const {
    const Chunk& c = chunks_[block >> kChunkShift];
    return c.types ? c.types[block & (kChunkBlocks - 1)] : c.uniform;
  }
  // Sets [start, start+count) to `type`.
  // REQUIRES: start + count <= blocks(), count > 0.
  void set(uint64_t start, uint64_t count, BlockType type);
  // Calls fn(BlockRun) for each maximal run of equal type overlapping
  // [start, start+count), clipped to that range, in address order. fn must
  // not modify the map.
  template <typename Fn>
  void for_each(uint64_t start, uint64_t count, Fn&& fn) const;
  // The lowest-addressed free run, clipped to at most `max` blocks.
  std::optional<BlockRun> first_free(uint64_t max) const;

  uint64_t count(BlockType type) const { return counts_[static_cast<int>(type)]; }
  // Maximal runs of equal type over the whole device.
  uint64_t run_count() const { return runs_; }
  // Bytes of memory the map holds (for status).
  uint64_t memory_bytes() const;
  // Checks every invariant (for tests): per-chunk and global counters, the
  // free index, the run count, and that uniform chunks are stored compactly.
  bool check_invariants() const;

 private:
  struct Chunk {
    std::unique_ptr<BlockType[]> types;  // null: every block is `uniform`
    BlockType uniform = BlockType::kUnchanged;
    uint16_t counts[kBlockTypes] = {};  // blocks of each type in this chunk
  };

  uint64_t chunk_base(uint64_t c) const { return c << kChunkShift; }
  uint64_t chunk_len(uint64_t c) const { return std::min<uint64_t>(kChunkBlocks, blocks_ - chunk_base(c)); }
  // Maximal runs in [start, end) (clipped), for keeping runs_ up to date.
  uint64_t runs_in(uint64_t start, uint64_t end) const;
  void set_in_chunk(uint64_t c, uint64_t lo, uint64_t hi, BlockType type);
  void index_free(uint64_t c);

  // Sets a chunk's types array and publishes it for prefetch().
  void set_types(uint64_t c, std::unique_ptr<BlockType[]> types);

  uint64_t blocks_;
  std::vector<Chunk> chunks_;
  // chunks_[c].types.get() for each chunk, readable without the lock.
  std::unique_ptr<std::atomic<const BlockType*>[]> prefetch_;
  std::vector<uint64_t> free_l0_;   // bit per chunk: it holds free blocks
  std::vector<uint64_t> free_l1_;   // bit per free_l0_ word: it is non-zero
  mutable uint64_t free_hint_ = 0;  // no chunk below this one holds free blocks
  uint64_t counts_[kBlockTypes] = {};
  uint64_t runs_ = 1;
};

template <typename Fn>
void RangeMap::for_each(uint64_t start, uint64_t count, Fn&& fn) const {
  const uint64_t end = start + count;
  uint64_t pos = start;
  BlockRun run{start, 0, type_at(start)};
  while (pos < end) {
    const uint64_t c = pos >> kChunkShift;
    const uint64_t stop = std::min(end, chunk_base(c) + chunk_len(c));
    const Chunk& ch = chunks_[c];
    if (!ch.types) {
      if (ch.uniform != run.type) {
        fn(run);
        run = BlockRun{pos, 0, ch.uniform};
      }
      run.count += stop - pos;
      pos = stop;
      continue;
    }
    const BlockType* t = ch.types.get() - chunk_base(c);
    for (; pos < stop; ++pos) {
      if (t[pos] != run.type) {
        fn(run);
        run = BlockRun{pos, 0, t[pos]};
      }
      ++run.count;
    }
  }
  fn(run);
}

}  // namespace bowstack::bow
