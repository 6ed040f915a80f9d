// Opening one leaf of a table (a file or an RBD image) outside a
// DeviceTree, for offline tools that work on a table's data image
// (`bowstack restore --table`).
#pragma once

#include <memory>

#include "core/block_device.h"
#include "core/table.h"

namespace bowstack {

// Opens `leaf` (kFile or kRbd) with its lock: a file's OFD lock (a read lock
// when `read_only`), an RBD image's exclusive lock (none when read-only).
// Nothing is created, except an RBD image given `create_size` (a side
// store's first use: created, or grown from size 0, to that many bytes).
// Errors name the leaf; one held elsewhere is EBUSY.
// REQUIRES: leaf.is_leaf().
Result<std::shared_ptr<BlockDevice>> open_leaf(const TableNode& leaf, bool read_only,
                                               uint64_t create_size = 0);

}  // namespace bowstack
