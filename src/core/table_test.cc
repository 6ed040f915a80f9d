#include "core/table.h"

#include <gtest/gtest.h>

#include "core/core_test_util.h"

namespace bowstack {
namespace {

using testing::test_registry;

// The error of parsing `text`, or "" when it parses.
std::string error_of(const std::string& text) {
  auto r = parse_table_text(text, test_registry());
  return r.ok() ? std::string() : r.status().context();
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(Table, ParsesLeafAndTarget) {
  auto t = parse_table_text(
      R"({"target":"pass","params":{"tag":"x","size":4096},"devices":{"data":{"file":"d.img","create":"1M"}}})",
      test_registry());
  ASSERT_TRUE(t.ok()) << t.status().context();
  EXPECT_EQ(t->kind, TableNode::Kind::kTarget);
  EXPECT_EQ(t->json_path, "$");
  TargetSpec spec = t->spec();
  ASSERT_EQ(spec.params.size(), 2u);
  EXPECT_EQ(TargetArgs(spec).get_size("size", 0).value(), 4096u);
  const TableSlot* data = t->slot("data");
  ASSERT_NE(data, nullptr);
  EXPECT_EQ(data->nodes[0].path, "d.img");
  EXPECT_EQ(data->nodes[0].create_size, 1u << 20);
  EXPECT_EQ(data->nodes[0].json_path, "$.devices.data");
}

TEST(Table, SideStoreDefaultsBesideTheDataImage) {
  auto t = parse_table_text(R"({"target":"pass","devices":{"data":{"file":"dir/d.img"}}})", test_registry());
  ASSERT_TRUE(t.ok());
  const TableSlot* meta = t->slot("meta");
  ASSERT_NE(meta, nullptr);
  ASSERT_EQ(meta->nodes.size(), 1u);
  EXPECT_EQ(meta->nodes[0].path, "dir/d.img.meta");
  EXPECT_EQ(meta->nodes[0].json_path, "$.devices.meta");
  // Two levels down: the default follows the data slots to the image.
  auto two = parse_table_text(
      R"({"target":"journal","devices":{"data":{"target":"pass","devices":{"data":{"file":"x"}}}}})",
      test_registry());
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->slot("log")->nodes[0].path, "x.log");
  EXPECT_EQ(two->slot("data")->nodes[0].slot("meta")->nodes[0].path, "x.meta");
}

TEST(Table, NullTurnsASideStoreOff) {
  auto t =
      parse_table_text(R"({"target":"pass","devices":{"data":{"file":"d"},"meta":null}})", test_registry());
  ASSERT_TRUE(t.ok());
  ASSERT_NE(t->slot("meta"), nullptr);
  EXPECT_TRUE(t->slot("meta")->nodes.empty());
  EXPECT_TRUE(t->to_json()["devices"]["meta"].is_null());
}

TEST(Table, RoundTripsThroughJson) {
  const char* tables[] = {
      R"({"file":"a.img"})",
      R"({"file":"a.img","create":"1G","read_only":true})",
      R"({"target":"pass","params":{"tag":"t","size":"64k"},"devices":{"data":{"file":"a"}}})",
      R"({"target":"pass","devices":{"data":{"file":"a"},"meta":null}})",
      R"({"target":"journal","devices":{"data":{"target":"pass","devices":{"data":{"file":"a"},
          "meta":{"file":"m"}}},"log":{"file":"l"}}})",
      R"({"target":"mix","devices":{"legs":[{"file":"a"},{"target":"pass","devices":{"data":{"file":"b"}}}]}})",
  };
  for (const char* text : tables) {
    auto t = parse_table_text(text, test_registry());
    ASSERT_TRUE(t.ok()) << text << ": " << t.status().context();
    auto again = parse_table(t->to_json(), test_registry());
    ASSERT_TRUE(again.ok()) << t->to_json().dump();
    EXPECT_EQ(again->to_json(), t->to_json()) << text;
    EXPECT_EQ(again->identity(), t->identity());
  }
}

TEST(Table, IdentityIgnoresPlaceAndCreate) {
  auto a =
      parse_table_text(R"({"target":"pass","devices":{"data":{"file":"a","create":"1M"}}})", test_registry());
  auto b = parse_table_text(R"({"target":"journal","devices":{"data":{"target":"pass",
      "devices":{"data":{"file":"a"}}}}})",
                            test_registry());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->identity(), b->slot("data")->nodes[0].identity());
  auto c = parse_table_text(R"({"target":"pass","params":{"tag":"x"},"devices":{"data":{"file":"a"}}})",
                            test_registry());
  EXPECT_NE(a->identity(), c->identity());
}

TEST(Table, SchemaErrorsNameTheJsonPath) {
  EXPECT_TRUE(contains(error_of(R"({"target":"nope","devices":{}})"), "$.target: unknown target 'nope'"));
  EXPECT_TRUE(
      contains(error_of(R"({"target":"pass","devices":{"data":{"target":"zap"}}})"),
               "$.devices.data.target: unknown target 'zap' (valid targets: journal, mix, pass, scan)"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass"})"), "$.devices: target 'pass' needs slot 'data'"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","devices":{"data":{"file":"a"},"legs":[]}})"),
                       "$.devices.legs: target 'pass' has no slot 'legs' (its slots: data, meta)"));
  EXPECT_TRUE(
      contains(error_of(R"({"target":"pass","params":{"size":"big"},"devices":{"data":{"file":"a"}}})"),
               "$.params.size:"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","params":{"colour":1},"devices":{"data":{"file":"a"}}})"),
                       "$.params.colour: target 'pass' has no key 'colour'"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","params":{"size":-1},"devices":{"data":{"file":"a"}}})"),
                       "$.params.size: must not be negative"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","params":{"tag":[1]},"devices":{"data":{"file":"a"}}})"),
                       "$.params.tag: must be a string or a number"));
  EXPECT_TRUE(
      contains(error_of(R"({"target":"pass","devices":{"data":null}})"), "$.devices.data: cannot be null"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","devices":{"data":{"file":""}}})"),
                       "$.devices.data.file: must be a non-empty string"));
  EXPECT_TRUE(contains(error_of(R"({"file":"a","create":"0"})"), "$.create: must be a non-zero multiple"));
  EXPECT_TRUE(contains(error_of(R"({"file":"a","read_only":"yes"})"), "$.read_only: must be true or false"));
  EXPECT_TRUE(contains(error_of(R"({"file":"a","colour":1})"), "$.colour: unknown key"));
  EXPECT_TRUE(contains(error_of(R"({"file":"a","target":"pass"})"), "$: a node has one of"));
  EXPECT_TRUE(contains(error_of(R"([1,2])"), "$: must be a node object"));
  EXPECT_TRUE(contains(error_of(R"({"target":"mix","devices":{"legs":{}}})"),
                       "$.devices.legs: must be a non-empty list"));
  EXPECT_TRUE(contains(error_of(R"({"target":"mix","devices":{"legs":[{"file":"a"},{"nope":1}]}})"),
                       "$.devices.legs[1]: a node needs"));
  EXPECT_TRUE(contains(error_of(R"({"target":"pass","devices":{"data":{"file":"a"},
                                   "meta":{"target":"pass","devices":{"data":{"file":"b"}}}}})"),
                       "$.devices.meta: a side store must be a file or RBD node"));
  EXPECT_TRUE(contains(error_of(R"({"target":"journal","devices":{"data":{"file":"a"},
                                   "log":{"file":"l","create":"1M"}}})"),
                       "$.devices.log.create: unknown key (a side file takes only \"file\")"));
  EXPECT_TRUE(contains(error_of("{\"file\": \"a\",\n  oops}"), "$: not valid JSON: parse error at line 2"));
  EXPECT_TRUE(contains(error_of(""), "$: not valid JSON"));
}

TEST(Table, TheSameFileInTwoPlacesIsRefused) {
  testing::TempDir dir;
  const std::string a = dir / "a";
  std::string err = error_of(R"({"target":"mix","devices":{"legs":[{"file":")" + a + R"("},{"file":")" +
                             dir.path() + "/./a" + R"("}]}})");
  EXPECT_TRUE(contains(err, "$.devices.legs[1]: file '")) << err;
  EXPECT_TRUE(contains(err, "is already used at $.devices.legs[0]")) << err;
  // A default side store that collides with an explicit file.
  err = error_of(R"({"target":"mix","devices":{"legs":[{"target":"pass","devices":{"data":{"file":"x"}}},
                   {"file":"x.meta"}]}})");
  EXPECT_TRUE(
      contains(err, "$.devices.legs[1]: file 'x.meta' is already used at $.devices.legs[0].devices.meta"))
      << err;
}

TEST(Table, RbdLeafParsesWithDefaultsAndRoundTrips) {
  auto t =
      parse_table_text(R"({"target":"pass","devices":{"data":{"rbd":{"image":"disk"}},"meta":{"file":"m"}}})",
                       test_registry());
  ASSERT_TRUE(t.ok()) << t.status().context();
  const TableNode& leaf = t->slot("data")->nodes[0];
  EXPECT_EQ(leaf.kind, TableNode::Kind::kRbd);
  EXPECT_EQ(leaf.rbd.pool, "rbd");
  EXPECT_EQ(leaf.rbd.conf, "/etc/ceph/ceph.conf");
  EXPECT_EQ(leaf.rbd.id, "admin");
  EXPECT_FALSE(leaf.rbd.snapshot.has_value());
  EXPECT_FALSE(leaf.read_only);
  EXPECT_EQ(leaf.leaf_name(), "rbd:rbd/disk");
  EXPECT_EQ(data_image(*t), &leaf);
  EXPECT_EQ(leaves(*t).size(), 2u);
  EXPECT_EQ(file_leaves(*t).size(), 1u);
  // The parsed table states every default.
  EXPECT_EQ(
      leaf.to_json().dump(),
      R"({"rbd":{"conf":"/etc/ceph/ceph.conf","id":"admin","image":"disk","pool":"rbd","snapshot":null}})");
  const char* tables[] = {
      R"({"rbd":{"pool":"p","image":"i","conf":"/c","id":"me","snapshot":"s1"}})",
      R"({"rbd":{"image":"i"},"read_only":true})",
  };
  for (const char* text : tables) {
    auto a = parse_table_text(text, test_registry());
    ASSERT_TRUE(a.ok()) << text << ": " << a.status().context();
    auto again = parse_table(a->to_json(), test_registry());
    ASSERT_TRUE(again.ok()) << a->to_json().dump();
    EXPECT_EQ(again->to_json(), a->to_json());
    EXPECT_TRUE(again->read_only);
  }
  EXPECT_EQ(parse_table_text(tables[0], test_registry())->leaf_name(), "rbd:p/i@s1");
}

TEST(Table, RbdLeafErrorsNameTheJsonPath) {
  EXPECT_TRUE(contains(error_of(R"({"rbd":{}})"), "$.rbd: needs \"image\""));
  EXPECT_TRUE(contains(error_of(R"({"rbd":"disk"})"), "$.rbd: must be an object"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"d","colour":1}})"), "$.rbd.colour: unknown key"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":3}})"), "$.rbd.image: must be a non-empty string"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"a/b"}})"), "$.rbd.image: must not contain"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"d","snapshot":5}})"), "$.rbd.snapshot: must be"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"d","snapshot":"s"},"read_only":false})"),
                       "$.read_only: a snapshot is read-only"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"d"},"create":"1M"})"), "$.create: unknown key"));
  EXPECT_TRUE(contains(error_of(R"({"rbd":{"image":"d"},"file":"x"})"), "$: a node has one of"));
  // Side stores may be RBD images, written: never a snapshot or read-only.
  EXPECT_EQ(error_of(R"({"target":"pass","devices":{"data":{"file":"a"},"meta":{"rbd":{"image":"d"}}}})"),
            "");
  EXPECT_TRUE(contains(
      error_of(
          R"({"target":"pass","devices":{"data":{"file":"a"},"meta":{"rbd":{"image":"d","snapshot":"s"}}}})"),
      "$.devices.meta: a side store is written: it cannot be read-only or a snapshot"));
  EXPECT_TRUE(contains(
      error_of(
          R"({"target":"journal","devices":{"data":{"file":"a"},"log":{"rbd":{"image":"d"},"read_only":true}}})"),
      "$.devices.log: a side store is written"));
  EXPECT_TRUE(contains(
      error_of(
          R"({"target":"pass","devices":{"data":{"file":"a"},"meta":{"target":"pass","devices":{"data":{"file":"b"}}}}})"),
      "$.devices.meta: a side store must be a file or RBD node"));
  // One image, one place.
  EXPECT_TRUE(contains(error_of(R"({"target":"mix","devices":{"legs":[{"rbd":{"image":"d"}},
                                   {"rbd":{"image":"d","pool":"rbd"}}]}})"),
                       "$.devices.legs[1]: image 'rbd:rbd/d' is already used at $.devices.legs[0]"));
  EXPECT_EQ(error_of(R"({"target":"mix","devices":{"legs":[{"rbd":{"image":"d"}},{"rbd":{"image":"e"}}]}})"),
            "");
}

TEST(Table, SideStoresBesideAnRbdImageAreRbdImagesInItsPoolAndCluster) {
  auto reg = test_registry();
  auto t = parse_table_text(
      R"({"target":"journal","devices":{"data":{"target":"pass","devices":{"data":
          {"rbd":{"pool":"p","image":"disk","conf":"/c/ceph.conf","id":"me","snapshot":"s1"}}}}}})",
      reg);
  ASSERT_TRUE(t.ok()) << t.status().message();
  const TableNode& pass = t->slot("data")->nodes[0];
  const TableNode& meta = pass.slot("meta")->nodes.at(0);
  EXPECT_EQ(meta.kind, TableNode::Kind::kRbd);
  EXPECT_EQ(meta.json_path, "$.devices.data.devices.meta");
  EXPECT_EQ(meta.leaf_name(), "rbd:p/disk.meta");  // no snapshot: a side store is written
  EXPECT_EQ(meta.rbd.conf, "/c/ceph.conf");
  EXPECT_EQ(meta.rbd.id, "me");
  EXPECT_FALSE(meta.read_only);
  const TableNode& log = t->slot("log")->nodes.at(0);
  EXPECT_EQ(log.leaf_name(), "rbd:p/disk.log");
  EXPECT_EQ(log.side_path(), "rbd:p/disk.log:conf=/c/ceph.conf:id=me");
  // The resolved table states them and parses back to itself.
  auto again = parse_table(t->to_json(), reg);
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->to_json(), t->to_json());
}

TEST(Table, ShorthandCompilesToTheSameTree) {
  auto reg = test_registry();
  auto s = table_from_shorthand(
      "d.img", std::nullopt, false,
      {parse_target_spec("pass:tag=low").value(), parse_target_spec("journal").value()}, reg);
  ASSERT_TRUE(s.ok()) << s.status().context();
  auto t = parse_table_text(R"({"target":"journal","devices":{"data":{"target":"pass","params":{"tag":"low"},
      "devices":{"data":{"file":"d.img"}}}}})",
                            reg);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(s->to_json(), t->to_json());
  // A shorthand key names a side store; "none" turns it off.
  auto side =
      table_from_shorthand("d.img", 1 << 20, true, {parse_target_spec("pass:meta=m.bin").value()}, reg);
  ASSERT_TRUE(side.ok());
  EXPECT_EQ(side->slot("meta")->nodes[0].path, "m.bin");
  EXPECT_TRUE(side->slot("data")->nodes[0].read_only);
  EXPECT_EQ(side->slot("data")->nodes[0].create_size, 1u << 20);
  auto off =
      table_from_shorthand("d.img", std::nullopt, false, {parse_target_spec("pass:meta=none").value()}, reg);
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->slot("meta")->nodes.empty());
  auto bad =
      table_from_shorthand("d.img", std::nullopt, false, {parse_target_spec("pass:colour=1").value()}, reg);
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(contains(bad.status().context(), "target 'pass' has no key 'colour'"));
  auto unknown = table_from_shorthand("d.img", std::nullopt, false, {parse_target_spec("zap").value()}, reg);
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(contains(unknown.status().context(), "unknown target 'zap'"));
}

}  // namespace
}  // namespace bowstack
