// Test-only: a Server on a MemoryDevice wrapped in a Volume, connected to
// RawClients over socketpair(), plus small devices that let tests observe
// or steer what reaches the bottom of the stack.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/block_device.h"
#include "core/memory_device.h"
#include "core/volume.h"
#include "nbd/server.h"
#include "nbd/test_client.h"

namespace bowstack::nbd::testing {

// Overrides geometry and capabilities of the device below and records the
// flags of the last write-like call.
class TweakDevice : public StackedDevice {
 public:
  explicit TweakDevice(std::shared_ptr<BlockDevice> lower) : StackedDevice(std::move(lower)) {
    geometry_ = lower_device()->geometry();
    caps_ = lower_device()->capabilities();
  }
  std::string_view kind() const override { return "tweak"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override { return caps_; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    last_flags = flags;
    return StackedDevice::write(offset, buf, flags);
  }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override {
    last_flags = flags;
    return StackedDevice::trim(offset, length, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    last_flags = flags;
    return StackedDevice::write_zeroes(offset, length, flags);
  }
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    if (extents.empty()) return StackedDevice::block_status(offset, length, out);
    *out = extents;
    return Status::Ok();
  }

  Geometry geometry_;
  Capabilities caps_;
  std::vector<Extent> extents;  // if non-empty, block_status() returns exactly these
  std::atomic<uint32_t> last_flags{0};
};

// Holds every read until open() is called; counts reads waiting.
class GateDevice : public StackedDevice {
 public:
  using StackedDevice::StackedDevice;
  std::string_view kind() const override { return "gate"; }
  Status read(uint64_t offset, std::span<std::byte> buf) override {
    {
      std::unique_lock lock(mu_);
      ++waiting_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return open_; });
      --waiting_;
    }
    return StackedDevice::read(offset, buf);
  }
  // True once n reads are held, within the timeout.
  bool wait_for_waiting(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return waiting_ >= n; });
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool open_ = false;
};

class NbdTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSize = 1 << 20;

  void SetUp() override {
    mem = std::make_shared<MemoryDevice>(kSize);
    tweak = std::make_shared<TweakDevice>(mem);
  }
  void TearDown() override {
    if (server) server->stop();
  }

  // Builds the volume and the server; `top` defaults to the TweakDevice.
  void make_server(ServerOptions opts = {}, std::shared_ptr<BlockDevice> top = nullptr) {
    server.reset();
    volume = std::make_unique<Volume>(top ? top : tweak);
    server = std::make_unique<Server>(*volume, std::move(opts));
  }
  // A client connected to the server through a socketpair.
  RawClient connect() {
    if (!server) make_server();
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server->serve_fd(sv[0]);
    return RawClient(sv[1]);
  }
  // Connected and negotiated.
  RawClient session(bool structured = false, bool meta = false, Negotiated* n = nullptr) {
    RawClient c = connect();
    Negotiated tmp;
    EXPECT_TRUE(c.negotiate(structured, meta, n ? n : &tmp));
    return c;
  }
  // Waits (bounded) until the server has no live connection.
  bool wait_idle() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (server->active_connections() != 0) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  Bytes device_bytes(uint64_t offset, size_t n) {
    auto all = mem->contents();
    Bytes out(n);
    std::memcpy(out.data(), all.data() + offset, n);
    return out;
  }

  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<TweakDevice> tweak;
  std::unique_ptr<Volume> volume;
  std::unique_ptr<Server> server;
};

}  // namespace bowstack::nbd::testing
