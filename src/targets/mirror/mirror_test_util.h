// Test helpers for the mirror: memory legs with fault injection and hooks,
// crash copies, waiting for jobs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "core/memory_device.h"
#include "targets/mirror/md_bitmap_format.h"
#include "targets/mirror/md_format.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror::testing {

inline constexpr uint64_t kLegBytes = 64u << 20;
inline constexpr uint64_t kDataOffset = 2048 * 512;  // md's for a 64 MiB leg

// A leg over memory whose reads and writes can be made to fail, and whose
// writes can be watched.
class TestLeg final : public StackedDevice {
 public:
  explicit TestLeg(std::shared_ptr<MemoryDevice> mem) : StackedDevice(mem), mem_(std::move(mem)) {}
  std::string_view kind() const override { return "testleg"; }
  Capabilities capabilities() const override {
    Capabilities c = mem_->capabilities();
    c.verified_reads = verified;
    c.block_status = true;
    return c;
  }
  // All-zero ranges report as holes, so that a new array of blank memory
  // legs starts in sync, as one of sparse files does.
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    std::vector<std::byte> b(length);
    if (Status s = mem_->read(offset, b); !s.ok()) return s;
    const bool zero = std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
    out->push_back({length, zero ? uint32_t{kExtentHole | kExtentZero} : 0u});
    return Status::Ok();
  }
  Status read(uint64_t offset, std::span<std::byte> buf) override {
    const uint64_t lo = fail_read_lo.load(), hi = fail_read_hi.load();
    if (offset < hi && offset + buf.size() > lo) return Status::Error(EIO, "injected read error");
    return StackedDevice::read(offset, buf);
  }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    if (fail_writes.load()) return Status::Error(EIO, "injected write error");
    if (on_write) on_write(offset, buf.size());
    return StackedDevice::write(offset, buf, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    if (fail_writes.load()) return Status::Error(EIO, "injected write error");
    if (on_write) on_write(offset, length);
    return StackedDevice::write_zeroes(offset, length, flags);
  }
  Status flush() override {
    if (fail_writes.load()) return Status::Error(EIO, "injected flush error");
    return StackedDevice::flush();
  }

  MemoryDevice& mem() { return *mem_; }
  std::atomic<bool> fail_writes{false};
  std::atomic<uint64_t> fail_read_lo{0}, fail_read_hi{0};
  bool verified = false;
  std::function<void(uint64_t, uint64_t)> on_write;  // set before the mirror starts

 private:
  std::shared_ptr<MemoryDevice> mem_;
};

inline std::shared_ptr<TestLeg> blank_leg(uint64_t bytes = kLegBytes) {
  return std::make_shared<TestLeg>(std::make_shared<MemoryDevice>(bytes));
}

// A leg holding what `from` holds now (a crash: nothing more reaches it).
inline std::shared_ptr<TestLeg> copy_leg(TestLeg& from) {
  auto bytes = from.mem().contents();
  auto mem = std::make_shared<MemoryDevice>(bytes.size());
  EXPECT_TRUE(mem->write(0, bytes, 0).ok());
  return std::make_shared<TestLeg>(std::move(mem));
}

inline md::Superblock leg_superblock(TestLeg& leg);

// Crash copies of a pair of legs taken while the array is active: retries
// `write` and the copies until both copies hold the same events and say
// active (the intent job may mark the array clean, under a slow sanitizer,
// between the write and the copies, or between the two copies).
template <typename Write>
std::pair<std::shared_ptr<TestLeg>, std::shared_ptr<TestLeg>> active_copies(TestLeg& a, TestLeg& b,
                                                                            Write&& write) {
  std::shared_ptr<TestLeg> ca, cb;
  for (int attempt = 0; attempt < 20; ++attempt) {
    write();
    ca = copy_leg(a);
    cb = copy_leg(b);
    const md::Superblock sa = leg_superblock(*ca), sb = leg_superblock(*cb);
    if (!sa.clean() && !sb.clean() && sa.events == sb.events) break;
  }
  return {ca, cb};
}

inline std::vector<std::byte> leg_bytes(TestLeg& leg, uint64_t offset, uint64_t length) {
  std::vector<std::byte> b(length);
  EXPECT_TRUE(leg.mem().read(offset, b).ok());
  return b;
}

inline md::Superblock leg_superblock(TestLeg& leg) {
  auto b = leg_bytes(leg, 4096, 4096);
  auto sb = md::decode_superblock(b, leg.geometry().size / 512);
  EXPECT_TRUE(sb.ok()) << (sb.ok() ? "" : sb.status().message());
  return sb.ok() ? *sb : md::Superblock{};
}

inline std::vector<std::byte> pattern(size_t n, uint8_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<uint8_t>(seed + i * 7 + i / 4096));
  return v;
}

inline Result<std::shared_ptr<BlockDevice>> make_mirror(const std::vector<std::shared_ptr<TestLeg>>& legs,
                                                        MirrorOptions opts = {}) {
  std::vector<std::shared_ptr<BlockDevice>> devs(legs.begin(), legs.end());
  if (opts.region_size == 0) opts.region_size = 64u << 10;
  return MirrorTarget::create(std::move(devs), std::move(opts));
}

inline nlohmann::json status_of(BlockDevice& m) {
  nlohmann::json j = nlohmann::json::object();
  m.describe(&j);
  return j;
}

// Waits until the mirror's status satisfies `done` (at most 30 s).
inline bool wait_for(BlockDevice& m, const std::function<bool(const nlohmann::json&)>& done) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until) {
    if (done(status_of(m))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

inline bool all_in_sync(const nlohmann::json& j) {
  if (j.value("sync_action", "") != "idle") return false;
  for (const auto& l : j["legs"]) {
    if (l["state"] != "in_sync") return false;
  }
  return true;
}

}  // namespace bowstack::mirror::testing
