#include "nbd/aligned_buffer.h"

namespace bowstack::nbd {

bool AlignedBuffer::resize(size_t n) {
  if (n <= capacity_) {
    size_ = n;
    return true;
  }
  size_t rounded = (n + kAlignment - 1) / kAlignment * kAlignment;
  data_.reset();
  capacity_ = size_ = 0;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(kAlignment, rounded));
  if (p == nullptr) return false;
  data_.reset(p);
  capacity_ = rounded;
  size_ = n;
  return true;
}

void AlignedBuffer::trim_to(size_t limit) {
  if (capacity_ <= limit) return;
  data_.reset();
  capacity_ = size_ = 0;
}

}  // namespace bowstack::nbd
