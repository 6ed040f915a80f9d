#include "targets/csum/csum_format.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/crc32.h"
#include "core/endian.h"

namespace bowstack::csum {
namespace {

using Sector = std::array<std::byte, kSector>;

Uuid example_uuid() {
  const unsigned char u[16] = {0x5f, 0x0c, 0x2a, 0x91, 0x7d, 0x3e, 0x4b, 0x8a,
                               0x9c, 0x61, 0x0e, 0x4f, 0x2b, 0x7d, 0x8a, 0x13};
  Uuid out;
  for (int i = 0; i < 16; ++i) out[i] = u[i];
  return out;
}

Superblock example_superblock() {
  Superblock sb;
  sb.uuid = example_uuid();
  sb.generation = 1;
  sb.layout = *Layout::compute(4096, uint64_t{1} << 30, Layout::default_log2_region_blocks(4096), 0);
  sb.mode = Mode::kDual;
  sb.flags = kFlagClean;
  sb.created = 1767225600;
  return sb;
}

// docs/format/csum.md section 12, number for number.
TEST(CsumFormat, WorkedExample) {
  const Superblock sb = example_superblock();
  const Layout& l = sb.layout;
  EXPECT_EQ(l.nr_blocks, 262144u);
  EXPECT_EQ(l.pairs_sectors, 4376u);
  EXPECT_EQ(l.log2_region_blocks, 12u);
  EXPECT_EQ(l.nr_regions(), 64u);
  EXPECT_EQ(l.bitmap_start, 4392u);
  EXPECT_EQ(l.bitmap_sectors, 8u);
  EXPECT_EQ(l.total_sectors, 4400u);
  const uint64_t b = 123456;
  EXPECT_EQ(l.pair_sector(b), 2073u);
  EXPECT_EQ(l.pair_index(b), 36u);
  EXPECT_EQ(l.pair_sector(b) * kSector + 32 + 8 * l.pair_index(b), 1061696u);  // slot A
  EXPECT_EQ(l.region(b), 30u);
  EXPECT_EQ(zero_checksum(b, 4096), 0xEE7FE590u);

  Sector s;
  encode_superblock(sb, 0, s);
  EXPECT_EQ(load_le(std::span<const std::byte>(s), 0, 4), 0x56A82C8Du);
  const unsigned char head[16] = {0x8d, 0x2c, 0xa8, 0x56, 'C', 'S', 'S', 'B', 0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(s[i], std::byte{head[i]}) << i;
  auto back = decode_superblock(s, 0, l.total_sectors);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->generation, 1u);
  EXPECT_EQ(back->layout.pairs_sectors, 4376u);
  EXPECT_TRUE(back->clean());
  EXPECT_EQ(back->created, 1767225600u);
  EXPECT_EQ(uuid_string(back->uuid), "5f0c2a91-7d3e-4b8a-9c61-0e4f2b7d8a13");
}

TEST(CsumFormat, SuperblockRefusesWhatItCannotTrust) {
  Superblock sb = example_superblock();
  const uint64_t dev = sb.layout.total_sectors;
  Sector s;
  encode_superblock(sb, 0, s);
  EXPECT_EQ(decode_superblock(s, 8, dev).status().code(), EUCLEAN);      // wrong place
  EXPECT_EQ(decode_superblock(s, 0, dev - 1).status().code(), EUCLEAN);  // device too small
  Sector flipped = s;
  flipped[100] ^= std::byte{1};
  EXPECT_EQ(decode_superblock(flipped, 0, dev).status().code(), EUCLEAN);  // checksum
  sb.version = 2;
  encode_superblock(sb, 0, s);
  auto v = decode_superblock(s, 0, dev);
  EXPECT_EQ(v.status().code(), ENOTSUP);
  EXPECT_NE(v.status().context().find("newer bowstack"), std::string::npos);
  sb.version = kVersion;
  sb.incompat = 4;
  encode_superblock(sb, 0, s);
  EXPECT_EQ(decode_superblock(s, 0, dev).status().code(), ENOTSUP);
  sb.incompat = 0;
  // An area field that disagrees with the parameters, re-sealed so that
  // only the consistency check can catch it.
  encode_superblock(sb, 0, s);
  store_le(std::span<std::byte>(s), 104, 9999, 8);
  store_le(std::span<std::byte>(s), 0, crc32c(0, std::span<const std::byte>(s).subspan(4)), 4);
  auto area = decode_superblock(s, 0, dev);
  EXPECT_EQ(area.status().code(), EUCLEAN);
  EXPECT_NE(area.status().context().find("area fields"), std::string::npos);
}

TEST(CsumFormat, ChoosesTheNewerValidCopy) {
  Superblock sb = example_superblock();
  const uint64_t dev = sb.layout.total_sectors;
  Sector c0, c1;
  sb.generation = 1;
  encode_superblock(sb, 0, c0);
  sb.generation = 2;
  sb.flags = 0;
  encode_superblock(sb, 8, c1);
  auto ch = choose_superblock(c0, c1, dev);
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(ch->location, 8u);
  EXPECT_EQ(ch->sb.generation, 2u);
  c1[200] ^= std::byte{4};  // torn: the older copy stands
  ch = choose_superblock(c0, c1, dev);
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(ch->location, 0u);
  Sector zero{};
  EXPECT_EQ(choose_superblock(zero, zero, dev).status().code(), EMEDIUMTYPE);
  Sector junk;
  for (auto& x : junk) x = std::byte{0x5a};
  EXPECT_EQ(choose_superblock(junk, zero, dev).status().code(), EMEDIUMTYPE);
  c0[300] ^= std::byte{1};
  EXPECT_EQ(choose_superblock(c0, c1, dev).status().code(), EUCLEAN);
}

TEST(CsumFormat, PairSectorsRoundTripAndCheckThemselves) {
  const Uuid u = example_uuid();
  std::mt19937_64 rng(1);
  PairSector p{};
  for (uint32_t j = 0; j < kPairsPerSector; ++j) {
    const auto st = static_cast<PairState>(rng() % 3);
    p[j].state = st;
    if (st != PairState::kEmpty) {
      p[j].a = static_cast<uint32_t>(rng());
      p[j].b = static_cast<uint32_t>(rng());
    }
  }
  Sector s;
  encode_pairs(p, u, 2073, s);
  auto back = decode_pairs(s, u, 2073);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_TRUE(*back == p);
  EXPECT_EQ(decode_pairs(s, u, 2074).status().code(), EUCLEAN);  // misdirected
  Uuid other = u;
  other[0] ^= 1;
  EXPECT_EQ(decode_pairs(s, other, 2073).status().code(), EUCLEAN);  // another volume's sector
  Sector zero{};
  auto empty = decode_pairs(zero, u, 2073);
  ASSERT_TRUE(empty.ok());
  for (const Pair& q : *empty) EXPECT_EQ(q.state, PairState::kEmpty);
  // Newest and older slots follow the state.
  Pair q{PairState::kB, 1, 2};
  EXPECT_EQ(q.newest(), 2u);
  EXPECT_EQ(q.older(), 1u);
}

TEST(CsumFormat, DirtySectorsRoundTrip) {
  const Uuid u = example_uuid();
  DirtyBits bits{};
  bits[0] = 1u << 30;
  bits[59] = ~uint64_t{0};
  Sector s;
  encode_dirty(bits, u, 4392, s);
  auto back = decode_dirty(s, u, 4392);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, bits);
  EXPECT_EQ(decode_dirty(s, u, 4393).status().code(), EUCLEAN);
}

TEST(CsumFormat, LayoutRefusesBadParameters) {
  EXPECT_EQ(Layout::compute(8192, 1 << 20, 12, 0).status().code(), EINVAL);
  EXPECT_EQ(Layout::compute(4096, 4097, 12, 0).status().code(), EINVAL);
  EXPECT_EQ(Layout::compute(4096, 0, 12, 0).status().code(), EINVAL);
  EXPECT_EQ(Layout::compute(4096, 1 << 20, 12, 7).status().code(), EINVAL);
  auto j = Layout::compute(512, 1 << 20, 15, 4096);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(j->journal_start, j->bitmap_start + j->bitmap_sectors);
  EXPECT_EQ(j->total_sectors, j->journal_start + 4096);
}

// The checksum binds a block's data to its place: the same bytes elsewhere
// do not verify.
TEST(CsumFormat, ChecksumBindsThePlace) {
  std::vector<std::byte> d(4096, std::byte{7});
  EXPECT_NE(block_checksum(1, 4096, d), block_checksum(2, 4096, d));
  EXPECT_EQ(block_checksum(5, 4096, std::vector<std::byte>(4096)), zero_checksum(5, 4096));
  EXPECT_EQ(zero_checksum(5, 512), block_checksum(5, 512, std::vector<std::byte>(512)));
}

}  // namespace
}  // namespace bowstack::csum
