// The object front ends talk to: the top of a stack plus I/O admission
// (suspend/resume), request counters, and live reload of its table.
//
// Thread-safety: every method may be called from any thread. The data path
// reads the top device without a lock: it changes only in reload(), while
// no request is admitted (suspended, drained) and no will_write hint runs.
// Control calls (status, message, table, reload) are serialised against
// reload by a reader-writer lock.
// Lifetime: the Volume owns the stack (through the top device or the
// tree); front ends hold a reference and must stop calling before it is
// destroyed.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <shared_mutex>
#include <string>

#include "core/block_device.h"
#include "core/device_tree.h"

namespace bowstack {

// Counters of requests that reached the top of the stack.
struct VolumeStats {
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, trims{0}, zeroes{0}, block_status{0}, caches{0};
  std::atomic<uint64_t> bytes_read{0}, bytes_written{0}, bytes_trimmed{0}, bytes_zeroed{0};
  std::atomic<uint64_t> errors{0};
};

struct ReloadOptions {
  // Hold new requests while in-flight ones drain, without flushing the
  // nodes that stay (nodes that go are always flushed first).
  bool noflush = false;
};

struct ReloadReport {
  uint64_t held_us = 0;        // how long new I/O waited (suspend to resume)
  uint64_t kept_nodes = 0;     // target nodes kept with their state
  uint64_t built_nodes = 0;    // target nodes built anew
  uint64_t dropped_nodes = 0;  // target nodes of the old table that went
};

class Volume {
 public:
  // A fixed stack (tests, tools): no table, no reload.
  explicit Volume(std::shared_ptr<BlockDevice> top);
  // A built table, which reload() can replace.
  explicit Volume(std::unique_ptr<DeviceTree> tree);
  ~Volume();
  Volume(const Volume&) = delete;
  Volume& operator=(const Volume&) = delete;

  // What clients are served: the top's, or, when the top takes whole
  // blocks larger than 512 bytes only, the sub-block adapter's over it
  // (core/sub_block.h), which serves any byte range.
  const Geometry& geometry() const { return geometry_; }
  const Capabilities& capabilities() const { return caps_; }
  // The top of the stack (never the sub-block adapter).
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
  void will_write(uint64_t offset, uint64_t length) noexcept;

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
  // given (with a table: of that target name, or at that JSON path "$..."),
  // else to each layer from the top down until one accepts it. Messages run
  // while I/O continues; a layer serialises them itself.
  Result<std::string> message(std::string_view text, std::string_view layer = {});

  // The live table (null without one), as `serve --table` reads it.
  nlohmann::json table() const;
  // Replaces the table while clients stay connected (dm's load + suspend +
  // resume): checks the new table and opens its new files while I/O goes
  // on; then suspends (drains in-flight requests), flushes and destroys the
  // nodes that go, builds the new nodes, keeping every node whose identity
  // is unchanged with its state, swaps and resumes. The export's size,
  // block size, read-only flag and advertised capabilities must stay. On
  // any failure the old table is serving again (nodes that went are built
  // again from the old table) and the error says what failed.
  // REQUIRES: the Volume was made from a tree.
  Result<ReloadReport> reload(const TableNode& table, const TargetRegistry& registry,
                              const BuildOptions& build, const ReloadOptions& opts);

  // {"size":..,"block_size":..,"suspended":..,"in_flight":..,
  //  "stats":{...},"layers":[{"kind":..,...}, ...]} top layer first.
  nlohmann::json status() const;
  const VolumeStats& stats() const { return stats_; }

 private:
  class Admission;
  void enter();
  void leave();

  // Checks that `top` can serve the clients that negotiated with the
  // current geometry and capabilities.
  Status compatible(BlockDevice& top) const;
  // REQUIRES: no request admitted, hints closed (or construction).
  void set_top(std::shared_ptr<BlockDevice> top);
  // The stack needs alignment the request lacks: possible only after a
  // reload (the front end checks against the stack it advertised), and
  // refused with EINVAL rather than passed to a layer that assumes it.
  bool misaligned(uint64_t offset, uint64_t length) const {
    return align_ > 1 && ((offset | length) & (align_ - 1)) != 0;
  }
  // Lets requests in again (resume() without touching jobs).
  void open_gate();
  // Blocks will_write hints and waits for those running (reload only).
  void close_hints();
  void open_hints();

  std::shared_ptr<BlockDevice> top_;  // see the class comment
  // What the data path calls: top_, or the sub-block adapter over it. Set
  // with top_.
  std::shared_ptr<BlockDevice> io_;
  std::unique_ptr<DeviceTree> tree_;  // guarded by control_mu_; may be null
  mutable std::shared_mutex control_mu_;
  std::atomic<bool> hints_closed_{false};
  std::atomic<uint64_t> hints_running_{0};
  uint32_t align_ = 0;  // as io_: the stack's required alignment (power of two), 0 if none
  Geometry geometry_;
  Capabilities caps_;
  VolumeStats stats_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool suspended_ = false;  // guarded by mu_
  uint64_t in_flight_ = 0;  // guarded by mu_
};

}  // namespace bowstack
