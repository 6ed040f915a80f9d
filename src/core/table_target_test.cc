#include "core/table_target.h"

#include <gtest/gtest.h>

#include "core/core_test_util.h"

namespace bowstack {
namespace {

using testing::test_registry;

// find_table_target on the table `text`, which must parse.
Result<TableTarget> find_in(const std::string& text, std::string_view target, bool need_data_leaf = false,
                            std::string_view side_slot = "meta") {
  auto table = parse_table_text(text, test_registry());
  EXPECT_TRUE(table.ok()) << table.status().context();
  if (!table.ok()) return table.status();
  return find_table_target(
      table.value(),
      TableTargetQuery{
          .target = target, .side_slot = side_slot, .need_data_leaf = need_data_leaf, .tool = "tool"});
}

TEST(TableTarget, FindsTheNodeItsDataLeafAndItsDefaultSideStore) {
  auto t =
      find_in(R"({"target":"pass","params":{"tag":"x"},"devices":{"data":{"file":"d.img"}}})", "pass", true);
  ASSERT_TRUE(t.ok()) << t.status().context();
  EXPECT_EQ(t->node.json_path, "$");
  EXPECT_EQ(t->node.params.value("tag", ""), "x");
  ASSERT_TRUE(t->data.has_value());
  EXPECT_EQ(t->data->kind, TableNode::Kind::kFile);
  EXPECT_EQ(t->data->path, "d.img");
  ASSERT_TRUE(t->side.has_value());
  EXPECT_EQ(t->side->path, "d.img.meta");  // resolved by the parser, as serve does
}

TEST(TableTarget, FindsANodeDeepInTheTreeAndInALegList) {
  auto t =
      find_in(R"({"target":"journal","devices":{"data":{"target":"pass","devices":{"data":{"file":"x"}}}}})",
              "pass", true);
  ASSERT_TRUE(t.ok()) << t.status().context();
  EXPECT_EQ(t->node.json_path, "$.devices.data");
  EXPECT_EQ(t->data->path, "x");
  auto legs = find_in(
      R"({"target":"mix","devices":{"legs":[{"file":"a"},{"target":"pass","devices":{"data":{"file":"b"}}}]}})",
      "pass", true);
  ASSERT_TRUE(legs.ok()) << legs.status().context();
  EXPECT_EQ(legs->node.json_path, "$.devices.legs[1]");
  EXPECT_EQ(legs->data->path, "b");
}

TEST(TableTarget, NoNodeOfTheTargetIsAnError) {
  auto t = find_in(R"({"file":"d.img"})", "pass");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), EINVAL);
  EXPECT_EQ(t.status().context(), "the table has 0 pass nodes; tool --table needs exactly one");
  // Other targets do not count.
  auto other = find_in(R"({"target":"journal","devices":{"data":{"file":"d.img"}}})", "pass");
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().context(), "the table has 0 pass nodes; tool --table needs exactly one");
}

TEST(TableTarget, TwoNodesOfTheTargetAreAnError) {
  auto t = find_in(
      R"({"target":"pass","devices":{"data":{"target":"pass","devices":{"data":{"file":"x"},"meta":null}}}})",
      "pass");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), EINVAL);
  EXPECT_EQ(t.status().context(), "the table has 2 pass nodes; tool --table needs exactly one");
}

TEST(TableTarget, ANodeNotDirectlyOverALeafIsAnErrorOnlyWhenTheToolReadsTheData) {
  const std::string text =
      R"({"target":"journal","devices":{"data":{"target":"pass","devices":{"data":{"file":"x"}}}}})";
  auto t = find_in(text, "journal", true, "log");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), EINVAL);
  EXPECT_NE(t.status().context().find("$: tool --table needs journal directly over a file or an RBD image"),
            std::string::npos)
      << t.status().context();
  // A tool that only reads the side store takes it wherever the node is.
  auto side_only = find_in(text, "journal", false, "log");
  ASSERT_TRUE(side_only.ok()) << side_only.status().context();
  EXPECT_FALSE(side_only->data.has_value());
  ASSERT_TRUE(side_only->side.has_value());
  EXPECT_EQ(side_only->side->path, "x.log");
}

TEST(TableTarget, ASideStoreTurnedOffIsNone) {
  auto t = find_in(R"({"target":"pass","devices":{"data":{"file":"d"},"meta":null}})", "pass", true);
  ASSERT_TRUE(t.ok()) << t.status().context();
  EXPECT_FALSE(t->side.has_value());
}

TEST(TableTarget, AnRbdDataImageHasItsSideStoreBesideItInTheCluster) {
  auto t =
      find_in(R"({"target":"pass","devices":{"data":{"rbd":{"pool":"p","image":"disk","conf":"c.conf"}}}})",
              "pass", true);
  ASSERT_TRUE(t.ok()) << t.status().context();
  ASSERT_EQ(t->data->kind, TableNode::Kind::kRbd);
  EXPECT_EQ(t->data->leaf_name(), "rbd:p/disk");
  ASSERT_TRUE(t->side.has_value());
  ASSERT_EQ(t->side->kind, TableNode::Kind::kRbd);
  EXPECT_EQ(t->side->leaf_name(), "rbd:p/disk.meta");
  EXPECT_EQ(t->side->rbd.conf, "c.conf");
  // An explicit side store is taken as written.
  auto file =
      find_in(R"({"target":"pass","devices":{"data":{"rbd":{"image":"disk"}},"meta":{"file":"/var/lib/m"}}})",
              "pass");
  ASSERT_TRUE(file.ok()) << file.status().context();
  ASSERT_EQ(file->side->kind, TableNode::Kind::kFile);
  EXPECT_EQ(file->side->path, "/var/lib/m");
}

}  // namespace
}  // namespace bowstack
