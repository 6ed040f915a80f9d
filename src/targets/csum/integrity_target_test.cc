// csum serving layout=integrity (mode rebuild): data reads back, unwritten
// blocks are zeroes, a damaged block fails alone, a clean close leaves a
// volume verify_integrity passes with RECALCULATING clear, an unclean one is
// recomputed (resuming an interrupted recomputation), and a kernel journal
// with entries is refused.
#include "targets/csum/integrity_target.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/core_test_util.h"
#include "core/device_tree.h"
#include "core/endian.h"
#include "core/file_device.h"
#include "core/memory_device.h"
#include "core/table.h"
#include "core/test_bytes.h"
#include "targets/csum/csum_target.h"
#include "targets/csum/integrity_volume.h"

namespace bowstack::csum {
namespace {

using namespace integrity;
// csum has names of its own for these (layout=csum's).
using integrity::kSector;
using integrity::Layout;
using integrity::Superblock;
using Bytes = std::vector<std::byte>;
constexpr uint32_t kBs = 4096;
constexpr uint64_t kSize = 8 << 20;

using bowstack::testdata::random_bytes;

// Areas of 4096 sectors (512 blocks), so 8 MiB has several and requests
// can cross a tag run.
integrity::FormatParams small_areas() {
  return {.block_size = kBs, .journal_sections = 1, .log2_interleave_sectors = 12};
}

std::shared_ptr<MemoryDevice> make_volume(integrity::FormatParams p = small_areas()) {
  auto dev = std::make_shared<MemoryDevice>(kSize);
  auto sb = format_integrity(*dev, p);
  EXPECT_TRUE(sb.ok()) << sb.status().message();
  return dev;
}

// The device as a crash would leave it now: a copy of what was written.
std::shared_ptr<MemoryDevice> crash_copy(const MemoryDevice& dev) {
  auto copy = std::make_shared<MemoryDevice>(dev.geometry().size);
  EXPECT_TRUE(copy->write(0, dev.contents(), 0).ok());
  return copy;
}

Superblock superblock_of(BlockDevice& dev) {
  Bytes b(kSbBytes);
  EXPECT_TRUE(dev.read(0, b).ok());
  auto sb = decode_superblock(b, dev.geometry().size / kSector);
  EXPECT_TRUE(sb.ok()) << sb.status().message();
  return sb.ok() ? *sb : Superblock{};
}

void flip(BlockDevice& dev, uint64_t offset) {
  std::byte b[512];
  const uint64_t at = offset / 512 * 512;
  ASSERT_TRUE(dev.read(at, b).ok());
  b[offset - at] ^= std::byte{0x40};
  ASSERT_TRUE(dev.write(at, b, 0).ok());
}

Result<std::shared_ptr<IntegrityTarget>> open(std::shared_ptr<BlockDevice> dev, IntegrityOptions o = {}) {
  return IntegrityTarget::open(std::move(dev), std::move(o));
}

TEST(IntegrityTarget, WritesReadBackAndUnwrittenBlocksReadAsZeroes) {
  auto dev = make_volume();
  auto t = open(dev);
  ASSERT_TRUE(t.ok()) << t.status().message();
  const Superblock sb = superblock_of(*dev);
  EXPECT_EQ((*t)->geometry().size, sb.provided_data_sectors * kSector);
  EXPECT_LT((*t)->geometry().size, kSize);
  EXPECT_EQ((*t)->geometry().logical_block_size, kBs);
  std::mt19937_64 rng(1);
  // Blocks 508..515 straddle the first area's end (512 blocks).
  const Bytes a = random_bytes(rng, 8 * kBs);
  ASSERT_TRUE((*t)->write(508 * kBs, a, 0).ok());
  Bytes got(8 * kBs);
  ASSERT_TRUE((*t)->read(508 * kBs, got).ok());
  EXPECT_EQ(got, a);
  // Where the data went: area 1's data follows its tag run.
  Bytes raw(kBs);
  ASSERT_TRUE(dev->read((*t)->layout().data_sector(512 * 8) * kSector, raw).ok());
  EXPECT_TRUE(std::equal(raw.begin(), raw.end(), a.begin() + 4 * kBs));
  Bytes z(kBs);
  ASSERT_TRUE((*t)->read(1000 * kBs, z).ok());
  EXPECT_EQ(z, Bytes(kBs));
  ASSERT_TRUE((*t)->write_zeroes(509 * kBs, kBs, 0).ok());
  ASSERT_TRUE((*t)->trim(510 * kBs + 100, 2 * kBs, 0).ok());  // only block 511 is whole
  ASSERT_TRUE((*t)->flush().ok());
  ASSERT_TRUE((*t)->read(508 * kBs, got).ok());
  Bytes want = a;
  std::fill(want.begin() + 1 * kBs, want.begin() + 2 * kBs, std::byte{0});
  std::fill(want.begin() + 3 * kBs, want.begin() + 4 * kBs, std::byte{0});
  EXPECT_EQ(got, want);
  nlohmann::json j;
  (*t)->describe(&j);
  EXPECT_EQ(j["layout"], "integrity");
  EXPECT_EQ(j["mode"], "rebuild");
  EXPECT_EQ(j["block_size"], kBs);
  EXPECT_EQ(j["size"], sb.provided_data_sectors * kSector);
  EXPECT_EQ(j["mismatches"], 0);
  EXPECT_EQ(j["recalculating"], true);
  EXPECT_EQ(j["failed"], false);
}

TEST(IntegrityTarget, OpenSetsRecalculatingAndACleanCloseClearsIt) {
  auto dev = make_volume();
  std::mt19937_64 rng(2);
  {
    auto t = open(dev);
    ASSERT_TRUE(t.ok()) << t.status().message();
    // Durable before the first write.
    const Superblock sb = superblock_of(*crash_copy(*dev));
    EXPECT_TRUE(sb.recalculating());
    EXPECT_EQ(sb.recalc_sector, 0u);
    for (uint64_t b = 0; b < (*t)->geometry().size / kBs; b += 97) {
      ASSERT_TRUE((*t)->write(b * kBs, random_bytes(rng, kBs), 0).ok());
    }
  }
  const Superblock sb = superblock_of(*dev);
  EXPECT_FALSE(sb.recalculating());
  EXPECT_EQ(sb.version, kVersionFixedPadding);
  auto v = verify_integrity(dev);
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_TRUE(v->clean());
  EXPECT_EQ(v->blocks, sb.provided_data_sectors / 8);
}

TEST(IntegrityTarget, AFlippedByteFailsThatBlockOnly) {
  auto dev = make_volume();
  std::mt19937_64 rng(3);
  const Bytes a = random_bytes(rng, 16 * kBs);
  {
    auto t = open(dev);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->write(0, a, 0).ok());
  }
  const Layout l = *Layout::of(superblock_of(*dev), kSize / kSector);
  flip(*dev, l.data_sector(7 * 8) * kSector + 123);
  auto t = open(dev);
  ASSERT_TRUE(t.ok());
  Bytes one(kBs);
  Status s = (*t)->read(7 * kBs, one);
  EXPECT_EQ(s.code(), EIO);
  EXPECT_NE(s.context().find("block 7"), std::string::npos) << s.context();
  ASSERT_TRUE((*t)->read(6 * kBs, one).ok());
  EXPECT_TRUE(std::equal(one.begin(), one.end(), a.begin() + 6 * kBs));
  ASSERT_TRUE((*t)->read(8 * kBs, one).ok());
  Bytes all(16 * kBs);
  EXPECT_EQ((*t)->read(0, all).code(), EIO);
  EXPECT_EQ((*t)->stats().mismatches, 2u);
  // Rewriting the block repairs it.
  ASSERT_TRUE((*t)->write(7 * kBs, Bytes(kBs, std::byte{7}), 0).ok());
  ASSERT_TRUE((*t)->read(7 * kBs, one).ok());
  EXPECT_EQ(one, Bytes(kBs, std::byte{7}));
}

TEST(IntegrityTarget, ADiscardTagReadsUnverifiedAndIsCounted) {
  auto dev = make_volume();
  const Layout l = *Layout::of(superblock_of(*dev), kSize / kSector);
  // Block 3: data the kernel never wrote a tag for, tag the discard marker.
  ASSERT_TRUE(dev->write(l.data_sector(3 * 8) * kSector, Bytes(kBs, std::byte{0x55}), 0).ok());
  Bytes sector(512);
  const uint64_t at = l.tag_offset(3 * 8) / 512 * 512;
  ASSERT_TRUE(dev->read(at, sector).ok());
  std::fill_n(sector.begin() + static_cast<ptrdiff_t>(l.tag_offset(3 * 8) - at), 4,
              std::byte{kDiscardFiller});
  ASSERT_TRUE(dev->write(at, sector, 0).ok());
  auto t = open(dev);
  ASSERT_TRUE(t.ok());
  Bytes got(4 * kBs);
  ASSERT_TRUE((*t)->read(0, got).ok());
  EXPECT_EQ((*t)->stats().discard_tags_read, 1u);
  EXPECT_EQ((*t)->stats().mismatches, 0u);
}

TEST(IntegrityTarget, AnUncleanStopIsRecomputedBeforeServing) {
  auto dev = make_volume();
  std::mt19937_64 rng(4);
  const Bytes a = random_bytes(rng, 4 * kBs);
  auto t = open(dev);
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->write(20 * kBs, a, 0).ok());
  Bytes got(4 * kBs);
  ASSERT_TRUE((*t)->read(20 * kBs, got).ok());  // applied: the data is on the device
  auto crashed = crash_copy(*dev);
  // A torn write the crash left: its damage becomes "good", as the mode says.
  const Layout l = (*t)->layout();
  flip(*crashed, l.data_sector(21 * 8) * kSector + 9);
  auto v = verify_integrity(crashed);
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->unverifiable.empty());  // RECALCULATING from sector 0: nothing verifiable
  auto r = open(crashed);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const uint64_t blocks = (*r)->geometry().size / kBs;
  EXPECT_EQ((*r)->stats().recomputed_blocks, blocks);
  ASSERT_TRUE((*r)->read(20 * kBs, got).ok());
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + kBs, a.begin()));
  EXPECT_FALSE(std::equal(got.begin() + kBs, got.begin() + 2 * kBs, a.begin() + kBs));
  r->reset();
  EXPECT_FALSE(superblock_of(*crashed).recalculating());
  v = verify_integrity(crashed);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
}

TEST(IntegrityTarget, AnInterruptedRecomputationResumesWhereItStopped) {
  auto dev = make_volume();
  auto t = open(dev);
  ASSERT_TRUE(t.ok());
  auto crashed = crash_copy(*dev);
  const uint64_t area_blocks = 512;
  // Each area costs a tag-run write and a superblock write: the fifth write
  // (area 2's run) goes through, the sixth (its superblock) fails.
  crashed->fail_writes_after(5);
  auto r = open(crashed, IntegrityOptions{.recalc_persist_every = std::chrono::milliseconds(0)});
  ASSERT_FALSE(r.ok());
  crashed->fail_writes_after(-1);
  Superblock sb = superblock_of(*crashed);
  EXPECT_TRUE(sb.recalculating());
  EXPECT_EQ(sb.recalc_sector, 2 * area_blocks * 8);
  r = open(crashed);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->stats().recomputed_blocks, (*r)->geometry().size / kBs - 2 * area_blocks);
}

TEST(IntegrityTarget, AJournalWithEntriesIsRefused) {
  auto dev = make_volume();
  // Entry 0 of section 0 in use: the high half of its sector number is no
  // longer the unused marker.
  Bytes s(512);
  ASSERT_TRUE(dev->read(kSbBytes, s).ok());
  store_le(s, 4, 0, 4);
  ASSERT_TRUE(dev->write(kSbBytes, s, 0).ok());
  auto t = open(dev);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), ENOTSUP);
  EXPECT_NE(t.status().context().find("replay it with the kernel"), std::string::npos);
  EXPECT_FALSE(superblock_of(*dev).recalculating());  // nothing written
}

TEST(IntegrityTarget, AJournalInAnotherSequenceIsReinitialised) {
  auto dev = make_volume();
  const Layout l = *Layout::of(superblock_of(*dev), kSize / kSector);
  Bytes section(size_t{l.journal_section_sectors} * kSector);
  encode_empty_journal_section(l, 0, 2, section);
  ASSERT_TRUE(dev->write(kSbBytes, section, 0).ok());
  bool canonical = true;
  ASSERT_TRUE(check_journal(*dev, l, &canonical).ok());
  EXPECT_FALSE(canonical);
  auto t = open(dev);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(check_journal(*dev, l, &canonical).ok());
  EXPECT_TRUE(canonical);
}

TEST(IntegrityTarget, ConcurrentWritesOfOneBlockLeaveMatchingTags) {
  auto dev = make_volume();
  {
    auto t = open(dev);
    ASSERT_TRUE(t.ok());
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        for (int k = 0; k < 200; ++k) {
          const Bytes d(2 * kBs, std::byte(static_cast<unsigned char>(i * 16 + k % 16)));
          EXPECT_TRUE((*t)->write(40 * kBs + (k % 2) * kBs, d, 0).ok());
          Bytes got(kBs);
          EXPECT_TRUE((*t)->read(41 * kBs, got).ok());
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ((*t)->stats().mismatches, 0u);
  }
  auto v = verify_integrity(dev);
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
}

TEST(IntegrityTarget, ReadOnlyWritesNothingAndReadsUncomputedBlocksUnverified) {
  testing::TempDir dir;
  const std::string img = dir / "int.img";
  ASSERT_TRUE(FileDevice::create(img, kSize).ok());
  {
    auto f = FileDevice::open(img);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(format_integrity(*f.value(), small_areas()).ok());
    auto t = open(f.value());
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->write(0, Bytes(kBs, std::byte{1}), kFua).ok());
    // Left RECALCULATING, as by a crash: the copy is taken while open.
    std::filesystem::copy_file(img, dir / "crash.img");
  }
  {
    // Whether block 0's new tag reached the copy or not, its data now
    // matches neither.
    auto w = FileDevice::open(dir / "crash.img");
    ASSERT_TRUE(w.ok());
    flip(*w.value(), Layout::of(superblock_of(*w.value()), kSize / kSector)->data_sector(0) * kSector);
  }
  auto f = FileDevice::open(dir / "crash.img", FileDeviceOptions{.read_only = true});
  ASSERT_TRUE(f.ok());
  auto t = open(f.value());
  ASSERT_TRUE(t.ok()) << t.status().message();
  Bytes got(2 * kBs);
  ASSERT_TRUE((*t)->read(0, got).ok());
  EXPECT_EQ((*t)->stats().unverified_reads, 1u);  // block 0; block 1 is zeroes with its format tag
  EXPECT_EQ((*t)->write(0, got, 0).code(), EROFS);
  t->reset();
  EXPECT_TRUE(superblock_of(*f.value()).recalculating());
}

TEST(IntegrityTarget, TheCsumTargetDispatchesOnLayout) {
  testing::TempDir dir;
  const std::string img = dir / "int.img";
  ASSERT_TRUE(FileDevice::create(img, kSize).ok());
  {
    auto f = FileDevice::open(img);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(format_integrity(*f.value(), small_areas()).ok());
  }
  TargetRegistry reg;
  reg.add(CsumTarget::info());
  auto build = [&](const std::string& params, const std::string& metadata) {
    auto table = parse_table_text(R"({"target":"csum","params":{)" + params +
                                      R"(},"devices":{"data":{"file":")" + img + "\"}" + metadata + "}}",
                                  reg);
    EXPECT_TRUE(table.ok()) << table.status().context();
    return DeviceTree::build(*table, reg, {});
  };
  {
    auto t = build(R"("layout":"integrity")", R"(,"metadata":null)");
    ASSERT_TRUE(t.ok()) << t.status().context();
    EXPECT_LT((*t)->top()->geometry().size, kSize);
  }
  {
    // Left out, the slot names IMAGE.csum, which is neither opened nor created.
    auto t = build(R"("layout":"integrity","mode":"rebuild")", "");
    ASSERT_TRUE(t.ok()) << t.status().context();
    EXPECT_FALSE(std::filesystem::exists(img + ".csum"));
  }
  EXPECT_EQ(build(R"("layout":"integrity","mode":"dual")", "").status().code(), EINVAL);
  EXPECT_EQ(build(R"("layout":"integrity","mode":"journal")", "").status().code(), ENOTSUP);
  EXPECT_EQ(build(R"("layout":"integrity","block_size":512)", "").status().code(), EINVAL);
  EXPECT_EQ(build(R"("layout":"ext4")", "").status().code(), EINVAL);
  EXPECT_EQ(build(R"("layout":"csum")", R"(,"metadata":null)").status().code(), EINVAL);
}

}  // namespace
}  // namespace bowstack::csum
