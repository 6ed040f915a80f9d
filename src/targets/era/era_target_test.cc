// era target tests on memory devices: the commit-before-data rule, group
// commit, read-your-writes under write-behind, a randomized model of writes,
// checkpoints and reopens, crash states (unflushed writes dropped or torn at
// sector granularity), metadata snapshots, damage and failures.
#include "targets/era/era_target.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "core/memory_device.h"
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

// A memory device that logs its writes and flushes, and can slow down flushes.
class LoggedDevice final : public StackedDevice {
 public:
  LoggedDevice(uint64_t size, std::string name, std::vector<std::string>* log, std::mutex* log_mu)
      : StackedDevice(std::make_shared<MemoryDevice>(size)),
        name_(std::move(name)),
        log_(log),
        log_mu_(log_mu) {}
  std::string_view kind() const override { return "logged"; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    note("write");
    ++writes;
    return StackedDevice::write(offset, buf, flags);
  }
  Status flush() override {
    std::this_thread::sleep_for(flush_delay.load());
    note("flush");
    ++flushes;
    return StackedDevice::flush();
  }
  MemoryDevice& memory() { return *static_cast<MemoryDevice*>(lower()); }
  std::atomic<std::chrono::milliseconds> flush_delay{std::chrono::milliseconds(0)};
  std::atomic<uint64_t> writes{0}, flushes{0};

 private:
  void note(const char* what) {
    if (log_ == nullptr) return;
    std::lock_guard lock(*log_mu_);
    log_->push_back(name_ + " " + what);
  }
  std::string name_;
  std::vector<std::string>* log_;
  std::mutex* log_mu_;
};

TEST(EraTargetTest, FirstWriteCommitsItsBitBeforeTheData) {
  std::vector<std::string> log;
  std::mutex mu;
  auto origin = std::make_shared<LoggedDevice>(64 * kBs, "origin", &log, &mu);
  auto md = std::make_shared<LoggedDevice>(meta_size(64), "meta", &log, &mu);
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  {
    std::lock_guard lock(mu);
    log.clear();
  }
  ASSERT_TRUE(t->write(5 * kBs, pattern(1, kBs), kFua).ok());
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[0], "meta write");
    EXPECT_EQ(log[1], "meta flush");
    EXPECT_EQ(log[2], "origin write");
    log.clear();
  }
  EXPECT_TRUE(t->marked(5));
  // Marked now: straight through, no metadata I/O.
  ASSERT_TRUE(t->write(5 * kBs, pattern(2, kBs), 0).ok());
  ASSERT_TRUE(t->write(5 * kBs + 512, pattern(3, 1024), 0).ok());
  {
    std::lock_guard lock(mu);
    ASSERT_EQ(log.size(), 2u);
    EXPECT_EQ(log[0], "origin write");
  }
  EXPECT_EQ(t->stats().commits, 1u);
}

TEST(EraTargetTest, ConcurrentFirstWritesShareCommits) {
  auto origin = std::make_shared<LoggedDevice>(1024 * kBs, "origin", nullptr, nullptr);
  auto md = std::make_shared<LoggedDevice>(meta_size(1024), "meta", nullptr, nullptr);
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  md->flush_delay = std::chrono::milliseconds(30);
  const uint64_t flushes_before = md->flushes.load();
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      ++ready;
      while (ready.load() < 16) std::this_thread::yield();
      EXPECT_TRUE(t->write(i * 37 * kBs, pattern(i, kBs), kFua).ok());
    });
  }
  for (auto& th : threads) th.join();
  for (int i = 0; i < 16; ++i) EXPECT_TRUE(t->marked(i * 37));
  EXPECT_LE(t->stats().commits, 6u) << "16 concurrent first writes should share a few commits";
  EXPECT_LE(md->flushes.load() - flushes_before, 6u);
}

TEST(EraTargetTest, WriteBehindReadsSeeAcknowledgedData) {
  auto origin = std::make_shared<LoggedDevice>(64 * kBs, "origin", nullptr, nullptr);
  auto md = std::make_shared<LoggedDevice>(meta_size(64), "meta", nullptr, nullptr);
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  md->flush_delay = std::chrono::milliseconds(50);
  const Bytes a = pattern(10, kBs), b = pattern(11, kBs);
  ASSERT_TRUE(t->write(3 * kBs, a, 0).ok());  // acknowledged before its commit
  ASSERT_TRUE(t->write(3 * kBs, b, 0).ok());  // queued behind it
  Bytes got(kBs);
  ASSERT_TRUE(t->read(3 * kBs, got).ok());
  EXPECT_EQ(got, b);
  ASSERT_TRUE(t->write(9 * kBs, a, 0).ok());
  std::vector<Extent> extents;
  ASSERT_TRUE(t->block_status(8 * kBs, 4 * kBs, &extents).ok());
  Bytes below(kBs);
  ASSERT_TRUE(origin->memory().read(9 * kBs, below).ok());
  EXPECT_EQ(below, a) << "block status must wait until the queued write is below";
  ASSERT_TRUE(t->flush().ok());
  Bytes on_origin(kBs);
  ASSERT_TRUE(origin->memory().read(3 * kBs, on_origin).ok());
  EXPECT_EQ(on_origin, b);
  EXPECT_TRUE(t->marked(3));
}

TEST(EraTargetTest, RefusesMetadataOfAnotherDevice) {
  auto md = std::make_shared<MemoryDevice>(meta_size(2048));
  {
    auto t = open_era(std::make_shared<MemoryDevice>(1024 * kBs), md);
    ASSERT_TRUE(t);
  }
  EraOptions o;
  auto other = EraTarget::open(std::make_shared<MemoryDevice>(2048 * kBs), md, o);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().context().find("belongs to a device of 1024 blocks"), std::string::npos)
      << other.status().context();
  o.block_size = 8192;
  o.block_size_given = true;
  auto wrong_bs = EraTarget::open(std::make_shared<MemoryDevice>(1024 * kBs), md, o);
  ASSERT_FALSE(wrong_bs.ok());
  EXPECT_NE(wrong_bs.status().context().find("block_size=8192"), std::string::npos);
  // Too small for the layout.
  auto tiny = EraTarget::open(std::make_shared<MemoryDevice>(1024 * kBs),
                              std::make_shared<MemoryDevice>(8192), EraOptions{});
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.status().code(), ENOSPC);
}

// Random writes, trims, zeroes, flushes, checkpoints and reopens; after each
// checkpoint and reopen, every block's era is exactly the era it was last
// written in, and the origin holds the model's data.
class EraModelTest : public ::testing::TestWithParam<int> {};

TEST_P(EraModelTest, ErasMatchTheModel) {
  std::mt19937_64 rng(GetParam());
  const uint32_t bs = GetParam() % 2 ? 4096 : 8192;
  const uint64_t nr = 300;
  auto origin = std::make_shared<MemoryDevice>(nr * bs);
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  std::vector<uint32_t> model(nr, 0);
  Bytes data(nr * bs);
  auto t = open_era(origin, md, bs);
  ASSERT_TRUE(t);
  uint32_t era = t->current_era();

  auto verify = [&](const char* when) {
    uint32_t current = 0;
    auto eras = logical_eras(md, &current);
    ASSERT_EQ(eras.size(), nr);
    EXPECT_EQ(current, era) << when;
    for (uint64_t b = 0; b < nr; ++b) {
      ASSERT_EQ(eras[b], model[b]) << when << ": block " << b;
      ASSERT_LE(eras[b], current);
    }
    EXPECT_EQ(origin->contents(), data) << when;
  };

  for (int step = 0; step < 250; ++step) {
    const int op = static_cast<int>(rng() % 100);
    if (op < 70) {
      // Any 512-aligned range, possibly spanning blocks.
      const uint64_t off = (rng() % (nr * bs / 512)) * 512;
      const uint64_t len = std::min<uint64_t>(nr * bs - off, 512 * (1 + rng() % 24));
      Bytes buf = pattern(rng(), len);
      const int kind = static_cast<int>(rng() % 10);
      if (kind == 0) {
        ASSERT_TRUE(t->write_zeroes(off, len, 0).ok());
        std::fill_n(data.begin() + static_cast<std::ptrdiff_t>(off), len, std::byte{0});
      } else if (kind == 1) {
        ASSERT_TRUE(t->trim(off, len, 0).ok());  // memory device: zeroes
        std::fill_n(data.begin() + static_cast<std::ptrdiff_t>(off), len, std::byte{0});
      } else {
        ASSERT_TRUE(t->write(off, buf, kind == 2 ? uint32_t{kFua} : 0u).ok());
        std::memcpy(data.data() + off, buf.data(), len);
      }
      for (uint64_t b = off / bs; b <= (off + len - 1) / bs; ++b) model[b] = era;
      if (rng() % 8 == 0) {
        Bytes got(len);
        ASSERT_TRUE(t->read(off, got).ok());
        ASSERT_EQ(0, std::memcmp(got.data(), data.data() + off, len));
      }
    } else if (op < 80) {
      ASSERT_TRUE(t->flush().ok());
    } else if (op < 92) {
      auto e = t->checkpoint();
      ASSERT_TRUE(e.ok()) << e.status().message();
      ASSERT_EQ(e.value(), era + 1);
      era = e.value();
      ASSERT_TRUE(t->flush().ok());
      verify("after checkpoint");
    } else {
      ASSERT_TRUE(t->flush().ok());
      const bool any = t->stats().committed_bits > 0;
      t.reset();
      t = open_era(origin, md, bs);
      ASSERT_TRUE(t);
      if (any) ++era;  // the writeset left behind is archived
      ASSERT_EQ(t->current_era(), era);
      verify("after reopen");
    }
  }
  ASSERT_TRUE(t->flush().ok());
  t.reset();
  t = open_era(origin, md, bs);
  ASSERT_TRUE(t);
  if (std::any_of(model.begin(), model.end(), [&](uint32_t e) { return e == era; })) ++era;
  verify("at the end");
}

INSTANTIATE_TEST_SUITE_P(Seeds, EraModelTest, ::testing::Range(1, 7));

// Concurrent writers through the write-behind path and the fast path, with
// checkpoints running; at the end every block written is marked with an era
// at least the one current when its write was acknowledged.
TEST(EraTargetTest, ConcurrentWritersAndCheckpoints) {
  const uint64_t nr = 512;
  auto origin = std::make_shared<MemoryDevice>(nr * kBs);
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  std::vector<std::atomic<uint32_t>> lower_bound(nr);
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(w);
      // Each writer owns the blocks b % 4 == w, so the last data per block is known.
      while (!stop.load()) {
        const uint64_t b = (rng() % (nr / 4)) * 4 + static_cast<uint64_t>(w);
        const uint32_t era_before = t->current_era();
        ASSERT_TRUE(t->write(b * kBs, pattern(b, kBs), rng() % 4 == 0 ? uint32_t{kFua} : 0u).ok());
        lower_bound[b].store(std::max(lower_bound[b].load(), era_before));
      }
    });
  }
  for (int i = 0; i < 15; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(t->checkpoint().ok());
  }
  stop = true;
  for (auto& th : writers) th.join();
  ASSERT_TRUE(t->flush().ok());
  const uint32_t final_era = t->current_era();
  t.reset();
  uint32_t current = 0;
  auto eras = logical_eras(md, &current);
  ASSERT_EQ(eras.size(), nr);
  EXPECT_GE(current, final_era);
  for (uint64_t b = 0; b < nr; ++b) {
    EXPECT_GE(eras[b], lower_bound[b].load()) << "block " << b;
    EXPECT_LE(eras[b], current);
  }
}

TEST(EraTargetTest, MetadataSnapshotIsAStableView) {
  const uint64_t nr = 100;
  auto origin = std::make_shared<MemoryDevice>(nr * kBs);
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->write(1 * kBs, pattern(1, kBs), 0).ok());
  ASSERT_TRUE(t->checkpoint().ok());  // era 2
  ASSERT_TRUE(t->write(2 * kBs, pattern(2, kBs), 0).ok());
  auto reply = t->message("take_metadata_snap");
  ASSERT_TRUE(reply.ok()) << reply.status().message();
  EXPECT_NE(reply->find("held at block"), std::string::npos);
  EXPECT_EQ(t->take_metadata_snap().code(), EBUSY);
  const std::string where = std::to_string(Layout::for_blocks(nr).snap_writeset(0));
  EXPECT_NE(t->dm_status().find(" 2 " + where), std::string::npos) << t->dm_status();
  // Changes after the snapshot do not show in it.
  ASSERT_TRUE(t->write(3 * kBs, pattern(3, kBs), 0).ok());
  ASSERT_TRUE(t->checkpoint().ok());
  ASSERT_TRUE(t->write(4 * kBs, pattern(4, kBs), 0).ok());
  ASSERT_TRUE(t->flush().ok());
  auto snap = open_source(md, true);
  ASSERT_TRUE(snap.ok()) << snap.status().message();
  EXPECT_EQ(snap->current_era, 2u);
  auto runs = written_since(snap.value(), 2);
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ(runs->front(), (std::pair<uint64_t, uint64_t>{2, 3}));
  auto live = open_source(md, false);
  ASSERT_TRUE(live.ok());
  auto live_runs = written_since(live.value(), 2);
  ASSERT_TRUE(live_runs.ok());
  EXPECT_EQ(live_runs->size(), 1u);
  EXPECT_EQ(live_runs->front(), (std::pair<uint64_t, uint64_t>{2, 5}));
  ASSERT_TRUE(t->message("drop_metadata_snap").ok());
  EXPECT_EQ(t->drop_metadata_snap().code(), EINVAL);
  EXPECT_FALSE(open_source(md, true).ok());
  EXPECT_EQ(t->dm_status().back(), '-');
}

TEST(EraTargetTest, MetadataFailureIsStickyForWrites) {
  const uint64_t nr = 64;
  auto origin = std::make_shared<MemoryDevice>(nr * kBs);
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->write(0, pattern(1, kBs), kFua).ok());
  md->fail_next_flush();
  EXPECT_FALSE(t->write(1 * kBs, pattern(2, kBs), kFua).ok());
  EXPECT_FALSE(t->flush().ok());
  EXPECT_FALSE(t->write(0, pattern(3, kBs), 0).ok()) << "writes fail once the metadata failed";
  EXPECT_FALSE(t->checkpoint().ok());
  EXPECT_TRUE(t->stats().failed);
  Bytes got(kBs);
  EXPECT_TRUE(t->read(0, got).ok());
  EXPECT_EQ(got, pattern(1, kBs));
  EXPECT_NE(t->status_line().find("FAILED"), std::string::npos);
}

TEST(EraTargetTest, TornSuperblockFallsBackToTheOtherSlot) {
  const uint64_t nr = 64;
  auto origin = std::make_shared<MemoryDevice>(nr * kBs);
  auto md = std::make_shared<MemoryDevice>(meta_size(nr));
  {
    auto t = open_era(origin, md);
    ASSERT_TRUE(t);
    ASSERT_TRUE(t->checkpoint().ok());  // era 2, then 3
    ASSERT_TRUE(t->checkpoint().ok());
  }
  // Tear the newest superblock: its second sector is garbage.
  auto src = open_source(md, false);
  ASSERT_TRUE(src.ok());
  const uint64_t gen = src->sb.generation;
  Bytes slot0(kMetaBlockSize), slot1(kMetaBlockSize);
  ASSERT_TRUE(md->read(0, slot0).ok());
  ASSERT_TRUE(md->read(kMetaBlockSize, slot1).ok());
  const uint64_t newest = unpack_header(slot0).generation == gen ? 0 : 1;
  ASSERT_TRUE(md->write(newest * kMetaBlockSize + 512, pattern(5, 512), 0).ok());
  auto t = open_era(origin, md);
  ASSERT_TRUE(t);
  // The older slot is the checkpoint's first commit (era 3, fold of era 2
  // pending): recovery redoes the fold and stays in era 3.
  EXPECT_EQ(t->current_era(), 3u);
}

TEST(EraTargetTest, CorruptMetadataIsReportedNeverCrashes) {
  const uint64_t nr = 3000;
  auto origin = std::make_shared<MemoryDevice>(nr * kBs);
  auto pristine = std::make_shared<MemoryDevice>(meta_size(nr));
  {
    auto t = open_era(origin, pristine);
    ASSERT_TRUE(t);
    for (uint64_t b = 0; b < nr; b += 7) ASSERT_TRUE(t->write(b * kBs, pattern(b, 512), 0).ok());
    ASSERT_TRUE(t->checkpoint().ok());
    for (uint64_t b = 0; b < nr; b += 11) ASSERT_TRUE(t->write(b * kBs, pattern(b, 512), 0).ok());
    ASSERT_TRUE(t->flush().ok());
    ASSERT_TRUE(t->take_metadata_snap().ok());
  }
  const Layout l = Layout::for_blocks(nr);
  std::mt19937_64 rng(7);
  int damaged_reports = 0;
  for (int round = 0; round < 60; ++round) {
    auto md = std::make_shared<MemoryDevice>(pristine->geometry().size);
    ASSERT_TRUE(md->write(0, pristine->contents(), 0).ok());
    // Damage both slots of one pair, or random bytes anywhere.
    const int how = round % 3;
    uint64_t blk;
    if (how == 0) {
      blk = l.era_array(0, rng() % l.array_blocks);
      ASSERT_TRUE(md->write(blk * kMetaBlockSize + 100, pattern(round, 8), 0).ok());
      ASSERT_TRUE(md->write((blk + l.array_blocks) * kMetaBlockSize + 900, pattern(round, 8), 0).ok());
    } else if (how == 1) {
      blk = l.writeset(static_cast<int>(rng() % 2), 0, rng() % l.ws_blocks);
      ASSERT_TRUE(md->write(blk * kMetaBlockSize, pattern(round, kMetaBlockSize), 0).ok());
      ASSERT_TRUE(
          md->write((blk + l.ws_blocks) * kMetaBlockSize, pattern(round + 1, kMetaBlockSize), 0).ok());
    } else {
      for (int k = 0; k < 5; ++k) {
        blk = rng() % l.total;
        ASSERT_TRUE(md->write(blk * kMetaBlockSize + (rng() % 8) * 512, pattern(rng(), 512), 0).ok());
      }
    }
    auto checked = check_metadata(md);
    ASSERT_TRUE(checked.ok()) << checked.status().message();
    if (!checked->damage.empty()) ++damaged_reports;
    auto t = EraTarget::open(origin, md, EraOptions{});
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), EUCLEAN) << t.status().message();
    } else {
      (void)t.value()->checkpoint();  // may meet damaged era array blocks: an error, not a crash
    }
    auto src = open_source(md, false);
    if (src.ok()) (void)written_since(src.value(), 1);
  }
  EXPECT_GE(damaged_reports, 40);
}

}  // namespace
}  // namespace bowstack::era
