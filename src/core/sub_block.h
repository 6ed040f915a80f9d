// Sub-block I/O over a device that takes whole blocks only: the layer the
// core puts on top of a stack whose top needs I/O aligned to more than
// clients are told (csum's 4 KiB checksummed blocks, a file opened with
// O_DIRECT), so that every export serves 512-byte-aligned requests, and in
// fact any byte range (docs/architecture.md, "Alignment").
//
// How a target opts in: it does nothing but tell the truth in its geometry.
// A target that can only take whole blocks says so (logical_block_size =
// its block, accepts_unaligned = false); when it ends up on top of a stack,
// Volume puts this adapter above it (SubBlockDevice::over). A target that
// serves partial blocks itself, because it can do better than a
// read-modify-write from above (bow, which must back up the whole block
// before changing any of it and already orders writes by block), says
// accepts_unaligned = true with logical_block_size = 512. A target that
// needs partial blocks served below it (a mirror's legs, say) may put the
// adapter over its own lower device the same way.
//
// The rules, for requests through the adapter (all of them, aligned or not):
//  * Writes, write-zeroes and trims hold the blocks they touch exclusively
//    (core/block_set.h): two that share a block run one after the other, so
//    a read-modify-write never writes back stale bytes over another write's
//    (concurrent sub-block writes to one block all survive).
//  * Reads hold their blocks shared: they wait while a write holds any of
//    them, and a write waits for the reads holding its blocks. A read
//    therefore never overlaps a write of one of its blocks, and sees each
//    block entirely as it was before that write or entirely after it, never
//    half rewritten, whatever the device below does while a block write is
//    in flight. Many reads of one block run together; a stream of them can
//    make a write of that block wait (no fairness).
//  * A request is one hold over all its blocks, but may reach the device
//    below as several calls (a partial head and tail block, pieces of at
//    most max_io_size): like any multi-sector write it is not atomic under
//    a crash. kFua goes with each call, so a FUA request is durable when it
//    returns; flush() passes straight down.
//  * Sub-block trims are dropped (a trim is a hint): only the whole blocks
//    inside a trim are trimmed below. Sub-block write-zeroes zero the
//    partial blocks by read-modify-write and the whole ones by
//    write_zeroes below; with kFastZero an unaligned one fails ENOTSUP
//    (zeroing part of a block is a write, never fast).
//
// Thread-safety: every method may be called from any thread.
// Lifetime: the adapter keeps the device below alive.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "core/aligned_buf.h"
#include "core/block_device.h"
#include "core/block_set.h"

namespace bowstack {

class SubBlockDevice final : public StackedDevice {
 public:
  // The smallest unit clients are told (the NBD minimum block size): what
  // a loop device or a kernel filesystem sends at the least. The adapter
  // serves any byte range; compliant clients send nothing smaller.
  static constexpr uint32_t kAdvertisedBlock = 512;

  // True when a device of geometry `g` cannot serve kAdvertisedBlock-aligned
  // I/O itself.
  static bool needed(const Geometry& g) {
    return !g.accepts_unaligned && g.logical_block_size > kAdvertisedBlock;
  }
  // `dev` itself when it needs no adapter, else the adapter over it.
  static std::shared_ptr<BlockDevice> over(std::shared_ptr<BlockDevice> dev);
  // What over() of a device of geometry `g` presents, without building it.
  static Geometry served_geometry(const Geometry& g);

  // REQUIRES: needed(lower->geometry()); its logical_block_size is a power
  // of two dividing its max_io_size.
  explicit SubBlockDevice(std::shared_ptr<BlockDevice> lower);

  std::string_view kind() const override { return "sub-block"; }
  Geometry geometry() const override { return geometry_; }

  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status reserve(uint64_t offset, uint64_t length) override;
  // {"block_size":..,"partial_reads":..,"partial_writes":..}
  void describe(nlohmann::json* out) const override;

  // Requests that needed a read-modify-write (writes, write-zeroes) or a
  // bounce buffer (reads) because they did not cover whole blocks.
  uint64_t partial_writes() const { return partial_writes_.load(std::memory_order_relaxed); }
  uint64_t partial_reads() const { return partial_reads_.load(std::memory_order_relaxed); }

 private:
  class Hold;
  void lock_shared(uint64_t first, uint64_t end);
  void unlock_shared(uint64_t first, uint64_t end);
  void lock_exclusive(uint64_t first, uint64_t end);
  void unlock_exclusive(uint64_t first, uint64_t end);

  bool aligned(uint64_t offset, uint64_t length) const { return ((offset | length) & (bs_ - 1)) == 0; }
  // Calls fn(offset, length) for consecutive pieces of [offset, offset +
  // length) whose blocks span at most piece_ bytes.
  template <typename Fn>
  Status for_pieces(uint64_t offset, uint64_t length, Fn&& fn) const;
  // Read-modify-write of the blocks under [offset, offset + data.size())
  // (one piece): `data` null means zeroes. REQUIRES: the blocks held
  // exclusively.
  Status merge_write(uint64_t offset, uint64_t length, const std::byte* data, uint32_t flags);
  AlignedBuf bounce(uint64_t bytes);

  const uint32_t bs_;
  const uint64_t piece_;  // largest call to the device below, a multiple of bs_
  Geometry geometry_;
  BufferPool pool_;  // one-block bounce buffers, the common case

  std::mutex mu_;
  std::condition_variable cv_;
  BlockSet writing_;  // guarded by mu_: exclusive holds
  BlockSet reading_;  // guarded by mu_: counted holds

  std::atomic<uint64_t> partial_writes_{0};
  std::atomic<uint64_t> partial_reads_{0};
};

}  // namespace bowstack
