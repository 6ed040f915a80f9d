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

// Opens a leaf of it for a tool, with core/leaf.h's locks, so that a tool
// fails with EBUSY while a server holds what it opens: a file's OFD lock
// (shared to read), an RBD image's exclusive lock to write, and to read,
// a refusal while a client holds a lock on the image (unless `how.lock`
// is false: era's metadata snapshot). Errors keep their code; their
// context starts with the leaf's JSON path.
Result<std::shared_ptr<BlockDevice>> open_table_leaf(const TableNode& leaf, const LeafOpen& how);

}  // namespace bowstack::cli
