// `--table FILE` for the offline tools (bowstack restore, inspect, era
// dump|check|invalidate|export|restore, csum verify|format|rebuild|rewrite|
// dump): one shared way from a table file to the images a tool works on,
// files or RBD images, found where the server would find them.
#pragma once

#include <memory>
#include <string>

#include "core/block_device.h"
#include "core/leaf.h"
#include "core/table_target.h"

namespace bowstack::cli {

// Reads FILE ('-': stdin), parses it against the built-in targets (as serve
// does, side stores resolved to their defaults) and finds the one node `q`
// asks for (core/table_target.h). Errors (EINVAL, or the errno of reading
// the file) start with FILE.
Result<TableTarget> load_table_target(const std::string& file, const TableTargetQuery& q);

// Opens a leaf of it for a tool (core/leaf.h's locks: refused with EBUSY
// while a server holds a file, or an RBD image the tool writes).
// Errors keep their code; their context starts with the leaf's JSON path.
Result<std::shared_ptr<BlockDevice>> open_table_leaf(const TableNode& leaf, const LeafOpen& how);

}  // namespace bowstack::cli
