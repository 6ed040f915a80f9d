#include "targets/bow/range_map.h"

#include <bit>
#include <cstring>

namespace bowstack::bow {

std::string_view block_type_name(BlockType t) {
  switch (t) {
    case BlockType::kUnchanged:
      return "unchanged";
    case BlockType::kFree:
      return "free";
    case BlockType::kChanged:
      return "changed";
    case BlockType::kBackup:
      return "backup";
    case BlockType::kSector0:
      return "sector0";
    case BlockType::kSector0Live:
      return "sector0-live";
  }
  return "?";
}

RangeMap::RangeMap(uint64_t blocks, BlockType initial) : blocks_(blocks) {
  const uint64_t nchunks = (blocks_ + kChunkBlocks - 1) >> kChunkShift;
  chunks_.resize(nchunks);
  prefetch_.reset(new std::atomic<const BlockType*>[nchunks]);
  for (uint64_t c = 0; c < nchunks; ++c) prefetch_[c].store(nullptr, std::memory_order_relaxed);
  free_l0_.assign((nchunks + 63) / 64, 0);
  free_l1_.assign((free_l0_.size() + 63) / 64, 0);
  for (uint64_t c = 0; c < nchunks; ++c) {
    chunks_[c].uniform = initial;
    chunks_[c].counts[static_cast<int>(initial)] = static_cast<uint16_t>(chunk_len(c));
    index_free(c);
  }
  counts_[static_cast<int>(initial)] = blocks_;
}

uint64_t RangeMap::runs_in(uint64_t start, uint64_t end) const {
  uint64_t n = 0;
  for_each(start, end - start, [&](const BlockRun&) { ++n; });
  return n;
}

void RangeMap::index_free(uint64_t c) {
  const bool has = chunks_[c].counts[static_cast<int>(BlockType::kFree)] != 0;
  const uint64_t w = c / 64, bit = uint64_t{1} << (c % 64);
  if (has) {
    free_l0_[w] |= bit;
    free_l1_[w / 64] |= uint64_t{1} << (w % 64);
    if (c < free_hint_) free_hint_ = c;
  } else {
    free_l0_[w] &= ~bit;
    if (free_l0_[w] == 0) free_l1_[w / 64] &= ~(uint64_t{1} << (w % 64));
  }
}

void RangeMap::set_types(uint64_t c, std::unique_ptr<BlockType[]> types) {
  chunks_[c].types = std::move(types);
  prefetch_[c].store(chunks_[c].types.get(), std::memory_order_relaxed);
}

void RangeMap::set_in_chunk(uint64_t c, uint64_t lo, uint64_t hi, BlockType type) {
  Chunk& ch = chunks_[c];
  const uint64_t base = chunk_base(c), len = chunk_len(c), n = hi - lo;
  const int ti = static_cast<int>(type);
  if (n == len) {
    // The whole chunk: it becomes uniform whatever it held.
    for (int i = 0; i < kBlockTypes; ++i) {
      counts_[i] -= ch.counts[i];
      ch.counts[i] = 0;
    }
    set_types(c, nullptr);
    ch.uniform = type;
  } else {
    if (!ch.types) {
      if (ch.uniform == type) return;
      set_types(c, std::unique_ptr<BlockType[]>(new BlockType[kChunkBlocks]));
      std::memset(ch.types.get(), static_cast<int>(ch.uniform), len);
    }
    BlockType* t = ch.types.get() + (lo - base);
    for (uint64_t i = 0; i < n; ++i) {
      const int old = static_cast<int>(t[i]);
      --ch.counts[old];
      --counts_[old];
    }
    std::memset(t, ti, n);
  }
  ch.counts[ti] = static_cast<uint16_t>(ch.counts[ti] + n);
  counts_[ti] += n;
  if (ch.types && ch.counts[ti] == len) {
    set_types(c, nullptr);  // uniform again: give the bytes back
    ch.uniform = type;
  }
  index_free(c);
}

void RangeMap::set(uint64_t start, uint64_t count, BlockType type) {
  if (count == 1) {
    // The common case (a 4 KiB write claiming one block): the run count
    // changes only at the block's two borders, so compare with the two
    // neighbours instead of walking runs before and after.
    const BlockType old = type_at(start);
    if (old == type) return;
    int64_t delta = 0;
    if (start > 0) {
      const BlockType left = type_at(start - 1);
      delta += static_cast<int64_t>(left != type) - static_cast<int64_t>(left != old);
    }
    if (start + 1 < blocks_) {
      const BlockType right = type_at(start + 1);
      delta += static_cast<int64_t>(right != type) - static_cast<int64_t>(right != old);
    }
    set_in_chunk(start >> kChunkShift, start, start + 1, type);
    runs_ = static_cast<uint64_t>(static_cast<int64_t>(runs_) + delta);
    return;
  }
  const uint64_t end = start + count;
  // Runs change only at the edges of [start, end) and inside it.
  const uint64_t lo = start > 0 ? start - 1 : 0, hi = std::min(end + 1, blocks_);
  runs_ -= runs_in(lo, hi);
  for (uint64_t pos = start; pos < end;) {
    const uint64_t c = pos >> kChunkShift;
    const uint64_t stop = std::min(end, chunk_base(c) + chunk_len(c));
    set_in_chunk(c, pos, stop, type);
    pos = stop;
  }
  runs_ += runs_in(lo, hi);
}

std::optional<BlockRun> RangeMap::first_free(uint64_t max) const {
  if (counts_[static_cast<int>(BlockType::kFree)] == 0 || max == 0) return std::nullopt;
  // The lowest chunk holding free blocks, from the hint upward.
  uint64_t c = chunks_.size();
  for (uint64_t w1 = (free_hint_ / 64) / 64; w1 < free_l1_.size() && c == chunks_.size(); ++w1) {
    uint64_t m1 = free_l1_[w1];
    while (m1 != 0) {
      const uint64_t w0 = w1 * 64 + static_cast<uint64_t>(std::countr_zero(m1));
      uint64_t m0 = free_l0_[w0];
      if (w0 == free_hint_ / 64) m0 &= ~uint64_t{0} << (free_hint_ % 64);
      if (m0 != 0) {
        c = w0 * 64 + static_cast<uint64_t>(std::countr_zero(m0));
        break;
      }
      m1 &= m1 - 1;
    }
  }
  if (c == chunks_.size()) return std::nullopt;  // unreachable while counts_ agree
  free_hint_ = c;
  const Chunk& ch = chunks_[c];
  uint64_t start = chunk_base(c);
  if (ch.types) {
    const void* p = std::memchr(ch.types.get(), static_cast<int>(BlockType::kFree), chunk_len(c));
    start += static_cast<uint64_t>(static_cast<const BlockType*>(p) - ch.types.get());
  }
  uint64_t end = start + 1;
  while (end < blocks_ && end - start < max && type_at(end) == BlockType::kFree) {
    const Chunk& next = chunks_[end >> kChunkShift];
    if (!next.types && (end & (kChunkBlocks - 1)) == 0) {
      end = std::min(end + chunk_len(end >> kChunkShift), start + max);  // a whole free chunk
    } else {
      ++end;
    }
  }
  return BlockRun{start, std::min(end - start, max), BlockType::kFree};
}

uint64_t RangeMap::memory_bytes() const {
  uint64_t bytes = chunks_.capacity() * (sizeof(Chunk) + sizeof(prefetch_[0])) +
                   (free_l0_.capacity() + free_l1_.capacity()) * 8;
  for (const Chunk& c : chunks_) {
    if (c.types) bytes += kChunkBlocks;
  }
  return bytes;
}

bool RangeMap::check_invariants() const {
  uint64_t counts[kBlockTypes] = {};
  for (uint64_t c = 0; c < chunks_.size(); ++c) {
    const Chunk& ch = chunks_[c];
    const uint64_t len = chunk_len(c);
    uint64_t mine[kBlockTypes] = {};
    for (uint64_t i = 0; i < len; ++i) ++mine[static_cast<int>(type_at(chunk_base(c) + i))];
    for (int t = 0; t < kBlockTypes; ++t) {
      if (mine[t] != ch.counts[t]) return false;
      if (ch.types && mine[t] == len) return false;  // should have been compacted
      counts[t] += mine[t];
    }
    const bool indexed = (free_l0_[c / 64] >> (c % 64)) & 1;
    if (indexed != (mine[static_cast<int>(BlockType::kFree)] != 0)) return false;
    if (indexed && c < free_hint_) return false;
  }
  for (uint64_t w = 0; w < free_l0_.size(); ++w) {
    const bool nonzero = free_l0_[w] != 0;
    if (nonzero != static_cast<bool>((free_l1_[w / 64] >> (w % 64)) & 1)) return false;
  }
  for (int t = 0; t < kBlockTypes; ++t) {
    if (counts[t] != counts_[t]) return false;
  }
  return runs_in(0, blocks_) == runs_;
}

}  // namespace bowstack::bow
