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

inline Capabilities checksummed_capabilities(Capabilities c) {
  c.trim = !c.read_only;
  c.write_zeroes = !c.read_only;
  c.fast_zero = false;
  c.block_status = false;
  return c;
}

}  // namespace bowstack::csum
