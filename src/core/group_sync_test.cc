#include "core/group_sync.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace bowstack {
namespace {

TEST(GroupSync, SingleCallerRunsOneBarrier) {
  int runs = 0;
  GroupSync g([&] {
    ++runs;
    return Status::Ok();
  });
  EXPECT_TRUE(g.sync().ok());
  EXPECT_TRUE(g.sync().ok());
  EXPECT_EQ(runs, 2);  // sequential callers each need a fresh barrier
}

TEST(GroupSync, ConcurrentCallersShareBarriers) {
  std::atomic<int> runs{0};
  std::atomic<bool> release{false};
  GroupSync g([&] {
    ++runs;
    // The first barrier stalls until every caller is queued behind it.
    while (runs == 1 && !release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return Status::Ok();
  });
  std::thread first([&] { EXPECT_TRUE(g.sync().ok()); });
  while (runs.load() == 0) std::this_thread::yield();
  std::vector<std::thread> waiters;
  for (int i = 0; i < 32; ++i) waiters.emplace_back([&] { EXPECT_TRUE(g.sync().ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  release = true;
  first.join();
  for (auto& t : waiters) t.join();
  // 33 callers: the stalled barrier plus one shared by all 32 that queued behind it.
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(g.barriers_run(), 2u);
}

TEST(GroupSync, FailureIsStickyForWaitersAndLaterCallers) {
  int runs = 0;
  GroupSync g([&] {
    ++runs;
    return runs == 2 ? Status::Error(EIO, "disk gone") : Status::Ok();
  });
  EXPECT_TRUE(g.sync().ok());
  Status s = g.sync();
  EXPECT_EQ(s.code(), EIO);
  EXPECT_EQ(g.sync().code(), EIO);
  EXPECT_EQ(g.failure().code(), EIO);
  EXPECT_EQ(runs, 2);  // no barrier pretends to succeed after a failure
}

}  // namespace
}  // namespace bowstack

namespace bowstack {
namespace {

TEST(GroupSync, TheStickyFailureIsReportedOnce) {
  int reported = 0;
  Status seen;
  GroupSync g([] { return Status::Error(EIO, "fdatasync 'x'"); },
              [&](const Status& s) {
                ++reported;
                seen = s;
              });
  EXPECT_EQ(g.sync().code(), EIO);
  EXPECT_EQ(g.sync().code(), EIO);
  g.poison(Status::Error(ENOSPC, "later"));
  EXPECT_EQ(reported, 1);
  EXPECT_EQ(seen.code(), EIO);
  GroupSync p([] { return Status::Ok(); }, [&](const Status&) { ++reported; });
  p.poison(Status::Error(EIO, "a failed synchronous write"));
  EXPECT_EQ(p.sync().code(), EIO);
  EXPECT_EQ(reported, 2);
}

}  // namespace
}  // namespace bowstack
