#include "targets/csum/integrity_format.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/endian.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum::integrity {
namespace {

using Bytes = std::vector<std::byte>;

Layout worked_example() {
  auto l = Layout::compute(3, kDefaultLog2Interleave, true, 4, (16u << 20) / kSector);
  EXPECT_TRUE(l.ok()) << l.status().message();
  return *l;
}

Bytes encoded(const Superblock& sb) {
  Bytes b(kSbBytes);
  encode_superblock(sb, b);
  return b;
}

// docs/format/csum.md section 11 and the reference page, number for number.
TEST(IntegrityFormat, WorkedExample) {
  const Layout l = worked_example();
  EXPECT_EQ(l.journal_entry_size, 80u);  // 8 + 8 * 8 + 4, rounded up to 8
  EXPECT_EQ(l.journal_entries_per_sector, 6u);
  EXPECT_EQ(l.journal_section_entries, 48u);
  EXPECT_EQ(l.journal_section_sectors, 392u);
  EXPECT_EQ(l.initial_sectors, 1576u);
  EXPECT_EQ(l.metadata_run, 32u);
  EXPECT_EQ(l.provided_data_sectors, 31160u);
  // Block 0: tag at the head of area 0, data after the tag run.
  EXPECT_EQ(l.tag_offset(0), 1576u * 512);
  EXPECT_EQ(l.data_sector(0), 1608u);
  // The last block ends on the device's last sector.
  const uint64_t last = l.provided_data_sectors - 8;
  EXPECT_EQ(l.data_sector(last) + 8, 32768u);
  EXPECT_EQ(l.tag_offset(last), 1576u * 512 + (last / 8) * 4);
  EXPECT_TRUE(l.fits(l.provided_data_sectors));
  EXPECT_FALSE(l.fits(l.provided_data_sectors + 8));
  EXPECT_EQ(format_log2_blocks_per_bitmap_bit(l), 12u);  // 32768 sectors per bit
}

TEST(IntegrityFormat, SeveralAreasAndSmallBlocks) {
  // 64 MiB, 4096-byte blocks, one section: areas of 32 + 32768 sectors from
  // sector 400; the fourth area holds 131072 - (400 + 3 * 32800 + 32) sectors.
  auto l = Layout::compute(3, 15, true, 1, 131072);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->initial_sectors, 400u);
  EXPECT_EQ(l->provided_data_sectors, 3u * 32768 + 32240);
  EXPECT_EQ(l->tag_offset(32768), (400u + 32800) * 512);
  EXPECT_EQ(l->data_sector(32768 + 8), 400u + 32800 + 32 + 8);
  // 512-byte blocks: 24-byte entries, 21 a sector, 168 a section; a full
  // area's tags take 128 KiB.
  auto s = Layout::compute(0, 15, true, 2, 131072);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->journal_section_sectors, 176u);
  EXPECT_EQ(s->initial_sectors, 8u + 352);
  EXPECT_EQ(s->metadata_run, 256u);
  EXPECT_EQ(s->tag_offset(5), (8u + 352) * 512 + 20);
  // Without FIXED_PADDING runs are padded to 128 KiB.
  auto old = Layout::compute(3, 15, false, 1, 131072);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(old->metadata_run, 256u);
}

TEST(IntegrityFormat, ProvidedSectorsIsTheLargestThatFits) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 300; ++i) {
    const uint64_t dev = 2000 + rng() % (uint64_t{1} << (12 + i % 24));
    const uint32_t spb = static_cast<uint32_t>(rng() % 4);
    const uint32_t il = 3 + static_cast<uint32_t>(rng() % 16);
    auto l = Layout::compute(spb, il, (i & 1) != 0, 1, dev);
    if (!l.ok()) continue;
    EXPECT_EQ(l->provided_data_sectors % 8, 0u);
    EXPECT_TRUE(l->fits(l->provided_data_sectors));
    EXPECT_FALSE(l->fits(l->provided_data_sectors + 8)) << dev << " " << spb << " " << il;
    EXPECT_LT(l->data_sector(l->provided_data_sectors - 1), dev);
  }
  EXPECT_EQ(Layout::compute(3, 15, true, 1, 400).status().code(), EINVAL);  // journal fills it
  EXPECT_EQ(Layout::compute(4, 15, true, 1, 1 << 20).status().code(), EINVAL);
  EXPECT_EQ(Layout::compute(3, 2, true, 1, 1 << 20).status().code(), EINVAL);
  EXPECT_EQ(Layout::compute(3, 15, true, 0, 1 << 20).status().code(), EINVAL);
  // Sector numbers whose byte offsets would wrap (found by fuzzing).
  EXPECT_EQ(Layout::compute(3, 31, true, 5, UINT64_MAX / kSector + 1).status().code(), EINVAL);
  EXPECT_TRUE(Layout::compute(3, 31, true, 5, UINT64_MAX / kSector).ok());
}

TEST(IntegrityFormat, DefaultJournalSections) {
  EXPECT_EQ(default_journal_sections(3, 32768), 1u);                // 256 sectors: less than a section
  EXPECT_EQ(default_journal_sections(3, uint64_t{1} << 21), 41u);   // 1 GiB: 16384 / 392
  EXPECT_EQ(default_journal_sections(3, uint64_t{1} << 40), 334u);  // capped at 131072 sectors
  EXPECT_EQ(default_journal_sections(0, uint64_t{1} << 21), 93u);   // 16384 / 176
}

TEST(IntegrityFormat, SuperblockBytesAndRoundTrip) {
  const Layout l = worked_example();
  const Superblock sb = new_superblock(l);
  const Bytes b = encoded(sb);
  const unsigned char head[32] = {'i',  'n',  't', 'e', 'g', 'r', 't', 0,  // magic
                                  4,    15,   4,   0,                      // version, interleave, tag size
                                  4,    0,    0,   0,                      // journal_sections
                                  0xb8, 0x79, 0,   0,   0,   0,   0,   0,  // provided_data_sectors 31160
                                  8,    0,    0,   0,                      // flags FIXED_PADDING
                                  3,    12,   0,   0};                     // log2 spb, bitmap bit, pad
  for (int i = 0; i < 32; ++i) EXPECT_EQ(b[i], std::byte{head[i]}) << i;
  for (size_t i = 32; i < b.size(); ++i) ASSERT_EQ(b[i], std::byte{0}) << i;
  auto back = decode_superblock(b, 32768);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, sb);
  // Only the first 64 bytes matter.
  back = decode_superblock(std::span<const std::byte>(b).first(kSbUsedBytes), 32768);
  ASSERT_TRUE(back.ok());
  Superblock r = sb;
  r.flags |= kFlagRecalculating;
  r.recalc_sector = 4096;
  back = decode_superblock(encoded(r), 32768);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, r);
  // A device that grew keeps its export until the kernel resizes it.
  EXPECT_TRUE(decode_superblock(b, 65536).ok());
}

TEST(IntegrityFormat, RejectsForeignAndDamagedSuperblocks) {
  const Superblock sb = new_superblock(worked_example());
  auto code = [](const Superblock& s, uint64_t dev = 32768) {
    auto r = decode_superblock(encoded(s), dev);
    return r.ok() ? 0 : r.status().code();
  };
  EXPECT_EQ(decode_superblock(Bytes(kSbBytes), 32768).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(decode_superblock(Bytes(3), 32768).status().code(), EMEDIUMTYPE);
  Bytes csum(kSbBytes, std::byte{0x5a});
  EXPECT_EQ(decode_superblock(csum, 32768).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(decode_superblock(std::span<const std::byte>(encoded(sb)).first(20), 32768).status().code(),
            EUCLEAN);

  auto with = [&](auto change) {
    Superblock s = sb;
    change(s);
    return s;
  };
  EXPECT_EQ(code(with([](Superblock& s) { s.version = 0; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.version = 7; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.version = 5; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.version = 6; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.flags |= kFlagFixedHmac; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.flags |= kFlagJournalMac; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.flags |= kFlagInline; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.flags |= kFlagDirtyBitmap; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.flags |= 0x100; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.tag_size = 32; })), ENOTSUP);
  EXPECT_EQ(code(with([](Superblock& s) { s.tag_size = 0; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.log2_interleave_sectors = 0; })), ENOTSUP);  // metadata device
  EXPECT_EQ(code(with([](Superblock& s) { s.log2_interleave_sectors = 40; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.log2_sectors_per_block = 4; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.journal_sections = 0; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.journal_sections = 1u << 31; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.provided_data_sectors = 0; })), EUCLEAN);
  EXPECT_EQ(code(with([](Superblock& s) { s.provided_data_sectors = 31164; })), EUCLEAN);  // not whole blocks
  EXPECT_EQ(code(with([](Superblock& s) { s.provided_data_sectors = 31168; })), EUCLEAN);  // past the end
  EXPECT_EQ(code(sb, 30000), EUCLEAN);                                                     // device cut short
}

// Any bytes: a value or an error, and what decodes re-encodes to itself.
TEST(IntegrityFormat, MutatedSuperblocksNeverCrash) {
  const Bytes good = encoded(new_superblock(worked_example()));
  std::mt19937_64 rng(42);
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[8 + rng() % 56] = std::byte(static_cast<unsigned char>(rng()));
    const uint64_t dev = i % 3 == 0 ? rng() : 32768;
    auto r = decode_superblock(b, dev);
    if (!r.ok()) continue;
    ++decoded;
    auto again = decode_superblock(encoded(*r), dev);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *r);
    ASSERT_TRUE(Layout::of(*r, dev).ok());
  }
  EXPECT_GT(decoded, 0);
}

TEST(IntegrityFormat, EmptyJournalAsTheKernelWritesIt) {
  const Layout l = worked_example();
  Bytes s(l.journal_section_sectors * kSector);
  encode_empty_journal_section(l, 0, 0, s);
  // Entry 0 and entry 8 (sector 0's second slot, 80 bytes on) are unused.
  for (size_t i : {4, 5, 6, 7, 84, 85, 86, 87}) EXPECT_EQ(s[i], std::byte{0xff}) << i;
  for (size_t i : {0, 3, 8, 80, 83, 88}) EXPECT_EQ(s[i], std::byte{0}) << i;
  EXPECT_EQ(load_le(std::span<const std::byte>(s), 504, 8), 0x1111111111111111u);
  EXPECT_EQ(load_le(std::span<const std::byte>(s), 391 * 512 + 504, 8), 0x1111111111111111u ^ 391);
  EXPECT_EQ(commit_id(2, 3, 1), 0x2222222222222222u ^ (uint64_t{2} << 32 | 3));
  for (uint32_t sec = 0; sec < l.journal_sections; ++sec) {
    encode_empty_journal_section(l, sec, sec % kCommitIds, s);
    auto used = journal_section_entries_in_use(l, sec, s);
    ASSERT_TRUE(used.ok()) << used.status().message();
    EXPECT_EQ(*used, 0u);
  }
  // An entry in use: its sector number's high half is no longer 0xFFFFFFFF.
  encode_empty_journal_section(l, 1, 0, s);
  store_le(std::span<std::byte>(s), 2 * 512 + 80 + 4, 0, 4);  // entry 10
  EXPECT_EQ(*journal_section_entries_in_use(l, 1, s), 1u);
  // A section written for another place, and an all-zero journal, are damaged.
  encode_empty_journal_section(l, 1, 0, s);
  EXPECT_EQ(journal_section_entries_in_use(l, 2, s).status().code(), EUCLEAN);
  std::fill(s.begin(), s.end(), std::byte{0});
  EXPECT_EQ(journal_section_entries_in_use(l, 0, s).status().code(), EUCLEAN);
}

TEST(IntegrityFormat, TagIsCsumsChecksum) {
  Bytes data(4096);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(static_cast<unsigned char>(i * 7));
  EXPECT_EQ(tag_of(123456 * 8, data), block_checksum(123456, 4096, data));
  EXPECT_EQ(tag_of(987648, Bytes(4096)), 0xEE7FE590u);  // z(123456), csum.md section 12
}

}  // namespace
}  // namespace bowstack::csum::integrity
