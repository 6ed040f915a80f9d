#include "core/block_set.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace bowstack {
namespace {

TEST(BlockSet, MarkOverlapClear) {
  BlockSet m(10000);
  EXPECT_TRUE(m.empty());
  m.mark(60, 70);  // crosses a word boundary
  EXPECT_FALSE(m.empty());
  EXPECT_EQ(m.held_blocks(), 10u);
  EXPECT_TRUE(m.overlaps(69, 80));
  EXPECT_TRUE(m.overlaps(0, 61));
  EXPECT_FALSE(m.overlaps(0, 60));
  EXPECT_FALSE(m.overlaps(70, 9999));
  m.mark(4090, 4100);  // crosses a chunk boundary
  EXPECT_TRUE(m.overlaps(4099, 4100));
  EXPECT_FALSE(m.overlaps(4100, 10000));
  m.clear(60, 70);
  EXPECT_FALSE(m.overlaps(0, 4090));
  m.clear(4090, 4100);
  EXPECT_TRUE(m.empty());
  m.mark(9999, 10000);  // the last block of a partial last chunk
  EXPECT_TRUE(m.overlaps(9000, 10000));
  m.clear(9999, 10000);
  EXPECT_TRUE(m.empty());
}

// A chunk that goes idle gives its bitmap to the next chunk that needs one:
// the bitmap must arrive with no block of the old chunk's marked.
TEST(BlockSet, ReusedBitmapStartsClear) {
  const uint64_t c = BlockSet::kChunkBlocks;
  BlockSet m(4 * c);
  m.mark(0, c);  // every bit of chunk 0
  m.clear(0, c);
  EXPECT_TRUE(m.empty());
  m.mark(2 * c + 5, 2 * c + 6);
  EXPECT_EQ(m.held_blocks(), 1u);
  EXPECT_FALSE(m.overlaps(2 * c, 2 * c + 5));
  EXPECT_FALSE(m.overlaps(2 * c + 6, 3 * c));
  EXPECT_FALSE(m.overlaps(0, c));
  // Chunk 0 needs a bitmap again while chunk 2 holds the reused one.
  m.mark(7, 8);
  EXPECT_FALSE(m.overlaps(0, 7));
  EXPECT_FALSE(m.overlaps(8, c));
  m.clear(7, 8);
  m.clear(2 * c + 5, 2 * c + 6);
  EXPECT_TRUE(m.empty());
}

// Disjoint ranges marked and cleared at random, against a flat model.
TEST(BlockSet, RandomAgainstModel) {
  const uint64_t n = 3 * BlockSet::kChunkBlocks + 77;
  BlockSet m(n);
  std::vector<bool> model(n, false);
  std::vector<std::pair<uint64_t, uint64_t>> held;
  std::mt19937_64 rng(11);
  for (int step = 0; step < 20000; ++step) {
    if (!held.empty() && rng() % 2) {
      size_t i = rng() % held.size();
      auto [s, e] = held[i];
      m.clear(s, e);
      for (uint64_t b = s; b < e; ++b) model[b] = false;
      held.erase(held.begin() + static_cast<ptrdiff_t>(i));
    } else {
      uint64_t s = rng() % n, e = std::min<uint64_t>(n, s + 1 + rng() % (rng() % 8 == 0 ? 5000 : 70));
      bool busy = false;
      for (uint64_t b = s; b < e; ++b) busy = busy || model[b];
      ASSERT_EQ(m.overlaps(s, e), busy) << step;
      if (!busy) {
        m.mark(s, e);
        for (uint64_t b = s; b < e; ++b) model[b] = true;
        held.push_back({s, e});
      }
    }
  }
  for (auto [s, e] : held) m.clear(s, e);
  EXPECT_TRUE(m.empty());
}

// Counted holds (write-behind queues): blocks held by several operations,
// added and removed at random, against a model of holder counts; newly()
// and freed() must report exactly the blocks whose count left or reached 0.
TEST(BlockSet, CountedAgainstModel) {
  const uint64_t n = 2 * BlockSet::kChunkBlocks + 130;
  BlockSet m(n);
  std::vector<uint32_t> model(n, 0);
  std::vector<std::pair<uint64_t, uint64_t>> held;
  std::mt19937_64 rng(5);
  for (int step = 0; step < 20000; ++step) {
    if (!held.empty() && rng() % 2) {
      size_t i = rng() % held.size();
      auto [s, e] = held[i];
      std::vector<uint64_t> freed, expect;
      m.remove(s, e, [&](uint64_t b) { freed.push_back(b); });
      for (uint64_t b = s; b < e; ++b) {
        if (--model[b] == 0) expect.push_back(b);
      }
      ASSERT_EQ(freed, expect) << step;
      held.erase(held.begin() + static_cast<ptrdiff_t>(i));
    } else {
      uint64_t s = rng() % n, e = std::min<uint64_t>(n, s + 1 + rng() % 90);
      std::vector<uint64_t> fresh, expect;
      m.add(s, e, [&](uint64_t b) { fresh.push_back(b); });
      for (uint64_t b = s; b < e; ++b) {
        if (model[b]++ == 0) expect.push_back(b);
      }
      ASSERT_EQ(fresh, expect) << step;
      held.push_back({s, e});
    }
    uint64_t s = rng() % n, e = std::min<uint64_t>(n, s + 1 + rng() % 200);
    bool any = false;
    for (uint64_t b = s; b < e; ++b) any = any || model[b] != 0;
    ASSERT_EQ(m.overlaps(s, e), any) << step;
  }
  for (auto [s, e] : held) m.remove(s, e, [](uint64_t) {});
  EXPECT_TRUE(m.empty());
  EXPECT_FALSE(m.overlaps(0, n));
}

}  // namespace
}  // namespace bowstack
