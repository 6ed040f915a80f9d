// Which blocks an operation in flight owns (bow's "busy" blocks): a write,
// from planning until its data is applied (for a first overwrite, until the
// committer has logged its saved copy and written it), and a saved copy's
// destination while it is being filled.
//
// One bit per block in chunks of kChunkBlocks, allocated while the chunk has
// a busy block and given back when it has none, plus a count per chunk. Costs:
// O(blocks touched) for mark, clear and overlaps, however many operations
// are in flight (a tree of ranges cost a cache miss per level once
// thousands of acknowledged overwrites were waiting for their commit).
// Thread-safety: none; the owner serialises access (BowTarget::mu_).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace bowstack::bow {

class BusyMap {
 public:
  static constexpr unsigned kChunkShift = 12;
  static constexpr uint64_t kChunkBlocks = uint64_t{1} << kChunkShift;

  explicit BusyMap(uint64_t blocks);

  // REQUIRES for all: start < end <= blocks.
  bool overlaps(uint64_t start, uint64_t end) const;
  // REQUIRES: !overlaps(start, end) (the owner waits for that first).
  void mark(uint64_t start, uint64_t end);
  // REQUIRES: every block of the range is marked (by the caller).
  void clear(uint64_t start, uint64_t end);
  bool empty() const { return busy_ == 0; }
  uint64_t busy_blocks() const { return busy_; }

 private:
  struct Chunk {
    std::unique_ptr<uint64_t[]> bits;  // kChunkBlocks bits; null when none is busy
    uint32_t count = 0;
  };
  // Zeroed bitmaps of chunks that went idle, reused rather than freed and
  // allocated again: with few writes in flight, every write would otherwise
  // allocate and free one (a bitmap is 512 bytes; at most kMaxSpare kept).
  static constexpr size_t kMaxSpare = 64;
  std::vector<std::unique_ptr<uint64_t[]>> spare_;
  std::vector<Chunk> chunks_;
  uint64_t busy_ = 0;
};

}  // namespace bowstack::bow
