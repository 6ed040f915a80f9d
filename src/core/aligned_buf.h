// Heap buffers aligned to 4096 bytes (so any layer below may use them for
// O_DIRECT I/O), and a pool that recycles buffers of one size, so that a hot
// path taking a buffer per request does not go through memalign each time
// (glibc's memalign fragments the heap and costs thousands of instructions
// per call once it has to consolidate).
#pragma once

#include <cstddef>
#include <mutex>
#include <span>
#include <vector>

namespace bowstack {

class BufferPool;

// Owns its memory; move-only. Contents are unspecified when created.
class AlignedBuf {
 public:
  static constexpr size_t kAlignment = 4096;

  AlignedBuf() = default;
  // Plain (unpooled) memory. Throws std::bad_alloc when memory is exhausted,
  // like operator new.
  explicit AlignedBuf(size_t n);
  AlignedBuf(AlignedBuf&& o) noexcept { swap(o); }
  AlignedBuf& operator=(AlignedBuf&& o) noexcept {
    AlignedBuf(std::move(o)).swap(*this);
    return *this;
  }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  ~AlignedBuf();

  std::byte* data() { return p_; }
  const std::byte* data() const { return p_; }
  size_t size() const { return n_; }
  std::span<std::byte> span() { return {p_, n_}; }
  std::span<const std::byte> span() const { return {p_, n_}; }

 private:
  friend class BufferPool;
  AlignedBuf(std::byte* p, size_t n, BufferPool* pool) : p_(p), n_(n), pool_(pool) {}
  void swap(AlignedBuf& o) noexcept;

  std::byte* p_ = nullptr;
  size_t n_ = 0;
  BufferPool* pool_ = nullptr;  // where the memory goes back to, or null
};

// Thread-safety: get() and the return of buffers may happen on any thread.
// Lifetime: the pool must outlive every buffer it handed out.
class BufferPool {
 public:
  // Recycles buffers of exactly `buffer_size` bytes, keeping at most
  // `max_cached` idle ones.
  BufferPool(size_t buffer_size, size_t max_cached) : size_(buffer_size), max_cached_(max_cached) {}
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A buffer of `n` bytes: from the pool if n is the pool's size, else plain.
  AlignedBuf get(size_t n);

 private:
  friend class AlignedBuf;
  void put(std::byte* p);

  const size_t size_;
  const size_t max_cached_;
  std::mutex mu_;
  std::vector<std::byte*> idle_;  // guarded by mu_
};

}  // namespace bowstack
