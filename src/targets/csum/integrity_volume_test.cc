#include "targets/csum/integrity_volume.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/endian.h"
#include "core/memory_device.h"

namespace bowstack::csum::integrity {
namespace {

using Bytes = std::vector<std::byte>;

struct Volume {
  std::shared_ptr<MemoryDevice> dev;
  Superblock sb;
  Layout l;
};

Volume make(uint64_t size, FormatParams p = {}) {
  Volume v;
  v.dev = std::make_shared<MemoryDevice>(size);
  auto sb = format_integrity(*v.dev, p);
  EXPECT_TRUE(sb.ok()) << sb.status().message();
  v.sb = *sb;
  v.l = *Layout::of(v.sb, size / kSector);
  return v;
}

void flip(MemoryDevice& dev, uint64_t offset, std::byte mask = std::byte{0x40}) {
  std::byte b[512];
  const uint64_t at = offset / 512 * 512;
  ASSERT_TRUE(dev.read(at, b).ok());
  b[offset - at] ^= mask;
  ASSERT_TRUE(dev.write(at, b, 0).ok());
}

// Writes block `b` with `fill` bytes and its correct tag, as the kernel would.
void write_block(const Volume& v, uint64_t b, std::byte fill) {
  const uint64_t l = b * v.l.sectors_per_block();
  Bytes data(v.l.block_size(), fill);
  ASSERT_TRUE(v.dev->write(v.l.data_sector(l) * kSector, data, 0).ok());
  std::byte tag[4];
  store_le(tag, 0, tag_of(l, data), 4);
  // Tags are not sector-aligned: read-modify-write their sector.
  std::byte sector[512];
  const uint64_t at = v.l.tag_offset(l) / 512 * 512;
  ASSERT_TRUE(v.dev->read(at, sector).ok());
  std::copy(tag, tag + 4, sector + (v.l.tag_offset(l) - at));
  ASSERT_TRUE(v.dev->write(at, sector, 0).ok());
}

IntegrityVerifyReport verify(const Volume& v) {
  auto r = verify_integrity(v.dev);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : IntegrityVerifyReport{};
}

TEST(IntegrityVolume, FormatThenVerifyClean) {
  const Volume v = make(16 << 20, {.journal_sections = 4});
  EXPECT_EQ(v.sb.provided_data_sectors, 31160u);
  EXPECT_EQ(v.sb.version, 4);
  EXPECT_EQ(v.sb.flags, kFlagFixedPadding);
  EXPECT_GE(v.dev->flush_count(), 2u);
  Bytes sb(kSbBytes);
  ASSERT_TRUE(v.dev->read(0, sb).ok());
  auto back = decode_superblock(sb, 32768);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, v.sb);
  uint64_t calls = 0;
  auto r = verify_integrity(v.dev, [&](uint64_t done, uint64_t total) {
    ++calls;
    EXPECT_EQ(total, 3895u);
    EXPECT_LE(done, total);
  });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->blocks, 3895u);
  EXPECT_TRUE(r->clean());
  EXPECT_EQ(r->discarded, 0u);
  EXPECT_GE(calls, 1u);
}

TEST(IntegrityVolume, DefaultJournalSizeFollowsTheKernel) {
  const Volume v = make(64 << 20);
  // The kernel's journal: 131072 >> 7 = 1024 sectors, 2 whole sections of 392.
  EXPECT_EQ(v.sb.journal_sections, 2u);
  EXPECT_EQ(v.l.initial_sectors, 792u);
  EXPECT_EQ(v.sb.provided_data_sectors, 3u * 32768 + (131072 - (792 + 3 * 32800 + 32)));
  EXPECT_TRUE(verify(v).clean());
}

TEST(IntegrityVolume, WrittenBlocksVerifyAndDamageIsNamed) {
  const Volume v = make(16 << 20, {.journal_sections = 4});
  write_block(v, 7, std::byte{0xab});
  write_block(v, 3894, std::byte{0x11});  // the last block
  EXPECT_TRUE(verify(v).clean());

  flip(*v.dev, v.l.data_sector(100 * 8) * kSector + 17);  // a data byte of block 100
  flip(*v.dev, v.l.tag_offset(200 * 8) + 2);              // a byte of block 200's tag
  flip(*v.dev, v.l.data_sector(3894 * 8) * kSector + 4095);
  const auto r = verify(v);
  ASSERT_EQ(r.mismatches.size(), 3u);
  EXPECT_EQ(r.mismatches[0].block, 100u);
  EXPECT_EQ(r.mismatches[0].offset, 100u * 4096);
  EXPECT_EQ(r.mismatches[1].block, 200u);
  EXPECT_EQ(r.mismatches[2].block, 3894u);
  EXPECT_EQ(r.blocks, 3892u);
}

TEST(IntegrityVolume, SmallBlocksAcrossAreas) {
  // 512-byte blocks, interleave 2^12: many areas, each with its own tag run.
  const Volume v = make(8 << 20, {.block_size = 512, .journal_sections = 2, .log2_interleave_sectors = 12});
  const uint64_t b = 4096 * 3 + 5;  // area 3
  write_block(v, b, std::byte{0x5c});
  EXPECT_TRUE(verify(v).clean());
  flip(*v.dev, v.l.data_sector(b) * kSector);
  const auto r = verify(v);
  ASSERT_EQ(r.mismatches.size(), 1u);
  EXPECT_EQ(r.mismatches[0].block, b);
  EXPECT_EQ(r.mismatches[0].offset, b * 512);
}

TEST(IntegrityVolume, DiscardTagsAreAcceptedAndCounted) {
  const Volume v = make(16 << 20, {.journal_sections = 4});
  flip(*v.dev, v.l.data_sector(9 * 8) * kSector);  // data that no longer matches...
  const std::byte f6[4] = {std::byte{0xf6}, std::byte{0xf6}, std::byte{0xf6}, std::byte{0xf6}};
  std::byte sector[512];
  const uint64_t at = v.l.tag_offset(9 * 8) / 512 * 512;
  ASSERT_TRUE(v.dev->read(at, sector).ok());
  std::copy(f6, f6 + 4, sector + (v.l.tag_offset(9 * 8) - at));  // ...under a discard tag
  ASSERT_TRUE(v.dev->write(at, sector, 0).ok());
  const auto r = verify(v);
  EXPECT_TRUE(r.clean());
  EXPECT_EQ(r.discarded, 1u);
  EXPECT_EQ(r.blocks, 3894u);
}

TEST(IntegrityVolume, RecalculatingLeavesTheRestUnverifiable) {
  Volume v = make(16 << 20, {.journal_sections = 4});
  v.sb.flags |= kFlagRecalculating;
  v.sb.recalc_sector = 8000;
  Bytes sb(kSbBytes);
  encode_superblock(v.sb, sb);
  ASSERT_TRUE(v.dev->write(0, sb, 0).ok());
  flip(*v.dev, v.l.data_sector(2000 * 8) * kSector);  // above recalc_sector: not looked at
  const auto r = verify(v);
  EXPECT_EQ(r.blocks, 1000u);
  EXPECT_TRUE(r.mismatches.empty());
  ASSERT_EQ(r.unverifiable.size(), 1u);
  EXPECT_EQ(r.unverifiable[0].first, 1000u);
  EXPECT_EQ(r.unverifiable[0].end, 3895u);
  EXPECT_FALSE(r.clean());
}

TEST(IntegrityVolume, RefusesDamagedOrForeignVolumes) {
  const Volume v = make(16 << 20, {.journal_sections = 4});
  auto code = [&] {
    auto r = verify_integrity(v.dev);
    return r.ok() ? 0 : r.status().code();
  };
  // A journal entry in use: the kernel would replay it over the data.
  const uint64_t entry = (kSbSectors + 392 + 1) * kSector + 4;  // section 1, sector 1, entry 1
  flip(*v.dev, entry, std::byte{0xff});
  EXPECT_EQ(code(), ENOTSUP);
  flip(*v.dev, entry, std::byte{0xff});
  EXPECT_EQ(code(), 0);
  // A commit id of no sequence: damaged.
  flip(*v.dev, (kSbSectors + 5) * kSector + 504);
  EXPECT_EQ(code(), EUCLEAN);
  flip(*v.dev, (kSbSectors + 5) * kSector + 504);
  // Superblock: a tag size we do not implement, a damaged field, no magic.
  flip(*v.dev, 10, std::byte{0x24});  // tag size 32
  EXPECT_EQ(code(), ENOTSUP);
  flip(*v.dev, 10, std::byte{0x24});
  flip(*v.dev, 15, std::byte{0x80});  // journal_sections 2^31 + 4
  EXPECT_EQ(code(), EUCLEAN);
  flip(*v.dev, 15, std::byte{0x80});
  flip(*v.dev, 0, std::byte{0x01});
  EXPECT_EQ(code(), EMEDIUMTYPE);
  EXPECT_EQ(verify_integrity(std::make_shared<MemoryDevice>(1 << 20)).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(verify_integrity(std::make_shared<MemoryDevice>(512)).status().code(), EMEDIUMTYPE);
}

TEST(IntegrityVolume, FormatRefusesBadParametersAndReportsWriteErrors) {
  MemoryDevice small(128 << 10);  // less than superblock and journal
  EXPECT_EQ(format_integrity(small, {}).status().code(), EINVAL);
  MemoryDevice dev(16 << 20);
  EXPECT_EQ(format_integrity(dev, {.block_size = 8192}).status().code(), EINVAL);
  EXPECT_EQ(format_integrity(dev, {.block_size = 1000}).status().code(), EINVAL);
  EXPECT_EQ(format_integrity(dev, {.journal_sections = 100}).status().code(), EINVAL);
  dev.fail_writes_after(3);
  EXPECT_EQ(format_integrity(dev, {}).status().code(), EIO);
  dev.fail_writes_after(-1);
  // The interrupted format left no superblock behind.
  EXPECT_EQ(verify_integrity(std::shared_ptr<BlockDevice>(&dev, [](BlockDevice*) {})).status().code(),
            EMEDIUMTYPE);
}

}  // namespace
}  // namespace bowstack::csum::integrity
