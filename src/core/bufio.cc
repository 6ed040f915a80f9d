#include "core/bufio.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/thread_name.h"

namespace bowstack {

namespace bufio_detail {

enum class State { kReading, kReady, kWriting };

struct Buf {
  Buf(uint64_t blk, size_t size)
      : block(blk), data(static_cast<std::byte*>(std::aligned_alloc(4096, (size + 4095) / 4096 * 4096))) {}
  ~Buf() { std::free(data); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;

  const uint64_t block;
  std::byte* const data;
  uint32_t holds = 0;  // users' holds plus the cache's own while it does I/O
  State state = State::kReady;
  bool dirty = false;
  bool fresh = false;    // new_block() contents not yet marked dirty: drop on release
  bool trusted = false;  // the bytes were written by the cache's users, not read from the device
  const BlockValidator* validator = nullptr;  // stamps the bytes when written
  const BlockValidator* checked = nullptr;    // accepted the bytes read from the device
  std::chrono::steady_clock::time_point dirtied{};
  bool in_lru = false;
  std::list<Buf*>::iterator lru;
};

}  // namespace bufio_detail

using bufio_detail::State;

namespace {
// The inner error's own words, without repeating strerror twice when wrapped.
}  // namespace

// ---- Buffer ----------------------------------------------------------------

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    cache_ = o.cache_;
    b_ = o.b_;
    o.cache_ = nullptr;
    o.b_ = nullptr;
  }
  return *this;
}

uint64_t Buffer::block() const { return b_->block; }
std::span<std::byte> Buffer::data() { return {b_->data, cache_->block_size()}; }
std::span<const std::byte> Buffer::data() const { return {b_->data, cache_->block_size()}; }
void Buffer::mark_dirty() { cache_->mark_dirty(b_); }
void Buffer::release() {
  if (b_ != nullptr) cache_->release(b_);
  b_ = nullptr;
  cache_ = nullptr;
}

// ---- BufferCache -------------------------------------------------------------

Result<std::unique_ptr<BufferCache>> BufferCache::create(std::shared_ptr<BlockDevice> dev,
                                                         BufioOptions opts) {
  const Geometry g = dev->geometry();
  if (opts.block_size < 512 || opts.block_size % g.logical_block_size != 0) {
    return Status::Error(EINVAL,
                         fmt::format("bufio: block size {} is not a multiple of the device's block size {}",
                                     opts.block_size, g.logical_block_size));
  }
  if (opts.max_merge_blocks == 0) opts.max_merge_blocks = 1;
  const uint64_t blocks = g.size / opts.block_size;
  return std::unique_ptr<BufferCache>(new BufferCache(std::move(dev), opts, blocks));
}

BufferCache::BufferCache(std::shared_ptr<BlockDevice> dev, BufioOptions opts, uint64_t blocks)
    : dev_(std::move(dev)),
      opts_(opts),
      blocks_(blocks),
      max_buffers_(std::max<uint64_t>(8, opts.max_bytes / opts.block_size)) {
  background_ = std::thread([this] {
    set_thread_name("bufio-wb");
    background_loop();
  });
}

BufferCache::~BufferCache() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  bg_cv_.notify_all();
  background_.join();
  if (dirty_count_ > 0) {
    spdlog::warn("bufio: {} dirty metadata buffers dropped at shutdown (never written)", dirty_count_);
  }
}

Status BufferCache::check_block(uint64_t block) const {
  if (block >= blocks_) {
    return Status::Error(EIO,
                         fmt::format("metadata block {} is beyond the end of the device ({} blocks of {} "
                                     "bytes): was the metadata truncated?",
                                     block, blocks_, opts_.block_size));
  }
  return Status::Ok();
}

bufio_detail::Buf* BufferCache::alloc_locked(uint64_t block) {
  auto owned = std::make_unique<Buf>(block, opts_.block_size);
  Buf* b = owned.get();
  b->holds = 1;
  map_.emplace(block, std::move(owned));
  return b;
}

void BufferCache::free_locked(Buf* b) {
  lru_remove_locked(b);
  if (b->dirty) --dirty_count_;
  map_.erase(b->block);
}

void BufferCache::lru_remove_locked(Buf* b) {
  if (!b->in_lru) return;
  (b->dirty ? dirty_lru_ : clean_lru_).erase(b->lru);
  b->in_lru = false;
}

void BufferCache::lru_add_locked(Buf* b) {
  auto& list = b->dirty ? dirty_lru_ : clean_lru_;
  b->lru = list.insert(list.end(), b);
  b->in_lru = true;
}

void BufferCache::take_locked(Buf* b) {
  if (b->holds++ == 0) lru_remove_locked(b);
}

void BufferCache::make_room_locked(std::unique_lock<std::mutex>& lock) {
  while (map_.size() >= max_buffers_) {
    if (!clean_lru_.empty()) {
      free_locked(clean_lru_.front());
      ++stats_.evictions;
      continue;
    }
    if (!failed_.ok()) return;  // unwritable: exceed the bound rather than lose data
    if (dirty_lru_.empty()) {
      // Buffers the background thread (or another evictor) is writing are on
      // neither list, but come back clean: wait for them rather than exceed
      // the bound. Only buffers held by callers may push past it.
      if (writes_in_flight_ == 0) return;
      cv_.wait(lock);
      continue;
    }
    Buf* b = dirty_lru_.front();
    take_locked(b);
    b->state = State::kWriting;
    ++writes_in_flight_;
    std::vector<Buf*> one{b};
    write_bufs(lock, one);  // back on the clean list if it worked; evicted next round
  }
}

Result<Buffer> BufferCache::get(uint64_t block, const BlockValidator* v, bool read) {
  if (Status s = check_block(block); !s.ok()) return s;
  std::unique_lock lock(mu_);
  for (;;) {
    auto it = map_.find(block);
    if (it == map_.end()) {
      make_room_locked(lock);
      if (map_.count(block) != 0) continue;  // created while make_room had the lock released
      Buf* b = alloc_locked(block);
      b->validator = v;
      if (!read) {
        std::memset(b->data, 0, opts_.block_size);
        b->fresh = b->trusted = true;
        b->checked = v;
        return Buffer(this, b);
      }
      b->state = State::kReading;
      ++stats_.misses;
      ++stats_.reads;
      lock.unlock();
      Status io = dev_->read(block * opts_.block_size, std::span<std::byte>(b->data, opts_.block_size));
      // Still kReading: nobody else can look at the bytes while they are checked.
      Status checked = io.ok() && v != nullptr ? v->check({b->data, opts_.block_size}, block) : Status::Ok();
      lock.lock();
      if (!io.ok()) {
        map_.erase(block);
        cv_.notify_all();
        return Status::Error(io.code(), fmt::format("reading metadata block {}: {}", block, why(io)));
      }
      b->state = State::kReady;
      cv_.notify_all();
      if (!checked.ok()) {
        b->holds = 0;
        lru_add_locked(b);
        return checked;
      }
      b->checked = v;
      return Buffer(this, b);
    }
    Buf* b = it->second.get();
    if (b->state != State::kReady) {
      cv_.wait(lock);
      continue;
    }
    if (read) {
      ++stats_.hits;
      if (v != nullptr && b->checked != v) {
        if (b->trusted) {
          b->checked = v;
        } else if (b->holds == 0) {
          // Unheld and the lock is ours: nobody can change the bytes meanwhile.
          if (Status s = v->check({b->data, opts_.block_size}, block); !s.ok()) return s;
          b->checked = v;
        } else {
          return Status::Error(EBUSY, fmt::format("bufio: metadata block {} is held by another user and was "
                                                  "never checked with validator '{}'",
                                                  block, v->name()));
        }
      }
    }
    take_locked(b);
    if (v != nullptr) b->validator = v;
    if (!read) {
      b->fresh = !b->dirty;
      b->trusted = true;
    }
    return Buffer(this, b);
  }
}

Result<Buffer> BufferCache::read(uint64_t block, const BlockValidator* v) { return get(block, v, true); }

Result<Buffer> BufferCache::new_block(uint64_t block, const BlockValidator* v) {
  return get(block, v, false);
}

void BufferCache::release(Buf* b) {
  std::lock_guard lock(mu_);
  if (--b->holds != 0) return;
  if (b->fresh && !b->dirty) {
    free_locked(b);
    return;
  }
  lru_add_locked(b);
  shed_locked();
}

void BufferCache::shed_locked() {
  // Held buffers may have pushed the cache over its bound; shed clean ones.
  while (map_.size() > max_buffers_ && !clean_lru_.empty()) {
    free_locked(clean_lru_.front());
    ++stats_.evictions;
  }
}

void BufferCache::mark_dirty(Buf* b) {
  std::lock_guard lock(mu_);
  if (!b->dirty) {
    b->dirty = true;
    b->dirtied = std::chrono::steady_clock::now();
    ++dirty_count_;
  }
  b->fresh = false;
  b->trusted = true;
  if (dirty_count_ > max_buffers_ * 3 / 4) bg_cv_.notify_one();
}

void BufferCache::forget(uint64_t block) {
  std::lock_guard lock(mu_);
  auto it = map_.find(block);
  if (it == map_.end()) return;
  Buf* b = it->second.get();
  if (b->holds == 0 && b->state == State::kReady) free_locked(b);
}

Status BufferCache::write_run(std::span<Buf* const> run) {
  const uint32_t bs = opts_.block_size;
  for (Buf* b : run) {
    if (b->validator != nullptr) b->validator->prepare_for_write({b->data, bs}, b->block);
  }
  if (run.size() == 1)
    return dev_->write(run[0]->block * bs, std::span<const std::byte>(run[0]->data, bs), 0);
  const size_t bytes = run.size() * bs;
  std::unique_ptr<std::byte, decltype(&std::free)> bounce(
      static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)), &std::free);
  for (size_t i = 0; i < run.size(); ++i) std::memcpy(bounce.get() + i * bs, run[i]->data, bs);
  return dev_->write(run[0]->block * bs, std::span<const std::byte>(bounce.get(), bytes), 0);
}

void BufferCache::write_bufs(std::unique_lock<std::mutex>& lock, std::vector<Buf*>& bufs) {
  std::sort(bufs.begin(), bufs.end(), [](const Buf* a, const Buf* b) { return a->block < b->block; });
  lock.unlock();
  std::vector<Status> results(bufs.size());
  uint64_t ios = 0;
  size_t i = 0;
  while (i < bufs.size()) {
    size_t j = i + 1;
    while (j < bufs.size() && j - i < opts_.max_merge_blocks && bufs[j]->block == bufs[j - 1]->block + 1) ++j;
    Status s = write_run(std::span<Buf* const>(bufs.data() + i, j - i));
    if (!s.ok()) {
      s = Status::Error(s.code(), fmt::format("writing metadata blocks {}..{}: {}", bufs[i]->block,
                                              bufs[j - 1]->block, why(s)));
    }
    for (size_t k = i; k < j; ++k) results[k] = s;
    ++ios;
    i = j;
  }
  lock.lock();
  stats_.writes += ios;
  for (size_t k = 0; k < bufs.size(); ++k) {
    Buf* b = bufs[k];
    b->state = State::kReady;
    --writes_in_flight_;
    if (results[k].ok()) {
      b->dirty = false;
      --dirty_count_;
    } else if (failed_.ok()) {
      spdlog::error("bufio: {}; no more metadata will be written", why(results[k]));
      failed_ = results[k];
    }
    if (--b->holds == 0) lru_add_locked(b);
  }
  shed_locked();  // dirty buffers released over the bound are clean now
  cv_.notify_all();
}

Status BufferCache::write_back_locked(std::unique_lock<std::mutex>& lock) {
  if (!failed_.ok()) return failed_;
  std::vector<Buf*> bufs(dirty_lru_.begin(), dirty_lru_.end());
  for (Buf* b : bufs) {
    take_locked(b);
    b->state = State::kWriting;
    ++writes_in_flight_;
  }
  if (!bufs.empty()) write_bufs(lock, bufs);
  // Write-back started by others (eviction, background) must land too.
  cv_.wait(lock, [this] { return writes_in_flight_ == 0; });
  return failed_;
}

Status BufferCache::write_back() {
  std::unique_lock lock(mu_);
  return write_back_locked(lock);
}

Status BufferCache::write_dirty_buffers() {
  std::unique_lock lock(mu_);
  if (Status s = write_back_locked(lock); !s.ok()) return s;
  lock.unlock();
  Status s = dev_->flush();
  lock.lock();
  ++stats_.flushes;
  if (!s.ok()) {
    if (failed_.ok()) {
      spdlog::error("bufio: metadata flush failed: {}; no more metadata will be written", why(s));
      failed_ = Status::Error(s.code(), "metadata flush failed: " + why(s));
    }
    return failed_;
  }
  return Status::Ok();
}

Status BufferCache::failure() const {
  std::lock_guard lock(mu_);
  return failed_;
}

void BufferCache::prefetch(uint64_t first, uint64_t count) {
  std::lock_guard lock(mu_);
  if (first >= blocks_) return;
  count = std::min(count, blocks_ - first);
  // Never let one prefetch push out more than half of the cache.
  count = std::min<uint64_t>(count, std::max<uint64_t>(1, max_buffers_ / 2));
  std::vector<Buf*> run;
  auto queue_run = [&] {
    if (!run.empty()) prefetch_runs_.push_back(std::move(run));
    run.clear();
  };
  for (uint64_t blk = first; blk < first + count; ++blk) {
    if (map_.count(blk) != 0) {
      queue_run();
      continue;
    }
    if (map_.size() >= max_buffers_) {
      if (clean_lru_.empty()) break;
      free_locked(clean_lru_.front());
      ++stats_.evictions;
    }
    Buf* b = alloc_locked(blk);
    b->state = State::kReading;
    run.push_back(b);
    if (run.size() >= opts_.max_merge_blocks) queue_run();
  }
  queue_run();
  bg_cv_.notify_one();
}

void BufferCache::read_prefetch_run(std::vector<Buf*>& run) {
  const uint32_t bs = opts_.block_size;
  const size_t bytes = run.size() * bs;
  std::unique_ptr<std::byte, decltype(&std::free)> bounce(
      static_cast<std::byte*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)), &std::free);
  Status s = dev_->read(run[0]->block * bs, std::span<std::byte>(bounce.get(), bytes));
  if (s.ok()) {
    for (size_t i = 0; i < run.size(); ++i) std::memcpy(run[i]->data, bounce.get() + i * bs, bs);
  }
  std::lock_guard lock(mu_);
  ++stats_.reads;
  for (Buf* b : run) {
    if (!s.ok()) {
      map_.erase(b->block);  // a later read() tries again and reports the error
      continue;
    }
    b->state = State::kReady;
    b->holds = 0;
    lru_add_locked(b);
    ++stats_.prefetched;
  }
  cv_.notify_all();
}

void BufferCache::background_loop() {
  std::unique_lock lock(mu_);
  const auto age = opts_.writeback_age;
  const auto tick = std::clamp<std::chrono::milliseconds>(age / 2, std::chrono::milliseconds(10),
                                                          std::chrono::milliseconds(1000));
  while (!stop_) {
    if (!prefetch_runs_.empty()) {
      std::vector<Buf*> run = std::move(prefetch_runs_.front());
      prefetch_runs_.pop_front();
      lock.unlock();
      read_prefetch_run(run);
      lock.lock();
      continue;
    }
    if (failed_.ok() && !dirty_lru_.empty()) {
      const auto now = std::chrono::steady_clock::now();
      const bool pressure = dirty_count_ > max_buffers_ * 3 / 4;
      std::vector<Buf*> bufs;
      for (Buf* b : dirty_lru_) {
        if (pressure || now - b->dirtied >= age) bufs.push_back(b);
      }
      if (!bufs.empty()) {
        for (Buf* b : bufs) {
          take_locked(b);
          b->state = State::kWriting;
          ++writes_in_flight_;
        }
        write_bufs(lock, bufs);
        continue;
      }
    }
    bg_cv_.wait_for(lock, tick);
  }
}

BufferCache::Stats BufferCache::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.buffers = map_.size();
  s.dirty = dirty_count_;
  return s;
}

}  // namespace bowstack
