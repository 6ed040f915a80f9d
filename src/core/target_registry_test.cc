#include "core/target_registry.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/core_test_util.h"
#include "core/parse.h"

namespace bowstack {
namespace {

TEST(ParseSize, UnitsAndErrors) {
  EXPECT_EQ(parse_size("4096", "x").value(), 4096u);
  EXPECT_EQ(parse_size("64K", "x").value(), 64u << 10);
  EXPECT_EQ(parse_size("1m", "x").value(), 1u << 20);
  EXPECT_EQ(parse_size("10GiB", "x").value(), 10ull << 30);
  EXPECT_EQ(parse_size("2T", "x").value(), 2ull << 40);
  EXPECT_FALSE(parse_size("", "x").ok());
  EXPECT_FALSE(parse_size("12Q", "x").ok());
  EXPECT_FALSE(parse_size("-1", "x").ok());
  EXPECT_FALSE(parse_size("99999999999999999999", "x").ok());
  EXPECT_FALSE(parse_size("16777216T", "x").ok());  // overflows after the shift
  EXPECT_NE(parse_size("zz", "--create size").status().context().find("--create size"), std::string::npos);
}

TEST(TargetSpec, Parses) {
  auto s = parse_target_spec("linear:offset=1M,length=2M");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->name, "linear");
  ASSERT_EQ(s->params.size(), 2u);
  EXPECT_EQ(s->params[0].first, "offset");
  EXPECT_EQ(s->params[1].second, "2M");
  EXPECT_TRUE(parse_target_spec("bow").ok());
  EXPECT_FALSE(parse_target_spec("").ok());
  EXPECT_FALSE(parse_target_spec(":a=b").ok());
  EXPECT_FALSE(parse_target_spec("x:novalue").ok());
  EXPECT_FALSE(parse_target_spec("x:=v").ok());
  EXPECT_FALSE(parse_target_spec("x:a=1,a=2").ok());
}

TEST(TargetRegistry, UnknownKeyListsValidOnes) {
  auto r = testing::test_registry();
  Status s = r.check(parse_target_spec("pass:colour=red").value());
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_NE(s.context().find("no key 'colour'"), std::string::npos);
  EXPECT_NE(s.context().find("valid keys: tag, fail, size"), std::string::npos);
  EXPECT_NE(r.check(parse_target_spec("mix:x=1").value()).context().find("valid keys: none"),
            std::string::npos);
  EXPECT_NE(r.check(parse_target_spec("nope").value())
                .context()
                .find("unknown target 'nope' (valid targets: "
                      "journal, mix, pass, scan)"),
            std::string::npos);
}

TEST(TargetRegistry, ChecksValueTypes) {
  auto r = testing::test_registry();
  EXPECT_TRUE(r.check(parse_target_spec("pass:size=4K,fail=no,tag=x").value()).ok());
  EXPECT_NE(r.check(parse_target_spec("pass:size=lots").value()).context().find("pass size"),
            std::string::npos);
  EXPECT_NE(r.check(parse_target_spec("pass:fail=maybe").value()).context().find("not a boolean"),
            std::string::npos);
}

TEST(TargetRegistry, DescribesParamsAndSlots) {
  auto r = testing::test_registry();
  nlohmann::json j = r.find("pass")->to_json();
  EXPECT_EQ(j["params"][2]["type"], "size");
  EXPECT_EQ(j["slots"][1]["name"], "meta");
  EXPECT_EQ(j["slots"][1]["kind"], "side device");
  EXPECT_EQ(j["slots"][1]["default_suffix"], ".meta");
}

TEST(TargetArgs, TypedGetters) {
  auto spec = parse_target_spec("t:size=4K,flag=yes,bad=maybe").value();
  TargetArgs a(spec);
  EXPECT_EQ(a.get_size("size", 0).value(), 4096u);
  EXPECT_EQ(a.get_size("absent", 7).value(), 7u);
  EXPECT_TRUE(a.get_bool("flag", false).value());
  EXPECT_FALSE(a.get_bool("bad", false).ok());
}

}  // namespace
}  // namespace bowstack
