// The block-device interface every layer of a bowstack stack implements.
//
// A stack is a chain: a base device (file, block device, memory) at the
// bottom and targets above it, each holding the device below. Front ends
// (NBD, tools) only ever see the top of the chain.
//
// Contract for every method below, unless a method says otherwise:
//  * Thread-safety: all methods may be called concurrently from many threads.
//    Overlapping concurrent writes have no defined order (as on a disk).
//  * REQUIRES: offset + length <= geometry().size, and, unless
//    geometry().accepts_unaligned, offset and length are multiples of
//    geometry().logical_block_size and length <= geometry().max_io_size for
//    read/write. Front ends check this; layers may assume it.
//  * Errors are returned as Status (errno values), never thrown.
//  * Durability: a write is volatile until flush() returns OK, or, when the
//    write carried kFua, until the write itself returns OK. A failed flush is
//    sticky: the device reports the failure to every later flush and write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bowstack {

struct Geometry {
  uint64_t size = 0;                     // bytes
  uint32_t logical_block_size = 512;     // smallest addressable unit (NBD minimum block size)
  uint32_t preferred_block_size = 4096;  // I/O below this costs a read-modify-write somewhere
  uint32_t max_io_size = 32u << 20;      // largest single read or write
  bool accepts_unaligned = false;        // true: any offset/length works (layer does RMW)
};

struct Capabilities {
  bool read_only = false;
  bool flush = false;         // flush() makes earlier writes durable
  bool fua = false;           // kFua is honoured
  bool trim = false;          // trim() may release space
  bool write_zeroes = false;  // write_zeroes() is supported (maybe emulated)
  bool fast_zero = false;     // write_zeroes(kFastZero) can be faster than writing
  bool multi_conn = false;    // flush() covers writes completed through any caller
  bool block_status = false;  // block_status() reports real holes/zeroes
  bool rotational = false;
  // A read that succeeds returned what was written: damage below is
  // reported as an error (EIO), never as data (csum). A mirror trusts such
  // a leg's good read over another leg's.
  bool verified_reads = false;
};

// Flags for write, trim and write_zeroes.
enum IoFlag : uint32_t {
  kFua = 1u << 0,       // durable before returning
  kNoHole = 1u << 1,    // write_zeroes: must not deallocate
  kFastZero = 1u << 2,  // write_zeroes: fail with ENOTSUP rather than be slow
};

// One write of a batch (see BlockDevice::write_batch). Does not own `data`.
struct WriteRef {
  uint64_t offset = 0;
  std::span<const std::byte> data;
};

// One run of block_status(); flags as NBD base:allocation.
enum ExtentFlag : uint32_t { kExtentHole = 1u << 0, kExtentZero = 1u << 1 };
struct Extent {
  uint64_t length = 0;
  uint32_t flags = 0;
};

class BlockDevice;
// True when every byte of [offset, offset + length) is a hole (never
// written, or deallocated): certainly zeroes with nothing behind them. Asks
// block_status() as often as it takes; a device that reports nothing, or
// reports data, gives false. Errors are the device's.
Result<bool> only_holes(BlockDevice& dev, uint64_t offset, uint64_t length);

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  BlockDevice() = default;
  BlockDevice(const BlockDevice&) = delete;
  BlockDevice& operator=(const BlockDevice&) = delete;

  // Short layer name ("file", "memory", "linear", ...).
  virtual std::string_view kind() const = 0;
  // Stable for the device's lifetime.
  virtual Geometry geometry() const = 0;
  virtual Capabilities capabilities() const = 0;

  virtual Status read(uint64_t offset, std::span<std::byte> buf) = 0;
  virtual Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) = 0;
  virtual Status flush() = 0;
  // Writes every entry of `writes` (in any order; entries must not overlap).
  // With kFua all of them are durable when this returns, through one
  // barrier for the whole batch rather than one per write, and without
  // forcing out other data that need not be durable yet. Use it where many
  // writes must all be stable before something else is written. The default
  // writes each entry through write(), then calls flush() if kFua is given.
  virtual Status write_batch(std::span<const WriteRef> writes, uint32_t flags);
  // A hint that the range is unused. Reads afterwards return unspecified data
  // unless a layer documents otherwise.
  virtual Status trim(uint64_t offset, uint64_t length, uint32_t flags) = 0;
  // Reads afterwards return zeroes.
  virtual Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) = 0;
  // Appends to *out at least one extent describing the range starting at
  // offset; together they cover at most `length` bytes. The default reports
  // everything as allocated data.
  virtual Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out);
  // Prefetch hint. The default does nothing.
  virtual Status cache(uint64_t offset, uint64_t length);
  // Makes sure that later writes to the range cannot fail for want of space
  // in the backing store (a sparse file's holes are allocated; data is kept).
  // ENOSPC when the backing store is full: a layer that acknowledges writes
  // before writing them (bow's saved copies) reserves first, so a full disk
  // fails the write it can still refuse rather than one it acknowledged. The
  // default succeeds: storage of fixed size has nothing to allocate.
  virtual Status reserve(uint64_t offset, uint64_t length);
  // A hint from a front end that a write of this range is about to arrive
  // (NBD calls it once a write's header is parsed, before its payload is
  // read off the socket). A layer may start loading the metadata that
  // write() will consult, so that the write does not stall on a cache miss
  // later, possibly inside a lock. Contract: cheap, never blocks, takes no
  // lock, fails silently; the write may never come, and the range is not
  // validated against the geometry (a layer must bounds-check what it
  // touches). The default does nothing.
  virtual void will_write(uint64_t offset, uint64_t length) noexcept {
    (void)offset;
    (void)length;
  }

  // Called once when a reload drops this layer, with no request admitted:
  // puts everything the layer acknowledged on the device below, and makes
  // safe what of its own state a later flush of the device below would not
  // cover (bow's resume journal). Not a flush: durability of the data is the
  // next flush's job. The default does nothing: a layer that passes writes
  // straight down has nothing in flight once requests drained.
  virtual Status detach() { return Status::Ok(); }
  // Called when the reload that detached this layer failed and the old
  // table serves on: the layer owns its devices again and restarts what
  // detach() stopped (a mirror's resync or recovery). The default does
  // nothing.
  virtual void reattach() {}

  // Target-specific text command (like `dmsetup message`). On success returns
  // the reply text (possibly empty). ENOTSUP means "not a message of mine".
  virtual Result<std::string> message(std::string_view text);
  // Adds this layer's own status fields to *out (a JSON object). Must not
  // block on I/O.
  virtual void describe(nlohmann::json* out) const;
  // One human line of this layer's status (used by `bowstack status`).
  virtual std::string status_line() const;

  // The device this one is stacked on, or nullptr for a base device.
  virtual BlockDevice* lower() const { return nullptr; }
};

// A layer over another device that forwards every call it does not
// override (like LevelDB's EnvWrapper or an nbdkit filter). Geometry and
// capabilities default to the lower device's. write_batch is the exception:
// it is not forwarded, so a layer that changes write() (remapping, saving
// old data) is never bypassed; a layer that only passes writes through may
// forward it itself.
class StackedDevice : public BlockDevice {
 public:
  explicit StackedDevice(std::shared_ptr<BlockDevice> lower) : lower_(std::move(lower)) {}

  Geometry geometry() const override { return lower_->geometry(); }
  Capabilities capabilities() const override { return lower_->capabilities(); }
  Status read(uint64_t offset, std::span<std::byte> buf) override { return lower_->read(offset, buf); }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    return lower_->write(offset, buf, flags);
  }
  Status flush() override { return lower_->flush(); }
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override {
    return lower_->trim(offset, length, flags);
  }
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override {
    return lower_->write_zeroes(offset, length, flags);
  }
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override {
    return lower_->block_status(offset, length, out);
  }
  Status cache(uint64_t offset, uint64_t length) override { return lower_->cache(offset, length); }
  Status reserve(uint64_t offset, uint64_t length) override { return lower_->reserve(offset, length); }
  // Forwarded unchanged; a layer that moves data to other offsets overrides
  // it (or hints nothing: a wrong hint costs a wasted prefetch, no more).
  void will_write(uint64_t offset, uint64_t length) noexcept override { lower_->will_write(offset, length); }
  BlockDevice* lower() const override { return lower_.get(); }

 protected:
  const std::shared_ptr<BlockDevice>& lower_device() const { return lower_; }

 private:
  std::shared_ptr<BlockDevice> lower_;
};

// True when [offset, offset+length) lies inside a device of `size` bytes,
// without overflow.
inline bool range_in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
  return offset <= size && length <= size - offset;
}

}  // namespace bowstack
