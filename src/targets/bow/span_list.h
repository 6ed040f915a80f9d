// A short list of block spans [start, end) that lives inline while it has
// at most two, as almost every write's busy spans and claims do: the write
// path into free space builds both for every request, and two heap
// allocations would cost more than the rest of its bookkeeping.
// Thread-safety: none (a value type).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace bowstack::bow {

class SpanList {
 public:
  using Span = std::pair<uint64_t, uint64_t>;

  void emplace_back(uint64_t start, uint64_t end) {
    if (heap_.empty() && n_ < kInline) {
      inline_[n_++] = {start, end};
      return;
    }
    if (heap_.empty()) heap_.assign(inline_.begin(), inline_.begin() + n_);
    heap_.emplace_back(start, end);
  }
  void clear() {
    n_ = 0;
    heap_.clear();
  }
  bool empty() const { return size() == 0; }
  size_t size() const { return heap_.empty() ? n_ : heap_.size(); }
  const Span* data() const { return heap_.empty() ? inline_.data() : heap_.data(); }
  Span* data() { return heap_.empty() ? inline_.data() : heap_.data(); }
  const Span* begin() const { return data(); }
  const Span* end() const { return data() + size(); }
  Span* begin() { return data(); }
  Span* end() { return data() + size(); }
  operator std::span<const Span>() const { return {data(), size()}; }

 private:
  static constexpr size_t kInline = 2;
  std::array<Span, kInline> inline_{};
  size_t n_ = 0;            // spans inline, while heap_ is empty
  std::vector<Span> heap_;  // all spans, once there are more than kInline
};

}  // namespace bowstack::bow
