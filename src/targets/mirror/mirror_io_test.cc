// The mirror's data path: writes to the legs at once, and the limit on
// corrected read errors.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "targets/mirror/mirror_target.h"
#include "targets/mirror/mirror_test_util.h"

namespace bowstack::mirror {
namespace {

using namespace testing;  // NOLINT

// Each leg's data write waits (at most 10 s) until the other leg's has
// begun too: both meet only when the legs are written at once.
struct Rendezvous {
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  int met = 0;
  void arrive() {
    std::unique_lock lock(mu);
    ++arrived;
    cv.notify_all();
    if (cv.wait_for(lock, std::chrono::seconds(10), [this] { return arrived % 2 == 0; })) ++met;
  }
};

TEST(MirrorIo, ParallelWritesReachTheLegsAtOnce) {
  auto a = blank_leg(), b = blank_leg();
  Rendezvous r;
  a->on_write = b->on_write = [&r](uint64_t offset, uint64_t) {
    if (offset >= kDataOffset) r.arrive();
  };
  MirrorOptions o;
  o.parallel_writes = ParallelWrites::kOn;
  auto m = make_mirror({a, b}, o);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const auto data = pattern(65536, 3);
  ASSERT_TRUE((*m)->write(1 << 20, data, kFua).ok());
  EXPECT_EQ(r.met, 2);  // each leg saw the other's write begin
  EXPECT_EQ(leg_bytes(*a, kDataOffset + (1 << 20), data.size()), data);
  EXPECT_EQ(leg_bytes(*b, kDataOffset + (1 << 20), data.size()), data);
  ASSERT_TRUE((*m)->write_zeroes(1 << 20, 4096, 0).ok());
  EXPECT_EQ(r.met, 4);
  EXPECT_EQ(status_of(**m)["write_threads"], 1);
}

TEST(MirrorIo, AutoWritesSlowLegsAtOnce) {
  auto a = blank_leg(), b = blank_leg();
  // Slow legs: every data write takes at least 1 ms (an RBD round trip).
  a->on_write = b->on_write = [](uint64_t offset, uint64_t) {
    if (offset >= kDataOffset) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  auto m = make_mirror({a, b});
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(status_of(**m)["parallel_writes"], "auto");
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*m)->write(i * 4096, pattern(4096, i), 0).ok());
  auto j = status_of(**m);
  EXPECT_GE(j["legs"][0]["write_latency_us"].get<uint64_t>(), 100u);
  EXPECT_GE(j["legs"][1]["write_latency_us"].get<uint64_t>(), 100u);
  EXPECT_GE(j["write_threads"].get<uint64_t>(), 1u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(leg_bytes(*b, kDataOffset + i * 4096, 4096), pattern(4096, i));
  }
}

TEST(MirrorIo, OffNeverHandsAWriteOver) {
  auto a = blank_leg(), b = blank_leg();
  a->on_write = b->on_write = [](uint64_t offset, uint64_t) {
    if (offset >= kDataOffset) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  MirrorOptions o;
  o.parallel_writes = ParallelWrites::kOff;
  auto m = make_mirror({a, b}, o);
  ASSERT_TRUE(m.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*m)->write(i * 4096, pattern(4096, i), 0).ok());
  EXPECT_EQ(status_of(**m)["write_threads"], 0);
}

TEST(MirrorIo, ParallelWriteErrorFailsTheLegAndTheClientSeesNothing) {
  auto a = blank_leg(), b = blank_leg(), c = blank_leg();
  MirrorOptions o;
  o.parallel_writes = ParallelWrites::kOn;
  auto m = make_mirror({a, b, c}, o);
  ASSERT_TRUE(m.ok());
  c->fail_writes = true;
  const auto data = pattern(8192, 5);
  ASSERT_TRUE((*m)->write(4096, data, 0).ok());
  auto j = status_of(**m);
  EXPECT_EQ(j["legs"][2]["state"], "faulty");
  EXPECT_EQ(leg_superblock(*a).dev_roles[2], md::kRoleFaulty);
  EXPECT_EQ(leg_bytes(*b, kDataOffset + 4096, data.size()), data);
  // Both remaining legs failing: one is failed, the last one's error goes
  // to the client.
  a->fail_writes = b->fail_writes = true;
  EXPECT_EQ((*m)->write(0, data, 0).code(), EIO);
  j = status_of(**m);
  EXPECT_EQ(static_cast<int>(j["legs"][0]["state"] == "in_sync") +
                static_cast<int>(j["legs"][1]["state"] == "in_sync"),
            1);
}

// A two-leg mirror read in table order (policy first) with `data` written
// at 0, whose leg `bad` then fails every read of that block, again after
// each correction (a failing disk).
std::shared_ptr<BlockDevice> mirror_with_bad_block(const std::shared_ptr<TestLeg>& a,
                                                   const std::shared_ptr<TestLeg>& b, TestLeg& bad,
                                                   uint32_t max_read_errors,
                                                   const std::vector<std::byte>& data) {
  MirrorOptions o;
  o.read_policy = ReadPolicy::kFirst;
  o.max_read_errors = max_read_errors;
  auto m = make_mirror({a, b}, o);
  EXPECT_TRUE(m.ok());
  if (!m.ok()) return nullptr;
  EXPECT_TRUE((*m)->write(0, data, 0).ok());
  bad.fail_read_lo = kDataOffset;
  bad.fail_read_hi = kDataOffset + data.size();
  return *m;
}

// Leg 0 reads badly at one place, again after every correction (a failing
// disk): the corrections are counted until the limit fails the leg.
TEST(MirrorIo, TooManyReadErrorsFailTheLeg) {
  auto a = blank_leg(), b = blank_leg();
  const auto data = pattern(4096, 7);
  auto m = mirror_with_bad_block(a, b, *a, 3, data);
  ASSERT_TRUE(m);
  std::vector<std::byte> back(4096);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(m->read(0, back).ok());
    EXPECT_EQ(back, data);
    auto j = status_of(*m);
    EXPECT_EQ(j["legs"][0]["state"], "in_sync");
    EXPECT_EQ(j["legs"][0]["corrected_reads"], i);
    EXPECT_EQ(j["legs"][0]["recent_read_errors"], i);
  }
  ASSERT_TRUE(m->read(0, back).ok());
  EXPECT_EQ(back, data);
  auto j = status_of(*m);
  EXPECT_EQ(j["legs"][0]["state"], "faulty");
  EXPECT_EQ(j["legs"][0]["corrected_reads"], 3);
  EXPECT_EQ(leg_superblock(*b).dev_roles[0], md::kRoleFaulty);
}

TEST(MirrorIo, ReadErrorsOnTheLastInSyncLegAreCorrectedNotFailed) {
  auto a = blank_leg(), b = blank_leg();
  auto m = mirror_with_bad_block(a, b, *b, 1, pattern(4096, 8));
  ASSERT_TRUE(m);
  ASSERT_TRUE(m->message("fail 0").ok());
  std::vector<std::byte> back(4096);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m->read(0, back).code(), EIO);
  EXPECT_EQ(status_of(*m)["legs"][1]["state"], "in_sync");
}

TEST(MirrorIo, ZeroMaxReadErrorsNeverFailsALeg) {
  auto a = blank_leg(), b = blank_leg();
  auto m = mirror_with_bad_block(a, b, *a, 0, pattern(4096, 9));
  ASSERT_TRUE(m);
  std::vector<std::byte> back(4096);
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(m->read(0, back).ok());
  auto j = status_of(*m);
  EXPECT_EQ(j["legs"][0]["state"], "in_sync");
  EXPECT_EQ(j["legs"][0]["corrected_reads"], 30);
}

}  // namespace
}  // namespace bowstack::mirror
