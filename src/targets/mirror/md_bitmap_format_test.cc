#include "targets/mirror/md_bitmap_format.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

#include "core/endian.h"

namespace bowstack::mirror::md {
namespace {

using Bytes = std::vector<std::byte>;

constexpr uint64_t kLeg = 131072;  // 64 MiB
constexpr Uuid kArray = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                         0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

Superblock leg() {
  auto g = plan_leg(kLeg, kLeg, 64 * 1024);
  EXPECT_TRUE(g.ok());
  return new_leg_superblock(*g, kArray, "bowstack:0", Uuid{}, 0, 2, 1700000000);
}
Bytes encoded(const BitmapSuperblock& bm) {
  Bytes b(kBitmapAlign);
  encode_bitmap_superblock(bm, b);
  return b;
}
int code_with(const std::function<void(BitmapSuperblock&)>& change) {
  BitmapSuperblock bm = new_bitmap_superblock(leg(), 65536);
  change(bm);
  auto r = decode_bitmap_superblock(encoded(bm));
  return r.ok() ? 0 : r.status().code();
}

// docs/format/mirror.md's worked example: the bitmap superblock at sector 16.
TEST(MdBitmap, WorkedExampleBytes) {
  const Superblock sb = leg();
  const BitmapSuperblock bm = new_bitmap_superblock(sb, 65536);
  const Bytes b = encoded(bm);
  const uint8_t head[72] = {
      0x62, 0x69, 0x74, 0x6d, 4,    0,    0,    0,                             // "bitm", version 4
      0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,  // uuid
      0x89, 0xab, 0xcd, 0xef,                                                  //
      0,    0,    0,    0,    0,    0,    0,    0,                             // events 0
      0,    0,    0,    0,    0,    0,    0,    0,                             // events_cleared 0
      0x00, 0xf8, 0x01, 0,    0,    0,    0,    0,                             // sync_size 129024
      0,    0,    0,    0,                                                     // state
      0,    0,    1,    0,                                                     // chunksize 65536
      5,    0,    0,    0,                                                     // daemon_sleep 5
      0,    0,    0,    0,                                                     // write_behind
      0,    0,    0,    0,                                                     // sectors_reserved
      0,    0,    0,    0,                                                     // nodes
  };
  for (size_t i = 0; i < sizeof head; ++i) EXPECT_EQ(b[i], std::byte{head[i]}) << i;
  for (size_t i = sizeof head; i < b.size(); ++i) ASSERT_EQ(b[i], std::byte{0}) << i;
  auto back = decode_bitmap_superblock(b);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, bm);
  EXPECT_TRUE(check_bitmap(sb, bm).ok());
  EXPECT_FALSE(bitmap_out_of_date(sb, bm));
  EXPECT_EQ(bitmap_bits(bm.sync_size, bm.chunksize), 1008u);
  EXPECT_EQ(bitmap_area_bytes(1008), 4096u);
  EXPECT_EQ(bitmap_area_bytes(8 * (4096 - 256)), 4096u);
  EXPECT_EQ(bitmap_area_bytes(8 * (4096 - 256) + 1), 8192u);
}

TEST(MdBitmap, BitsCoverChunksOfTheArray) {
  const uint32_t chunk = 65536;  // 128 sectors
  EXPECT_EQ(bit_of_sector(0, chunk), 0u);
  EXPECT_EQ(bit_of_sector(127, chunk), 0u);
  EXPECT_EQ(bit_of_sector(128, chunk), 1u);
  EXPECT_EQ(first_sector_of_bit(5, chunk), 640u);
  BitRange r = bits_of_range(127, 2, chunk);  // straddles bits 0 and 1
  EXPECT_EQ(r.first, 0u);
  EXPECT_EQ(r.end, 2u);
  r = bits_of_range(128, 128, chunk);
  EXPECT_EQ(r.first, 1u);
  EXPECT_EQ(r.end, 2u);
  // Bit i: byte 256 + i / 8, mask 1 << (i % 8).
  EXPECT_EQ(bit_byte(0), 256u);
  EXPECT_EQ(bit_byte(13), 257u);
  EXPECT_EQ(bit_mask(13), std::byte{0x20});
  Bytes area(4096);
  set_bit(area, 0, true);
  set_bit(area, 5, true);
  set_bit(area, 13, true);
  set_bit(area, 1007, true);
  EXPECT_EQ(area[256], std::byte{0x21});
  EXPECT_EQ(area[257], std::byte{0x20});
  EXPECT_EQ(area[256 + 125], std::byte{0x80});
  EXPECT_TRUE(test_bit(area, 5));
  EXPECT_FALSE(test_bit(area, 6));
  EXPECT_EQ(count_set_bits(area, 1008), 4u);
  EXPECT_EQ(count_set_bits(area, 13), 2u);  // only the first 13 bits
  EXPECT_EQ(count_set_bits(area, 0), 0u);
  set_bit(area, 5, false);
  EXPECT_EQ(area[256], std::byte{0x01});
  // The bitmap superblock is not bits.
  for (size_t i = 0; i < 256; ++i) ASSERT_EQ(area[i], std::byte{0});
}

TEST(MdBitmap, MdadmDefaultChunk) {
  EXPECT_EQ(mdadm_default_bitmap_chunk(100), 0u);                        // too small for a bitmap
  EXPECT_EQ(mdadm_default_bitmap_chunk(129024), 64u << 20);              // at least 64 MiB
  EXPECT_EQ(mdadm_default_bitmap_chunk(uint64_t{1} << 35), 64u << 20);   // 16 TiB: 32 MiB would fit
  EXPECT_EQ(mdadm_default_bitmap_chunk(uint64_t{1} << 38), 256u << 20);  // 128 TiB: 2^35 bits / 2^20
  EXPECT_EQ(mdadm_default_bitmap_chunk(uint64_t{1} << 41), 2048u << 20);
  EXPECT_EQ(mdadm_default_bitmap_chunk(uint64_t{1} << 44), 0u);  // beyond a u32 chunk
}

TEST(MdBitmap, RejectsForeignAndDamaged) {
  EXPECT_EQ(decode_bitmap_superblock(Bytes(4096)).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(decode_bitmap_superblock(Bytes(4096, std::byte{0x11})).status().code(), EMEDIUMTYPE);
  const Bytes good = encoded(new_bitmap_superblock(leg(), 65536));
  EXPECT_EQ(decode_bitmap_superblock(std::span(good).first(100)).status().code(), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.version = 3; }), ENOTSUP);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.version = 5; }), ENOTSUP);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.version = 6; }), ENOTSUP);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.version = 7; }), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.chunksize = 256; }), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.chunksize = 65535; }), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.chunksize = 512; }), 0);  // the kernel's smallest
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.daemon_sleep = 0; }), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.write_behind = 16384; }), EUCLEAN);
  EXPECT_EQ(code_with([](BitmapSuperblock& b) { b.sync_size = UINT64_MAX; }), EUCLEAN);
  Bytes b = good;
  store_le(std::span<std::byte>(b), 68, 2, 4);  // nodes
  EXPECT_EQ(decode_bitmap_superblock(b).status().code(), ENOTSUP);

  // Against the leg's superblock.
  const Superblock sb = leg();
  BitmapSuperblock bm = new_bitmap_superblock(sb, 65536);
  bm.uuid[15] ^= 1;
  EXPECT_EQ(check_bitmap(sb, bm).code(), EUCLEAN);
  bm = new_bitmap_superblock(sb, 512);  // 129024 bits: 16 KiB, into the bad-block log at 24
  EXPECT_EQ(check_bitmap(sb, bm).code(), EUCLEAN);
  Superblock no_bblog = sb;
  no_bblog.bblog_size = 0;
  EXPECT_TRUE(check_bitmap(no_bblog, bm).ok());  // up to the data at 2048 it fits
  bm = new_bitmap_superblock(sb, 65536);
  Superblock plain = sb;
  plain.feature_map = 0;
  EXPECT_EQ(check_bitmap(plain, bm).code(), ENOTSUP);
  // Out of date: flagged stale, or behind the superblock's events.
  Superblock later = sb;
  later.events = 2;
  bm.events = 1;
  EXPECT_TRUE(bitmap_out_of_date(later, bm));
  bm.events = 3;  // one ahead: written first, superblock update cut off
  EXPECT_FALSE(bitmap_out_of_date(later, bm));
  bm.state = kBitmapStale;
  EXPECT_TRUE(bitmap_out_of_date(later, bm));
}

TEST(MdBitmap, MutatedSuperblocksNeverCrash) {
  const Bytes good = encoded(new_bitmap_superblock(leg(), 65536));
  const Superblock sb = leg();
  std::mt19937_64 rng(9);
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % 256] = std::byte(static_cast<unsigned char>(rng()));
    auto r = decode_bitmap_superblock(std::span(b).first(i % 5 == 0 ? rng() % 300 : 256));
    if (!r.ok()) continue;
    ++decoded;
    auto again = decode_bitmap_superblock(encoded(*r));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, *r);
    (void)check_bitmap(sb, *r);
  }
  EXPECT_GT(decoded, 1000);
}

}  // namespace
}  // namespace bowstack::mirror::md
