// Opening one leaf of a table (a file or an RBD image) outside a
// DeviceTree: the DeviceTree's leaves, and offline tools that work on a
// table's images (`bowstack restore --table`, `era dump --table`, ...).
#pragma once

#include <memory>

#include "core/block_device.h"
#include "core/table.h"

namespace bowstack {

struct LeafOpen {
  bool read_only = false;  // also implied by the leaf's own read_only or snapshot
  // Non-zero: an RBD image given this is created, or grown from size 0, to
  // that many bytes (a side store's first use). Files are never created.
  uint64_t create_size = 0;
  // A file's OFD lock (a read lock when read-only). Off only for a reader
  // that expects a live writer (era's metadata snapshot). An RBD image
  // opened read-only takes no lock whatever this says.
  bool lock = true;
  // Read-only, an RBD image (not a snapshot) is refused with EBUSY while a
  // client holds a lock on it (RbdOptions::refuse_if_locked): what a file's
  // read lock does for offline tools. Servers leave it off (docs/rbd.md:
  // readers of an image being written see it as it is written).
  bool refuse_locked_image = false;
};

// Opens `leaf` (kFile or kRbd) with its lock: a file's OFD lock, an RBD
// image's exclusive lock when written. Errors name the leaf; one held
// elsewhere is EBUSY.
// REQUIRES: leaf.is_leaf().
Result<std::shared_ptr<BlockDevice>> open_leaf(const TableNode& leaf, const LeafOpen& how);

}  // namespace bowstack
