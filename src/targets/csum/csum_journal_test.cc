// Mode journal: the record format, writes through the journal (checkpoints
// when it fills, batches larger than it), and replay after a crash
// repairing a torn in-place write.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "targets/csum/csum_journal_format.h"
#include "targets/csum/csum_test_util.h"
#include "targets/csum/csum_tools.h"
#include "targets/csum/csum_verify.h"

namespace bowstack::csum {
namespace {

TEST(CsumJournalFormat, RoundTripAndRejections) {
  const Uuid u{1, 2, 3};
  JournalDescriptor d;
  d.location = 4400;
  d.sequence = 77;
  d.entries = {{5, 0x11223344, 0}, {9, 3, kEntryZero}, {6, 0x55667788, 0}};
  d.data_sectors = 2 * 8;
  AlignedBuf page(kJournalPage);
  encode_journal_descriptor(d, u, page.span());
  auto r = decode_journal_descriptor(page.span(), u, 4400, 77, 100, 4096, 1000);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->entries.size(), 3u);
  EXPECT_EQ(r->entries[1].value, 3u);
  EXPECT_EQ(r->record_sectors(), 8u + 16u);
  EXPECT_EQ(journal_record_sectors(2, 4096), 24u);
  EXPECT_EQ(journal_record_sectors(3, 512), 16u);  // 3 data sectors padded to a page
  // Wrong place, sequence, volume, size, or a run past the end: not committed.
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4408, 77, 100, 4096, 1000).status().code(), EUCLEAN);
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4400, 78, 100, 4096, 1000).status().code(), EUCLEAN);
  EXPECT_EQ(decode_journal_descriptor(page.span(), Uuid{9}, 4400, 77, 100, 4096, 1000).status().code(),
            EUCLEAN);
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4400, 77, 100, 4096, 23).status().code(), EUCLEAN);
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4400, 77, 11, 4096, 1000).status().code(), EUCLEAN);
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4400, 77, 100, 512, 1000).status().code(), EUCLEAN);
  page.span()[100] ^= std::byte{1};
  EXPECT_EQ(decode_journal_descriptor(page.span(), u, 4400, 77, 100, 4096, 1000).status().code(), EUCLEAN);
}

class CsumJournalTest : public CsumTest {
 protected:
  void SetUp() override {
    CsumTest::SetUp();
    FormatParams p;
    p.data_size = kSize;
    p.journal_sectors = kJournal / kSector;
    fs::remove(meta_);
    ASSERT_TRUE(FileDevice::create(meta_, *CsumMetadata::bytes_needed(p)).ok());
  }
  static constexpr uint64_t kJournal = 2u << 20;
  static CsumOptions journal_mode() {
    CsumOptions o;
    o.mode = Mode::kJournal;
    o.mode_given = true;
    o.journal_size = kJournal;
    return o;
  }
  static nlohmann::json status(CsumTarget& t) {
    nlohmann::json j;
    t.describe(&j);
    return j;
  }
};

TEST_F(CsumJournalTest, WritesCheckpointsAndBatchesLargerThanTheJournal) {
  std::mt19937_64 rng(31);
  const Bytes big = fill(rng, 4u << 20);  // twice the journal, in one request
  const Bytes small = fill(rng, 3 * kBs);
  {
    auto t = open(journal_mode());
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ(status(**t)["mode"], "journal");
    ASSERT_TRUE((*t)->write(0, big, 0).ok());
    for (int i = 0; i < 200; ++i) ASSERT_TRUE((*t)->write(1500 * kBs, small, 0).ok());
    ASSERT_TRUE((*t)->write_zeroes(1000 * kBs, 10 * kBs, 0).ok());
    ASSERT_TRUE((*t)->flush().ok());
    Bytes got(big.size());
    ASSERT_TRUE((*t)->read(0, got).ok());
    Bytes want = big;
    std::fill(want.begin() + 1000 * kBs, want.begin() + 1010 * kBs, std::byte{0});
    EXPECT_EQ(got, want);
    EXPECT_GT(status(**t)["journal_checkpoints"].get<uint64_t>(), 2u);
  }
  auto v = verify_volume(FileDevice::open(img_).value(), FileDevice::open(meta_).value());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
  auto d = dump_volume(FileDevice::open(meta_).value());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->sb.mode, Mode::kJournal);
  EXPECT_EQ(d->two, 0u);  // journal mode keeps pairs settled
}

TEST_F(CsumJournalTest, ReplayRepairsATornInPlaceWrite) {
  std::mt19937_64 rng(32);
  const Bytes a = fill(rng, 4 * kBs);
  auto t = open(journal_mode());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->write(40 * kBs, a, 0).ok());
  ASSERT_TRUE((*t)->flush().ok());
  // The crash: both files now, never closed; then the in-place copy of
  // block 41 torn (its first sector old).
  const std::string crash = crash_copy();
  t = Status::Error(EINVAL, "closed");
  {
    auto dev = FileDevice::open(crash);
    ASSERT_TRUE(dev.ok());
    ASSERT_TRUE((*dev)->write(41 * kBs, Bytes(512), 0).ok());
  }
  {
    // Offline, before the replay: the torn block is in a committed record,
    // so it is not a mismatch.
    auto v = verify_volume(FileDevice::open(crash).value(), FileDevice::open(crash + ".csum").value());
    ASSERT_TRUE(v.ok()) << v.status().message();
    EXPECT_TRUE(v->clean());
    EXPECT_EQ(v->journalled, 4u);
  }
  auto r = open_at(crash);
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes got(4 * kBs);
  ASSERT_TRUE((*r)->read(40 * kBs, got).ok());
  EXPECT_EQ(got, a);
  // New writes after the replay, a clean close, and it all verifies.
  ASSERT_TRUE((*r)->write(40 * kBs, fill(rng, kBs), 0).ok());
  r = Status::Error(EINVAL, "closed");
  auto v = verify_volume(FileDevice::open(crash).value(), FileDevice::open(crash + ".csum").value());
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->clean());
}

// csum rebuild of a volume that stopped uncleanly in mode journal applies
// its committed records first (acknowledged data), and new records after it
// never reuse the sequence numbers of records left behind.
TEST_F(CsumJournalTest, OfflineRebuildAppliesTheJournalFirst) {
  std::mt19937_64 rng(33);
  const Bytes a = fill(rng, 2 * kBs);
  auto t = open(journal_mode());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->write(70 * kBs, a, 0).ok());
  ASSERT_TRUE((*t)->flush().ok());
  const std::string crash = crash_copy();
  t = Status::Error(EINVAL, "closed");
  {
    auto dev = FileDevice::open(crash);
    ASSERT_TRUE((*dev)->write(70 * kBs, Bytes(2 * kBs), 0).ok());  // the in-place copies lost
  }
  EXPECT_EQ(
      rewrite_block_offline(*FileDevice::open(crash).value(), FileDevice::open(crash + ".csum").value(), 70)
          .status()
          .code(),
      EBUSY);
  const uint64_t seq_before = [&] {
    auto m = CsumMetadata::open(FileDevice::open(crash + ".csum").value());
    return (*m)->superblock().journal_tail_seq;
  }();
  auto rb = rebuild_volume(*FileDevice::open(crash).value(), FileDevice::open(crash + ".csum").value());
  ASSERT_TRUE(rb.ok()) << rb.status().message();
  EXPECT_GE(rb->replayed, 1u);
  EXPECT_GT(rb->sb.journal_tail_seq, seq_before + kJournal / kSector / 8);
  Bytes got(2 * kBs);
  ASSERT_TRUE(FileDevice::open(crash).value()->read(70 * kBs, got).ok());
  EXPECT_EQ(got, a);
}

TEST_F(CsumJournalTest, ANewVolumeWithoutAJournalRefusesJournalMode) {
  { ASSERT_TRUE(open().ok()); }  // formatted dual, no journal
  auto t = open(journal_mode());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), EINVAL);
  EXPECT_NE(t.status().message().find("journal-size"), std::string::npos);
}

}  // namespace
}  // namespace bowstack::csum
