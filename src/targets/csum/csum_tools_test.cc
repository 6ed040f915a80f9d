#include "targets/csum/csum_tools.h"

#include <gtest/gtest.h>

#include "targets/csum/csum_test_util.h"
#include "targets/csum/csum_verify.h"

namespace bowstack::csum {
namespace {

class CsumToolsTest : public CsumTest {
 protected:
  std::shared_ptr<FileDevice> dev(const std::string& path) {
    auto d = FileDevice::open(path);
    EXPECT_TRUE(d.ok());
    return d.value();
  }
  // Data written straight into the image, as if before csum was used.
  void write_raw(uint64_t block, const Bytes& b) { ASSERT_TRUE(dev(img_)->write(block * kBs, b, 0).ok()); }
  VerifyReport verify() {
    auto r = verify_volume(dev(img_), dev(meta_));
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? r.value() : VerifyReport{};
  }
};

TEST_F(CsumToolsTest, FormatAcceptsExistingDataAndServeUsesIt) {
  std::mt19937_64 rng(11);
  const Bytes a = fill(rng, 8 * kBs);
  write_raw(3, a);
  write_raw(11, Bytes(kBs));  // zeroes on disk: an EMPTY pair
  write_raw(2047, fill(rng, kBs));
  auto r = format_over_data(*dev(img_), *dev(meta_), FormatParams{}, false);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->data_blocks, 9u);
  EXPECT_EQ(r->zero_blocks, 2048u - 9u);
  EXPECT_TRUE(verify().clean());
  auto d = dump_volume(dev(meta_));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->settled, 9u);
  EXPECT_EQ(d->empty, 2048u - 9u);
  EXPECT_TRUE(d->sb.clean());
  // A second format is refused unless asked to replace the metadata.
  EXPECT_EQ(format_over_data(*dev(img_), *dev(meta_), FormatParams{}, false).status().code(), EEXIST);
  ASSERT_TRUE(format_over_data(*dev(img_), *dev(meta_), FormatParams{}, true).ok());
  auto t = open();
  ASSERT_TRUE(t.ok()) << t.status().message();
  Bytes got(8 * kBs);
  ASSERT_TRUE((*t)->read(3 * kBs, got).ok());
  EXPECT_EQ(got, a);
}

TEST_F(CsumToolsTest, RebuildAndRewriteAcceptDataExplicitly) {
  std::mt19937_64 rng(12);
  {
    auto t = open();
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->write(0, fill(rng, 300 * kBs), 0).ok());
  }
  poke(img_, 5 * kBs + 1, 0x01);
  poke(img_, 200 * kBs + 1, 0x01);
  auto v = verify();
  ASSERT_EQ(v.mismatches.size(), 2u);

  auto one = rewrite_block_offline(*dev(img_), dev(meta_), 5);
  ASSERT_TRUE(one.ok()) << one.status().message();
  EXPECT_FALSE(one->matched);
  v = verify();
  ASSERT_EQ(v.mismatches.size(), 1u);
  EXPECT_EQ(v.mismatches[0].block, 200u);
  EXPECT_EQ(rewrite_block_offline(*dev(img_), dev(meta_), 2048).status().code(), EINVAL);

  auto b = inspect_block(*dev(img_), dev(meta_), 200);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->matches);
  EXPECT_EQ(b->block_size, kBs);

  // A damaged pair sector: rewrite refuses (it would accept 59 neighbours);
  // rebuild rewrites it.
  poke(meta_, (kPairsStart + 1) * kSector + 100, 0x01);  // blocks 60..119
  EXPECT_EQ(rewrite_block_offline(*dev(img_), dev(meta_), 70).status().code(), EUCLEAN);
  auto d = dump_volume(dev(meta_));
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->damaged.size(), 1u);
  EXPECT_EQ(d->damaged[0].first, 60u);
  auto rb = rebuild_volume(*dev(img_), dev(meta_));
  ASSERT_TRUE(rb.ok()) << rb.status().message();
  EXPECT_EQ(rb->changed, 1u);  // block 200
  EXPECT_EQ(rb->damaged_sectors, 1u);
  EXPECT_TRUE(rb->sb.clean());
  EXPECT_TRUE(verify().clean());
  d = dump_volume(dev(meta_));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->damaged.empty());
  EXPECT_EQ(d->settled, 300u);
}

TEST_F(CsumToolsTest, ForeignOrBlankMetadataIsNotUsed) {
  EXPECT_EQ(dump_volume(dev(meta_)).status().code(), EMEDIUMTYPE);
  EXPECT_EQ(rebuild_volume(*dev(img_), dev(meta_)).status().code(), EMEDIUMTYPE);
  // Garbage where the superblock goes: format refuses without --force.
  poke(meta_, 100, 0x5a);
  EXPECT_EQ(format_over_data(*dev(img_), *dev(meta_), FormatParams{}, false).status().code(), EEXIST);
  // Block size out of range.
  FormatParams p;
  p.block_size = 8192;
  EXPECT_EQ(format_over_data(*dev(img_), *dev(meta_), p, true).status().code(), EINVAL);
}

}  // namespace
}  // namespace bowstack::csum
