// A RAM-backed device for tests. Contents start zeroed.
//
// Thread-safety: all methods are safe to call concurrently; each request is
// applied atomically with respect to the others (one mutex), which is
// stronger than a disk and fine for tests.
// Fault injection: fail_writes_after()/fail_flushes() let tests exercise
// error paths; an injected flush failure is sticky, as on a real device.
#pragma once

#include <mutex>
#include <vector>

#include "core/block_device.h"

namespace bowstack {

class MemoryDevice final : public BlockDevice {
 public:
  // REQUIRES: size is a multiple of logical_block_size.
  explicit MemoryDevice(uint64_t size, uint32_t logical_block_size = 512);

  std::string_view kind() const override { return "memory"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override;
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  void describe(nlohmann::json* out) const override;

  // Test hooks.
  // After `n` more successful writes, every write fails with EIO. n < 0 disables.
  void fail_writes_after(int64_t n);
  // The next flush fails with EIO, and so does everything after it (sticky).
  void fail_next_flush();
  // Snapshot of the contents.
  std::vector<std::byte> contents() const;
  uint64_t flush_count() const;

 private:
  Status check_write_locked();

  Geometry geometry_;
  mutable std::mutex mu_;
  std::vector<std::byte> data_;  // guarded by mu_
  int64_t writes_left_ = -1;     // guarded by mu_
  bool fail_flush_ = false;      // guarded by mu_
  bool flush_failed_ = false;    // guarded by mu_
  uint64_t flushes_ = 0;         // guarded by mu_
};

}  // namespace bowstack
