// md's re-add: a leg that comes back is recovered only where the bitmap has
// bits set, when md's rule allows it (mirror_readd.h); a full rebuild
// otherwise.
#include "targets/mirror/mirror_readd.h"

#include <gtest/gtest.h>

#include "targets/mirror/mirror_test_util.h"

namespace bowstack::mirror {
namespace {

using namespace testing;  // NOLINT

constexpr uint64_t kArrayBytes = kLegBytes - kDataOffset;
constexpr uint64_t kRegion = 64u << 10;
// Regions written while leg 1 is out, 4 KiB into each.
constexpr uint64_t kMissed[] = {1u << 20, 5u << 20, 20u << 20, 40u << 20};

// Counts the bytes written into a leg's data area (by clients or copies).
void count_data_writes(TestLeg& leg, std::atomic<uint64_t>* bytes) {
  leg.on_write = [bytes](uint64_t offset, uint64_t length) {
    if (offset >= kDataOffset) *bytes += length;
  };
}

// A mirror whose recovery copies one region a second, so that the status
// is seen before the copy ends; full_speed() lets it finish.
Result<std::shared_ptr<BlockDevice>> slow_mirror(const std::vector<std::shared_ptr<TestLeg>>& legs) {
  MirrorOptions o;
  o.sync_min = o.sync_max = kRegion;
  return make_mirror(legs, o);
}

void full_speed(BlockDevice& m) {
  ASSERT_TRUE(m.message("sync_min=0").ok());
  ASSERT_TRUE(m.message("sync_max=0").ok());
}

bool legs_equal(TestLeg& a, TestLeg& b) {
  return leg_bytes(a, kDataOffset, kArrayBytes) == leg_bytes(b, kDataOffset, kArrayBytes);
}

// A two-leg array full of data whose leg 1 was failed by hand, then missed
// writes into the regions of kMissed; stopped cleanly (bits kept: a leg
// is missing).
void fail_leg_1_and_write(const std::shared_ptr<TestLeg>& a, const std::shared_ptr<TestLeg>& b) {
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok()) << m.status().message();
    ASSERT_TRUE((*m)->write(0, pattern(8u << 20, 1), 0).ok());
  }  // a clean stop with no leg missing clears every bit
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["dirty_regions"], 0);
  ASSERT_TRUE((*m)->message("fail 1").ok());
  for (uint64_t off : kMissed) ASSERT_TRUE((*m)->write(off + 4096, pattern(4096, 7), 0).ok());
}

TEST(MirrorReadd, FailedLegComesBackAndOnlyItsMissedRegionsAreCopied) {
  auto a = blank_leg(), b = blank_leg();
  fail_leg_1_and_write(a, b);
  EXPECT_FALSE(legs_equal(*a, *b));
  std::atomic<uint64_t> copied{0};
  count_data_writes(*b, &copied);
  MirrorOptions o;
  o.sync_min = o.sync_max = kRegion;  // one region a second: watch it before it ends
  auto m = make_mirror({a, b}, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto j = status_of(**m);
  EXPECT_EQ(j["legs"][1]["rebuild"], "bitmap") << j.dump();
  EXPECT_EQ(j["legs"][1]["rebuild_regions"], std::size(kMissed));
  EXPECT_FALSE(j["legs"][0].contains("rebuild"));
  // On the leg meanwhile: being rebuilt, guided (feature bit 128), with
  // the array's events and its old role: never taken for in sync.
  const md::Superblock sb = leg_superblock(*b);
  EXPECT_TRUE(sb.recovering());
  EXPECT_NE(sb.feature_map & md::kFeatureRecoveryBitmap, 0u);
  EXPECT_EQ(sb.role(), 1);
  EXPECT_EQ(sb.events, leg_superblock(*a).events);
  // Reads are right whichever leg serves them.
  std::vector<std::byte> back(4096);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE((*m)->read(kMissed[i % 4] + 4096, back).ok());
    EXPECT_EQ(back, pattern(4096, 7));
  }
  ASSERT_TRUE((*m)->message("sync_min=0").ok());
  ASSERT_TRUE((*m)->message("sync_max=0").ok());
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(copied.load(), std::size(kMissed) * kRegion);
  EXPECT_TRUE(legs_equal(*a, *b));
  m->reset();
  const md::Superblock after = leg_superblock(*b);
  EXPECT_FALSE(after.recovering());
  EXPECT_EQ(after.feature_map & md::kFeatureRecoveryBitmap, 0u);
  EXPECT_EQ(after.events, leg_superblock(*a).events);
}

TEST(MirrorReadd, FailedLegIsReaddedByAReloadOfTheSameLegs) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(8u << 20, 1), 0).ok());
  }
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)->message("fail 1").ok());
  for (uint64_t off : kMissed) ASSERT_TRUE((*m)->write(off, pattern(8192, 9), 0).ok());
  // A reload that rebuilds the node: the old one detaches, a new one
  // assembles the same legs.
  ASSERT_TRUE((*m)->detach().ok());
  std::atomic<uint64_t> copied{0};
  count_data_writes(*b, &copied);
  MirrorOptions o;
  o.sync_min = o.sync_max = kRegion;  // slow, so that the status is seen before the copy ends
  auto n = make_mirror({a, b}, o);
  ASSERT_TRUE(n.ok()) << n.status().message();
  m->reset();
  EXPECT_EQ(status_of(**n)["legs"][1]["rebuild"], "bitmap");
  ASSERT_TRUE((*n)->message("sync_min=0").ok());
  ASSERT_TRUE((*n)->message("sync_max=0").ok());
  ASSERT_TRUE(wait_for(**n, all_in_sync));
  EXPECT_EQ(copied.load(), std::size(kMissed) * kRegion);
  EXPECT_TRUE(legs_equal(*a, *b));
}

TEST(MirrorReadd, LegBelowEventsClearedIsRebuiltInFull) {
  auto a = blank_leg(), b = blank_leg(), c = blank_leg();
  {
    auto m = make_mirror({a, b, c});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(1u << 20, 1), 0).ok());
  }
  {
    // c dropped by the table: no leg is missing, so bits are cleared and
    // events_cleared passes c's events.
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(kMissed[0], pattern(4096, 3), 0).ok());
  }
  EXPECT_LT(leg_superblock(*c).events,
            md::decode_bitmap_superblock(leg_bytes(*a, 8192, 4096))->events_cleared);
  std::atomic<uint64_t> copied{0};
  count_data_writes(*c, &copied);
  auto m = slow_mirror({a, b, c});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["legs"][2]["rebuild"], "full");
  EXPECT_EQ(status_of(**m)["legs"][2]["rebuild_regions"], kArrayBytes / kRegion);
  full_speed(**m);
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(copied.load(), kArrayBytes);
  EXPECT_TRUE(legs_equal(*a, *c));
}

TEST(MirrorReadd, LegFailedDuringAFullRebuildIsRebuiltInFullAgain) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(4u << 20, 1), 0).ok());
  }
  auto c = blank_leg();
  {
    MirrorOptions o;
    o.sync_min = o.sync_max = kRegion;
    auto m = make_mirror({a, b, c}, o);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) { return j["legs"][2]["sync_mark"] > 0; }));
    ASSERT_TRUE((*m)->message("fail 2").ok());
  }
  auto m = slow_mirror({a, b, c});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["legs"][2]["rebuild"], "full");
  full_speed(**m);
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_TRUE(legs_equal(*a, *c));
}

TEST(MirrorReadd, LegFailingAgainDuringAGuidedCopyIsReaddedAgain) {
  auto a = blank_leg(), b = blank_leg();
  fail_leg_1_and_write(a, b);
  {
    MirrorOptions o;
    o.sync_min = o.sync_max = kRegion;
    auto m = make_mirror({a, b}, o);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) { return j["legs"][1]["sync_mark"] > 0; }));
    b->fail_writes = true;
    ASSERT_TRUE((*m)->write(kMissed[3] + 8192, pattern(4096, 11), 0).ok());
    EXPECT_EQ(status_of(**m)["legs"][1]["state"], "faulty");
    b->fail_writes = false;
  }
  std::atomic<uint64_t> copied{0};
  count_data_writes(*b, &copied);
  auto m = slow_mirror({a, b});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["legs"][1]["rebuild"], "bitmap");
  full_speed(**m);
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(copied.load(), std::size(kMissed) * kRegion);
  EXPECT_TRUE(legs_equal(*a, *b));
}

TEST(MirrorReadd, CrashDuringAGuidedCopyStartsItAgainAndNeverServesStaleData) {
  auto a = blank_leg(), b = blank_leg();
  fail_leg_1_and_write(a, b);
  std::shared_ptr<TestLeg> ca, cb;
  {
    MirrorOptions o;
    o.sync_min = o.sync_max = kRegion;
    auto m = make_mirror({a, b}, o);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) { return j["legs"][1]["sync_mark"] > 0; }));
    // A client write while the copy runs, into a region leg 1 lacks and
    // into one it holds.
    ASSERT_TRUE((*m)->write(kMissed[2], pattern(4096, 21), 0).ok());
    ASSERT_TRUE((*m)->write(30u << 20, pattern(4096, 22), 0).ok());
    // The crash: copies of the legs now, the copy not finished.
    EXPECT_NE(status_of(**m)["legs"][1]["state"], "in_sync");
    ca = copy_leg(*a);
    cb = copy_leg(*b);
  }
  const md::Superblock sb = leg_superblock(*cb);
  EXPECT_TRUE(sb.recovering());
  EXPECT_NE(sb.feature_map & md::kFeatureRecoveryBitmap, 0u);
  // What the array holds: leg 0's data.
  const auto want = leg_bytes(*ca, kDataOffset, kArrayBytes);
  MirrorOptions o;
  o.sync_min = o.sync_max = kRegion;
  o.read_policy = ReadPolicy::kRoundRobin;
  auto m = make_mirror({ca, cb}, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["legs"][1]["rebuild"], "bitmap");
  // Never stale: every read agrees with leg 0, while the copy runs.
  std::vector<std::byte> back(64u << 10);
  for (uint64_t off : {kMissed[0], kMissed[1], kMissed[2], kMissed[3], uint64_t{30u << 20}, uint64_t{0}}) {
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE((*m)->read(off, back).ok());
      EXPECT_TRUE(std::equal(back.begin(), back.end(), want.begin() + static_cast<std::ptrdiff_t>(off)))
          << "read at " << off;
    }
  }
  ASSERT_TRUE((*m)->message("sync_min=0").ok());
  ASSERT_TRUE((*m)->message("sync_max=0").ok());
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_TRUE(legs_equal(*ca, *cb));
  EXPECT_EQ(leg_bytes(*cb, kDataOffset, kArrayBytes), want);
}

// The rule itself.
md::Superblock member(uint64_t events) {
  md::Superblock sb;
  sb.events = events;
  sb.data_offset = 2048;
  sb.size = 129024;
  sb.dev_number = 1;
  sb.dev_roles = {0, 1};
  return sb;
}

TEST(MirrorReadd, RuleFollowsMd) {
  const md::Superblock top = member(10);
  const BitmapView current{true, 5};
  EXPECT_EQ(readd_refusal(member(5), top, current, true), "");
  EXPECT_EQ(readd_refusal(member(9), top, current, true), "");
  EXPECT_NE(readd_refusal(member(4), top, current, true).find("events_cleared"), std::string::npos);
  EXPECT_NE(readd_refusal(member(7), top, BitmapView{false, 5}, true).find("out of date"), std::string::npos);
  EXPECT_NE(readd_refusal(member(7), top, current, false).find("slot"), std::string::npos);
  md::Superblock full = member(7);
  full.feature_map |= md::kFeatureRecoveryOffset;
  full.recovery_offset = 128;
  EXPECT_NE(readd_refusal(full, top, current, true).find("from sector 0"), std::string::npos);
  full.feature_map |= md::kFeatureRecoveryBitmap;
  EXPECT_EQ(readd_refusal(full, top, current, true), "");
  md::Superblock moved = member(7);
  moved.data_offset = 4096;
  EXPECT_NE(readd_refusal(moved, top, current, true).find("data area"), std::string::npos);
  md::Superblock spare = member(7);
  spare.dev_roles[1] = md::kRoleSpare;
  EXPECT_NE(readd_refusal(spare, top, current, true).find("active role"), std::string::npos);
}

// md's hot re-add (`mdadm --re-add`): a leg failed while the array runs
// comes back by message, with no restart, and gets only what it missed.
TEST(MirrorReadd, FaultyLegIsReaddedByMessage) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(8u << 20, 1), 0).ok());
  }  // a clean stop with no leg missing clears every bit
  std::atomic<uint64_t> copied{0};
  count_data_writes(*b, &copied);
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ((*m)->message("re-add 1").status().code(), EINVAL);  // in sync: nothing to re-add
  ASSERT_TRUE((*m)->message("fail 1").ok());
  for (uint64_t off : kMissed) ASSERT_TRUE((*m)->write(off + 4096, pattern(4096, 7), 0).ok());
  EXPECT_FALSE(legs_equal(*a, *b));
  copied = 0;
  auto r = (*m)->message("re-add 1");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_NE(r->find("bitmap recovery of 4 of"), std::string::npos) << *r;
  // Its superblock says so before the message returns: a crash now resumes
  // the guided copy (or re-adds it again at assembly).
  const md::Superblock sb = leg_superblock(*b);
  EXPECT_EQ(sb.role(), 1);
  EXPECT_EQ(leg_superblock(*a).dev_roles[1], 1);
  EXPECT_TRUE(sb.recovering() || leg_superblock(*a).events > sb.events);
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(copied.load(), std::size(kMissed) * kRegion);
  EXPECT_TRUE(legs_equal(*a, *b));
  m->reset();
  EXPECT_FALSE(leg_superblock(*b).recovering());
  EXPECT_EQ(leg_superblock(*b).events, leg_superblock(*a).events);
}

TEST(MirrorReadd, LegFailedInAFullRebuildIsReaddedWithAFullOne) {
  auto a = blank_leg(), b = blank_leg(), c = blank_leg();
  {
    auto m = make_mirror({a});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(4u << 20, 2), 0).ok());
  }
  MirrorOptions o;
  o.sync_min = o.sync_max = kRegion;  // one region a second: still running below
  auto m = make_mirror({a, b, c}, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(status_of(**m)["legs"][2]["rebuild"], "full");
  ASSERT_TRUE((*m)->message("fail 2").ok());
  // Refused while the recovery runs: it may have passed regions leg 2 needs.
  EXPECT_EQ((*m)->message("re-add 2").status().code(), EBUSY);
  ASSERT_TRUE((*m)->message("sync_min=0").ok());
  ASSERT_TRUE((*m)->message("sync_max=0").ok());
  ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) {
    return j.value("sync_action", "") == "idle" && j["legs"][1]["state"] == "in_sync";
  }));
  auto r = (*m)->message("re-add 2");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_NE(r->find("full recovery"), std::string::npos) << *r;
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_TRUE(legs_equal(*a, *c));
  EXPECT_TRUE(legs_equal(*a, *b));
}

}  // namespace
}  // namespace bowstack::mirror
