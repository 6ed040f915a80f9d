#include "core/file_device.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>
#include <vector>

#include "core/memory_device.h"

namespace bowstack {
namespace {

class FileDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bowstack-fd-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "img").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::string path_;
};

std::vector<std::byte> pattern(size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<unsigned char>((i * 31 + seed) & 0xff));
  return v;
}

TEST_F(FileDeviceTest, CreateRefusesExisting) {
  ASSERT_TRUE(FileDevice::create(path_, 1 << 20).ok());
  Status s = FileDevice::create(path_, 2 << 20);
  EXPECT_EQ(s.code(), EEXIST);
  EXPECT_EQ(std::filesystem::file_size(path_), 1u << 20);  // untouched
}

TEST_F(FileDeviceTest, OpenMissingNamesPath) {
  auto d = FileDevice::open(path_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), ENOENT);
  EXPECT_NE(d.status().message().find(path_), std::string::npos);
}

TEST_F(FileDeviceTest, OpenRejectsDirectoryAndTinyFile) {
  int dir_error = FileDevice::open(dir_.string()).status().code();
  EXPECT_TRUE(dir_error == EISDIR || dir_error == EINVAL) << dir_error;
  ASSERT_TRUE(FileDevice::create(path_, 100).ok());
  EXPECT_EQ(FileDevice::open(path_).status().code(), EINVAL);
}

TEST_F(FileDeviceTest, GeometryRoundsDownToBlocks) {
  ASSERT_TRUE(FileDevice::create(path_, (1 << 20) + 100).ok());
  auto d = FileDevice::open(path_);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_EQ((*d)->geometry().size, 1u << 20);
  // Through the page cache any byte range works: clients are told 1.
  EXPECT_EQ((*d)->geometry().logical_block_size, 1u);
  EXPECT_TRUE((*d)->geometry().accepts_unaligned);
  EXPECT_TRUE((*d)->capabilities().flush);
  EXPECT_TRUE((*d)->capabilities().multi_conn);
}

TEST_F(FileDeviceTest, ReadWriteFlushRoundTrip) {
  ASSERT_TRUE(FileDevice::create(path_, 4 << 20).ok());
  auto d = FileDevice::open(path_);
  ASSERT_TRUE(d.ok());
  auto data = pattern(64 << 10, 7);
  ASSERT_TRUE((*d)->write(8192, data, kFua).ok());
  ASSERT_TRUE((*d)->flush().ok());
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE((*d)->read(8192, back).ok());
  EXPECT_EQ(back, data);
}

TEST_F(FileDeviceTest, TrimAndZeroesReadBackZeroAndShowHoles) {
  ASSERT_TRUE(FileDevice::create(path_, 4 << 20).ok());
  auto d = FileDevice::open(path_);
  ASSERT_TRUE(d.ok());
  auto data = pattern(1 << 20, 3);
  ASSERT_TRUE((*d)->write(0, data, 0).ok());
  ASSERT_TRUE((*d)->write_zeroes(0, 256 << 10, kNoHole).ok());
  ASSERT_TRUE((*d)->trim(512 << 10, 256 << 10, 0).ok());
  std::vector<std::byte> back(1 << 20);
  ASSERT_TRUE((*d)->read(0, back).ok());
  for (size_t i = 0; i < (256u << 10); ++i) ASSERT_EQ(back[i], std::byte{0}) << i;
  for (size_t i = 512u << 10; i < (768u << 10); ++i) ASSERT_EQ(back[i], std::byte{0}) << i;
  EXPECT_EQ(std::memcmp(back.data() + (256 << 10), data.data() + (256 << 10), 256 << 10), 0);

  std::vector<Extent> extents;
  ASSERT_TRUE((*d)->block_status(0, 4 << 20, &extents).ok());
  ASSERT_FALSE(extents.empty());
  uint64_t total = 0, holes = 0;
  for (const auto& e : extents) {
    total += e.length;
    if (e.flags & kExtentHole) holes += e.length;
  }
  EXPECT_EQ(total, 4u << 20);
  EXPECT_GE(holes, 3u << 20);  // the untouched tail and the trimmed range are holes
}

TEST_F(FileDeviceTest, ReadOnlyOpen) {
  ASSERT_TRUE(FileDevice::create(path_, 1 << 20).ok());
  auto d = FileDevice::open(path_, {.read_only = true});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE((*d)->capabilities().read_only);
  auto data = pattern(4096, 1);
  EXPECT_FALSE((*d)->write(0, data, 0).ok());  // EBADF from the kernel
}

TEST_F(FileDeviceTest, ParallelWritersDoNotInterfere) {
  ASSERT_TRUE(FileDevice::create(path_, 8 << 20).ok());
  auto d = FileDevice::open(path_);
  ASSERT_TRUE(d.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto data = pattern(64 << 10, t);
      for (int i = 0; i < 16; ++i) {
        EXPECT_TRUE((*d)->write(static_cast<uint64_t>(t) * (1 << 20) + i * (64 << 10), data,
                                i % 4 == 0 ? uint32_t{kFua} : 0u)
                        .ok());
      }
      EXPECT_TRUE((*d)->flush().ok());
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) {
    std::vector<std::byte> back(64 << 10);
    ASSERT_TRUE((*d)->read(static_cast<uint64_t>(t) * (1 << 20) + 15 * (64 << 10), back).ok());
    EXPECT_EQ(back, pattern(64 << 10, t));
  }
}

TEST_F(FileDeviceTest, DirectIoUsesAlignedGeometry) {
  ASSERT_TRUE(FileDevice::create(path_, 1 << 20).ok());
  auto d = FileDevice::open(path_, {.direct = true});
  if (!d.ok() && d.status().code() == EINVAL) GTEST_SKIP() << "filesystem without O_DIRECT";
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->geometry().logical_block_size, 4096u);
  void* raw = std::aligned_alloc(4096, 8192);
  std::memset(raw, 0xab, 8192);
  std::span<std::byte> buf(static_cast<std::byte*>(raw), 8192);
  EXPECT_TRUE((*d)->write(4096, buf, kFua).ok());
  std::memset(raw, 0, 8192);
  EXPECT_TRUE((*d)->read(4096, buf).ok());
  EXPECT_EQ(buf[8191], std::byte{0xab});
  std::free(raw);
}

// A FUA batch lands every range, adjacent ranges merged or not, in any
// order given, and leaves the device usable; a batch without FUA too.
TEST_F(FileDeviceTest, WriteBatchWritesEveryRange) {
  ASSERT_TRUE(FileDevice::create(path_, 1 << 20).ok());
  auto d = FileDevice::open(path_).value();
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < 6; ++i) data.push_back(pattern(4096, i + 1));
  // 0 and 1 adjacent (one vectored write), 5 far away, given out of order.
  std::vector<WriteRef> batch{{8192, data[2]}, {0, data[0]}, {4096, data[1]}, {512 * 1024, data[5]}};
  ASSERT_TRUE(d->write_batch(batch, kFua).ok());
  std::vector<WriteRef> plain{{65536, data[3]}, {69632, data[4]}};
  ASSERT_TRUE(d->write_batch(plain, 0).ok());
  ASSERT_TRUE(d->write_batch({}, kFua).ok());
  for (const auto& [off, idx] : std::vector<std::pair<uint64_t, int>>{
           {8192, 2}, {0, 0}, {4096, 1}, {512 * 1024, 5}, {65536, 3}, {69632, 4}}) {
    std::vector<std::byte> got(4096);
    ASSERT_TRUE(d->read(off, got).ok());
    EXPECT_EQ(got, data[idx]) << "offset " << off;
  }
}

// The default (used by any device without its own) writes through write()
// and makes the batch durable with exactly one flush.
TEST(BlockDeviceDefaults, WriteBatchIsWritesThenOneFlush) {
  MemoryDevice m(1 << 20);
  auto a = pattern(4096, 1), b = pattern(512, 2);
  std::vector<WriteRef> batch{{4096, a}, {0, b}};
  ASSERT_TRUE(m.write_batch(batch, kFua).ok());
  EXPECT_EQ(m.flush_count(), 1u);
  ASSERT_TRUE(m.write_batch(batch, 0).ok());
  EXPECT_EQ(m.flush_count(), 1u);
  auto contents = m.contents();
  EXPECT_EQ(std::memcmp(contents.data() + 4096, a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(contents.data(), b.data(), b.size()), 0);
  // A failing write stops the batch before the flush.
  m.fail_writes_after(0);
  EXPECT_EQ(m.write_batch(batch, kFua).code(), EIO);
  EXPECT_EQ(m.flush_count(), 1u);
}

}  // namespace
}  // namespace bowstack
