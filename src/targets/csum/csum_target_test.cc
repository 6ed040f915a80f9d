#include "targets/csum/csum_target.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/file_device.h"
#include "core/memory_device.h"
#include "targets/csum/csum_test_util.h"
#include "targets/csum/csum_verify.h"

namespace bowstack::csum {
namespace {

class CsumTargetTest : public CsumTest {};

TEST_F(CsumTargetTest, WritesReadBackAndUnwrittenBlocksReadAsZeroes) {
  std::mt19937_64 rng(1);
  auto t = open();
  ASSERT_TRUE(t.ok()) << t.status().message();
  CsumTarget& c = **t;
  EXPECT_EQ(c.geometry().logical_block_size, kBs);
  const Bytes a = fill(rng, 3 * kBs);
  ASSERT_TRUE(c.write(5 * kBs, a, 0).ok());
  Bytes got(3 * kBs);
  ASSERT_TRUE(c.read(5 * kBs, got).ok());  // read-your-writes, before any flush
  EXPECT_EQ(got, a);
  ASSERT_TRUE(c.flush().ok());
  Bytes z(2 * kBs);
  ASSERT_TRUE(c.read(100 * kBs, z).ok());
  EXPECT_EQ(z, Bytes(2 * kBs));
  EXPECT_EQ(c.stats().mismatches, 0u);
}

// Flushed data survives a clean close; a flipped byte in the image is an
// EIO for that block only, counted, and its neighbours read fine.
TEST_F(CsumTargetTest, CorruptionIsAnErrorForThatBlockOnly) {
  std::mt19937_64 rng(2);
  const Bytes a = fill(rng, 4 * kBs);
  {
    auto t = open();
    ASSERT_TRUE(t.ok()) << t.status().message();
    ASSERT_TRUE((*t)->write(10 * kBs, a, 0).ok());
    ASSERT_TRUE((*t)->flush().ok());
  }
  poke(img_, 12 * kBs + 77, 0x20);
  auto t = open();
  ASSERT_TRUE(t.ok()) << t.status().message();
  Bytes blk(kBs);
  Status s = (*t)->read(12 * kBs, blk);
  EXPECT_EQ(s.code(), EIO);
  EXPECT_NE(s.context().find("block 12"), std::string::npos) << s.context();
  for (uint64_t b : {10, 11, 13}) {
    ASSERT_TRUE((*t)->read(b * kBs, blk).ok()) << b;
    EXPECT_TRUE(std::equal(blk.begin(), blk.end(), a.begin() + static_cast<ptrdiff_t>((b - 10) * kBs)));
  }
  EXPECT_EQ((*t)->stats().mismatches, 1u);
  // Rewriting the block repairs it.
  const Bytes fresh = fill(rng, kBs);
  ASSERT_TRUE((*t)->write(12 * kBs, fresh, 0).ok());
  ASSERT_TRUE((*t)->read(12 * kBs, blk).ok());
  EXPECT_EQ(blk, fresh);
}

// verify=off (for measuring) returns what the device holds, checked or not.
TEST_F(CsumTargetTest, VerifyOffReadsWithoutChecking) {
  { ASSERT_TRUE(open().ok()); }
  poke(img_, 50 * kBs + 1, 0x01);
  CsumOptions o;
  o.verify = false;
  auto t = open(o);
  ASSERT_TRUE(t.ok());
  Bytes blk(kBs);
  ASSERT_TRUE((*t)->read(50 * kBs, blk).ok());
  EXPECT_EQ(blk[1], std::byte{0x01});
  EXPECT_EQ((*t)->stats().mismatches, 0u);
}

// Data written into a block that was never written (a hole) without csum
// knowing: the empty pair says zeroes, so it fails too.
TEST_F(CsumTargetTest, DataBehindAnEmptyPairFails) {
  { ASSERT_TRUE(open().ok()); }
  poke(img_, 50 * kBs + 1, 0x01);
  auto t = open();
  ASSERT_TRUE(t.ok());
  Bytes blk(kBs);
  EXPECT_EQ((*t)->read(50 * kBs, blk).code(), EIO);
}

// Rewrites before a flush need the data flushed between their checksums:
// every version reads back, and after a crash-like reopen (files copied
// while open) the flushed data verifies.
TEST_F(CsumTargetTest, RewritesBeforeAFlushAndAnUncleanReopen) {
  std::mt19937_64 rng(3);
  auto t = open();
  ASSERT_TRUE(t.ok());
  Bytes last;
  for (int i = 0; i < 20; ++i) {
    last = fill(rng, kBs);
    ASSERT_TRUE((*t)->write(7 * kBs, last, 0).ok());
    Bytes got(kBs);
    ASSERT_TRUE((*t)->read(7 * kBs, got).ok());
    ASSERT_EQ(got, last);
  }
  EXPECT_GT((*t)->stats().data_flushes, 0u);
  ASSERT_TRUE((*t)->flush().ok());
  // A copy of both files as a crash would leave them after the flush.
  const std::string crash = crash_copy();
  t = Status::Error(EINVAL, "closed");
  auto r = open_at(crash);
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes got(kBs);
  ASSERT_TRUE((*r)->read(7 * kBs, got).ok());
  EXPECT_EQ(got, last);
  nlohmann::json j;
  (*r)->describe(&j);
  EXPECT_EQ(j["unclean_opens"], 1);
}

TEST_F(CsumTargetTest, TrimAndZeroesReadAsZeroes) {
  std::mt19937_64 rng(4);
  auto t = open();
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->write(0, fill(rng, 8 * kBs), 0).ok());
  ASSERT_TRUE((*t)->trim(kBs + 100, 3 * kBs, 0).ok());  // whole blocks 2 and 3 only
  ASSERT_TRUE((*t)->write_zeroes(5 * kBs, kBs, 0).ok());
  ASSERT_TRUE((*t)->flush().ok());
  Bytes got(8 * kBs);
  ASSERT_TRUE((*t)->read(0, got).ok());
  for (uint64_t b : {2, 3, 5}) {
    EXPECT_TRUE(std::all_of(got.begin() + static_cast<ptrdiff_t>(b * kBs),
                            got.begin() + static_cast<ptrdiff_t>((b + 1) * kBs),
                            [](std::byte x) { return x == std::byte{0}; }))
        << b;
  }
}

TEST_F(CsumTargetTest, BlankMetadataOverExistingDataIsRefused) {
  {
    auto d = FileDevice::open(img_);
    ASSERT_TRUE((*d)->write(0, Bytes(kBs, std::byte{1}), 0).ok());
  }
  auto t = open();
  EXPECT_EQ(t.status().code(), EINVAL);
  EXPECT_NE(t.status().context().find("already holds data"), std::string::npos);
}

// Concurrent writers and readers on overlapping blocks: every read returns
// a version some writer wrote, never an error.
TEST_F(CsumTargetTest, ConcurrentWritesAndReadsNeverFailVerification) {
  auto t = open();
  ASSERT_TRUE(t.ok());
  CsumTarget& c = **t;
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> th;
  for (int w = 0; w < 3; ++w) {
    th.emplace_back([&, w] {
      std::mt19937_64 rng(w);
      for (int i = 0; i < 300; ++i) {
        const uint64_t b = rng() % 64;
        if (!c.write(b * kBs, Bytes(kBs, std::byte(static_cast<unsigned char>(rng()))), 0).ok()) ++errors;
        if (i % 50 == 0 && !c.flush().ok()) ++errors;
      }
    });
  }
  th.emplace_back([&] {
    std::mt19937_64 rng(9);
    Bytes blk(kBs);
    while (!stop) {
      if (!c.read((rng() % 64) * kBs, blk).ok()) ++errors;
    }
  });
  for (int i = 0; i < 3; ++i) th[i].join();
  stop = true;
  th[3].join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(c.stats().mismatches, 0u);
}

// Four threads rewriting and reading the same two blocks, in every mode: a
// read racing rewrites (old checksums retired by their flushes, or a single
// checksum in journal and rebuild) must never fail verification.
TEST_F(CsumTargetTest, RewritesOfOneBlockNeverFailAReadInAnyMode) {
  for (Mode mode : {Mode::kDual, Mode::kRebuild}) {
    fs::remove(meta_);
    fs::remove(img_);
    ASSERT_TRUE(FileDevice::create(img_, kSize).ok());
    FormatParams p;
    p.data_size = kSize;
    ASSERT_TRUE(FileDevice::create(meta_, *CsumMetadata::bytes_needed(p)).ok());
    CsumOptions o;
    o.mode = mode;
    o.mode_given = true;
    auto t = open(o);
    ASSERT_TRUE(t.ok()) << t.status().message();
    std::vector<std::thread> th;
    std::atomic<int> errors{0};
    for (int w = 0; w < 4; ++w) {
      th.emplace_back([&, w] {
        for (int k = 0; k < 150; ++k) {
          const Bytes d(2 * kBs, std::byte(static_cast<unsigned char>(w * 16 + k % 16)));
          if (!(*t)->write(40 * kBs + (k % 2) * kBs, d, 0).ok()) ++errors;
          Bytes got(kBs);
          if (!(*t)->read(41 * kBs, got).ok()) ++errors;
          if (k % 40 == 0 && !(*t)->flush().ok()) ++errors;
        }
      });
    }
    for (auto& x : th) x.join();
    EXPECT_EQ(errors.load(), 0) << mode_name(mode);
    EXPECT_EQ((*t)->stats().mismatches, 0u) << mode_name(mode);
  }
}

// Offline verification agrees with the target: clean after a clean close;
// a flipped byte is one mismatch with its block and byte offset; a damaged
// pair sector makes its 60 blocks unverifiable.
TEST_F(CsumTargetTest, OfflineVerifyFindsWhatReadsFind) {
  std::mt19937_64 rng(6);
  {
    auto t = open();
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->write(0, fill(rng, 200 * kBs), 0).ok());
  }
  auto verify = [&] {
    auto d = FileDevice::open(img_, FileDeviceOptions{.read_only = true});
    auto m = FileDevice::open(meta_, FileDeviceOptions{.read_only = true});
    return verify_volume(d.value(), m.value());
  };
  auto r = verify();
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->clean());
  EXPECT_EQ(r->blocks, kSize / kBs);
  EXPECT_TRUE(r->sb.clean());
  poke(img_, 42 * kBs + 9, 0x80);
  r = verify();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->mismatches.size(), 1u);
  EXPECT_EQ(r->mismatches[0].block, 42u);
  EXPECT_EQ(r->mismatches[0].offset, 42u * kBs);
  poke(meta_, (kPairsStart + 2) * kSector + 100, 0x01);  // the pair sector of blocks 120..179
  r = verify();
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->unverifiable.size(), 1u);
  EXPECT_EQ(r->unverifiable[0].first, 120u);
  EXPECT_EQ(r->unverifiable[0].end, 180u);
}

}  // namespace
}  // namespace bowstack::csum
