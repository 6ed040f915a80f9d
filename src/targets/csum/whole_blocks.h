// What both csum layouts present above their device: whole checksummed
// blocks only (a partial block would need a read-modify-write, not built),
// trim and write-zeroes always (they store the zero block's checksum), no
// fast zeroing and no block status (a hole below says nothing about the
// checksums).
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/block_device.h"

namespace bowstack::csum {

inline Geometry whole_block_geometry(Geometry g, uint32_t block_size) {
  g.logical_block_size = std::max(block_size, g.logical_block_size);
  g.preferred_block_size = std::max(block_size, g.preferred_block_size);
  g.max_io_size = std::max<uint32_t>(block_size, g.max_io_size / block_size * block_size);
  g.accepts_unaligned = false;
  return g;
}

// The blocks a request covers. Writes and write-zeroes are block-aligned
// (the geometry says so): [offset / bs, (offset + length) / bs). A trim is
// advisory: only the whole blocks inside it, possibly none.
struct BlockRange {
  uint64_t first = 0, end = 0;
};
inline BlockRange blocks_of(uint64_t offset, uint64_t length, uint32_t block_size) {
  return {offset / block_size, (offset + length) / block_size};
}
inline BlockRange whole_blocks_inside(uint64_t offset, uint64_t length, uint32_t block_size) {
  const uint64_t first = (offset + block_size - 1) / block_size;
  return {first, std::max(first, (offset + length) / block_size)};
}

inline Capabilities checksummed_capabilities(Capabilities c) {
  c.trim = !c.read_only;
  c.write_zeroes = !c.read_only;
  c.fast_zero = false;
  c.block_status = false;
  c.verified_reads = true;
  return c;
}

}  // namespace bowstack::csum
