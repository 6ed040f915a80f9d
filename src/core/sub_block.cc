#include "core/sub_block.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace bowstack {

// Holds blocks [first, end) for one request; releases them on every return
// path.
class SubBlockDevice::Hold {
 public:
  Hold(SubBlockDevice* d, uint64_t first, uint64_t end, bool exclusive)
      : d_(d), first_(first), end_(end), exclusive_(exclusive) {
    if (exclusive_) {
      d_->lock_exclusive(first_, end_);
    } else {
      d_->lock_shared(first_, end_);
    }
  }
  ~Hold() {
    if (exclusive_) {
      d_->unlock_exclusive(first_, end_);
    } else {
      d_->unlock_shared(first_, end_);
    }
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;

 private:
  SubBlockDevice* d_;
  uint64_t first_, end_;
  bool exclusive_;
};

std::shared_ptr<BlockDevice> SubBlockDevice::over(std::shared_ptr<BlockDevice> dev) {
  if (!needed(dev->geometry())) return dev;
  return std::make_shared<SubBlockDevice>(std::move(dev));
}

Geometry SubBlockDevice::served_geometry(const Geometry& g) {
  if (!needed(g)) return g;
  Geometry s = g;
  s.size = g.size / g.logical_block_size * g.logical_block_size;
  s.logical_block_size = kAdvertisedBlock;
  // Below one block the device pays a read-modify-write.
  s.preferred_block_size = std::max(g.logical_block_size, g.preferred_block_size);
  s.accepts_unaligned = true;
  return s;
}

SubBlockDevice::SubBlockDevice(std::shared_ptr<BlockDevice> lower)
    : StackedDevice(std::move(lower)),
      bs_(lower_device()->geometry().logical_block_size),
      piece_(std::max<uint64_t>(bs_, lower_device()->geometry().max_io_size / bs_ * bs_)),
      geometry_(served_geometry(lower_device()->geometry())),
      pool_(bs_, 64),
      writing_(geometry_.size / bs_),
      reading_(geometry_.size / bs_) {}

void SubBlockDevice::lock_shared(uint64_t first, uint64_t end) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !writing_.overlaps(first, end); });
  reading_.add(first, end);
}

void SubBlockDevice::unlock_shared(uint64_t first, uint64_t end) {
  bool freed = false;
  {
    std::lock_guard lock(mu_);
    reading_.remove(first, end, [&](uint64_t) { freed = true; });
  }
  // Only a block no read holds any more can let a writer in.
  if (freed) cv_.notify_all();
}

void SubBlockDevice::lock_exclusive(uint64_t first, uint64_t end) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !writing_.overlaps(first, end) && !reading_.overlaps(first, end); });
  writing_.mark(first, end);
}

void SubBlockDevice::unlock_exclusive(uint64_t first, uint64_t end) {
  {
    std::lock_guard lock(mu_);
    writing_.clear(first, end);
  }
  cv_.notify_all();
}

template <typename Fn>
Status SubBlockDevice::for_pieces(uint64_t offset, uint64_t length, Fn&& fn) const {
  while (length > 0) {
    // Pieces end at multiples of piece_, so the blocks of one span at most
    // piece_ bytes.
    const uint64_t n = std::min(length, (offset / piece_ + 1) * piece_ - offset);
    if (Status s = fn(offset, n); !s.ok()) return s;
    offset += n;
    length -= n;
  }
  return Status::Ok();
}

AlignedBuf SubBlockDevice::bounce(uint64_t bytes) { return pool_.get(bytes); }

Status SubBlockDevice::read(uint64_t offset, std::span<std::byte> buf) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size() + bs_ - 1) / bs_;
  Hold hold(this, first, end, false);
  if (aligned(offset, buf.size())) return lower_device()->read(offset, buf);
  partial_reads_.fetch_add(1, std::memory_order_relaxed);
  return for_pieces(offset, buf.size(), [&](uint64_t off, uint64_t n) {
    const uint64_t start = off / bs_ * bs_;
    AlignedBuf tmp = bounce((off + n + bs_ - 1) / bs_ * bs_ - start);
    if (Status s = lower_device()->read(start, tmp.span()); !s.ok()) return s;
    std::memcpy(buf.data() + (off - offset), tmp.data() + (off - start), n);
    return Status::Ok();
  });
}

Status SubBlockDevice::merge_write(uint64_t offset, uint64_t length, const std::byte* data, uint32_t flags) {
  const uint64_t start = offset / bs_ * bs_;
  const uint64_t stop = (offset + length + bs_ - 1) / bs_ * bs_;
  AlignedBuf tmp = bounce(stop - start);
  // Only the partial head and tail blocks need their old contents.
  if (offset != start) {
    if (Status s = lower_device()->read(start, tmp.span().first(bs_)); !s.ok()) return s;
  }
  if (offset + length != stop && (stop - bs_ != start || offset == start)) {
    if (Status s = lower_device()->read(stop - bs_, tmp.span().last(bs_)); !s.ok()) return s;
  }
  if (data != nullptr) {
    std::memcpy(tmp.data() + (offset - start), data, length);
  } else {
    std::memset(tmp.data() + (offset - start), 0, length);
  }
  return lower_device()->write(start, tmp.span(), flags);
}

Status SubBlockDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size() + bs_ - 1) / bs_;
  Hold hold(this, first, end, true);
  if (aligned(offset, buf.size())) return lower_device()->write(offset, buf, flags);
  partial_writes_.fetch_add(1, std::memory_order_relaxed);
  // Every piece through a bounce buffer, even the aligned ones: their data
  // sits at an offset of the client's buffer that O_DIRECT may refuse.
  return for_pieces(offset, buf.size(), [&](uint64_t off, uint64_t n) {
    return merge_write(off, n, buf.data() + (off - offset), flags);
  });
}

Status SubBlockDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + length + bs_ - 1) / bs_;
  if (aligned(offset, length)) {
    Hold hold(this, first, end, true);
    return lower_device()->write_zeroes(offset, length, flags);
  }
  if (flags & kFastZero) return Status::Error(ENOTSUP, "zeroing part of a block is a write, never fast");
  Hold hold(this, first, end, true);
  partial_writes_.fetch_add(1, std::memory_order_relaxed);
  // Whole blocks inside the range go down as write-zeroes; the partial
  // head and tail block (one block if both are the same) are rewritten.
  const uint64_t inner_first = (offset + bs_ - 1) / bs_;
  const uint64_t inner_end = (offset + length) / bs_;
  const uint32_t write_flags = flags & kFua;
  if (inner_first >= inner_end) {
    return for_pieces(offset, length,
                      [&](uint64_t off, uint64_t n) { return merge_write(off, n, nullptr, write_flags); });
  }
  if (offset % bs_ != 0) {
    if (Status s = merge_write(offset, inner_first * bs_ - offset, nullptr, write_flags); !s.ok()) return s;
  }
  if (Status s = lower_device()->write_zeroes(inner_first * bs_, (inner_end - inner_first) * bs_, flags);
      !s.ok()) {
    return s;
  }
  if ((offset + length) % bs_ != 0) {
    return merge_write(inner_end * bs_, offset + length - inner_end * bs_, nullptr, write_flags);
  }
  return Status::Ok();
}

Status SubBlockDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  // A hint: the parts of partial blocks are dropped.
  const uint64_t inner_first = (offset + bs_ - 1) / bs_;
  const uint64_t inner_end = (offset + length) / bs_;
  if (inner_first >= inner_end) return Status::Ok();
  Hold hold(this, inner_first, inner_end, true);
  return lower_device()->trim(inner_first * bs_, (inner_end - inner_first) * bs_, flags);
}

Status SubBlockDevice::reserve(uint64_t offset, uint64_t length) {
  // Writes of partial blocks write the whole blocks.
  const uint64_t start = offset / bs_ * bs_;
  const uint64_t stop = (offset + length + bs_ - 1) / bs_ * bs_;
  return lower_device()->reserve(start, stop - start);
}

void SubBlockDevice::describe(nlohmann::json* out) const {
  (*out)["block_size"] = bs_;
  (*out)["partial_reads"] = partial_reads();
  (*out)["partial_writes"] = partial_writes();
}

}  // namespace bowstack
