#include "targets/bow/span_list.h"

#include <gtest/gtest.h>

#include <vector>

namespace bowstack::bow {
namespace {

std::vector<SpanList::Span> contents(std::span<const SpanList::Span> s) { return {s.begin(), s.end()}; }

TEST(SpanList, InlineThenSpillsInOrder) {
  SpanList l;
  EXPECT_TRUE(l.empty());
  EXPECT_EQ(contents(l), std::vector<SpanList::Span>{});
  l.emplace_back(1, 2);
  l.emplace_back(5, 9);
  EXPECT_EQ(l.size(), 2u);
  EXPECT_EQ(contents(l), (std::vector<SpanList::Span>{{1, 2}, {5, 9}}));
  l.emplace_back(10, 11);  // beyond the inline room: all of them move to the heap
  l.emplace_back(20, 30);
  EXPECT_EQ(contents(l), (std::vector<SpanList::Span>{{1, 2}, {5, 9}, {10, 11}, {20, 30}}));
  uint64_t blocks = 0;
  for (const auto& [s, e] : l) blocks += e - s;
  EXPECT_EQ(blocks, 1u + 4 + 1 + 10);
}

TEST(SpanList, ClearStartsOverInline) {
  SpanList l;
  for (uint64_t i = 0; i < 5; ++i) l.emplace_back(i, i + 1);
  l.clear();
  EXPECT_TRUE(l.empty());
  l.emplace_back(7, 8);
  EXPECT_EQ(contents(l), (std::vector<SpanList::Span>{{7, 8}}));
}

TEST(SpanList, ElementsCanBeReordered) {
  SpanList l;
  l.emplace_back(9, 10);
  l.emplace_back(0, 1);
  std::swap(l.data()[0], l.data()[1]);
  EXPECT_EQ(contents(l), (std::vector<SpanList::Span>{{0, 1}, {9, 10}}));
}

}  // namespace
}  // namespace bowstack::bow
