// The object front ends talk to: the top of a stack plus I/O admission
// (suspend/resume) and request counters.
//
// Thread-safety: every method may be called from any thread.
// Lifetime: the Volume owns the stack (through the top device); front ends
// hold a reference and must stop calling before it is destroyed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "core/block_device.h"

namespace bowstack {

// Counters of requests that reached the top of the stack.
struct VolumeStats {
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, trims{0}, zeroes{0}, block_status{0}, caches{0};
  std::atomic<uint64_t> bytes_read{0}, bytes_written{0}, bytes_trimmed{0}, bytes_zeroed{0};
  std::atomic<uint64_t> errors{0};
};

class Volume {
 public:
  explicit Volume(std::shared_ptr<BlockDevice> top);
  ~Volume();
  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;

  const Geometry& geometry() const { return geometry_; }
  const Capabilities& capabilities() const { return caps_; }
  BlockDevice& top() { return *top_; }

  // The data path. Same contract as BlockDevice (callers validate ranges),
  // plus: each call waits while the volume is suspended, and is counted.
  Status read(uint64_t offset, std::span<std::byte> buf);
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags);
  Status flush();
  Status trim(uint64_t offset, uint64_t length, uint32_t flags);
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags);
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out);
  Status cache(uint64_t offset, uint64_t length);
  // BlockDevice::will_write for the top layer: a hint, not admitted (it may
  // run while suspended) and not counted.
  void will_write(uint64_t offset, uint64_t length) noexcept { top_->will_write(offset, length); }

  // Stops admitting new I/O, waits until none is in flight, then flushes
  // the stack, like dm's suspend: layers that acknowledge writes before
  // passing them down (bow, era) put everything acknowledged on the device
  // below, so the image is complete while suspended. Idempotent. The
  // volume stays suspended even if the flush fails (the error is returned).
  Status suspend();
  // Lets I/O flow again. Idempotent.
  void resume();
  bool suspended() const;
  uint64_t in_flight() const;

  // Sends a message to the stack: to the topmost layer of kind `layer` if
  // given, else to each layer from the top down until one accepts it.
  // Messages run while I/O continues; a layer serialises them itself.
  Result<std::string> message(std::string_view text, std::string_view layer = {});

  // {"size":..,"block_size":..,"suspended":..,"in_flight":..,
  //  "stats":{...},"layers":[{"kind":..,...}, ...]} top layer first.
  nlohmann::json status() const;
  const VolumeStats& stats() const { return stats_; }

 private:
  class Admission;
  void enter();
  void leave();

  std::shared_ptr<BlockDevice> top_;
  Geometry geometry_;
  Capabilities caps_;
  VolumeStats stats_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool suspended_ = false;  // guarded by mu_
  uint64_t in_flight_ = 0;  // guarded by mu_
};

}  // namespace bowstack
