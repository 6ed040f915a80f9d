// Mode rebuild: writes read back, a clean close leaves no dirty region, and
// after a crash the dirty regions' checksums are recomputed from the data
// (accepting whatever is there) while clean regions still catch damage.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "targets/csum/csum_test_util.h"
#include "targets/csum/csum_tools.h"
#include "targets/csum/csum_verify.h"

namespace bowstack::csum {
namespace {

class CsumRebuildTest : public CsumTest {
 protected:
  static CsumOptions rebuild_mode() {
    CsumOptions o;
    o.mode = Mode::kRebuild;
    o.mode_given = true;
    return o;
  }
};

TEST_F(CsumRebuildTest, WritesVerifyAndACleanCloseLeavesNoDirtyRegion) {
  std::mt19937_64 rng(21);
  const Bytes a = fill(rng, 64 * kBs);
  {
    auto t = open(rebuild_mode());
    ASSERT_TRUE(t.ok()) << t.status().message();
    ASSERT_TRUE((*t)->write(100 * kBs, a, 0).ok());
    ASSERT_TRUE((*t)->write_zeroes(110 * kBs, 2 * kBs, 0).ok());
    EXPECT_EQ((*t)->stats().dirty_regions, 1u);
    Bytes got(64 * kBs);
    ASSERT_TRUE((*t)->read(100 * kBs, got).ok());
    Bytes want = a;
    std::fill(want.begin() + 10 * kBs, want.begin() + 12 * kBs, std::byte{0});
    EXPECT_EQ(got, want);
    nlohmann::json j;
    (*t)->describe(&j);
    EXPECT_EQ(j["mode"], "rebuild");
  }
  auto m = FileDevice::open(meta_);
  ASSERT_TRUE(m.ok());
  auto d = dump_volume(m.value());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->sb.mode, Mode::kRebuild);
  EXPECT_TRUE(d->sb.clean());
  EXPECT_EQ(d->dirty_regions, 0u);
  EXPECT_EQ(d->two, 0u);  // rebuild stores settled pairs only
  auto v = verify_volume(FileDevice::open(img_).value(), m.value());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
  // Reopened without a mode: the recorded one is kept.
  auto t = open();
  ASSERT_TRUE(t.ok());
  nlohmann::json j;
  (*t)->describe(&j);
  EXPECT_EQ(j["mode"], "rebuild");
}

TEST_F(CsumRebuildTest, ACrashRecomputesDirtyRegionsOnly) {
  std::mt19937_64 rng(22);
  auto t = open(rebuild_mode());
  ASSERT_TRUE(t.ok());
  // Region 0 (blocks 0..4095 at 4 KiB: the whole 8 MiB image) would be one
  // region; use a written block and an unwritten one in it.
  ASSERT_TRUE((*t)->write(5 * kBs, fill(rng, kBs), kFua).ok());
  EXPECT_EQ((*t)->stats().dirty_regions, 1u);
  // The crash: both files as they are now, the target never closed.
  const std::string crash = crash_copy();
  // A flush clears the bit (in the cache; it reaches the disk later).
  ASSERT_TRUE((*t)->flush().ok());
  EXPECT_EQ((*t)->stats().dirty_regions, 0u);
  t = Status::Error(EINVAL, "closed");
  // Data that reached the device without its checksum (a lost pair write,
  // or a torn block): recovery accepts it, as the mode documents.
  poke(crash, 5 * kBs + 3, 0x01);
  auto r = open_at(crash);
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes got(kBs);
  EXPECT_TRUE((*r)->read(5 * kBs, got).ok());
  EXPECT_EQ((*r)->stats().dirty_regions, 0u);
  r = Status::Error(EINVAL, "closed");
  auto v = verify_volume(FileDevice::open(crash).value(), FileDevice::open(crash + ".csum").value());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
  // After the clean close, damage is caught again.
  poke(crash, 5 * kBs + 3, 0x01);
  r = open_at(crash);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->read(5 * kBs, got).code(), EIO);
}

TEST_F(CsumRebuildTest, ModesSwitchThroughRecovery) {
  std::mt19937_64 rng(23);
  const Bytes a = fill(rng, 4 * kBs);
  {
    auto t = open();  // dual
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE((*t)->write(0, a, 0).ok());
  }
  {
    auto t = open(rebuild_mode());
    ASSERT_TRUE(t.ok());
    Bytes got(4 * kBs);
    ASSERT_TRUE((*t)->read(0, got).ok());
    EXPECT_EQ(got, a);
    ASSERT_TRUE((*t)->write(kBs, fill(rng, kBs), 0).ok());
  }
  CsumOptions dual;
  dual.mode = Mode::kDual;
  dual.mode_given = true;
  auto t = open(dual);
  ASSERT_TRUE(t.ok());
  Bytes got(4 * kBs);
  ASSERT_TRUE((*t)->read(0, got).ok());
  nlohmann::json j;
  (*t)->describe(&j);
  EXPECT_EQ(j["mode"], "dual");
}

}  // namespace
}  // namespace bowstack::csum
