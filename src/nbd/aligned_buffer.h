// A payload buffer aligned to 4096 bytes, so that layers below may hand it
// straight to O_DIRECT I/O.
//
// Thread-safety: none; each connection worker owns its own and reuses it
// across requests.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <span>

namespace bowstack::nbd {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 4096;

  AlignedBuffer() = default;

  // Makes the buffer `n` bytes long. Contents are unspecified afterwards.
  // Returns false (leaving the buffer empty) if memory is exhausted.
  bool resize(size_t n);
  // Frees the memory if more than `limit` bytes are held, so that one large
  // request does not pin its buffer for the life of the connection.
  void trim_to(size_t limit);

  std::byte* data() { return data_.get(); }
  size_t size() const { return size_; }
  std::span<std::byte> span() { return {data_.get(), size_}; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> data_;
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace bowstack::nbd
