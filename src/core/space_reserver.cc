#include "core/space_reserver.h"

#include <algorithm>
#include <bit>
#include <vector>

namespace bowstack {

SpaceReserver::SpaceReserver(BlockDevice* dev, uint64_t size, uint64_t chunk)
    : dev_(dev),
      size_(size),
      shift_(static_cast<unsigned>(std::countr_zero(chunk))),
      state_(new std::atomic<uint8_t>[(size + chunk - 1) / chunk]()) {}

bool SpaceReserver::wholly_allocated(uint64_t c) {
  const uint8_t known = state_[c].load(std::memory_order_relaxed);
  if (known != kUnknown) return known == kFull;
  // Ask the device once. Two threads may both ask; they get the same answer.
  const uint64_t start = c << shift_;
  const uint64_t end = std::min(size_, (c + 1) << shift_);
  bool full = true;
  for (uint64_t pos = start; full && pos < end;) {
    std::vector<Extent> ext;
    if (!dev_->block_status(pos, end - pos, &ext).ok() || ext.empty()) {
      full = false;
      break;
    }
    for (const Extent& e : ext) {
      if (e.flags & kExtentHole) full = false;
      pos += e.length;
    }
  }
  state_[c].store(full ? kFull : kHoles, std::memory_order_relaxed);
  return full;
}

Status SpaceReserver::reserve(uint64_t offset, uint64_t length) {
  const uint64_t end = std::min(size_, offset + length);
  uint64_t pos = offset;
  while (pos < end) {
    const uint64_t c = pos >> shift_;
    const uint64_t piece_end = std::min(end, (c + 1) << shift_);
    if (!wholly_allocated(c)) {
      device_reserves_.fetch_add(1, std::memory_order_relaxed);
      if (Status s = dev_->reserve(pos, piece_end - pos); !s.ok()) return s;
      // Writes fill holes (this reservation too): ask again next time, so
      // that a chunk written full stops costing a reservation per write.
      state_[c].store(kUnknown, std::memory_order_relaxed);
    }
    pos = piece_end;
  }
  return Status::Ok();
}

void SpaceReserver::forget(uint64_t offset, uint64_t length) {
  const uint64_t end = std::min(size_, offset + length);
  if (offset >= end) return;
  for (uint64_t c = offset >> shift_; c <= (end - 1) >> shift_; ++c) {
    state_[c].store(kUnknown, std::memory_order_relaxed);
  }
}

}  // namespace bowstack
