// Resuming a checkpoint when a server starts again on the image: the
// resume journal beside it continues the checkpoint, and every state that
// cannot be continued safely (journal missing or cut short, a log the
// writer could not extend) is refused without writing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "core/file_device.h"
#include "targets/bow/bow_format.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/bow_test_util.h"
#include "targets/bow/resume_journal.h"

namespace bowstack::bow {
namespace {

using test_util::Bytes;
using test_util::random_bytes;

class BowResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("bowstack-bow-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    image_ = (dir_ / "img").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::string image_;
};

TEST_F(BowResumeTest, ServeAgainContinuesTheCheckpoint) {
  std::mt19937_64 rng(8);
  const uint32_t bs = 4096;
  const uint64_t size = 4u << 20;
  ASSERT_TRUE(FileDevice::create(image_, size).ok());
  Bytes initial = random_bytes(rng, size);
  BowOptions opts{.block_size = bs, .meta_path = image_ + ".bowmeta"};
  Bytes expect_after;
  {
    auto file = FileDevice::open(image_).value();
    ASSERT_TRUE(file->write(0, initial, 0).ok());
    auto bow = BowTarget::open(file, opts).value();
    ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
    ASSERT_TRUE(bow->checkpoint().ok());
    for (int i = 0; i < 50; ++i) {
      Bytes d = random_bytes(rng, bs);
      uint64_t blk = rng() % (size / bs);
      ASSERT_TRUE(bow->write(blk * bs, d, 0).ok());
    }
    ASSERT_TRUE(bow->flush().ok());
    expect_after.resize(size);
    ASSERT_TRUE(bow->read(0, expect_after).ok());
  }
  ASSERT_TRUE(std::filesystem::exists(opts.meta_path));
  // Serve again: same checkpoint, same contents, more churn.
  {
    auto file = FileDevice::open(image_).value();
    auto reopened = BowTarget::open(file, opts);
    ASSERT_TRUE(reopened.ok()) << reopened.status().message();
    auto bow = reopened.value();
    EXPECT_EQ(bow->state(), State::kCheckpoint);
    Bytes now(size);
    ASSERT_TRUE(bow->read(0, now).ok());
    EXPECT_EQ(now, expect_after);
    for (int i = 0; i < 80; ++i) {
      Bytes d = random_bytes(rng, bs);
      uint64_t blk = rng() % (size / bs);
      ASSERT_TRUE(bow->write(blk * bs, d, 0).ok());
    }
    ASSERT_TRUE(bow->flush().ok());
  }
  // Restore returns the checkpoint image on the blocks in use at checkpoint.
  auto file = FileDevice::open(image_).value();
  auto r = restore(*file, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes back(size);
  ASSERT_TRUE(file->read(0, back).ok());
  EXPECT_EQ(std::memcmp(back.data(), initial.data(), size / 2), 0);
}

TEST_F(BowResumeTest, MissingJournalRefusesToServe) {
  const uint64_t size = 2u << 20;
  ASSERT_TRUE(FileDevice::create(image_, size).ok());
  BowOptions opts{.meta_path = image_ + ".bowmeta"};
  {
    auto bow = BowTarget::open(FileDevice::open(image_).value(), opts).value();
    ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
    ASSERT_TRUE(bow->checkpoint().ok());
  }
  std::filesystem::remove(opts.meta_path);
  auto again = BowTarget::open(FileDevice::open(image_).value(), opts);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("bowstack restore"), std::string::npos);
}

// A journal that lost its tail at a record boundary (here its last record,
// the claim of a block that received flushed data in free space) would make
// that block look free, and the next saved copy would go over the data:
// resuming from it is refused with a message naming the journal, and the
// image is left as it was (restore still rolls back).
TEST_F(BowResumeTest, JournalThatLostItsTailIsRefused) {
  const uint32_t bs = 4096;
  const uint64_t size = 4u << 20;
  ASSERT_TRUE(FileDevice::create(image_, size).ok());
  BowOptions opts{.block_size = bs, .meta_path = image_ + ".bowmeta"};
  const Bytes data(bs, std::byte{0xc3});
  {
    auto bow = BowTarget::open(FileDevice::open(image_).value(), opts).value();
    ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
    ASSERT_TRUE(bow->checkpoint().ok());
    ASSERT_TRUE(bow->write(bs, Bytes(bs, std::byte{0xb2}), 0).ok());  // a first overwrite: saved, logged
    ASSERT_TRUE(bow->write(size / 2 + 8 * bs, data, 0).ok());         // into free space: claimed
    ASSERT_TRUE(bow->flush().ok());
  }
  auto j = ResumeJournal::load(Env::posix(), opts.meta_path);
  ASSERT_TRUE(j.ok()) << j.status().message();
  ASSERT_FALSE(j->extents.empty());
  ASSERT_EQ(j->extents.back().type, JournalRecord::kClaim);
  EXPECT_EQ(j->extents.back().start, (size / 2) / bs + 8);
  EXPECT_FALSE(j->tail_lost());
  // Cut exactly at the record boundary before the claim.
  std::filesystem::resize_file(opts.meta_path, (j->valid_records - 1) * 64);
  Bytes before(size);
  ASSERT_TRUE(FileDevice::open(image_).value()->read(0, before).ok());
  auto again = BowTarget::open(FileDevice::open(image_).value(), opts);
  ASSERT_FALSE(again.ok()) << "resumed from a journal that lost its tail";
  const std::string why = again.status().message();
  EXPECT_NE(why.find("resume journal '" + opts.meta_path + "' lost its tail"), std::string::npos) << why;
  EXPECT_NE(why.find("bowstack restore"), std::string::npos) << why;
  Bytes after(size);
  auto file = FileDevice::open(image_).value();
  ASSERT_TRUE(file->read(0, after).ok());
  EXPECT_TRUE(after == before) << "a refused resume wrote to the image";
  EXPECT_EQ(std::filesystem::file_size(opts.meta_path), (j->valid_records - 1) * 64);
  auto r = restore(*file, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->outcome, RestoreReport::Outcome::kRestored);
}

// The log writer switches block 0 by rewriting its first sector, so a log
// whose header pushes entry 0 beyond it (valid for readers, never written by
// bowstack) is refused at resume rather than continued.
TEST_F(BowResumeTest, LogWithEntryZeroOutsideTheFirstSectorIsNotResumed) {
  const uint32_t bs = 4096;
  const uint64_t size = 4u << 20;
  ASSERT_TRUE(FileDevice::create(image_, size).ok());
  BowOptions opts{.block_size = bs, .meta_path = image_ + ".bowmeta"};
  {
    auto bow = BowTarget::open(FileDevice::open(image_).value(), opts).value();
    ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
    ASSERT_TRUE(bow->checkpoint().ok());
  }
  auto file = FileDevice::open(image_).value();
  Bytes b0(bs);
  ASSERT_TRUE(file->read(0, b0).ok());
  LogHeader h = unpack_header(std::span<const std::byte>(b0).first(kHeaderSize));
  ASSERT_EQ(h.header_size, kHeaderSize);
  ASSERT_EQ(h.count, 1u);
  const Bytes entry0(b0.begin() + kHeaderSize, b0.begin() + kHeaderSize + kEntrySize);
  h.header_size = 512;
  pack_header(h, std::span<std::byte>(b0).first(kHeaderSize));
  std::memcpy(b0.data() + 512, entry0.data(), kEntrySize);
  ASSERT_TRUE(file->write(0, b0, 0).ok());
  ASSERT_TRUE(read_and_validate(*file).ok()) << "the tampered log should still be valid for readers";
  Bytes before(size);
  ASSERT_TRUE(file->read(0, before).ok());
  file.reset();
  auto again = BowTarget::open(FileDevice::open(image_).value(), opts);
  ASSERT_FALSE(again.ok()) << "resumed a log whose entry 0 lies outside the first sector";
  EXPECT_NE(again.status().message().find("header size 512 puts entry 0 outside its first sector"),
            std::string::npos)
      << again.status().message();
  Bytes after(size);
  ASSERT_TRUE(FileDevice::open(image_).value()->read(0, after).ok());
  EXPECT_TRUE(after == before) << "a refused resume wrote to the image";
}

TEST_F(BowResumeTest, CommitRemovesJournalAndNextServeStartsFresh) {
  const uint64_t size = 2u << 20;
  ASSERT_TRUE(FileDevice::create(image_, size).ok());
  BowOptions opts{.meta_path = image_ + ".bowmeta"};
  {
    auto bow = BowTarget::open(FileDevice::open(image_).value(), opts).value();
    ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
    ASSERT_TRUE(bow->checkpoint().ok());
    ASSERT_TRUE(bow->commit().ok());
  }
  EXPECT_FALSE(std::filesystem::exists(opts.meta_path));
  auto again = BowTarget::open(FileDevice::open(image_).value(), opts);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value()->state(), State::kTrim);
}

}  // namespace
}  // namespace bowstack::bow
