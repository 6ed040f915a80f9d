#include "targets/linear/linear.h"

#include <gtest/gtest.h>

#include "core/memory_device.h"

namespace bowstack {
namespace {

TEST(Linear, MapsOffsets) {
  auto mem = std::make_shared<MemoryDevice>(4 << 20);
  auto top = LinearTarget::create(mem, TargetArgs(parse_target_spec("linear:offset=1M,length=2M").value()));
  ASSERT_TRUE(top.ok()) << top.status().message();
  EXPECT_EQ((*top)->geometry().size, 2u << 20);
  std::vector<std::byte> data(4096, std::byte{0x5a});
  ASSERT_TRUE((*top)->write(4096, data, 0).ok());
  auto raw = mem->contents();
  EXPECT_EQ(raw[(1 << 20) + 4096], std::byte{0x5a});
  EXPECT_EQ(raw[4096], std::byte{0});
  ASSERT_TRUE((*top)->write_zeroes(4096, 512, 0).ok());
  EXPECT_EQ(mem->contents()[(1 << 20) + 4096], std::byte{0});
}

TEST(Linear, WriteHintsAreMappedLikeWrites) {
  class HintLog : public StackedDevice {
   public:
    using StackedDevice::StackedDevice;
    std::string_view kind() const override { return "hintlog"; }
    void will_write(uint64_t offset, uint64_t length) noexcept override {
      hints.emplace_back(offset, length);
    }
    std::vector<std::pair<uint64_t, uint64_t>> hints;  // test is single-threaded
  };
  auto mem = std::make_shared<HintLog>(std::make_shared<MemoryDevice>(4 << 20));
  auto top = LinearTarget::create(mem, TargetArgs(parse_target_spec("linear:offset=1M").value()));
  ASSERT_TRUE(top.ok());
  (*top)->will_write(8192, 4096);
  EXPECT_EQ(mem->hints, (std::vector<std::pair<uint64_t, uint64_t>>{{(1 << 20) + 8192, 4096}}));
}

TEST(Linear, DefaultLengthIsRestOfDevice) {
  auto mem = std::make_shared<MemoryDevice>(4 << 20);
  auto top = LinearTarget::create(mem, TargetArgs(parse_target_spec("linear:offset=3M").value()));
  ASSERT_TRUE(top.ok());
  EXPECT_EQ((*top)->geometry().size, 1u << 20);
}

TEST(Linear, RejectsBadSlices) {
  auto mem = std::make_shared<MemoryDevice>(4 << 20);
  auto create = [&](const char* spec) {
    return LinearTarget::create(mem, TargetArgs(parse_target_spec(spec).value()));
  };
  auto too_big = create("linear:offset=1M,length=4M");
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().context().find("too small"), std::string::npos);
  EXPECT_FALSE(create("linear:offset=4M").ok());
  EXPECT_FALSE(create("linear:offset=100").ok());
  EXPECT_FALSE(create("linear:length=0").ok());
  EXPECT_FALSE(create("linear:offset=x").ok());
  EXPECT_FALSE(create("linear:offset=18446744073709551615,length=1").ok());
}

}  // namespace
}  // namespace bowstack
