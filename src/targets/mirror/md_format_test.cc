#include "targets/mirror/md_format.h"

#include <gtest/gtest.h>

#include <functional>
#include <random>
#include <vector>

#include "core/endian.h"
#include "targets/mirror/md_bitmap_format.h"

namespace bowstack::mirror::md {
namespace {

using Bytes = std::vector<std::byte>;

constexpr uint64_t kLeg = 131072;  // 64 MiB
constexpr uint64_t kNow = 1700000000;
constexpr Uuid kArray = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                         0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
constexpr Uuid kDevice = {0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
                          0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0};

LegGeometry example_geometry() {
  auto g = plan_leg(kLeg, kLeg, 64 * 1024);
  EXPECT_TRUE(g.ok()) << g.status().message();
  return *g;
}
// docs/format/mirror.md's worked example: leg 0 of 2, as created.
Superblock example() {
  return new_leg_superblock(example_geometry(), kArray, "bowstack:0", kDevice, 0, 2, encode_time(kNow));
}
Bytes encoded(const Superblock& sb) {
  Bytes b(superblock_bytes(sb.max_dev()));
  encode_superblock(sb, b);
  return b;
}
int code(const Superblock& sb, uint64_t dev = kLeg) {
  auto r = decode_superblock(encoded(sb), dev);
  return r.ok() ? 0 : r.status().code();
}
int code_with(const std::function<void(Superblock&)>& change) {
  Superblock sb = example();
  change(sb);
  return code(sb);
}
// Rewrites the checksum after a byte-level change.
void fix_csum(Bytes& b) {
  store_le(std::span<std::byte>(b), 216, superblock_csum(b, static_cast<uint32_t>(load_le(b.data(), 220, 4))),
           4);
}

TEST(MdFormat, WorkedExampleGeometry) {
  EXPECT_EQ(mdadm_bitmap_space(kLeg), 8u);
  EXPECT_EQ(mdadm_data_offset(kLeg), 2048u);  // headroom 128 sectors, 24 + 8 + 128 rounded up to 1 MiB
  const LegGeometry g = example_geometry();
  EXPECT_EQ(g.data_offset, 2048u);
  EXPECT_EQ(g.data_size, 129024u);
  EXPECT_EQ(g.size, 129024u);  // already a multiple of 128
  EXPECT_EQ(g.bitmap_offset, 8);
  EXPECT_EQ(g.bitmap_chunk, 65536u);
  EXPECT_EQ(g.bitmap_bits, 1008u);
  EXPECT_EQ(g.bitmap_sectors, 8u);  // 256 + 126 bytes in one 4 KiB page
  EXPECT_EQ(g.bblog_offset, 16);
  EXPECT_EQ(g.bblog_size, 8u);
  // mdadm's own default chunk for it: 64 MiB, one bit.
  EXPECT_EQ(mdadm_default_bitmap_chunk(g.size), 64u << 20);
  EXPECT_EQ(plan_leg(kLeg, kLeg, 0)->bitmap_bits, 1u);
}

std::string hex(std::span<const std::byte> b) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    s += digits[std::to_integer<unsigned>(x) >> 4];
    s += digits[std::to_integer<unsigned>(x) & 15];
  }
  return s;
}

TEST(MdFormat, WorkedExampleBytes) {
  const Bytes b = encoded(example());
  ASSERT_EQ(b.size(), 512u);
  // docs/format/mirror.md's hex dump, 16 bytes a row (computed by hand and
  // by an independent script; mdadm --examine says "5afea970 - correct").
  const char* rows[] = {
      "fc4e2ba9010000000100000000000000",  //   0 magic, major 1, feature_map BITMAP_OFFSET, pad0
      "0123456789abcdef0123456789abcdef",  //  16 set_uuid
      "626f77737461636b3a30000000000000",  //  32 set_name "bowstack:0"
      "00000000000000000000000000000000",  //  48
      "00f15365000000000100000000000000",  //  64 ctime 1700000000, level 1, layout 0
      "00f80100000000000000000002000000",  //  80 size 129024, chunksize 0, raid_disks 2
      "08000000000000000000000000000000",  //  96 bitmap_offset 8, reshape fields
      "00000000000000000000000000000000",  // 112
      "000800000000000000f8010000000000",  // 128 data_offset 2048, data_size 129024
      "08000000000000000000000000000000",  // 144 super_offset 8, recovery_offset 0
      "00000000000000000f1e2d3c4b5a6978",  // 160 dev_number 0, corrected reads, device_uuid
      "8796a5b4c3d2e1f00000080010000000",  // 176 devflags, bblog_shift, bblog_size 8, bblog_offset 16
      "00f15365000000000000000000000000",  // 192 utime, events 0
      "ffffffffffffffff70a9fe5a80000000",  // 208 resync_offset MaxSector, sb_csum, max_dev 128
      "00000000000000000000000000000000",  // 224 pad3
      "00000000000000000000000000000000",  // 240
  };
  for (size_t r = 0; r < 16; ++r)
    EXPECT_EQ(hex(std::span(b).subspan(r * 16, 16)), rows[r]) << "row " << r * 16;
  EXPECT_EQ(hex(std::span(b).subspan(256, 8)), "00000100ffffffff");  // roles 0, 1, then spare
  for (size_t i = 260; i < 512; ++i) ASSERT_EQ(b[i], std::byte{0xff}) << i;
  EXPECT_EQ(superblock_csum(b, 128), 0x5afea970u);
  auto back = decode_superblock(b, kLeg);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(*back, example());
  EXPECT_EQ(back->role(), 0u);
  EXPECT_TRUE(back->clean());
  EXPECT_FALSE(back->recovering());
}

// A plain restatement of md's rule, to hold the implementation against.
uint32_t naive_csum(const Bytes& b, uint32_t max_dev) {
  Bytes c(b.begin(), b.begin() + 256 + 2 * max_dev);
  for (int i = 216; i < 220; ++i) c[i] = std::byte{0};
  uint64_t sum = 0;
  size_t i = 0;
  for (; i + 4 <= c.size(); i += 4) sum += load_le(c.data(), i, 4);
  if (i < c.size()) sum += load_le(c.data(), i, 2);
  return static_cast<uint32_t>(sum) + static_cast<uint32_t>(sum >> 32);
}

TEST(MdFormat, ChecksumRule) {
  std::mt19937_64 rng(3);
  for (int n = 0; n < 200; ++n) {
    const uint32_t max_dev = static_cast<uint32_t>(rng() % (kMaxDevLimit + 1));
    Bytes b(4098);
    // All-ones words make the 64-bit sum carry, so the fold matters.
    for (auto& x : b) x = n % 2 ? std::byte{0xff} : std::byte(static_cast<unsigned char>(rng()));
    EXPECT_EQ(superblock_csum(b, max_dev), naive_csum(b, max_dev)) << max_dev;
    // Bytes after the role table and the checksum field itself do not count.
    const uint32_t before = superblock_csum(b, max_dev);
    b[256 + 2 * max_dev] ^= std::byte{1};
    b[217] ^= std::byte{0x40};
    EXPECT_EQ(superblock_csum(b, max_dev), before);
  }
  // An odd max_dev ends on one u16 (mdadm accepts it: md_format_mdadm_test).
  Superblock sb = example();
  sb.dev_roles.resize(3);
  const Bytes b = encoded(sb);
  EXPECT_EQ(load_le(b.data(), 216, 4), naive_csum(b, 3));
  EXPECT_TRUE(decode_superblock(b, kLeg).ok());
}

TEST(MdFormat, RoundTrips) {
  std::mt19937_64 rng(5);
  for (int n = 0; n < 500; ++n) {
    const uint32_t raid_disks = 1 + static_cast<uint32_t>(rng() % 8);
    const uint64_t dev = kLeg + rng() % (uint64_t{1} << 40);
    auto g = plan_leg(dev, dev - rng() % 1000, 0);
    ASSERT_TRUE(g.ok()) << g.status().message();
    Superblock sb = new_leg_superblock(*g, random_uuid(), "host:" + std::to_string(n), random_uuid(),
                                       static_cast<uint32_t>(rng() % raid_disks), raid_disks,
                                       encode_time(rng() >> 24, static_cast<uint32_t>(rng() % 1000000)));
    sb.dev_roles.resize(static_cast<size_t>(raid_disks + rng() % 300));
    std::fill(sb.dev_roles.begin() + raid_disks, sb.dev_roles.end(), kRoleSpare);
    if (rng() % 2) sb.dev_roles[rng() % raid_disks] = kRoleFaulty;
    sb.events = rng();
    sb.resync_offset = rng() % 3 == 0 ? kMaxSector : rng() % (sb.size + 1);
    if (rng() % 2) {
      sb.feature_map |= kFeatureRecoveryOffset;
      sb.recovery_offset = rng() % (sb.size + 1);
    }
    sb.devflags = static_cast<uint8_t>(rng() % 4);
    sb.cnt_corrected_read = static_cast<uint32_t>(rng());
    sb.reshape_fields[rng() % 28] = static_cast<uint8_t>(rng());
    const Bytes b = encoded(sb);
    auto back = decode_superblock(b, dev);
    ASSERT_TRUE(back.ok()) << back.status().message();
    EXPECT_EQ(*back, sb);
    EXPECT_EQ(encoded(*back), b);
  }
}

TEST(MdFormat, RejectsForeignAndDamaged) {
  EXPECT_EQ(decode_superblock(Bytes(4096), kLeg).status().code(), EMEDIUMTYPE);  // blank
  EXPECT_EQ(decode_superblock(Bytes(2), kLeg).status().code(), EMEDIUMTYPE);
  Bytes junk(4096, std::byte{0x5a});
  EXPECT_EQ(decode_superblock(junk, kLeg).status().code(), EMEDIUMTYPE);
  const Bytes good = encoded(example());
  EXPECT_EQ(decode_superblock(std::span(good).first(200), kLeg).status().code(), EUCLEAN);  // short
  EXPECT_EQ(decode_superblock(std::span(good).first(400), kLeg).status().code(), EUCLEAN);  // roles cut
  Bytes b = good;
  b[200] ^= std::byte{1};  // events, checksum not updated
  auto r = decode_superblock(b, kLeg);
  EXPECT_EQ(r.status().code(), EUCLEAN);
  EXPECT_NE(r.status().context().find("checksum 5afea970, expected 5afea971"), std::string::npos)
      << r.status().context();
  b = good;
  store_le(std::span<std::byte>(b), 4, 0, 4);  // major version 0
  fix_csum(b);
  EXPECT_EQ(decode_superblock(b, kLeg).status().code(), ENOTSUP);
  b = good;
  store_le(std::span<std::byte>(b), 12, 1, 4);  // pad0
  fix_csum(b);
  EXPECT_EQ(decode_superblock(b, kLeg).status().code(), ENOTSUP);
  b = good;
  b[250] = std::byte{1};  // pad3
  fix_csum(b);
  EXPECT_EQ(decode_superblock(b, kLeg).status().code(), ENOTSUP);
  b = good;
  store_le(std::span<std::byte>(b), 220, 2000, 4);  // max_dev, refused before the checksum is read
  EXPECT_EQ(decode_superblock(b, kLeg).status().code(), EUCLEAN);

  EXPECT_EQ(code_with([](Superblock& s) { s.super_offset = 0; }), EUCLEAN);  // a v1.1 superblock's
  EXPECT_EQ(code_with([](Superblock& s) { s.feature_map |= 0x2000; }), ENOTSUP);
  for (uint32_t f : {kFeatureReshapeActive, kFeatureBadBlocks, kFeatureReplacement, kFeatureClustered,
                     kFeatureJournal, kFeaturePpl, kFeatureRaid0Layout})
    EXPECT_EQ(code_with([f](Superblock& s) { s.feature_map |= f; }), ENOTSUP) << f;
  EXPECT_EQ(code_with([](Superblock& s) { s.level = 5; }), ENOTSUP);
  EXPECT_EQ(code_with([](Superblock& s) { s.level = -1; }), ENOTSUP);
  EXPECT_EQ(code_with([](Superblock& s) { s.raid_disks = 0; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.raid_disks = 1; }), EUCLEAN);  // role 1 past raid_disks
  EXPECT_EQ(code_with([](Superblock& s) { s.dev_roles[5] = kRoleJournal; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.data_size = 9; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.data_offset = 8; }), EUCLEAN);  // over the superblock
  EXPECT_EQ(code_with([](Superblock& s) { s.data_size += 1; }), EUCLEAN);   // past the leg's end
  EXPECT_EQ(code_with([](Superblock& s) { s.data_offset = UINT64_MAX - 4; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.size = s.data_size + 1; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.size = 0; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.bitmap_offset = 0; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.bitmap_offset = -8; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) { s.bitmap_offset = 2040; }), EUCLEAN);  // at the data
  EXPECT_EQ(code_with([](Superblock& s) { s.bblog_offset = 2036; }), EUCLEAN);   // into the data
  EXPECT_EQ(code_with([](Superblock& s) { s.resync_offset = s.size + 1; }), EUCLEAN);
  EXPECT_EQ(code_with([](Superblock& s) {
              s.feature_map |= kFeatureRecoveryOffset;
              s.recovery_offset = s.size + 1;
            }),
            EUCLEAN);
  EXPECT_EQ(code(example(), kLeg - 1), EUCLEAN);  // the leg was cut short
  // Accepted: a recovering leg, a faulty peer, a spare slot for this leg.
  EXPECT_EQ(code_with([](Superblock& s) {
              s.feature_map |= kFeatureRecoveryOffset | kFeatureRecoveryBitmap;
              s.recovery_offset = 4096;
            }),
            0);
  EXPECT_EQ(code_with([](Superblock& s) { s.dev_roles[1] = kRoleFaulty; }), 0);
  EXPECT_EQ(code_with([](Superblock& s) { s.dev_number = 7; }), 0);
}

// Any bytes: a value or an error, and what decodes re-encodes to itself.
TEST(MdFormat, MutatedSuperblocksNeverCrash) {
  Superblock base = example();
  base.feature_map |= kFeatureRecoveryOffset;
  base.recovery_offset = 100;
  const Bytes good = encoded(base);
  std::mt19937_64 rng(42);
  int decoded = 0;
  for (int i = 0; i < 30000; ++i) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      b[rng() % (i % 5 == 0 ? 512 : 260)] = std::byte(static_cast<unsigned char>(rng()));
    if (i % 2 == 0 && load_le(b.data(), 220, 4) <= 128) fix_csum(b);
    const size_t len = i % 7 == 0 ? rng() % b.size() : b.size();
    const uint64_t dev = i % 3 == 0 ? rng() : kLeg;
    auto r = decode_superblock(std::span(b).first(len), dev);
    if (!r.ok()) continue;
    ++decoded;
    auto again = decode_superblock(encoded(*r), dev);
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_EQ(*again, *r);
  }
  EXPECT_GT(decoded, 1000);
}

TEST(MdFormat, DataOffsetAndSizesAsMdadmChooses) {
  EXPECT_EQ(mdadm_bitmap_space(100), 0u);
  EXPECT_EQ(mdadm_bitmap_space(uint64_t{8} << 21), 8u);          // 8 GiB
  EXPECT_EQ(mdadm_bitmap_space((uint64_t{8} << 21) + 9), 128u);  // just over
  EXPECT_EQ(mdadm_bitmap_space((uint64_t{200} << 21) + 127), 128u);
  EXPECT_EQ(mdadm_bitmap_space((uint64_t{200} << 21) + 128), 256u);
  EXPECT_EQ(mdadm_data_offset(uint64_t{1} << 21), 4096u);      // 1 GiB: headroom 2048
  EXPECT_EQ(mdadm_data_offset(uint64_t{8} << 21), 18432u);     // 8 GiB: headroom 16384
  EXPECT_EQ(mdadm_data_offset(uint64_t{100} << 21), 133120u);  // 100 GiB: headroom 131072
  EXPECT_EQ(mdadm_data_offset(uint64_t{1} << 31), 264192u);    // 1 TiB: 128 MiB + 128 KiB + 12 KiB -> 129 MiB
  EXPECT_EQ(mdadm_data_offset(uint64_t{1} << 40), 264192u);
  EXPECT_EQ(mdadm_component_size(129024 + 127), 129024u);
  // Legs of different sizes share the smallest's data offset and size.
  auto big = plan_leg(uint64_t{1} << 21, kLeg, 0);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->data_offset, 2048u);
  EXPECT_EQ(big->size, 129024u);
  EXPECT_EQ(big->data_size, (uint64_t{1} << 21) - 2048);
  EXPECT_EQ(plan_leg(kLeg, kLeg + 1, 0).status().code(), EINVAL);
  EXPECT_EQ(plan_leg(2048, 2048, 0).status().code(), EINVAL);     // no room for data
  EXPECT_EQ(plan_leg(kLeg, kLeg, 3000).status().code(), EINVAL);  // not a power of two
  EXPECT_EQ(plan_leg(kLeg, kLeg, 2048).status().code(), EINVAL);  // below 4 KiB
  EXPECT_EQ(plan_leg(uint64_t{1} << 35, uint64_t{1} << 35, 4096).status().code(), EINVAL);  // 512 MiB of bits
  EXPECT_TRUE(plan_leg(uint64_t{1} << 35, uint64_t{1} << 35, 1u << 20).ok());
}

TEST(MdFormat, TimesAndUuids) {
  const uint64_t t = encode_time(kNow, 123456);
  EXPECT_EQ(time_seconds(t), kNow);
  EXPECT_EQ(time_microseconds(t), 123456u);
  EXPECT_EQ(encode_time(kNow), kNow);
  EXPECT_EQ(mdadm_uuid_string(kArray), "01234567:89abcdef:01234567:89abcdef");
}

}  // namespace
}  // namespace bowstack::mirror::md
