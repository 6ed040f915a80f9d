#include "targets/mirror/mirror_target.h"

#include <gtest/gtest.h>

#include <thread>
#include <tuple>

#include "targets/mirror/mirror_test_util.h"

namespace bowstack::mirror {
namespace {

using namespace testing;  // NOLINT

constexpr uint64_t kArrayBytes = kLegBytes - kDataOffset;

TEST(MirrorTarget, NewArrayWritesMdMetadataOnEveryLeg) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ((*m)->geometry().size, kArrayBytes);
    auto j = status_of(**m);
    EXPECT_TRUE(all_in_sync(j)) << j.dump();
  }
  const md::Superblock sa = leg_superblock(*a), sb = leg_superblock(*b);
  EXPECT_EQ(sa.set_uuid, sb.set_uuid);
  EXPECT_NE(sa.device_uuid, sb.device_uuid);
  EXPECT_EQ(sa.role(), 0);
  EXPECT_EQ(sb.role(), 1);
  EXPECT_EQ(sa.events, sb.events);
  EXPECT_TRUE(sa.clean());
  EXPECT_EQ(sa.data_offset * 512, kDataOffset);
  EXPECT_EQ(sa.raid_disks, 2u);
  auto bm = md::decode_bitmap_superblock(leg_bytes(*a, 8192, 4096));
  ASSERT_TRUE(bm.ok());
  EXPECT_EQ(bm->events, sa.events);
  EXPECT_EQ(bm->chunksize, 64u << 10);
  EXPECT_TRUE(md::check_bitmap(sa, *bm).ok());
}

TEST(MirrorTarget, WritesReachEveryLegAndReadBack) {
  auto a = blank_leg(), b = blank_leg();
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  const auto data = pattern(256 << 10, 3);
  ASSERT_TRUE((*m)->write(1 << 20, data, 0).ok());
  ASSERT_TRUE((*m)->write(kArrayBytes - 4096, std::span(data).subspan(0, 4096), kFua).ok());
  std::vector<std::byte> back(data.size());
  for (int i = 0; i < 4; ++i) {  // balanced reads use both legs
    ASSERT_TRUE((*m)->read(1 << 20, back).ok());
    EXPECT_EQ(back, data);
  }
  EXPECT_EQ(leg_bytes(*a, kDataOffset + (1 << 20), data.size()), data);
  EXPECT_EQ(leg_bytes(*b, kDataOffset + (1 << 20), data.size()), data);
  auto j = status_of(**m);
  EXPECT_GT(j["legs"][0]["reads"].get<uint64_t>(), 0u);
  EXPECT_GT(j["legs"][1]["reads"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["state"], "active");
  EXPECT_GE(j["dirty_regions"].get<uint64_t>(), 5u);
  // Trim and zeroes keep the legs equal.
  ASSERT_TRUE((*m)->trim(1 << 20, 64 << 10, 0).ok());
  EXPECT_EQ(leg_bytes(*a, kDataOffset + (1 << 20), 64 << 10), std::vector<std::byte>(64 << 10));
  EXPECT_EQ(leg_bytes(*b, kDataOffset + (1 << 20), 64 << 10), std::vector<std::byte>(64 << 10));
}

TEST(MirrorTarget, BitAndActiveStateAreOnTheLegBeforeItsData) {
  auto a = blank_leg(), b = blank_leg();
  std::atomic<int> checked{0}, bad{0};
  for (auto& leg : {a, b}) {
    TestLeg* l = leg.get();
    l->on_write = [l, &checked, &bad](uint64_t offset, uint64_t length) {
      if (offset < kDataOffset) return;  // metadata
      const uint64_t first = (offset - kDataOffset) / (64 << 10);
      const uint64_t last = (offset - kDataOffset + length - 1) / (64 << 10);
      auto area = leg_bytes(*l, 8192, 4096);
      auto sbytes = leg_bytes(*l, 4096, 4096);
      auto sb = md::decode_superblock(sbytes, kLegBytes / 512);
      bool ok = sb.ok() && !sb->clean();
      for (uint64_t bit = first; bit <= last; ++bit) ok = ok && md::test_bit(area, bit);
      ++checked;
      if (!ok) ++bad;
    };
  }
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  const auto data = pattern(192 << 10, 5);
  ASSERT_TRUE((*m)->write(10 << 20, data, 0).ok());
  ASSERT_TRUE((*m)->write_zeroes(20 << 20, 128 << 10, 0).ok());
  EXPECT_EQ(checked.load(), 4);
  EXPECT_EQ(bad.load(), 0);
}

TEST(MirrorTarget, IdleArrayGoesCleanAndClearsItsBits) {
  auto a = blank_leg(), b = blank_leg();
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)->write(0, pattern(4096, 1), 0).ok());
  EXPECT_FALSE(leg_superblock(*a).clean());
  ASSERT_TRUE(wait_for(
      **m, [](const nlohmann::json& j) { return j["state"] == "clean" && j["dirty_regions"] == 0; }));
  EXPECT_TRUE(leg_superblock(*a).clean());
  EXPECT_TRUE(leg_superblock(*b).clean());
  EXPECT_FALSE(md::test_bit(leg_bytes(*a, 8192, 4096), 0));
}

TEST(MirrorTarget, CrashResyncsOnlyRegionsWithBitsFromThePrimary) {
  auto a = blank_leg(), b = blank_leg();
  std::shared_ptr<TestLeg> ca, cb;
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    // The crash: copies of the legs as they are now, the array active.
    std::tie(ca, cb) =
        active_copies(*a, *b, [&] { ASSERT_TRUE((*m)->write(3 << 20, pattern(4096, 9), 0).ok()); });
  }
  // A write that reached leg a only (in the region whose bit is set), and a
  // difference nothing recorded (no bit: resync leaves it).
  ASSERT_TRUE(ca->mem().write(kDataOffset + (3 << 20) + 512, pattern(512, 77), 0).ok());
  ASSERT_TRUE(cb->mem().write(kDataOffset + (9 << 20), pattern(512, 55), 0).ok());
  auto m = make_mirror({ca, cb});
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) {
    return j["resync_pending_regions"] == 0 && j["sync_action"] == "idle";
  }));
  EXPECT_EQ(leg_bytes(*ca, kDataOffset + (3 << 20), 64 << 10),
            leg_bytes(*cb, kDataOffset + (3 << 20), 64 << 10));
  EXPECT_NE(leg_bytes(*ca, kDataOffset + (9 << 20), 512), leg_bytes(*cb, kDataOffset + (9 << 20), 512));
}

TEST(MirrorTarget, ReadsOfUnresyncedRegionsComeFromThePrimary) {
  auto a = blank_leg(), b = blank_leg();
  std::shared_ptr<TestLeg> ca, cb;
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    std::tie(ca, cb) = active_copies(*a, *b, [&] { ASSERT_TRUE((*m)->write(0, pattern(4096, 9), 0).ok()); });
  }
  ASSERT_TRUE(cb->mem().write(kDataOffset, pattern(4096, 10), 0).ok());
  MirrorOptions o;
  o.jobs = std::make_shared<JobRunner>("t");
  auto m = make_mirror({ca, cb}, o);
  ASSERT_TRUE(m.ok());
  o.jobs->pause_tasks();  // (the resync may be done already: then the legs agree)
  std::vector<std::byte> back(4096);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE((*m)->read(0, back).ok());
    EXPECT_EQ(back, leg_bytes(*ca, kDataOffset, 4096));
  }
  o.jobs->resume_tasks();
  ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) { return j["resync_pending_regions"] == 0; }));
}

TEST(MirrorTarget, WriteErrorFailsTheLegDurablyAndTheClientSeesNothing) {
  auto a = blank_leg(), b = blank_leg();
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  const uint64_t events = leg_superblock(*a).events;
  b->fail_writes = true;
  const auto data = pattern(8192, 4);
  ASSERT_TRUE((*m)->write(4096, data, 0).ok());
  const md::Superblock sa = leg_superblock(*a);
  EXPECT_EQ(sa.dev_roles[1], md::kRoleFaulty);
  EXPECT_GT(sa.events, events);
  auto j = status_of(**m);
  EXPECT_EQ(j["legs"][1]["state"], "faulty");
  EXPECT_TRUE(j["degraded"].get<bool>());
  std::vector<std::byte> back(8192);
  ASSERT_TRUE((*m)->read(4096, back).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE((*m)->flush().ok());
  // The last in-sync leg is never failed: its error goes to the client.
  a->fail_writes = true;
  EXPECT_EQ((*m)->write(0, data, 0).code(), EIO);
  EXPECT_EQ(status_of(**m)["legs"][0]["state"], "in_sync");
}

TEST(MirrorTarget, FaultyLegComesBackStaleAndIsRebuilt) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->message("fail 1").ok());
    ASSERT_TRUE((*m)->write(5 << 20, pattern(65536, 8), 0).ok());
    EXPECT_EQ((*m)->message("fail 0").status().code(), EBUSY);
  }
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok()) << m.status().message();
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(leg_bytes(*a, kDataOffset + (5 << 20), 65536), leg_bytes(*b, kDataOffset + (5 << 20), 65536));
  EXPECT_EQ(leg_superblock(*b).role(), 1);
  EXPECT_FALSE(leg_superblock(*b).recovering());
}

TEST(MirrorTarget, ReadErrorIsAnsweredFromAnotherLegAndRewritten) {
  auto a = blank_leg(), b = blank_leg();
  // The damaged range reads with an error until it is written again.
  a->on_write = [&a](uint64_t offset, uint64_t) {
    if (offset >= kDataOffset) a->fail_read_hi = 0;
  };
  MirrorOptions o;
  o.read_policy = ReadPolicy::kFirst;
  auto m = make_mirror({a, b}, o);
  ASSERT_TRUE(m.ok());
  const auto data = pattern(4096, 6);
  ASSERT_TRUE((*m)->write(8192, data, 0).ok());
  ASSERT_TRUE(a->mem().write(kDataOffset + 8192, pattern(4096, 99), 0).ok());
  a->fail_read_lo = kDataOffset + 8192;
  a->fail_read_hi = kDataOffset + 8192 + 4096;
  std::vector<std::byte> back(4096);
  ASSERT_TRUE((*m)->read(8192, back).ok());
  EXPECT_EQ(back, data);
  EXPECT_EQ(leg_bytes(*a, kDataOffset + 8192, 4096), data);
  auto j = status_of(**m);
  EXPECT_EQ(j["legs"][0]["corrected_reads"], 1);
  EXPECT_EQ(j["legs"][0]["state"], "in_sync");
}

TEST(MirrorTarget, BlankLegJoinsAndIsRecoveredBehindItsMark) {
  auto a = blank_leg(), b = blank_leg();
  const auto data = pattern(1 << 20, 2);
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    for (uint64_t off = 0; off < (16u << 20); off += data.size()) ASSERT_TRUE((*m)->write(off, data, 0).ok());
  }
  auto c = blank_leg();
  MirrorOptions o;
  o.sync_min = o.sync_max = 8u << 20;  // slow enough to watch the mark move
  auto m = make_mirror({a, b, c}, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  auto j = status_of(**m);
  EXPECT_NE(j["legs"][2]["state"], "in_sync");
  EXPECT_EQ(leg_superblock(*c).raid_disks, 3u);
  EXPECT_TRUE(leg_superblock(*c).recovering());
  // Reads meanwhile are right, whichever leg serves them.
  std::vector<std::byte> back(data.size());
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE((*m)->read((i % 16) * data.size(), back).ok());
    EXPECT_EQ(back, data);
  }
  ASSERT_TRUE((*m)->message("sync_max=0").ok());
  ASSERT_TRUE((*m)->message("sync_min=0").ok());
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(leg_bytes(*c, kDataOffset, 16 << 20), leg_bytes(*a, kDataOffset, 16 << 20));
  EXPECT_FALSE(leg_superblock(*c).recovering());
  EXPECT_EQ(leg_superblock(*c).role(), 2);
}

TEST(MirrorTarget, WritesDuringRecoveryAreNeitherLostNorOverwritten) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(8 << 20, 1), 0).ok());
  }
  auto c = blank_leg();
  auto m = make_mirror({a, b, c});
  ASSERT_TRUE(m.ok());
  std::vector<std::thread> writers;
  for (int t = 0; t < 3; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const uint64_t off = static_cast<uint64_t>((i * 37 + t * 11) % 2048) * 4096;
        ASSERT_TRUE((*m)->write(off, pattern(4096, static_cast<uint8_t>(t * 50 + i)), 0).ok());
      }
    });
  }
  for (auto& w : writers) w.join();
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(leg_bytes(*c, kDataOffset, 8 << 20), leg_bytes(*a, kDataOffset, 8 << 20));
  EXPECT_EQ(leg_bytes(*b, kDataOffset, 8 << 20), leg_bytes(*a, kDataOffset, 8 << 20));
}

TEST(MirrorTarget, CheckCountsMismatchesAndRepairFixesThem) {
  auto a = blank_leg(), b = blank_leg();
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(1 << 20, 1), 0).ok());
  }
  ASSERT_TRUE(b->mem().write(kDataOffset + 12345 * 8, pattern(16, 200), 0).ok());
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  auto idle = [](const nlohmann::json& j) { return j["sync_action"] == "idle"; };
  ASSERT_TRUE((*m)->message("check").ok());
  ASSERT_TRUE(wait_for(**m, idle));
  auto j = status_of(**m);
  EXPECT_EQ(j["mismatch_cnt"], 8);
  EXPECT_NE(j["last_check"].get<std::string>().find("could not be known"), std::string::npos);
  EXPECT_NE(leg_bytes(*a, kDataOffset, 1 << 20), leg_bytes(*b, kDataOffset, 1 << 20));
  ASSERT_TRUE((*m)->message("repair").ok());
  ASSERT_TRUE(wait_for(**m, idle));
  EXPECT_EQ(leg_bytes(*a, kDataOffset, 1 << 20), leg_bytes(*b, kDataOffset, 1 << 20));
  ASSERT_TRUE((*m)->message("check").ok());
  ASSERT_TRUE(wait_for(**m, idle));
  EXPECT_EQ(status_of(**m)["mismatch_cnt"], 0);
}

TEST(MirrorTarget, RepairTakesTheVerifiedLegAsTheTruth) {
  auto a = blank_leg(), b = blank_leg();
  b->verified = true;  // as a csum leg would be
  {
    auto m = make_mirror({a, b});
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(65536, 1), 0).ok());
  }
  ASSERT_TRUE(a->mem().write(kDataOffset + 4096, pattern(4096, 200), 0).ok());
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)->message("repair").ok());
  ASSERT_TRUE(wait_for(**m, [](const nlohmann::json& j) { return j["sync_action"] == "idle"; }));
  EXPECT_EQ(leg_bytes(*a, kDataOffset, 65536), pattern(65536, 1));
  EXPECT_NE(status_of(**m)["last_check"].get<std::string>().find("verified"), std::string::npos);
}

TEST(MirrorTarget, RefusesWhatItCannotServe) {
  auto a = blank_leg(), b = blank_leg();
  { ASSERT_TRUE(make_mirror({a, b}).ok()); }
  // A leg of another array.
  auto x = blank_leg(), y = blank_leg();
  { ASSERT_TRUE(make_mirror({x, y}).ok()); }
  auto r = make_mirror({a, x});
  EXPECT_EQ(r.status().code(), EINVAL);
  EXPECT_NE(r.status().message().find("another"), std::string::npos);
  // Something else at byte 4096.
  auto z = blank_leg();
  ASSERT_TRUE(z->mem().write(4096, pattern(512, 1), 0).ok());
  EXPECT_EQ(make_mirror({z, blank_leg()}).status().code(), EINVAL);
  // A region size that is not the array's.
  MirrorOptions o;
  o.region_size = 128u << 10;
  EXPECT_EQ(make_mirror({a, b}, o).status().code(), EINVAL);
  // No leg with a complete copy: a stale-only set.
  auto c = blank_leg();
  EXPECT_TRUE(make_mirror({c}).ok());  // a one-leg array of its own
  // A leg too small for the array.
  auto small = blank_leg(32u << 20);
  EXPECT_EQ(make_mirror({a, b, small}).status().code(), EINVAL);
  EXPECT_EQ(MirrorTarget::create({}, {}).status().code(), EINVAL);
}

TEST(MirrorTarget, RemovedLegIsNotTrustedWhenItComesBack) {
  auto a = blank_leg(), b = blank_leg(), c = blank_leg();
  { ASSERT_TRUE(make_mirror({a, b, c}).ok()); }
  {
    auto m = make_mirror({a, b});  // c dropped by the table
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE((*m)->write(0, pattern(65536, 3), 0).ok());
  }
  auto m = make_mirror({a, b, c});
  ASSERT_TRUE(m.ok());
  EXPECT_NE(status_of(**m)["legs"][2]["state"], "in_sync");
  ASSERT_TRUE(wait_for(**m, all_in_sync));
  EXPECT_EQ(leg_bytes(*c, kDataOffset, 65536), pattern(65536, 3));
}

TEST(MirrorTarget, DetachLeavesTheLegsCleanForTheNextOwner) {
  auto a = blank_leg(), b = blank_leg();
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  ASSERT_TRUE((*m)->write(0, pattern(4096, 3), 0).ok());
  ASSERT_TRUE((*m)->detach().ok());
  EXPECT_TRUE(leg_superblock(*a).clean());
  const uint64_t events = leg_superblock(*a).events;
  // A failed reload: the old mirror serves on, and owns the legs again.
  ASSERT_TRUE((*m)->write(4096, pattern(4096, 4), 0).ok());
  EXPECT_FALSE(leg_superblock(*a).clean());
  EXPECT_GT(leg_superblock(*a).events, events);
}

}  // namespace
}  // namespace bowstack::mirror
