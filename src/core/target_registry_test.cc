#include "core/target_registry.h"

#include <gtest/gtest.h>

#include "core/memory_device.h"
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

class Passthrough final : public StackedDevice {
 public:
  using StackedDevice::StackedDevice;
  std::string_view kind() const override { return "pass"; }
};

TargetRegistry test_registry() {
  TargetRegistry r;
  r.add({"pass",
         "test",
         {{"mode", "a mode"}},
         [](std::shared_ptr<BlockDevice> lower,
            const TargetArgs& args) -> Result<std::shared_ptr<BlockDevice>> {
           if (args.get_string("mode") == "fail") return Status::Error(EINVAL, "pass: asked to fail");
           return std::shared_ptr<BlockDevice>(std::make_shared<Passthrough>(std::move(lower)));
         }});
  r.add({"other", "test", {}, nullptr});
  return r;
}

TEST(TargetRegistry, UnknownTargetListsValidOnes) {
  auto r = test_registry();
  auto d = r.create(std::make_shared<MemoryDevice>(1 << 20), parse_target_spec("nope").value());
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().context().find("unknown target 'nope'"), std::string::npos);
  EXPECT_NE(d.status().context().find("other, pass"), std::string::npos);
}

TEST(TargetRegistry, UnknownKeyListsValidOnes) {
  auto r = test_registry();
  Status s = r.check(parse_target_spec("pass:colour=red").value());
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_NE(s.context().find("no key 'colour'"), std::string::npos);
  EXPECT_NE(s.context().find("valid keys: mode"), std::string::npos);
  EXPECT_NE(r.check(parse_target_spec("other:x=1").value()).context().find("valid keys: none"),
            std::string::npos);
}

TEST(TargetRegistry, BuildsBottomUpAndPropagatesErrors) {
  auto r = test_registry();
  auto base = std::make_shared<MemoryDevice>(1 << 20);
  auto top = r.build(base, {parse_target_spec("pass").value(), parse_target_spec("pass").value()});
  ASSERT_TRUE(top.ok());
  EXPECT_EQ((*top)->kind(), "pass");
  ASSERT_NE((*top)->lower(), nullptr);
  EXPECT_EQ((*top)->lower()->lower(), base.get());
  auto bad = r.build(base, {parse_target_spec("pass:mode=fail").value()});
  EXPECT_FALSE(bad.ok());
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
