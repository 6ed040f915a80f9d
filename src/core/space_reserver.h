// Reserving backing space ahead of acknowledged writes, cheaply.
//
// A layer that acknowledges a write before writing it (bow's saved copies,
// era's queued first writes) reserves the space that write needs first
// (BlockDevice::reserve), so that a full host filesystem fails that write
// with ENOSPC rather than an acknowledged one later. A reservation is a
// fallocate, which on ext4 takes the inode lock and starts a journal
// handle: one per first overwrite cost bow a third of its first-overwrite
// rate (docs/performance.md). But most ranges are allocated already (an
// image's data, a filesystem's deleted files), and a layer below never
// deallocates them while it is in use. So the reserver remembers, per chunk
// of the device, whether the chunk is wholly allocated (asked through
// block_status: once for a chunk found full, again after each reservation
// in a chunk that had holes, since writes fill them), and calls reserve()
// only for chunks with holes.
//
// Contract: nothing deallocates the device's blocks while the reserver is
// in use (a layer that passes trims down must forget() the trimmed range).
// Thread-safety: reserve() and forget() may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "core/block_device.h"

namespace bowstack {

class SpaceReserver {
 public:
  // `dev` must outlive the reserver. chunk: bytes per remembered chunk, a
  // power of two.
  SpaceReserver(BlockDevice* dev, uint64_t size, uint64_t chunk = 1u << 20);

  // As BlockDevice::reserve, skipping chunks known to be wholly allocated.
  Status reserve(uint64_t offset, uint64_t length);
  // The range may hold holes again (it was trimmed below).
  void forget(uint64_t offset, uint64_t length);
  // reserve() calls passed to the device (tests, status).
  uint64_t device_reserves() const { return device_reserves_.load(std::memory_order_relaxed); }

 private:
  enum : uint8_t { kUnknown = 0, kFull = 1, kHoles = 2 };
  bool wholly_allocated(uint64_t chunk);

  BlockDevice* const dev_;
  const uint64_t size_;
  const unsigned shift_;
  const std::unique_ptr<std::atomic<uint8_t>[]> state_;  // per chunk
  std::atomic<uint64_t> device_reserves_{0};
};

}  // namespace bowstack
