#include "core/device_tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "core/core_test_util.h"
#include "core/file_device.h"

namespace bowstack {
namespace {

using testing::Pass;
using testing::TempDir;
using testing::test_registry;

TableNode table(const std::string& text) {
  auto t = parse_table_text(text, test_registry());
  EXPECT_TRUE(t.ok()) << t.status().context();
  return t.value();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class DeviceTreeTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(FileDevice::create(img_, 1 << 20).ok()); }
  std::string leaf() const { return R"({"file":")" + img_ + R"("})"; }
  TempDir dir_;
  const std::string img_ = dir_ / "d.img";
};

TEST_F(DeviceTreeTest, BuildsBottomUpAndOpensSideStores) {
  auto t =
      DeviceTree::build(table(R"({"target":"pass","params":{"tag":"top"},"devices":{"data":{"target":"pass",
      "devices":{"data":)" + leaf() +
                              R"(,"meta":null}}}})"),
                        test_registry(), {});
  ASSERT_TRUE(t.ok()) << t.status().context();
  auto* top = dynamic_cast<Pass*>((*t)->top().get());
  ASSERT_NE(top, nullptr);
  EXPECT_EQ(top->tag(), "top");
  ASSERT_NE(top->lower(), nullptr);
  EXPECT_EQ(top->lower()->lower()->kind(), "file");
  // The top's side store defaulted to IMAGE.meta and was created, 64 KiB.
  struct stat st {};
  ASSERT_EQ(::stat((img_ + ".meta").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 10);
  nlohmann::json s = (*t)->status();
  EXPECT_EQ(s["target"], "pass");
  EXPECT_EQ(s["devices"]["meta"]["file"], img_ + ".meta");
  EXPECT_EQ(s["devices"]["data"]["path"], "$.devices.data");
  EXPECT_TRUE(s["devices"]["data"]["devices"]["meta"].is_null());
  EXPECT_EQ(s["devices"]["data"]["devices"]["data"]["kind"], "file");
  EXPECT_TRUE(s["jobs"].is_array());
}

TEST_F(DeviceTreeTest, ListSlotsAndSideFiles) {
  const std::string b = dir_ / "b.img";
  auto t =
      DeviceTree::build(table(R"({"target":"journal","devices":{"data":{"target":"mix","devices":{"legs":[)" +
                              leaf() + R"(,{"file":")" + b + R"(","create":"1M"}]}}}})"),
                        test_registry(), {});
  ASSERT_TRUE(t.ok()) << t.status().context();
  // journal's side file has no default without a data image below it.
  EXPECT_EQ(dynamic_cast<Pass*>((*t)->top().get())->tag(), "");
  nlohmann::json s = (*t)->status();
  EXPECT_EQ(s["devices"]["data"]["devices"]["legs"].size(), 2u);
  EXPECT_EQ(s["devices"]["data"]["devices"]["legs"][1]["file"], b);
  t.value().reset();
  auto j = DeviceTree::build(table(R"({"target":"journal","devices":{"data":)" + leaf() + "}}"),
                             test_registry(), {});
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(dynamic_cast<Pass*>((*j)->top().get())->tag(), img_ + ".log");
  EXPECT_EQ((*j)->status()["devices"]["log"]["kind"], "side file");
  EXPECT_EQ((*j)->status()["devices"]["log"]["exists"], false);
}

TEST_F(DeviceTreeTest, ErrorsNameTheNodeAndLeaveNothingOpen) {
  auto t = DeviceTree::build(
      table(
          R"({"target":"pass","devices":{"data":{"target":"pass","params":{"fail":true},"devices":{"data":)" +
          leaf() + R"(,"meta":null}}}})"),
      test_registry(), {});
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(contains(t.status().context(), "$.devices.data: pass: asked to fail")) << t.status().context();
  // The image is not held: it can be opened exclusively again.
  EXPECT_TRUE(FileDevice::open(img_, FileDeviceOptions{false, false, true}).ok());
  auto missing = DeviceTree::build(
      table(R"({"target":"pass","devices":{"data":{"file":")" + (dir_ / "nope") + R"("}}})"), test_registry(),
      {});
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(contains(missing.status().context(), "$.devices.data: '")) << missing.status().context();
  EXPECT_TRUE(contains(missing.status().context(), "does not exist (create it with --create SIZE"));
  auto resize = DeviceTree::build(table(R"({"file":")" + img_ + R"(","create":"2M"})"), test_registry(), {});
  ASSERT_FALSE(resize.ok());
  EXPECT_TRUE(contains(resize.status().context(), "refusing to resize it"));
}

TEST_F(DeviceTreeTest, FilesAreLockedAgainstASecondOpener) {
  auto t =
      DeviceTree::build(table(R"({"target":"pass","devices":{"data":)" + leaf() + "}}"), test_registry(), {});
  ASSERT_TRUE(t.ok());
  // Another open in this process conflicts as a second server would.
  auto again = DeviceTree::build(table(leaf()), test_registry(), {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), EBUSY);
  EXPECT_TRUE(contains(again.status().context(), "is in use by this process")) << again.status().context();
  auto side = FileDevice::open(img_ + ".meta", FileDeviceOptions{true, false, true});
  ASSERT_FALSE(side.ok());
  EXPECT_EQ(side.status().code(), EBUSY);
  t.value().reset();
  EXPECT_TRUE(DeviceTree::build(table(leaf()), test_registry(), {}).ok());
}

TEST_F(DeviceTreeTest, ReadOnlyOpenersShareButExcludeWriters) {
  auto r1 = FileDevice::open(img_, FileDeviceOptions{true, false, true});
  auto r2 = FileDevice::open(img_, FileDeviceOptions{true, false, true});
  ASSERT_TRUE(r1.ok() && r2.ok());
  auto w = FileDevice::open(img_, FileDeviceOptions{false, false, true});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), EBUSY);
}

TEST_F(DeviceTreeTest, APoolLendsUnchangedNodesAndOpenFiles) {
  auto first = DeviceTree::build(
      table(R"({"target":"pass","params":{"tag":"a"},"devices":{"data":)" + leaf() + R"(,"meta":null}})"),
      test_registry(), {});
  ASSERT_TRUE(first.ok());
  NodePool pool;
  pool.add_tree((*first)->root());
  // The same node under a new parent: the same instance, now at a new path.
  auto second = DeviceTree::build(
      table(R"({"target":"pass","params":{"tag":"b"},"devices":{"data":{"target":"pass","params":{"tag":"a"},
          "devices":{"data":)" +
            leaf() + R"(,"meta":null}},"meta":null}})"),
      test_registry(), {}, &pool);
  ASSERT_TRUE(second.ok()) << second.status().context();
  EXPECT_EQ((*second)->top()->lower(), (*first)->top().get());
  EXPECT_EQ((*first)->root()->spec.json_path, "$.devices.data");
  // A file already open is shared, not opened (and locked) twice.
  NodePool files;
  files.add_tree((*second)->root());
  auto third = DeviceTree::build(table(leaf()), test_registry(), {}, &files);
  ASSERT_TRUE(third.ok()) << third.status().context();
  EXPECT_EQ((*third)->top().get(), (*first)->top()->lower());
}

TEST_F(DeviceTreeTest, MessagesGoToTheNodesTopFirst) {
  auto t =
      DeviceTree::build(table(R"({"target":"pass","params":{"tag":"top"},"devices":{"data":{"target":"pass",
      "params":{"tag":"low"},"devices":{"data":)" +
                              leaf() + R"(,"meta":null}},"meta":null}})"),
                        test_registry(), {});
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->message("tag", "").value(), "top");
  EXPECT_EQ((*t)->message("tag", "$.devices.data").value(), "low");
  EXPECT_EQ((*t)->message("tag", "pass").value(), "top");
  EXPECT_EQ((*t)->message("tag", "mix").status().code(), ENOENT);
  EXPECT_EQ((*t)->message("what", "").status().code(), ENOTSUP);
}

}  // namespace
}  // namespace bowstack
