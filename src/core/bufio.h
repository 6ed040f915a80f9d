// A buffered cache for metadata blocks (in the spirit of Linux dm-bufio and
// thin-provisioning-tools' block manager), over any BlockDevice.
//
// Every target that keeps metadata reads and writes it through a
// BufferCache: fixed-size blocks (e.g. 4096 bytes) addressed by number, held
// through RAII `Buffer` handles, checked on read and stamped on write by a
// `BlockValidator`, kept in memory under a bound with clean and dirty LRU
// lists, written back by a background thread once they have been dirty for a
// while, and made durable by `write_dirty_buffers()`.
//
// Durability contract (what a format built on this must allow for):
//  * A dirty buffer may be written to the device at ANY time after
//    mark_dirty(): by background writeback, by eviction when the cache is
//    full, or by another thread's write_dirty_buffers(). So a format must
//    never mark dirty a block whose premature appearance on disk would be
//    unsafe (formats here write a new version to a slot that is not the last
//    durable one, so an early or torn write is harmless).
//  * write_dirty_buffers() writes every buffer that is dirty and not held
//    when it runs, waits for those writes and for any write-back already in
//    flight, then issues ONE flush of the device. When it returns OK, every
//    buffer that was dirty and unheld at its start is durable. Buffers held
//    (by any thread) are skipped: release what you want made durable first.
//  * The device is flushed only by write_dirty_buffers(); those flushes are
//    the only durability points.
//  * A failed write or flush is sticky: the cache stops writing, and every
//    later write_dirty_buffers() returns the failure, because a block whose
//    write failed may be damaged on the device, and after a failed flush
//    earlier writes can no longer be promised stable.
//
// Thread-safety: all methods may be called from any thread. One mutex guards
// the cache's bookkeeping; it is never held across device I/O. Several
// threads may hold the same buffer at once; the cache does not serialise
// their access to its bytes (the caller's format does). While a buffer is
// being read or written by the cache, nobody holds it: acquiring it waits.
//
// Memory: at most max_bytes of buffers, except that buffers being held and,
// after a write failure, dirty buffers that can no longer be written may
// exceed it (the alternative would be deadlock or losing data).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/block_device.h"

namespace bowstack {

// Checks and stamps one kind of metadata block. Implementations must be
// thread-safe and must not crash on any input: corrupt bytes are reported as
// a Status (EUCLEAN, naming what is wrong), never asserted on.
class BlockValidator {
 public:
  virtual ~BlockValidator() = default;
  virtual const char* name() const = 0;
  // Called on a block's bytes just before they are written to `block`
  // (stamp the checksum and the block's own location here).
  virtual void prepare_for_write(std::span<std::byte> data, uint64_t block) const = 0;
  // Called on bytes freshly read from `block`. Wrong checksum, wrong
  // location, wrong type: an EUCLEAN Status saying so.
  virtual Status check(std::span<const std::byte> data, uint64_t block) const = 0;
};

struct BufioOptions {
  uint32_t block_size = 4096;                     // a multiple of the device's logical block size
  uint64_t max_bytes = 16u << 20;                 // memory bound for buffers
  std::chrono::milliseconds writeback_age{1000};  // background writes dirty buffers older than this
  uint32_t max_merge_blocks = 256;                // adjacent blocks written or prefetched in one I/O
};

class BufferCache;

namespace bufio_detail {
struct Buf;
}

// A hold on one cached block. Move-only; releases on destruction.
// REQUIRES: the handle does not outlive its cache.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Buffer&& o) noexcept : cache_(o.cache_), b_(o.b_) { o.cache_ = nullptr, o.b_ = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  explicit operator bool() const { return b_ != nullptr; }
  uint64_t block() const;
  std::span<std::byte> data();
  std::span<const std::byte> data() const;
  // The bytes now differ from the device; they may be written at any time
  // from now on (see the header comment). REQUIRES: held.
  void mark_dirty();
  // Gives up the hold early (the destructor does it otherwise).
  void release();

 private:
  friend class BufferCache;
  Buffer(BufferCache* c, bufio_detail::Buf* b) : cache_(c), b_(b) {}
  BufferCache* cache_ = nullptr;
  bufio_detail::Buf* b_ = nullptr;
};

class BufferCache {
 public:
  // REQUIRES: opts.block_size is a non-zero multiple of the device's logical
  // block size (create() checks this and reports it).
  static Result<std::unique_ptr<BufferCache>> create(std::shared_ptr<BlockDevice> dev,
                                                     BufioOptions opts = {});
  // Stops the background thread. Dirty buffers not yet written are dropped
  // (logged): call write_dirty_buffers() first. REQUIRES: no handle is held.
  ~BufferCache();
  BufferCache(const BufferCache&) = delete;
  BufferCache& operator=(const BufferCache&) = delete;

  uint32_t block_size() const { return opts_.block_size; }
  // Whole blocks on the device; blocks at or beyond it cannot be read or written.
  uint64_t block_count() const { return blocks_; }
  BlockDevice& device() const { return *dev_; }

  // Holds `block`, reading it if it is not cached. With a validator, bytes
  // read from the device are checked once; a failed check returns its
  // EUCLEAN Status and no hold (the bytes stay cached, unchecked). Bytes the
  // cache's users wrote themselves are trusted. nullptr: no check.
  Result<Buffer> read(uint64_t block, const BlockValidator* v);
  // Holds `block` without reading it, for a caller that will overwrite all
  // of it (contents: zeroes, or what was cached). If released without
  // mark_dirty() the buffer is dropped, since it may no longer match the
  // device. `v` stamps it when written (nullptr: written as is).
  Result<Buffer> new_block(uint64_t block, const BlockValidator* v);
  // Hint: start reading blocks [first, first+count) in the background
  // (merged into large reads) unless cached. Never evicts dirty buffers.
  void prefetch(uint64_t first, uint64_t count);
  // Drops `block` from the cache, dirty or not, unless it is held or busy.
  void forget(uint64_t block);
  // Writes every dirty, unheld buffer, waits for all writes in flight, then
  // flushes the device once. See the durability contract above.
  Status write_dirty_buffers();
  // The same without the flush: starts nothing durable, only turns dirty
  // buffers into clean ones in large merged writes (bulk writers call it to
  // keep the cache from writing one block at a time on eviction).
  Status write_back();
  // The sticky failure, if any.
  Status failure() const;

  struct Stats {
    uint64_t buffers = 0;  // cached now
    uint64_t dirty = 0;    // dirty now
    uint64_t hits = 0;     // read() served from the cache
    uint64_t misses = 0;   // read() that had to read the device
    uint64_t reads = 0;    // device reads (a merged prefetch counts once)
    uint64_t writes = 0;   // device writes (a merged run counts once)
    uint64_t flushes = 0;
    uint64_t evictions = 0;
    uint64_t prefetched = 0;  // blocks read by prefetch
  };
  Stats stats() const;

 private:
  using Buf = bufio_detail::Buf;
  friend class Buffer;
  BufferCache(std::shared_ptr<BlockDevice> dev, BufioOptions opts, uint64_t blocks);

  Result<Buffer> get(uint64_t block, const BlockValidator* v, bool read);
  Status check_block(uint64_t block) const;
  Buf* alloc_locked(uint64_t block);
  void free_locked(Buf* b);
  // Makes room for one more buffer: evicts clean ones, writes back the
  // oldest dirty one if needed (unlocks around the write). Returns when
  // there is room or nothing more can be evicted.
  void make_room_locked(std::unique_lock<std::mutex>& lock);
  void lru_remove_locked(Buf* b);
  void lru_add_locked(Buf* b);
  void shed_locked();  // frees clean unheld buffers while over the bound
  void take_locked(Buf* b);
  void release(Buf* b);
  void mark_dirty(Buf* b);
  // Writes `bufs` (each already taken for writing, sorted by block) in
  // merged runs, with the lock released; then re-locks and settles them.
  void write_bufs(std::unique_lock<std::mutex>& lock, std::vector<Buf*>& bufs);
  Status write_run(std::span<Buf* const> run);
  Status write_back_locked(std::unique_lock<std::mutex>& lock);
  void background_loop();
  void read_prefetch_run(std::vector<Buf*>& run);

  const std::shared_ptr<BlockDevice> dev_;
  const BufioOptions opts_;
  const uint64_t blocks_;
  const uint64_t max_buffers_;

  mutable std::mutex mu_;
  std::condition_variable cv_;     // a buffer changed state; writes in flight dropped
  std::condition_variable bg_cv_;  // work for the background thread
  std::unordered_map<uint64_t, std::unique_ptr<Buf>> map_;  // guarded by mu_
  std::list<Buf*> clean_lru_;                    // guarded by mu_: unheld, clean, ready; oldest first
  std::list<Buf*> dirty_lru_;                    // guarded by mu_: unheld, dirty, ready; oldest first
  uint64_t dirty_count_ = 0;                     // guarded by mu_
  uint64_t writes_in_flight_ = 0;                // guarded by mu_
  std::deque<std::vector<Buf*>> prefetch_runs_;  // guarded by mu_: taken, in kReading
  Status failed_;                                // guarded by mu_: sticky
  bool stop_ = false;                            // guarded by mu_
  Stats stats_;                                  // guarded by mu_ (buffers/dirty computed on demand)
  std::thread background_;
};

}  // namespace bowstack
