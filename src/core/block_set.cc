#include "core/block_set.h"

namespace bowstack {

BlockSet::BlockSet(uint64_t blocks) : chunks_((blocks + kChunkBlocks - 1) >> kChunkShift) {}

uint64_t* BlockSet::bits_of(Chunk& ch) {
  if (!ch.bits) {
    if (spare_.empty()) {
      ch.bits.reset(new uint64_t[kWordsPerChunk]());
    } else {
      ch.bits = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  return ch.bits.get();
}

void BlockSet::release_bits(Chunk& ch) {
  // All zero again: keep it for the next chunk that needs one.
  if (spare_.size() < kMaxSpare) {
    spare_.push_back(std::move(ch.bits));
  } else {
    ch.bits.reset();
  }
}

bool BlockSet::overlaps(uint64_t start, uint64_t end) const {
  bool hit = false;
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t, uint64_t mask, uint64_t) {
    const Chunk& ch = chunks_[c];
    if (!hit && ch.bits && (ch.bits[w] & mask) != 0) hit = true;
  });
  return hit;
}

void BlockSet::mark(uint64_t start, uint64_t end) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t, uint64_t mask, uint64_t n) {
    Chunk& ch = chunks_[c];
    bits_of(ch)[w] |= mask;
    ch.count += static_cast<uint32_t>(n);  // no bit of the mask was set (REQUIRES)
  });
  held_ += end - start;
}

void BlockSet::clear(uint64_t start, uint64_t end) {
  for_words(start, end, [&](uint64_t c, uint64_t w, uint64_t, uint64_t mask, uint64_t n) {
    Chunk& ch = chunks_[c];
    if (!ch.bits) return;
    const uint64_t cleared = ch.bits[w] & mask;
    ch.bits[w] &= ~mask;
    const auto k = static_cast<uint32_t>(cleared == mask ? n : std::popcount(cleared));
    ch.count -= k;
    held_ -= k;
    if (ch.count == 0) release_bits(ch);
  });
}

}  // namespace bowstack
