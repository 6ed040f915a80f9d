// A set of blocks held by operations in flight: the core's range lock.
//
// Two ways to hold blocks, for the two orderings targets need:
//  * exclusive (mark/clear): an operation waits until overlaps() is false,
//    then marks its range; overlapping operations run one after the other
//    (bow's busy blocks, a mirror's region being copied);
//  * counted (add/remove): write-behind queues (core/write_behind.h) add the
//    range of every queued operation without waiting, so that the same
//    block may be held by several queued writes, and learn which blocks
//    became held or free (era's and csum's pending blocks, which reads wait
//    for and later writes queue behind).
// A block is held while any holder has it; the two may not be mixed on one
// set.
//
// One bit per block in chunks of kChunkBlocks, allocated while the chunk has
// a held block and given back when it has none, plus a count per chunk;
// blocks held more than once are counted in a side table, which stays empty
// for exclusive use. Costs: O(blocks touched) for every call, however many
// operations are in flight (a tree of ranges cost a cache miss per level
// once thousands of acknowledged writes were waiting for their commit).
//
// Thread-safety: none; the owner serialises access with its own mutex, and
// waits on its own condition variable (the owner's lock usually guards more
// state that must change together with the set).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace bowstack {

class BlockSet {
 public:
  static constexpr unsigned kChunkShift = 12;
  static constexpr uint64_t kChunkBlocks = uint64_t{1} << kChunkShift;

  explicit BlockSet(uint64_t blocks);

  // REQUIRES for all: start <= end <= blocks.
  bool overlaps(uint64_t start, uint64_t end) const;
  // Exclusive hold. REQUIRES: !overlaps(start, end) (the owner waits first).
  void mark(uint64_t start, uint64_t end);
  // Ends an exclusive hold. REQUIRES: the caller marked every block of it.
  void clear(uint64_t start, uint64_t end);

  // Counted hold: one more holder for each block; newly(b) for each block
  // that had none.
  template <typename Fn>
  void add(uint64_t start, uint64_t end, Fn&& newly);
  void add(uint64_t start, uint64_t end) {
    add(start, end, [](uint64_t) {});
  }
  // One holder less for each block; freed(b) for each block left with
  // none. REQUIRES: the caller added every block of the range.
  template <typename Fn>
  void remove(uint64_t start, uint64_t end, Fn&& freed);

  bool empty() const { return held_ == 0; }
  // Blocks with at least one holder.
  uint64_t held_blocks() const { return held_; }

 private:
  struct Chunk {
    std::unique_ptr<uint64_t[]> bits;  // kChunkBlocks bits; null when none is held
    uint32_t count = 0;
  };
  static constexpr uint64_t kWordsPerChunk = kChunkBlocks / 64;
  // Zeroed bitmaps of chunks that went idle, reused rather than freed and
  // allocated again: with few operations in flight, every one would
  // otherwise allocate and free one (a bitmap is 512 bytes; at most
  // kMaxSpare kept).
  static constexpr size_t kMaxSpare = 64;

  // Calls fn(chunk, word within the chunk, first block of the word, mask of
  // the range's bits in that word, number of bits in the mask) for each
  // 64-block word that [start, end) touches.
  template <typename Fn>
  static void for_words(uint64_t start, uint64_t end, Fn&& fn);
  uint64_t* bits_of(Chunk& ch);
  void release_bits(Chunk& ch);

  std::vector<std::unique_ptr<uint64_t[]>> spare_;
  std::vector<Chunk> chunks_;
  // Holders beyond the first, of blocks held by more than one (counted use).
  std::unordered_map<uint64_t, uint32_t> extra_;
  uint64_t held_ = 0;
};

template <typename Fn>
void BlockSet::for_words(uint64_t start, uint64_t end, Fn&& fn) {
  uint64_t pos = start;
  while (pos < end) {
    const uint64_t c = pos >> kChunkShift;
    const uint64_t stop = std::min(end, (c + 1) << kChunkShift);
    for (uint64_t at = pos; at < stop;) {
      const uint64_t word = (at & (kChunkBlocks - 1)) / 64;
      const uint64_t lo = at % 64;
      const uint64_t hi = std::min<uint64_t>(64, lo + (stop - at));
      const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
      fn(c, word, at - lo, upper & ~((uint64_t{1} << lo) - 1), hi - lo);
      at += hi - lo;
    }
    pos = stop;
  }
}

template <typename Fn>
void BlockSet::add(uint64_t start, uint64_t end, Fn&& newly) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t base, uint64_t mask, uint64_t) {
    uint64_t* bits = bits_of(chunks_[c]);
    const uint64_t again = bits[w] & mask;
    const uint64_t fresh = mask & ~again;
    for (uint64_t m = again; m != 0; m &= m - 1) ++extra_[base + static_cast<uint64_t>(std::countr_zero(m))];
    bits[w] |= fresh;
    const auto n = static_cast<uint32_t>(std::popcount(fresh));
    chunks_[c].count += n;
    held_ += n;
    for (uint64_t m = fresh; m != 0; m &= m - 1) newly(base + static_cast<uint64_t>(std::countr_zero(m)));
  });
}

template <typename Fn>
void BlockSet::remove(uint64_t start, uint64_t end, Fn&& freed) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t base, uint64_t mask, uint64_t) {
    Chunk& ch = chunks_[c];
    if (!ch.bits) return;
    uint64_t gone = ch.bits[w] & mask;
    if (!extra_.empty()) {
      for (uint64_t m = gone; m != 0; m &= m - 1) {
        const uint64_t b = base + static_cast<uint64_t>(std::countr_zero(m));
        auto it = extra_.find(b);
        if (it == extra_.end()) continue;
        if (--it->second == 0) extra_.erase(it);
        gone &= ~(uint64_t{1} << (b - base));  // still held by another
      }
    }
    ch.bits[w] &= ~gone;
    const auto n = static_cast<uint32_t>(std::popcount(gone));
    ch.count -= n;
    held_ -= n;
    for (uint64_t m = gone; m != 0; m &= m - 1) freed(base + static_cast<uint64_t>(std::countr_zero(m)));
    if (ch.count == 0) release_bits(ch);
  });
}

}  // namespace bowstack
