// era crash tests on memory devices: at a random write or flush, every
// device captured as it could be after power loss (unflushed writes dropped
// or torn at sector granularity); recovery must keep every mark.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "core/memory_device.h"
#include "targets/era/era_target.h"
#include "targets/era/era_test_util.h"
#include "targets/era/era_tools.h"

namespace bowstack::era {
namespace {

using test_util::Bytes;
using test_util::logical_eras;
using test_util::meta_size;
using test_util::open_era;
using test_util::pattern;
constexpr uint32_t kBs = 4096;

// Crash states across several devices: each device remembers what is
// durable; at a chosen write or flush (counted over all devices of the
// world) the world captures every device as it could be after power loss
// right then: the durable image plus a random subset of the writes since
// the last flush, each possibly torn (only some 512-byte sectors applied).
struct CrashWorld {
  std::mutex mu;
  uint64_t ops = 0;        // guarded by mu: writes and flushes counted
  uint64_t crash_at = 0;   // guarded by mu
  bool captured = false;   // guarded by mu
  std::mt19937_64 rng{1};  // guarded by mu
  bool tear_all = false;   // every unflushed write torn: only its first sector lands
  std::vector<class CrashDevice*> devices;
  std::vector<uint32_t> durable_era;      // guarded by mu: the test's oracle
  std::vector<uint32_t> oracle_at_crash;  // guarded by mu
  void capture_locked();
  // Called with mu held before each write and flush of a counted device.
  void tick_locked() {
    if (++ops == crash_at && !captured) capture_locked();
  }
};

class CrashDevice final : public BlockDevice {
 public:
  // Only the writes and flushes of `counted` devices are crash points.
  CrashDevice(uint64_t size, CrashWorld* w, bool counted)
      : world_(w), counted_(counted), data_(size), durable_(size) {
    g_.size = size;
    w->devices.push_back(this);
  }
  std::string_view kind() const override { return "crash"; }
  Geometry geometry() const override { return g_; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.flush = c.fua = c.trim = c.write_zeroes = true;
    return c;
  }
  Status read(uint64_t offset, std::span<std::byte> buf) override {
    std::lock_guard lock(world_->mu);
    std::memcpy(buf.data(), data_.data() + offset, buf.size());
    return Status::Ok();
  }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    std::lock_guard lock(world_->mu);
    if (counted_) world_->tick_locked();
    std::memcpy(data_.data() + offset, buf.data(), buf.size());
    if (flags & kFua) {
      std::memcpy(durable_.data() + offset, buf.data(), buf.size());
    } else {
      unflushed_.push_back({offset, Bytes(buf.begin(), buf.end())});
    }
    return Status::Ok();
  }
  Status flush() override {
    std::lock_guard lock(world_->mu);
    if (counted_) world_->tick_locked();
    for (const auto& w : unflushed_) std::memcpy(durable_.data() + w.offset, w.data.data(), w.data.size());
    unflushed_.clear();
    return Status::Ok();
  }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override {
    return write_zeroes(offset, length, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    return write(offset, Bytes(length), flags);
  }
  // REQUIRES: world_->mu held.
  void capture_locked(std::mt19937_64& rng) {
    Bytes img = durable_;
    for (const auto& w : unflushed_) {
      if (world_->tear_all) {
        std::memcpy(img.data() + w.offset, w.data.data(), 512);
        continue;
      }
      switch (rng() % 3) {
        case 0:
          break;  // lost
        case 1:
          std::memcpy(img.data() + w.offset, w.data.data(), w.data.size());
          break;
        case 2:  // torn
          for (size_t s = 0; s < w.data.size(); s += 512) {
            if (rng() % 2) std::memcpy(img.data() + w.offset + s, w.data.data() + s, 512);
          }
          break;
      }
    }
    crashed = std::make_shared<MemoryDevice>(img.size());
    EXPECT_TRUE(crashed->write(0, img, 0).ok());
  }
  std::shared_ptr<MemoryDevice> crashed;  // guarded by world_->mu

 private:
  struct W {
    uint64_t offset;
    Bytes data;
  };
  CrashWorld* world_;
  const bool counted_;
  Geometry g_;
  Bytes data_, durable_;  // guarded by world_->mu
  std::vector<W> unflushed_;
};

// An origin whose data nobody checks: reads zeroes, writes tick the world.
class NullDevice final : public BlockDevice {
 public:
  NullDevice(uint64_t size, CrashWorld* w, bool counted) : world_(w), counted_(counted) { g_.size = size; }
  std::string_view kind() const override { return "null"; }
  Geometry geometry() const override { return g_; }
  Capabilities capabilities() const override {
    Capabilities c;
    c.flush = c.fua = true;
    return c;
  }
  Status read(uint64_t, std::span<std::byte> buf) override {
    std::fill(buf.begin(), buf.end(), std::byte{0});
    return Status::Ok();
  }
  Status write(uint64_t, std::span<const std::byte>, uint32_t) override { return tick(); }
  Status flush() override { return tick(); }
  Status trim(uint64_t, uint64_t, uint32_t) override { return tick(); }
  Status write_zeroes(uint64_t, uint64_t, uint32_t) override { return tick(); }

 private:
  Status tick() {
    std::lock_guard lock(world_->mu);
    if (counted_) world_->tick_locked();
    return Status::Ok();
  }
  CrashWorld* world_;
  const bool counted_;
  Geometry g_;
};

void CrashWorld::capture_locked() {
  for (CrashDevice* d : devices) d->capture_locked(rng);
  oracle_at_crash = durable_era;
  captured = true;
}

// Crash states: at a random write or flush of either device, both are
// captured as they could be after power loss; recovery must open them, and
// every write acknowledged before the last completed flush must be marked
// with an era >= the era current when it was written.
TEST(EraTargetTest, CrashStatesNeverLoseAMark) {
  std::mt19937_64 rng(99);
  // Small blocks, so that the bits of one writeset block span several
  // sectors and a torn writeset write really mixes old and new bits.
  const uint32_t bs = 512;
  const uint64_t nr = 8192;
  int mid_commit = 0;
  for (int round = 0; round < 80; ++round) {
    CrashWorld world;
    world.rng.seed(rng());
    world.durable_era.assign(nr, 0);
    // Crash points: every metadata write and flush in some rounds, every
    // origin write and flush in others.
    const bool at_metadata = round % 4 != 0;
    auto origin = std::make_shared<NullDevice>(nr * bs, &world, !at_metadata);
    auto md = std::make_shared<CrashDevice>(meta_size(nr), &world, at_metadata);
    auto t = open_era(origin, md, bs);
    ASSERT_TRUE(t);
    {
      std::lock_guard lock(world.mu);
      world.crash_at = world.ops + 1 + rng() % (at_metadata ? 40 : 60);
    }
    std::vector<uint32_t> acked_era(nr, 0);  // era current at the write, per block (max)
    const int steps = 5 + static_cast<int>(rng() % 60);
    for (int s = 0; s < steps; ++s) {
      const int op = static_cast<int>(rng() % 10);
      if (op < 7) {
        const uint64_t b = rng() % nr;
        const uint32_t e = t->current_era();
        ASSERT_TRUE(t->write(b * bs, pattern(rng(), bs), rng() % 5 == 0 ? uint32_t{kFua} : 0u).ok());
        acked_era[b] = std::max(acked_era[b], e);
      } else if (op < 9) {
        ASSERT_TRUE(t->flush().ok());
        std::lock_guard lock(world.mu);
        world.durable_era = acked_era;
      } else {
        ASSERT_TRUE(t->checkpoint().ok());
      }
    }
    ASSERT_TRUE(t->flush().ok());
    {
      std::lock_guard lock(world.mu);
      world.durable_era = acked_era;
      if (!world.captured)
        world.capture_locked();
      else
        ++mid_commit;
    }
    t.reset();
    auto r = open_era(origin, md->crashed, bs);
    ASSERT_TRUE(r) << "round " << round;
    r.reset();
    uint32_t current = 0;
    auto eras = logical_eras(md->crashed, &current);
    ASSERT_EQ(eras.size(), nr);
    for (uint64_t b = 0; b < nr; ++b) {
      EXPECT_GE(eras[b], world.oracle_at_crash[b]) << "round " << round << " block " << b;
      EXPECT_LE(eras[b], current);
    }
  }
  EXPECT_GE(mid_commit, 40) << "most crash points should fall inside the workload";
}

// The sharpest case of the above: a commit rewriting a writeset block that
// already holds durable bits of this era is torn. The new version must have
// gone to the other slot, so the earlier bits survive.
TEST(EraTargetTest, TornWritesetRewriteKeepsEarlierBits) {
  CrashWorld world;
  world.tear_all = true;
  const uint64_t nr = 8192;
  world.durable_era.assign(nr, 0);
  auto origin = std::make_shared<NullDevice>(nr * 512, &world, false);
  auto md = std::make_shared<CrashDevice>(meta_size(nr), &world, true);
  auto t = open_era(origin, md, 512);
  ASSERT_TRUE(t);
  // Bits 4000 and 4001 live in the second sector of writeset block 0; a tear
  // that lands only the first sector (the header) leaves a mix.
  ASSERT_TRUE(t->write(4000 * 512, pattern(1, 512), kFua).ok());
  ASSERT_TRUE(t->flush().ok());
  {
    std::lock_guard lock(world.mu);
    world.durable_era[4000] = t->current_era();
    world.crash_at = world.ops + 2;  // the next commit's flush: its writeset write is not yet durable
  }
  ASSERT_TRUE(t->write(4001 * 512, pattern(2, 512), kFua).ok());
  t.reset();
  ASSERT_TRUE(world.captured);
  ASSERT_TRUE(open_era(origin, md->crashed, 512));
  auto eras = logical_eras(md->crashed);
  ASSERT_EQ(eras.size(), nr);
  EXPECT_EQ(eras[4000], world.oracle_at_crash[4000]);
  EXPECT_NE(eras[4000], 0u);
}

}  // namespace
}  // namespace bowstack::era
