#include "core/file_paths.h"

#include <gtest/gtest.h>

#include "core/core_test_util.h"
#include "core/file_device.h"

namespace bowstack {
namespace {

TEST(FilePaths, PrepareCreatesGrowsNeverShrinksAndRespectsLocks) {
  testing::TempDir dir;
  const std::string f = dir / "m";
  EXPECT_FALSE(inspect_path(f).value().exists);
  ASSERT_TRUE(prepare_file(f, 8192, "m").ok());
  EXPECT_EQ(inspect_path(f).value().size, 8192u);
  EXPECT_TRUE(inspect_path(f).value().regular);
  ASSERT_TRUE(prepare_file(f, 16384, "m").ok());
  EXPECT_EQ(inspect_path(f).value().size, 16384u);
  ASSERT_TRUE(prepare_file(f, 4096, "m").ok());
  EXPECT_EQ(inspect_path(f).value().size, 16384u);  // never shrunk
  {
    auto held = FileDevice::open(f, FileDeviceOptions{.lock = true});
    ASSERT_TRUE(held.ok());
    Status s = prepare_file(f, 1 << 20, "the file 'm'");
    EXPECT_EQ(s.code(), EBUSY);
    EXPECT_NE(s.context().find("the file 'm' is in use by this process"), std::string::npos) << s.context();
    EXPECT_EQ(inspect_path(f).value().size, 16384u);  // untouched
  }
  auto cap = path_capacity(f);
  ASSERT_TRUE(cap.ok());
  EXPECT_GE(*cap, 16384u);
  EXPECT_TRUE(path_capacity(dir / "absent").ok());
}

}  // namespace
}  // namespace bowstack
