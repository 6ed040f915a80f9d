#include "core/volume.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/memory_device.h"

namespace bowstack {
namespace {

// A device whose writes block until released, to hold requests in flight.
class GatedDevice final : public StackedDevice {
 public:
  using StackedDevice::StackedDevice;
  std::string_view kind() const override { return "gated"; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    entered.fetch_add(1);
    while (!open.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return StackedDevice::write(offset, buf, flags);
  }
  Result<std::string> message(std::string_view text) override {
    if (text == "ping") return std::string("pong");
    return StackedDevice::message(text);
  }
  std::atomic<bool> open{false};
  std::atomic<int> entered{0};
};

TEST(Volume, CountsRequestsAndErrors) {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  Volume v(mem);
  std::vector<std::byte> buf(4096);
  ASSERT_TRUE(v.write(0, buf, 0).ok());
  ASSERT_TRUE(v.read(0, buf).ok());
  ASSERT_TRUE(v.trim(0, 8192, 0).ok());
  ASSERT_TRUE(v.flush().ok());
  mem->fail_writes_after(0);
  EXPECT_EQ(v.write(0, buf, 0).code(), EIO);
  auto s = v.status();
  EXPECT_EQ(s["stats"]["writes"], 2);
  EXPECT_EQ(s["stats"]["reads"], 1);
  EXPECT_EQ(s["stats"]["trims"], 1);
  EXPECT_EQ(s["stats"]["bytes_trimmed"], 8192);
  EXPECT_EQ(s["stats"]["errors"], 1);
  EXPECT_EQ(s["layers"][0]["kind"], "memory");
}

TEST(Volume, SuspendDrainsAndBlocksNewIo) {
  auto gated = std::make_shared<GatedDevice>(std::make_shared<MemoryDevice>(1 << 20));
  Volume v(gated);
  std::vector<std::byte> buf(512);
  std::thread writer([&] { EXPECT_TRUE(v.write(0, buf, 0).ok()); });
  while (gated->entered.load() == 0) std::this_thread::yield();

  std::atomic<bool> suspended{false};
  std::thread suspender([&] {
    EXPECT_TRUE(v.suspend().ok());
    suspended = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(suspended.load());  // still draining the blocked write
  gated->open = true;
  writer.join();
  suspender.join();
  EXPECT_TRUE(v.suspended());
  EXPECT_EQ(v.in_flight(), 0u);

  std::atomic<bool> read_done{false};
  std::thread reader([&] {
    EXPECT_TRUE(v.read(0, buf).ok());
    read_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(read_done.load());  // held at the gate
  v.resume();
  reader.join();
  EXPECT_TRUE(read_done.load());
}

// Suspend puts write-behind data on the device below: it flushes the stack
// after draining, and reports a failed flush while staying suspended.
TEST(Volume, SuspendFlushesTheStack) {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  Volume v(mem);
  std::vector<std::byte> buf(512, std::byte{7});
  ASSERT_TRUE(v.write(0, buf, 0).ok());
  ASSERT_TRUE(v.suspend().ok());
  EXPECT_EQ(mem->flush_count(), 1u);
  v.resume();
  mem->fail_next_flush();
  EXPECT_EQ(v.suspend().code(), EIO);
  EXPECT_TRUE(v.suspended());
  v.resume();
}

TEST(Volume, MessagesGoDownTheStack) {
  auto gated = std::make_shared<GatedDevice>(std::make_shared<MemoryDevice>(1 << 20));
  Volume v(gated);
  EXPECT_EQ(v.message("ping").value(), "pong");
  EXPECT_EQ(v.message("ping", "gated").value(), "pong");
  EXPECT_EQ(v.message("ping", "nosuch").status().code(), ENOENT);
  EXPECT_EQ(v.message("ping", "memory").status().code(), ENOTSUP);
  EXPECT_EQ(v.message("frobnicate").status().code(), ENOTSUP);
}

}  // namespace
}  // namespace bowstack
