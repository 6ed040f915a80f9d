#include "core/aligned_buf.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace bowstack {

namespace {
std::byte* allocate(size_t n) {
  // aligned_alloc wants a multiple of the alignment; never ask for 0 bytes.
  const size_t rounded =
      (std::max<size_t>(n, 1) + AlignedBuf::kAlignment - 1) / AlignedBuf::kAlignment * AlignedBuf::kAlignment;
  void* p = std::aligned_alloc(AlignedBuf::kAlignment, rounded);
  if (p == nullptr) throw std::bad_alloc();
  return static_cast<std::byte*>(p);
}
}  // namespace

AlignedBuf::AlignedBuf(size_t n) : p_(allocate(n)), n_(n) {}

AlignedBuf::~AlignedBuf() {
  if (p_ == nullptr) return;
  if (pool_ != nullptr) {
    pool_->put(p_);
  } else {
    std::free(p_);
  }
}

void AlignedBuf::swap(AlignedBuf& o) noexcept {
  std::swap(p_, o.p_);
  std::swap(n_, o.n_);
  std::swap(pool_, o.pool_);
}

BufferPool::~BufferPool() {
  for (std::byte* p : idle_) std::free(p);
}

AlignedBuf BufferPool::get(size_t n) {
  if (n != size_) return AlignedBuf(n);
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      std::byte* p = idle_.back();
      idle_.pop_back();
      return AlignedBuf(p, n, this);
    }
  }
  return AlignedBuf(allocate(n), n, this);
}

void BufferPool::put(std::byte* p) {
  {
    std::lock_guard lock(mu_);
    if (idle_.size() < max_cached_) {
      idle_.push_back(p);
      return;
    }
  }
  std::free(p);
}

}  // namespace bowstack
