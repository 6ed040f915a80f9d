#include "targets/bow/range_map.h"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>
#include <vector>

namespace bowstack::bow {
namespace {

std::vector<BlockRun> runs(const RangeMap& m) {
  std::vector<BlockRun> v;
  m.for_each(0, m.blocks(), [&](const BlockRun& r) { v.push_back(r); });
  return v;
}

TEST(RangeMap, StartsAsOneRun) {
  RangeMap m(100);
  EXPECT_EQ(m.run_count(), 1u);
  EXPECT_EQ(m.count(BlockType::kUnchanged), 100u);
  EXPECT_FALSE(m.first_free(10).has_value());
  EXPECT_TRUE(m.check_invariants());
}

TEST(RangeMap, SetSplitsAndMerges) {
  RangeMap m(100);
  m.set(10, 10, BlockType::kFree);
  m.set(30, 10, BlockType::kFree);
  EXPECT_EQ(m.run_count(), 5u);
  EXPECT_EQ(m.count(BlockType::kFree), 20u);
  m.set(20, 10, BlockType::kFree);  // bridges the two free runs
  EXPECT_EQ(m.run_count(), 3u);
  auto r = runs(m);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[1].start, 10u);
  EXPECT_EQ(r[1].count, 30u);
  EXPECT_EQ(r[1].type, BlockType::kFree);
  m.set(0, 100, BlockType::kChanged);
  EXPECT_EQ(m.run_count(), 1u);
  EXPECT_EQ(m.count(BlockType::kFree), 0u);
  EXPECT_FALSE(m.first_free(1).has_value());
  EXPECT_TRUE(m.check_invariants());
}

TEST(RangeMap, ForEachClips) {
  RangeMap m(100);
  m.set(10, 10, BlockType::kBackup);
  std::vector<BlockRun> got;
  m.for_each(5, 10, [&](const BlockRun& r) { got.push_back(r); });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].start, 5u);
  EXPECT_EQ(got[0].count, 5u);
  EXPECT_EQ(got[0].type, BlockType::kUnchanged);
  EXPECT_EQ(got[1].start, 10u);
  EXPECT_EQ(got[1].count, 5u);
  EXPECT_EQ(got[1].type, BlockType::kBackup);
  got.clear();
  m.for_each(99, 1, [&](const BlockRun& r) { got.push_back(r); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].start, 99u);
}

TEST(RangeMap, FirstFreeIsLowestAndClipped) {
  RangeMap m(1000);
  m.set(500, 100, BlockType::kFree);
  m.set(100, 3, BlockType::kFree);
  auto f = m.first_free(10);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->start, 100u);
  EXPECT_EQ(f->count, 3u);
  m.set(100, 3, BlockType::kBackup);
  f = m.first_free(10);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->start, 500u);
  EXPECT_EQ(f->count, 10u);
}

// Random operations against a flat array model, over several chunks and a
// partial last chunk, with runs short and long enough to cover whole chunks.
void RandomAgainstModel(uint64_t n, uint64_t max_len, int steps, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RangeMap m(n);
  std::vector<BlockType> model(n, BlockType::kUnchanged);
  for (int step = 0; step < steps; ++step) {
    uint64_t start = rng() % n;
    uint64_t count = 1 + rng() % std::min<uint64_t>(rng() % 8 == 0 ? max_len : 64, n - start);
    // Free blocks are rarer than the rest, as in a filling checkpoint.
    auto type = static_cast<BlockType>(rng() % kBlockTypes);
    m.set(start, count, type);
    for (uint64_t i = start; i < start + count; ++i) model[i] = type;
    if (step % 97 == 0) {
      ASSERT_TRUE(m.check_invariants()) << step;
      uint64_t probe = rng() % n;
      ASSERT_EQ(m.type_at(probe), model[probe]);
      uint64_t want = 1 + rng() % (2 * RangeMap::kChunkBlocks);
      auto f = m.first_free(want);
      uint64_t first = n;
      for (uint64_t i = 0; i < n; ++i) {
        if (model[i] == BlockType::kFree) {
          first = i;
          break;
        }
      }
      if (first == n) {
        ASSERT_FALSE(f.has_value());
      } else {
        ASSERT_TRUE(f.has_value());
        ASSERT_EQ(f->start, first);
        uint64_t len = 0;
        while (first + len < n && model[first + len] == BlockType::kFree && len < want) ++len;
        ASSERT_EQ(f->count, len) << "first_free must return the whole run, clipped to the request";
      }
    }
  }
  uint64_t pos = 0, runs = 0;
  BlockType prev = BlockType::kUnchanged;
  m.for_each(0, n, [&](const BlockRun& r) {
    ASSERT_EQ(r.start, pos);
    if (runs > 0) {
      ASSERT_NE(r.type, prev) << "runs must be maximal";
    }
    for (uint64_t i = r.start; i < r.start + r.count; ++i) ASSERT_EQ(model[i], r.type) << i;
    pos += r.count;
    prev = r.type;
    ++runs;
  });
  EXPECT_EQ(pos, n);
  EXPECT_EQ(runs, m.run_count());
  EXPECT_TRUE(m.check_invariants());
}

TEST(RangeMap, RandomAgainstModelOneChunk) { RandomAgainstModel(4096, 4096, 20000, 42); }

TEST(RangeMap, RandomAgainstModelManyChunks) {
  RandomAgainstModel(5 * RangeMap::kChunkBlocks + 123, 3 * RangeMap::kChunkBlocks, 6000, 7);
}

// A fully fragmented map costs about a byte per block, and collapses back
// to almost nothing once the chunks are uniform again.
// set() counts runs for one block from its neighbours: check the count after
// every step on a small map, so the first and last blocks (one neighbour
// each) and no-op sets come up often.
TEST(RangeMap, SingleBlockSetsKeepTheRunCount) {
  const uint64_t n = 9;
  RangeMap m(n);
  std::vector<BlockType> model(n, BlockType::kUnchanged);
  std::mt19937_64 rng(5);
  for (int step = 0; step < 5000; ++step) {
    const uint64_t b = rng() % n;
    const auto type = static_cast<BlockType>(rng() % 3);
    m.set(b, 1, type);
    model[b] = type;
    uint64_t runs = 1;
    for (uint64_t i = 1; i < n; ++i) runs += model[i] != model[i - 1] ? 1 : 0;
    ASSERT_EQ(m.run_count(), runs) << step;
    ASSERT_EQ(m.type_at(b), type);
  }
  EXPECT_TRUE(m.check_invariants());
}

// prefetch() is the one call that needs no lock: run it from another thread
// while the owner keeps turning chunks mixed and uniform again (the
// ThreadSanitizer build checks that the two never race).
TEST(RangeMap, PrefetchRunsBesideTheOwner) {
  const uint64_t n = 4 * RangeMap::kChunkBlocks + 3;
  RangeMap m(n);
  std::atomic<bool> stop{false};
  std::thread hinter([&] {
    std::mt19937_64 rng(3);
    while (!stop.load()) m.prefetch(rng() % (n + 10));  // out of range too
  });
  std::mt19937_64 rng(4);
  for (int step = 0; step < 20000; ++step) {
    const uint64_t c = rng() % 5;
    const uint64_t start = std::min(n - 1, c * RangeMap::kChunkBlocks + rng() % 16);
    const uint64_t count = rng() % 4 == 0 ? std::min<uint64_t>(RangeMap::kChunkBlocks, n - start) : 1;
    m.set(start, count, static_cast<BlockType>(rng() % 3));
  }
  stop = true;
  hinter.join();
  EXPECT_TRUE(m.check_invariants());
}

TEST(RangeMap, MemoryFollowsFragmentation) {
  const uint64_t n = 64 * RangeMap::kChunkBlocks;
  RangeMap m(n);
  const uint64_t empty = m.memory_bytes();
  EXPECT_LT(empty, 4096u);
  for (uint64_t b = 0; b < n; b += 2) m.set(b, 1, BlockType::kFree);
  EXPECT_EQ(m.run_count(), n);
  EXPECT_LE(m.memory_bytes(), empty + n);
  for (uint64_t b = 1; b < n; b += 2) m.set(b, 1, BlockType::kFree);
  EXPECT_EQ(m.run_count(), 1u);
  EXPECT_EQ(m.memory_bytes(), empty);
  EXPECT_TRUE(m.check_invariants());
}

// Allocation walks upward through the free space without rescanning what
// is already used (the hint), and still finds space freed below it.
TEST(RangeMap, FirstFreeAfterFreeingBelowTheHint) {
  const uint64_t n = 8 * RangeMap::kChunkBlocks;
  RangeMap m(n, BlockType::kFree);
  for (uint64_t b = 0; b < n - 10; b += 100) {
    auto f = m.first_free(100);
    ASSERT_TRUE(f);
    ASSERT_EQ(f->start, b);
    m.set(f->start, f->count, BlockType::kBackup);
  }
  m.set(5, 1, BlockType::kFree);
  auto f = m.first_free(10);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->start, 5u);
  EXPECT_EQ(f->count, 1u);
  EXPECT_TRUE(m.check_invariants());
}

}  // namespace
}  // namespace bowstack::bow
