#include "targets/csum/csum_metadata.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "core/memory_device.h"

namespace bowstack::csum {
namespace {

FormatParams params(uint64_t data_size, uint32_t bs = 4096) {
  FormatParams p;
  p.block_size = bs;
  p.data_size = data_size;
  for (size_t i = 0; i < p.uuid.size(); ++i) p.uuid[i] = static_cast<uint8_t>(i * 17 + 3);
  p.created = 1767225600;
  return p;
}

std::shared_ptr<MemoryDevice> formatted(const FormatParams& p) {
  auto bytes = CsumMetadata::bytes_needed(p);
  EXPECT_TRUE(bytes.ok());
  auto md = std::make_shared<MemoryDevice>(*bytes);
  EXPECT_TRUE(CsumMetadata::is_blank(*md).value());
  EXPECT_TRUE(CsumMetadata::format(*md, p).ok());
  EXPECT_FALSE(CsumMetadata::is_blank(*md).value());
  return md;
}

TEST(CsumMetadata, FormatOpenAndEveryPairEmpty) {
  auto md = formatted(params(64 << 20));
  auto m = CsumMetadata::open(md);
  ASSERT_TRUE(m.ok()) << m.status().message();
  const Superblock sb = (*m)->superblock();
  EXPECT_EQ(sb.generation, 1u);
  EXPECT_TRUE(sb.clean());
  EXPECT_EQ((*m)->layout().nr_blocks, 16384u);
  std::vector<Pair> got;
  ASSERT_TRUE((*m)->pairs(0, 16384, &got).ok());
  ASSERT_EQ(got.size(), 16384u);
  for (const Pair& p : got) EXPECT_EQ(p.state, PairState::kEmpty);
}

TEST(CsumMetadata, PairsPersistAcrossReopenAndOnlyTheirSectorsChange) {
  auto md = formatted(params(64 << 20, 512));
  std::mt19937_64 rng(4);
  std::map<uint64_t, Pair> want;
  {
    auto m = CsumMetadata::open(md);
    ASSERT_TRUE(m.ok());
    const uint64_t n = (*m)->layout().nr_blocks;
    std::vector<std::pair<uint64_t, Pair>> updates;
    for (int i = 0; i < 500; ++i) {
      const uint64_t b = rng() % n;
      if (want.count(b)) continue;
      Pair p{rng() % 2 ? PairState::kA : PairState::kB, static_cast<uint32_t>(rng()),
             static_cast<uint32_t>(rng())};
      want[b] = p;
      updates.emplace_back(b, p);
    }
    updates.emplace_back(n - 1, Pair{PairState::kA, 7, 8});  // the last block
    want[n - 1] = Pair{PairState::kA, 7, 8};
    ASSERT_TRUE((*m)->set_pairs(updates).ok());
    ASSERT_TRUE((*m)->write_dirty().ok());
  }
  auto m = CsumMetadata::open(md);
  ASSERT_TRUE(m.ok());
  std::vector<Pair> got;
  ASSERT_TRUE((*m)->pairs(0, (*m)->layout().nr_blocks, &got).ok());
  for (uint64_t b = 0; b < got.size(); ++b) {
    auto it = want.find(b);
    if (it == want.end()) {
      EXPECT_EQ(got[b].state, PairState::kEmpty) << b;
    } else {
      EXPECT_TRUE(got[b] == it->second) << b;
    }
  }
}

// A damaged pair sector fails exactly its 60 blocks.
TEST(CsumMetadata, DamagedSectorFailsOnlyItsBlocks) {
  auto md = formatted(params(16 << 20));
  {
    auto m = CsumMetadata::open(md);
    ASSERT_TRUE((*m)->set_pairs({{125, Pair{PairState::kA, 1, 2}}}).ok());
    ASSERT_TRUE((*m)->write_dirty().ok());
  }
  auto m = CsumMetadata::open(md);
  const uint64_t sector = (*m)->layout().pair_sector(125);  // blocks 120..179
  m->reset();
  std::vector<std::byte> s(kSector);
  ASSERT_TRUE(md->read(sector * kSector, s).ok());
  s[300] ^= std::byte{0x10};
  ASSERT_TRUE(md->write(sector * kSector, s, 0).ok());
  m = CsumMetadata::open(md);
  ASSERT_TRUE(m.ok());
  std::vector<Pair> got;
  Status st = (*m)->pairs(125, 126, &got);
  EXPECT_EQ(st.code(), EUCLEAN);
  EXPECT_NE(st.context().find(std::to_string(sector)), std::string::npos) << st.context();
  EXPECT_TRUE((*m)->pairs(0, 120, &got).ok());
  EXPECT_TRUE((*m)->pairs(180, 240, &got).ok());
  EXPECT_EQ((*m)->set_pairs({{130, Pair{PairState::kA, 3, 4}}}).code(), EUCLEAN);
}

TEST(CsumMetadata, SuperblockCommitsAlternateAndSurviveATornCopy) {
  auto md = formatted(params(16 << 20));
  auto m = CsumMetadata::open(md);
  Superblock sb = (*m)->superblock();
  sb.flags = 0;  // open for writing: CLEAN clear
  sb.unclean_opens = 3;
  ASSERT_TRUE((*m)->commit_superblock(sb).ok());
  EXPECT_EQ((*m)->superblock().generation, 2u);
  sb.scrub_cursor = 99;
  ASSERT_TRUE((*m)->commit_superblock(sb).ok());  // generation 3, back in copy 0
  m->reset();
  m = CsumMetadata::open(md);
  EXPECT_EQ((*m)->superblock().generation, 3u);
  EXPECT_EQ((*m)->superblock().scrub_cursor, 99u);
  EXPECT_FALSE((*m)->superblock().clean());
  m->reset();
  // Tear copy 0 (generation 3): copy 1 (generation 2) is current again.
  std::vector<std::byte> s(kSector);
  ASSERT_TRUE(md->read(0, s).ok());
  s[60] ^= std::byte{1};
  ASSERT_TRUE(md->write(0, s, 0).ok());
  m = CsumMetadata::open(md);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->superblock().generation, 2u);
  EXPECT_EQ((*m)->superblock().unclean_opens, 3u);
}

TEST(CsumMetadata, RefusesWhatIsNotItsOwn) {
  auto p = params(16 << 20);
  auto blank = std::make_shared<MemoryDevice>(*CsumMetadata::bytes_needed(p));
  EXPECT_EQ(CsumMetadata::open(blank).status().code(), EMEDIUMTYPE);
  auto tiny = std::make_shared<MemoryDevice>(4096);
  EXPECT_EQ(CsumMetadata::open(tiny).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(CsumMetadata::format(*tiny, p).code(), EINVAL);
  // Formatted for a bigger data device than the metadata device can hold.
  auto md = formatted(p);
  auto small = std::make_shared<MemoryDevice>(md->geometry().size - 4096);
  std::vector<std::byte> head(8192);
  ASSERT_TRUE(md->read(0, head).ok());
  ASSERT_TRUE(small->write(0, head, 0).ok());
  EXPECT_EQ(CsumMetadata::open(small).status().code(), EUCLEAN);
}

}  // namespace
}  // namespace bowstack::csum
