#include "core/sub_block.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>
#include <vector>

#include "core/memory_device.h"
#include "core/volume.h"

namespace bowstack {
namespace {

constexpr uint32_t kBs = 4096;

// A device that takes whole blocks only, as csum does: unaligned requests
// fail (and are counted, so a test can insist there were none). With
// `tear`, a write first fills its range with 0xEE and yields before
// writing the data, as a device below may show a block half rewritten
// while its write is in flight.
class BlockOnlyDevice final : public StackedDevice {
 public:
  BlockOnlyDevice(uint64_t size, uint32_t max_io, bool tear)
      : StackedDevice(std::make_shared<MemoryDevice>(size, kBs)), max_io_(max_io), tear_(tear) {}

  std::string_view kind() const override { return "block-only"; }
  Geometry geometry() const override {
    Geometry g = lower_device()->geometry();
    g.max_io_size = max_io_;
    return g;
  }
  Status read(uint64_t offset, std::span<std::byte> buf) override {
    if (!check(offset, buf.size(), true)) return Status::Error(EINVAL);
    return lower_device()->read(offset, buf);
  }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    if (!check(offset, buf.size(), true)) return Status::Error(EINVAL);
    writes.fetch_add(1);
    if (flags & kFua) fua_writes.fetch_add(1);
    if (tear_) {
      std::vector<std::byte> junk(buf.size(), std::byte{0xEE});
      if (Status s = lower_device()->write(offset, junk, 0); !s.ok()) return s;
      std::this_thread::yield();
    }
    return lower_device()->write(offset, buf, flags);
  }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override {
    if (!check(offset, length, false)) return Status::Error(EINVAL);
    trimmed.fetch_add(length);
    return lower_device()->trim(offset, length, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    if (!check(offset, length, false)) return Status::Error(EINVAL);
    zeroed.fetch_add(length);
    return lower_device()->write_zeroes(offset, length, flags);
  }

  std::atomic<uint64_t> misaligned{0}, writes{0}, fua_writes{0}, trimmed{0}, zeroed{0};

 private:
  bool check(uint64_t offset, uint64_t length, bool io) {
    if (offset % kBs != 0 || length % kBs != 0 || (io && length > max_io_)) {
      misaligned.fetch_add(1);
      return false;
    }
    return true;
  }
  uint32_t max_io_;
  bool tear_;
};

std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(seed + i * 7);
  return v;
}

TEST(SubBlockTest, WrapsOnlyDevicesThatNeedIt) {
  auto small = std::make_shared<MemoryDevice>(1 << 20, 512);
  EXPECT_EQ(SubBlockDevice::over(small).get(), small.get());
  auto big = std::make_shared<MemoryDevice>(1 << 20, kBs);
  auto wrapped = SubBlockDevice::over(big);
  EXPECT_NE(wrapped.get(), big.get());
  EXPECT_EQ(wrapped->kind(), "sub-block");
  const Geometry g = wrapped->geometry();
  EXPECT_EQ(g.logical_block_size, 512u);
  EXPECT_EQ(g.preferred_block_size, kBs);
  EXPECT_TRUE(g.accepts_unaligned);
  EXPECT_EQ(g.size, 1u << 20);
  EXPECT_EQ(g.max_io_size, big->geometry().max_io_size);
}

// Random byte-granular reads, writes and zeroes against a model: the device
// below only ever sees whole blocks, pieces no larger than its max_io_size.
TEST(SubBlockTest, RandomByteRangesMatchModel) {
  const uint64_t size = 64 * kBs;
  auto lower = std::make_shared<BlockOnlyDevice>(size, 4 * kBs, false);
  SubBlockDevice dev(lower);
  std::vector<std::byte> model(size);
  std::mt19937_64 rng(19);
  for (int i = 0; i < 3000; ++i) {
    const uint64_t off = rng() % size;
    uint64_t len = 1 + rng() % (rng() % 4 == 0 ? 10 * kBs : 2 * kBs);
    len = std::min(len, size - off);
    switch (rng() % 3) {
      case 0: {
        std::vector<std::byte> data = pattern(len, static_cast<uint8_t>(i));
        ASSERT_TRUE(dev.write(off, data, i % 5 == 0 ? uint32_t{kFua} : 0u).ok());
        std::memcpy(model.data() + off, data.data(), len);
        break;
      }
      case 1: {
        ASSERT_TRUE(dev.write_zeroes(off, len, 0).ok());
        std::memset(model.data() + off, 0, len);
        break;
      }
      default: {
        std::vector<std::byte> got(len);
        ASSERT_TRUE(dev.read(off, got).ok());
        ASSERT_EQ(std::memcmp(got.data(), model.data() + off, len), 0) << "read " << off << "+" << len;
      }
    }
  }
  std::vector<std::byte> all(size);
  for (uint64_t off = 0; off < size; off += 4 * kBs) {  // max_io_size at a time
    ASSERT_TRUE(dev.read(off, std::span(all).subspan(off, 4 * kBs)).ok());
  }
  EXPECT_EQ(all, model);
  EXPECT_EQ(lower->misaligned.load(), 0u);
  EXPECT_GT(dev.partial_writes(), 0u);
  EXPECT_GT(dev.partial_reads(), 0u);
}

TEST(SubBlockTest, FuaReachesEveryWriteBelow) {
  auto lower = std::make_shared<BlockOnlyDevice>(64 * kBs, 2 * kBs, false);
  SubBlockDevice dev(lower);
  const auto data = pattern(5 * kBs, 3);
  ASSERT_TRUE(dev.write(512, data, kFua).ok());  // pieces: several writes below
  EXPECT_GT(lower->writes.load(), 1u);
  EXPECT_EQ(lower->fua_writes.load(), lower->writes.load());
  const uint64_t before = lower->writes.load();
  ASSERT_TRUE(dev.write_zeroes(1000, 3 * kBs, kFua).ok());  // head and tail rewritten
  EXPECT_EQ(lower->fua_writes.load(), lower->writes.load());
  EXPECT_EQ(lower->writes.load(), before + 2);
  EXPECT_EQ(lower->zeroed.load(), 2u * kBs);  // the whole blocks inside
}

TEST(SubBlockTest, PartialTrimsAreDroppedWholeBlocksPassed) {
  auto lower = std::make_shared<BlockOnlyDevice>(64 * kBs, 32 * kBs, false);
  SubBlockDevice dev(lower);
  const auto data = pattern(8 * kBs, 9);
  ASSERT_TRUE(dev.write(0, data, 0).ok());
  ASSERT_TRUE(dev.trim(100, 1000, 0).ok());  // inside one block: nothing
  EXPECT_EQ(lower->trimmed.load(), 0u);
  ASSERT_TRUE(dev.trim(kBs - 512, 3 * kBs, 0).ok());  // blocks 1 and 2 only
  EXPECT_EQ(lower->trimmed.load(), 2u * kBs);
  std::vector<std::byte> head(kBs);
  ASSERT_TRUE(dev.read(0, head).ok());
  EXPECT_EQ(std::memcmp(head.data(), data.data(), kBs), 0);  // the partial block keeps its data
  EXPECT_EQ(lower->misaligned.load(), 0u);
}

TEST(SubBlockTest, FastZeroOfPartialBlockIsRefused) {
  auto lower = std::make_shared<BlockOnlyDevice>(64 * kBs, 32 * kBs, false);
  SubBlockDevice dev(lower);
  EXPECT_EQ(dev.write_zeroes(512, 512, kFastZero).code(), ENOTSUP);
  EXPECT_TRUE(dev.write_zeroes(kBs, kBs, kFastZero).ok());
}

// Concurrent 512-byte writes to different sectors of the same blocks: each
// is a read-modify-write of the whole block, and none may write back
// another's sector stale.
TEST(SubBlockTest, ConcurrentSectorWritesToOneBlockAllSurvive) {
  const uint64_t blocks = 4;
  auto lower = std::make_shared<BlockOnlyDevice>(blocks * kBs, 32 * kBs, true);
  SubBlockDevice dev(lower);
  const int kThreads = 4;
  const int kRounds = 200;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        // Thread t owns sectors s with s % kThreads == t, of every block.
        for (uint64_t s = static_cast<uint64_t>(t); s < blocks * kBs / 512; s += kThreads) {
          std::vector<std::byte> v(512, static_cast<std::byte>(r + 1));
          ASSERT_TRUE(dev.write(s * 512, v, 0).ok());
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<std::byte> all(blocks * kBs);
  ASSERT_TRUE(dev.read(0, all).ok());
  for (uint64_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i], static_cast<std::byte>(kRounds)) << "byte " << i;
  }
  EXPECT_EQ(lower->misaligned.load(), 0u);
}

// The read rule: a read never overlaps a write of one of its blocks, so
// however the device below shows a block while it is rewritten (here:
// 0xEE first), a read sees the block before or after, never between.
TEST(SubBlockTest, ReadsNeverSeeABlockHalfRewritten) {
  auto lower = std::make_shared<BlockOnlyDevice>(2 * kBs, 32 * kBs, true);
  SubBlockDevice dev(lower);
  const auto base = pattern(2 * kBs, 1);
  ASSERT_TRUE(dev.write(0, base, 0).ok());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int r = 0; r < 2000; ++r) {
      std::vector<std::byte> v(512, static_cast<std::byte>(r % 200));
      ASSERT_TRUE(dev.write(512 * (r % 2), v, 0).ok());  // sectors 0 and 1 only
    }
    stop = true;
  });
  std::atomic<uint64_t> torn{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      std::vector<std::byte> got(512 * 3);
      while (!stop) {
        // Sectors 2..4 (never written after the start) and the whole block.
        if (!dev.read(1024 + 512 * t, got).ok()) torn.fetch_add(1);
        if (std::memcmp(got.data(), base.data() + 1024 + 512 * t, got.size()) != 0) torn.fetch_add(1);
      }
    });
  }
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(torn.load(), 0u);
}

TEST(SubBlockTest, VolumeServesSubBlocksOverBlockOnlyTop) {
  auto lower = std::make_shared<BlockOnlyDevice>(16 * kBs, 32 * kBs, false);
  Volume v(lower);
  EXPECT_EQ(v.geometry().logical_block_size, 512u);
  EXPECT_TRUE(v.geometry().accepts_unaligned);
  EXPECT_EQ(&v.top(), lower.get());  // the stack's top, not the adapter
  const auto data = pattern(1536, 5);
  ASSERT_TRUE(v.write(3 * 512, data, 0).ok());
  std::vector<std::byte> got(1536);
  ASSERT_TRUE(v.read(3 * 512, got).ok());
  EXPECT_EQ(got, data);
  const nlohmann::json s = v.status();
  EXPECT_EQ(s["layers"][0]["kind"], "block-only");
  EXPECT_EQ(s["sub_block"]["partial_writes"], 1);
  EXPECT_EQ(lower->misaligned.load(), 0u);
}

}  // namespace
}  // namespace bowstack
