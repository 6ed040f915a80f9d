// The csum tests' fixture: a sparse 8 MiB image with its sidecar in a
// temporary directory of its own, and a byte flipper.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/file_device.h"
#include "core/test_bytes.h"
#include "targets/csum/csum_target.h"

namespace bowstack::csum {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;
constexpr uint32_t kBs = 4096;
constexpr uint64_t kSize = 8 << 20;  // 2048 blocks

inline Bytes fill(std::mt19937_64& rng, size_t n) { return bowstack::testdata::random_bytes(rng, n); }

class CsumTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("csum-test-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    img_ = (dir_ / "disk.img").string();
    meta_ = (dir_ / "disk.img.csum").string();
    ASSERT_TRUE(FileDevice::create(img_, kSize).ok());
    FormatParams p;
    p.data_size = kSize;
    ASSERT_TRUE(FileDevice::create(meta_, *CsumMetadata::bytes_needed(p)).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<std::shared_ptr<CsumTarget>> open(CsumOptions opts = {}) { return open_at(img_, std::move(opts)); }
  // The volume of image `img` (its sidecar img + ".csum").
  Result<std::shared_ptr<CsumTarget>> open_at(const std::string& img, CsumOptions opts = {}) {
    auto d = FileDevice::open(img);
    auto m = FileDevice::open(img + ".csum");
    if (!d.ok()) return d.status();
    if (!m.ok()) return m.status();
    return CsumTarget::open(d.value(), m.value(), std::move(opts));
  }
  // Both files as a crash would leave them now (taken while the target is
  // open): the copy's image path.
  std::string crash_copy() {
    const fs::path img = dir_ / "crash.img";
    fs::copy_file(img_, img);
    fs::copy_file(meta_, dir_ / "crash.img.csum");
    return img.string();
  }
  void poke(const std::string& path, uint64_t at, unsigned char x) {
    auto d = FileDevice::open(path);
    ASSERT_TRUE(d.ok());
    Bytes b(512);
    ASSERT_TRUE((*d)->read(at / 512 * 512, b).ok());
    b[at % 512] ^= std::byte{x};
    ASSERT_TRUE((*d)->write(at / 512 * 512, b, 0).ok());
  }

  fs::path dir_;
  std::string img_, meta_;
};

}  // namespace bowstack::csum
