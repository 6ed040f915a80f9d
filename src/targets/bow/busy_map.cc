#include "targets/bow/busy_map.h"

#include <algorithm>
#include <bit>

namespace bowstack::bow {

namespace {
constexpr uint64_t kWordsPerChunk = BusyMap::kChunkBlocks / 64;

// Bits [lo, hi) of a 64-bit word, 0 <= lo < hi <= 64.
uint64_t bits_between(uint64_t lo, uint64_t hi) {
  const uint64_t upper = hi == 64 ? ~uint64_t{0} : (uint64_t{1} << hi) - 1;
  return upper & ~((uint64_t{1} << lo) - 1);
}
// Calls fn(chunk, word within the chunk, mask of the range's bits in that
// word, number of bits in the mask) for each 64-block word [start, end)
// touches.
template <typename Fn>
void for_words(uint64_t start, uint64_t end, Fn&& fn) {
  constexpr uint64_t kChunkBlocks = BusyMap::kChunkBlocks;
  constexpr unsigned kChunkShift = BusyMap::kChunkShift;
  uint64_t pos = start;
  while (pos < end) {
    const uint64_t c = pos >> kChunkShift;
    const uint64_t stop = std::min(end, (c + 1) << kChunkShift);
    // Word-aligned pieces of [pos, stop) inside chunk c.
    for (uint64_t at = pos; at < stop;) {
      const uint64_t word = (at & (kChunkBlocks - 1)) / 64;
      const uint64_t lo = at % 64;
      const uint64_t hi = std::min<uint64_t>(64, lo + (stop - at));
      fn(c, word, bits_between(lo, hi), hi - lo);
      at += hi - lo;
    }
    pos = stop;
  }
}

}  // namespace

BusyMap::BusyMap(uint64_t blocks) : chunks_((blocks + kChunkBlocks - 1) >> kChunkShift) {}

bool BusyMap::overlaps(uint64_t start, uint64_t end) const {
  bool hit = false;
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t mask, uint64_t) {
    const Chunk& ch = chunks_[c];
    if (!hit && ch.bits && (ch.bits[w] & mask) != 0) hit = true;
  });
  return hit;
}

void BusyMap::mark(uint64_t start, uint64_t end) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t mask, uint64_t n) {
    Chunk& ch = chunks_[c];
    if (!ch.bits) {
      if (spare_.empty()) {
        ch.bits.reset(new uint64_t[kWordsPerChunk]());
      } else {
        ch.bits = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    ch.bits[w] |= mask;
    ch.count += static_cast<uint32_t>(n);  // no bit of the mask was set (REQUIRES)
  });
  busy_ += end - start;
}

void BusyMap::clear(uint64_t start, uint64_t end) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t mask, uint64_t n) {
    Chunk& ch = chunks_[c];
    if (!ch.bits) return;
    const uint64_t cleared = ch.bits[w] & mask;
    ch.bits[w] &= ~mask;
    const auto k = static_cast<uint32_t>(cleared == mask ? n : std::popcount(cleared));
    ch.count -= k;
    busy_ -= k;
    if (ch.count == 0) {
      // All zero again: keep it for the next chunk that needs one.
      if (spare_.size() < kMaxSpare) {
        spare_.push_back(std::move(ch.bits));
      } else {
        ch.bits.reset();
      }
    }
  });
}

}  // namespace bowstack::bow
