#include "core/bufio.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "core/memory_device.h"

namespace bowstack {
namespace {

constexpr uint32_t kBs = 4096;

// Stamps bytes [0,4) with a CRC-32 of the rest and [4,12) with the location.
class TestValidator final : public BlockValidator {
 public:
  const char* name() const override { return "test"; }
  void prepare_for_write(std::span<std::byte> data, uint64_t block) const override {
    std::memcpy(data.data() + 4, &block, 8);
    uint32_t c = crc(data);
    std::memcpy(data.data(), &c, 4);
  }
  Status check(std::span<const std::byte> data, uint64_t block) const override {
    uint32_t c;
    std::memcpy(&c, data.data(), 4);
    if (c != crc(data))
      return Status::Error(EUCLEAN, "test block " + std::to_string(block) + ": bad checksum");
    uint64_t loc;
    std::memcpy(&loc, data.data() + 4, 8);
    if (loc != block) {
      return Status::Error(EUCLEAN,
                           "test block " + std::to_string(block) + ": location " + std::to_string(loc));
    }
    return Status::Ok();
  }

 private:
  static uint32_t crc(std::span<const std::byte> d) {
    return static_cast<uint32_t>(
        ::crc32(0, reinterpret_cast<const Bytef*>(d.data() + 4), static_cast<uInt>(d.size() - 4)));
  }
};

// A memory device with injectable faults and I/O counters.
class FaultDevice final : public StackedDevice {
 public:
  explicit FaultDevice(uint64_t size) : StackedDevice(std::make_shared<MemoryDevice>(size)) {}
  std::string_view kind() const override { return "fault"; }
  Status read(uint64_t offset, std::span<std::byte> buf) override {
    ++reads;
    const int64_t bad = fail_read_block.load();
    if (bad >= 0 && static_cast<uint64_t>(bad) * kBs >= offset &&
        static_cast<uint64_t>(bad) * kBs < offset + buf.size()) {
      return Status::Error(EIO, "injected read error");
    }
    const int64_t short_at = short_read_block.load();
    if (short_at >= 0 && offset + buf.size() > static_cast<uint64_t>(short_at) * kBs) {
      return Status::Error(EIO, "unexpected end of file (short read)");
    }
    return StackedDevice::read(offset, buf);
  }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    ++writes;
    if (fail_writes.load()) return Status::Error(EIO, "injected write error");
    return StackedDevice::write(offset, buf, flags);
  }
  Status flush() override {
    ++flushes;
    if (fail_flush.load()) return Status::Error(EIO, "injected flush error");
    return StackedDevice::flush();
  }
  std::vector<std::byte> block_bytes(uint64_t block) {
    std::vector<std::byte> b(kBs);
    EXPECT_TRUE(StackedDevice::read(block * kBs, b).ok());
    return b;
  }

  std::atomic<int64_t> fail_read_block{-1};
  std::atomic<int64_t> short_read_block{-1};
  std::atomic<bool> fail_writes{false};
  std::atomic<bool> fail_flush{false};
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0};
};

std::unique_ptr<BufferCache> make_cache(std::shared_ptr<BlockDevice> dev, uint64_t max_blocks = 64,
                                        std::chrono::milliseconds age = std::chrono::milliseconds(60000)) {
  auto c = BufferCache::create(
      std::move(dev), BufioOptions{.block_size = kBs, .max_bytes = max_blocks * kBs, .writeback_age = age});
  EXPECT_TRUE(c.ok());
  return std::move(c.value());
}

void fill(Buffer& b, uint8_t v) { std::memset(b.data().data() + 12, v, kBs - 12); }
uint8_t payload(std::span<const std::byte> d) { return std::to_integer<uint8_t>(d[100]); }

TEST(BufioTest, NewDirtyWriteFlushRoundTrip) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  TestValidator v;
  auto cache = make_cache(dev);
  {
    auto b = cache->new_block(3, &v);
    ASSERT_TRUE(b.ok());
    fill(*b, 0xab);
    b->mark_dirty();
  }
  EXPECT_EQ(dev->writes.load(), 0u);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  EXPECT_EQ(dev->flushes.load(), 1u);
  auto on_disk = dev->block_bytes(3);
  EXPECT_EQ(payload(on_disk), 0xab);
  EXPECT_TRUE(v.check(on_disk, 3).ok());
  // Nothing dirty: another call only flushes.
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  EXPECT_EQ(dev->writes.load(), 1u);
  EXPECT_EQ(dev->flushes.load(), 2u);

  // A fresh cache reads and checks it.
  auto cache2 = make_cache(dev);
  auto r = cache2->read(3, &v);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(payload(r->data()), 0xab);
}

TEST(BufioTest, ChecksumAndLocationErrorsAreDamageNotCrashes) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  TestValidator v;
  {
    auto cache = make_cache(dev);
    for (uint64_t blk : {1, 2}) {
      auto b = cache->new_block(blk, &v);
      ASSERT_TRUE(b.ok());
      fill(*b, static_cast<uint8_t>(blk));
      b->mark_dirty();
    }
    ASSERT_TRUE(cache->write_dirty_buffers().ok());
  }
  // Flip a byte in block 1; copy block 2 to block 5 (right checksum, wrong place).
  auto b1 = dev->block_bytes(1);
  b1[2000] ^= std::byte{1};
  ASSERT_TRUE(dev->lower()->write(1 * kBs, b1, 0).ok());
  ASSERT_TRUE(dev->lower()->write(5 * kBs, dev->block_bytes(2), 0).ok());

  auto cache = make_cache(dev);
  auto r1 = cache->read(1, &v);
  ASSERT_FALSE(r1.ok());
  EXPECT_EQ(r1.status().code(), EUCLEAN);
  EXPECT_NE(r1.status().context().find("checksum"), std::string::npos);
  auto r5 = cache->read(5, &v);
  ASSERT_FALSE(r5.ok());
  EXPECT_EQ(r5.status().code(), EUCLEAN);
  EXPECT_NE(r5.status().context().find("location 2"), std::string::npos);
  // Reading again without a validator gives the raw bytes; with one it fails again.
  EXPECT_TRUE(cache->read(5, nullptr).ok());
  EXPECT_FALSE(cache->read(5, &v).ok());
  EXPECT_TRUE(cache->read(2, &v).ok());
  // A never-written (all-zero) block fails the check too.
  EXPECT_EQ(cache->read(9, &v).status().code(), EUCLEAN);
}

TEST(BufioTest, ReadErrorsAndShortReadsAreReportedAndNotSticky) {
  auto dev = std::make_shared<FaultDevice>(16 * kBs);
  auto cache = make_cache(dev);
  dev->fail_read_block = 4;
  auto r = cache->read(4, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), EIO);
  EXPECT_NE(r.status().context().find("metadata block 4"), std::string::npos);
  dev->fail_read_block = -1;
  EXPECT_TRUE(cache->read(4, nullptr).ok());

  dev->short_read_block = 10;
  auto s = cache->read(12, nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("short read"), std::string::npos);
  dev->short_read_block = -1;

  // Beyond the device: a clear error, no I/O.
  const uint64_t before = dev->reads.load();
  auto beyond = cache->read(16, nullptr);
  ASSERT_FALSE(beyond.ok());
  EXPECT_NE(beyond.status().context().find("beyond the end"), std::string::npos);
  EXPECT_FALSE(cache->new_block(1000, nullptr).ok());
  EXPECT_EQ(dev->reads.load(), before);
  EXPECT_TRUE(cache->write_dirty_buffers().ok());  // read errors do not poison writing
}

TEST(BufioTest, PrefetchErrorIsReportedByTheLaterRead) {
  auto dev = std::make_shared<FaultDevice>(32 * kBs);
  auto cache = make_cache(dev);
  dev->fail_read_block = 5;
  cache->prefetch(0, 8);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto r = cache->read(5, nullptr);
  EXPECT_FALSE(r.ok());
  dev->fail_read_block = -1;
  EXPECT_TRUE(cache->read(5, nullptr).ok());
}

TEST(BufioTest, WriteErrorIsStickyAndKeepsTheData) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  TestValidator v;
  auto cache = make_cache(dev);
  {
    auto b = cache->new_block(7, &v);
    ASSERT_TRUE(b.ok());
    fill(*b, 7);
    b->mark_dirty();
  }
  dev->fail_writes = true;
  Status s = cache->write_dirty_buffers();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), EIO);
  EXPECT_EQ(dev->flushes.load(), 0u) << "no flush may follow a failed write";
  dev->fail_writes = false;
  EXPECT_FALSE(cache->write_dirty_buffers().ok()) << "the failure must be sticky";
  EXPECT_FALSE(cache->failure().ok());
  // The bytes are still readable from the cache.
  auto r = cache->read(7, &v);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(payload(r->data()), 7);
}

TEST(BufioTest, FlushErrorIsSticky) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev);
  {
    auto b = cache->new_block(1, nullptr);
    ASSERT_TRUE(b.ok());
    b->mark_dirty();
  }
  dev->fail_flush = true;
  EXPECT_FALSE(cache->write_dirty_buffers().ok());
  dev->fail_flush = false;
  Status again = cache->write_dirty_buffers();
  EXPECT_FALSE(again.ok());
  EXPECT_NE(again.context().find("flush"), std::string::npos);
}

TEST(BufioTest, MemoryBoundEvictsCleanAndWritesBackDirty) {
  auto dev = std::make_shared<FaultDevice>(256 * kBs);
  TestValidator v;
  auto cache = make_cache(dev, /*max_blocks=*/8);
  for (uint64_t blk = 0; blk < 100; ++blk) {
    auto b = cache->new_block(blk, &v);
    ASSERT_TRUE(b.ok());
    fill(*b, static_cast<uint8_t>(blk));
    b->mark_dirty();
    b->release();
    EXPECT_LE(cache->stats().buffers, 8u);
  }
  // 92+ dirty buffers had to leave: written by eviction or by the background
  // thread under pressure (merged), never dropped.
  EXPECT_GT(dev->writes.load(), 0u);
  EXPECT_LE(cache->stats().dirty, 8u);
  EXPECT_EQ(dev->flushes.load(), 0u);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  for (uint64_t blk = 0; blk < 100; ++blk) {
    auto r = cache->read(blk, &v);
    ASSERT_TRUE(r.ok()) << blk;
    EXPECT_EQ(payload(r->data()), static_cast<uint8_t>(blk));
    r->release();
    EXPECT_LE(cache->stats().buffers, 8u);
  }
  EXPECT_GT(cache->stats().evictions, 150u);
}

TEST(BufioTest, HeldBuffersMayExceedTheBoundButAreNotWritten) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev, 8);
  std::vector<Buffer> held;
  for (uint64_t blk = 0; blk < 12; ++blk) {
    auto b = cache->new_block(blk, nullptr);
    ASSERT_TRUE(b.ok());
    std::memset(b->data().data(), 0x5a, kBs);
    b->mark_dirty();
    held.push_back(std::move(b.value()));
  }
  EXPECT_EQ(cache->stats().buffers, 12u);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  EXPECT_EQ(dev->writes.load(), 0u) << "held buffers are skipped";
  held.clear();
  EXPECT_LE(cache->stats().buffers, 12u);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  // Once released, the twelve are over the bound, so background write-back
  // may take some of them before write_dirty_buffers() does: how many writes
  // that makes is timing, that every block lands is not.
  for (uint64_t blk = 0; blk < 12; ++blk)
    EXPECT_EQ(std::to_integer<int>(dev->block_bytes(blk)[0]), 0x5a) << blk;
  EXPECT_EQ(cache->stats().dirty, 0u);
  EXPECT_LE(cache->stats().buffers, 8u) << "released buffers are shed back to the bound";
}

TEST(BufioTest, AdjacentDirtyBlocksAreOneMergedWrite) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev, 64);  // no pressure: the background thread stays out of it
  for (uint64_t blk = 4; blk < 16; ++blk) {
    auto b = cache->new_block(blk, nullptr);
    ASSERT_TRUE(b.ok());
    std::memset(b->data().data(), static_cast<int>(blk), kBs);
    b->mark_dirty();
  }
  auto far = cache->new_block(40, nullptr);
  ASSERT_TRUE(far.ok());
  std::memset(far->data().data(), 40, kBs);
  far->mark_dirty();
  far->release();
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  EXPECT_EQ(dev->writes.load(), 2u) << "twelve adjacent blocks are one write, the distant one another";
  for (uint64_t blk = 4; blk < 16; ++blk)
    EXPECT_EQ(std::to_integer<uint64_t>(dev->block_bytes(blk)[kBs - 1]), blk);
  EXPECT_EQ(std::to_integer<int>(dev->block_bytes(40)[0]), 40);
}

TEST(BufioTest, BackgroundWritebackWritesOldDirtyBuffersWithoutFlushing) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev, 64, std::chrono::milliseconds(20));
  {
    auto b = cache->new_block(2, nullptr);
    ASSERT_TRUE(b.ok());
    std::memset(b->data().data(), 0x77, kBs);
    b->mark_dirty();
  }
  for (int i = 0; i < 200 && cache->stats().dirty > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(cache->stats().dirty, 0u);
  EXPECT_EQ(std::to_integer<int>(dev->block_bytes(2)[10]), 0x77);
  EXPECT_EQ(dev->flushes.load(), 0u);
}

TEST(BufioTest, PrefetchMergesReadsAndServesHits) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev, 64);
  cache->prefetch(0, 32);
  for (int i = 0; i < 200 && cache->stats().prefetched < 32; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(cache->stats().prefetched, 32u);
  EXPECT_EQ(dev->reads.load(), 1u);
  for (uint64_t blk = 0; blk < 32; ++blk) ASSERT_TRUE(cache->read(blk, nullptr).ok());
  EXPECT_EQ(dev->reads.load(), 1u);
  EXPECT_EQ(cache->stats().hits, 32u);
}

TEST(BufioTest, ForgetAndUnmarkedNewBlocksDropTheBuffer) {
  auto dev = std::make_shared<FaultDevice>(64 * kBs);
  auto cache = make_cache(dev);
  {
    auto b = cache->new_block(4, nullptr);
    ASSERT_TRUE(b.ok());
    std::memset(b->data().data(), 0x11, kBs);
  }  // released without mark_dirty: must not shadow the device
  auto r = cache->read(4, nullptr);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::to_integer<int>(r->data()[0]), 0);
  r->release();
  {
    auto b = cache->new_block(6, nullptr);
    ASSERT_TRUE(b.ok());
    std::memset(b->data().data(), 0x22, kBs);
    b->mark_dirty();
  }
  cache->forget(6);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  EXPECT_EQ(dev->writes.load(), 0u);
  EXPECT_EQ(cache->stats().dirty, 0u);
}

TEST(BufioTest, ConcurrentUsersOfDistinctBlocks) {
  auto dev = std::make_shared<FaultDevice>(512 * kBs);
  TestValidator v;
  auto cache = make_cache(dev, 32, std::chrono::milliseconds(5));
  constexpr int kThreads = 4, kRounds = 300;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kRounds; ++i) {
        // Each thread owns blocks t, t+4, t+8, ... (the format serialises per block).
        uint64_t blk = static_cast<uint64_t>(t) + 4 * (rng() % 100);
        auto b = (i % 3 == 0) ? cache->new_block(blk, &v) : cache->read(blk, &v);
        if (!b.ok()) b = cache->new_block(blk, &v);  // never written yet
        if (!b.ok()) {
          ++errors;
          continue;
        }
        std::memset(b->data().data() + 12, static_cast<int>(blk & 0xff), kBs - 12);
        b->mark_dirty();
        b->release();
        if (i % 50 == 0 && !cache->write_dirty_buffers().ok()) ++errors;
        if (i % 7 == 0) cache->prefetch(rng() % 400, 8);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  ASSERT_TRUE(cache->write_dirty_buffers().ok());
  auto fresh = make_cache(dev);
  for (uint64_t blk = 0; blk < 400; ++blk) {
    auto on_disk = dev->block_bytes(blk);
    if (std::to_integer<int>(on_disk[0]) == 0 && std::to_integer<int>(on_disk[1]) == 0 &&
        std::to_integer<int>(on_disk[100]) == 0) {
      continue;  // never touched
    }
    auto r = fresh->read(blk, &v);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(payload(r->data()), static_cast<uint8_t>(blk & 0xff));
  }
}

}  // namespace
}  // namespace bowstack
