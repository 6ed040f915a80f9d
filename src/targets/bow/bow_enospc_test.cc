// bow over a backing store that runs out of space during a checkpoint (a
// sparse image on a full filesystem): writes that need backup space get
// ENOSPC, everything else goes on, writes resume when space returns, and
// the checkpoint stays restorable.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "core/memory_device.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/bow_test_util.h"

namespace bowstack::bow {
namespace {

using test_util::Bytes;
using test_util::random_bytes;
constexpr uint32_t kBs = 4096;

// A memory device that behaves like a sparse file on a nearly full
// filesystem: a block holds space once written (or reserved); writing or
// reserving a block that holds none fails with ENOSPC once `budget` blocks
// hold space. Writes that fail change nothing.
class SparseBudgetDevice final : public StackedDevice {
 public:
  SparseBudgetDevice(std::shared_ptr<MemoryDevice> mem, uint64_t budget)
      : StackedDevice(std::move(mem)), budget_(budget) {}

  std::string_view kind() const override { return "sparse-budget"; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    if (Status s = take(offset, buf.size()); !s.ok()) return s;
    return lower_device()->write(offset, buf, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    if (Status s = take(offset, length); !s.ok()) return s;
    return lower_device()->write_zeroes(offset, length, flags);
  }
  Status reserve(uint64_t offset, uint64_t length) override {
    ++reserves_;
    return take(offset, length);
  }
  // Like SEEK_DATA/SEEK_HOLE: blocks without space are holes.
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    std::lock_guard lock(mu_);
    for (uint64_t b = offset / kBs; b < (offset + length + kBs - 1) / kBs; ++b) {
      const uint32_t flags = held_.count(b) ? 0 : (kExtentHole | kExtentZero);
      if (!out->empty() && out->back().flags == flags) {
        out->back().length += kBs;
      } else {
        out->push_back({kBs, flags});
      }
    }
    return Status::Ok();
  }
  // Marks [0, length) as holding space already (an image written before).
  void allocated(uint64_t length) {
    std::lock_guard lock(mu_);
    for (uint64_t b = 0; b < length / kBs; ++b) held_.insert(b);
  }
  void set_budget(uint64_t blocks) {
    std::lock_guard lock(mu_);
    budget_ = blocks;
  }
  uint64_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  uint64_t reserves() const { return reserves_.load(); }

 private:
  Status take(uint64_t offset, uint64_t length) {
    std::lock_guard lock(mu_);
    std::vector<uint64_t> fresh;
    for (uint64_t b = offset / kBs; b < (offset + length + kBs - 1) / kBs; ++b) {
      if (held_.count(b) == 0) fresh.push_back(b);
    }
    if (held_.size() + fresh.size() > budget_) return Status::Error(ENOSPC, "sparse-budget: full");
    held_.insert(fresh.begin(), fresh.end());
    return Status::Ok();
  }
  std::mutex mu_;
  std::set<uint64_t> held_;  // guarded by mu_
  uint64_t budget_;          // guarded by mu_
  std::atomic<uint64_t> reserves_{0};
};

TEST(BowEnospc, FullBackingStoreFailsOnlyWritesThatNeedBackupSpace) {
  std::mt19937_64 rng(42);
  constexpr uint64_t kBlocks = 2048;  // 8 MiB
  constexpr uint64_t kUsed = 1024;    // [0, 4 MiB) holds data; the rest is free and sparse
  auto mem = std::make_shared<MemoryDevice>(kBlocks * kBs);
  const Bytes original = random_bytes(rng, kUsed * kBs);
  ASSERT_TRUE(mem->write(0, original, 0).ok());
  auto dev = std::make_shared<SparseBudgetDevice>(mem, kBlocks);
  dev->allocated(kUsed * kBs);

  auto t = BowTarget::open(dev, BowOptions{.gather_us = 0});
  ASSERT_TRUE(t.ok()) << t.status().message();
  BowTarget& bow = **t;
  ASSERT_TRUE(bow.trim(kUsed * kBs, (kBlocks - kUsed) * kBs, 0).ok());
  ASSERT_TRUE(bow.checkpoint().ok());
  // Room for a few dozen saved copies, then the filesystem is full.
  dev->set_budget(dev->held() + 40);

  Bytes model = original;
  uint64_t ok_writes = 0, enospc = 0, next = 1;
  for (; next < kUsed && enospc < 5; ++next) {
    const Bytes data = random_bytes(rng, kBs);
    Status s = bow.write(next * kBs, data, 0);
    if (s.ok()) {
      std::memcpy(model.data() + next * kBs, data.data(), kBs);
      ++ok_writes;
    } else {
      EXPECT_EQ(s.code(), ENOSPC) << s.message();
      ++enospc;
    }
  }
  EXPECT_GT(ok_writes, 10u);
  EXPECT_EQ(enospc, 5u);
  EXPECT_FALSE(bow.stats().failed);
  EXPECT_GT(dev->reserves(), 0u);

  // Flushes, reads of everything, and overwrites of blocks already saved
  // (no backup needed) all go on.
  ASSERT_TRUE(bow.flush().ok());
  Bytes got(kUsed * kBs);
  ASSERT_TRUE(bow.read(0, got).ok());
  EXPECT_TRUE(got == model);
  const Bytes again = random_bytes(rng, kBs);
  ASSERT_TRUE(bow.write(1 * kBs, again, 0).ok());
  std::memcpy(model.data() + kBs, again.data(), kBs);
  ASSERT_TRUE(bow.flush().ok());

  // Space returns: first overwrites work again.
  dev->set_budget(kBlocks);
  for (uint64_t b = next; b < next + 20; ++b) {
    const Bytes data = random_bytes(rng, kBs);
    ASSERT_TRUE(bow.write(b * kBs, data, 0).ok()) << b;
    std::memcpy(model.data() + b * kBs, data.data(), kBs);
  }
  ASSERT_TRUE(bow.flush().ok());
  ASSERT_TRUE(bow.read(0, got).ok());
  EXPECT_TRUE(got == model);
  EXPECT_FALSE(bow.stats().failed);

  // The checkpoint is intact: a restore of this state gives back the
  // original data.
  auto copy = std::make_shared<MemoryDevice>(kBlocks * kBs);
  ASSERT_TRUE(copy->write(0, mem->contents(), 0).ok());
  auto r = restore(*copy, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes restored(kUsed * kBs);
  ASSERT_TRUE(copy->read(0, restored).ok());
  EXPECT_TRUE(restored == original);
}

// A commit whose atomic log rollover finds no space refuses and changes
// nothing; with space back it commits.
TEST(BowEnospc, CommitWithoutSpaceRefusesAndKeepsTheCheckpoint) {
  std::mt19937_64 rng(7);
  constexpr uint64_t kBlocks = 1024;
  auto mem = std::make_shared<MemoryDevice>(kBlocks * kBs, 512);  // 512-byte sectors: tearable block 0
  const Bytes original = random_bytes(rng, 256 * kBs);
  ASSERT_TRUE(mem->write(0, original, 0).ok());
  auto dev = std::make_shared<SparseBudgetDevice>(mem, kBlocks);
  dev->allocated(256 * kBs);
  auto t = BowTarget::open(dev, BowOptions{.gather_us = 0});
  ASSERT_TRUE(t.ok()) << t.status().message();
  BowTarget& bow = **t;
  ASSERT_TRUE(bow.trim(256 * kBs, (kBlocks - 256) * kBs, 0).ok());
  ASSERT_TRUE(bow.checkpoint().ok());
  for (uint64_t b = 1; b < 40; ++b) ASSERT_TRUE(bow.write(b * kBs, random_bytes(rng, kBs), 0).ok());
  ASSERT_TRUE(bow.flush().ok());
  dev->set_budget(dev->held());
  Status c = bow.commit();
  if (c.ok()) GTEST_SKIP() << "the log fit in one sector: no rollover needed";
  EXPECT_EQ(c.code(), ENOSPC) << c.message();
  EXPECT_EQ(bow.state(), State::kCheckpoint);
  EXPECT_FALSE(bow.stats().failed);
  dev->set_budget(kBlocks);
  ASSERT_TRUE(bow.commit().ok());
  EXPECT_EQ(bow.state(), State::kCommitted);
}

}  // namespace
}  // namespace bowstack::bow
