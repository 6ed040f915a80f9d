#include "targets/bow/range_map.h"

#include <gtest/gtest.h>

#include <random>
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
  EXPECT_EQ(m.free_run_count(), 0u);
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

// Random operations against a flat array model.
TEST(RangeMap, RandomAgainstModel) {
  std::mt19937_64 rng(42);
  const uint64_t n = 4096;
  RangeMap m(n);
  std::vector<BlockType> model(n, BlockType::kUnchanged);
  for (int step = 0; step < 20000; ++step) {
    uint64_t start = rng() % n;
    uint64_t count = 1 + rng() % std::min<uint64_t>(64, n - start);
    auto type = static_cast<BlockType>(rng() % kBlockTypes);
    m.set(start, count, type);
    for (uint64_t i = start; i < start + count; ++i) model[i] = type;
    if (step % 97 == 0) {
      ASSERT_TRUE(m.check_invariants()) << step;
      uint64_t probe = rng() % n;
      ASSERT_EQ(m.type_at(probe), model[probe]);
      auto f = m.first_free(8);
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
        for (uint64_t i = first; i < first + f->count; ++i) ASSERT_EQ(model[i], BlockType::kFree);
      }
    }
  }
  uint64_t pos = 0;
  for (const BlockRun& r : runs(m)) {
    ASSERT_EQ(r.start, pos);
    for (uint64_t i = r.start; i < r.start + r.count; ++i) ASSERT_EQ(model[i], r.type) << i;
    pos += r.count;
  }
  EXPECT_EQ(pos, n);
}

}  // namespace
}  // namespace bowstack::bow
