// Where the offline era tools find what they work on: the METADATA (and
// IMAGE) paths given, or `--table FILE`, the table's one era node (its
// metadata side store and, for export, its data leaf: files or RBD images,
// cli/offline_table.h). A file from a table is opened exactly as the same
// path given on the command line.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/block_device.h"
#include "core/table.h"
#include "targets/era/era_cli.h"

namespace bowstack::cli {

// Where one device of a tool is: a path, or an RBD leaf of the table.
struct EraPlace {
  std::string path;              // a file or block device, when `rbd` is empty
  std::optional<TableNode> rbd;  // an RBD image of the table
  // For messages: the path, or rbd:POOL/IMAGE.
  std::string name() const { return rbd ? rbd->leaf_name() : path; }
};

struct EraPlaces {
  EraPlace metadata;
  EraPlace image;    // only when asked for (export)
  std::string args;  // what names the metadata again in a hint: "disk.era" or "--table t.json"
};

// Resolves METADATA / IMAGE or --table for `tool` ("era dump"): exactly
// one of the two forms (EINVAL otherwise, saying what to give). With
// `need_image` the table's era node must sit directly on a leaf.
Result<EraPlaces> era_places(const EraCliOptions& o, const char* tool, bool need_image);

// Opens a place, locked unless `lock` is false (core/file_lock.h for files:
// exclusive to write, shared to read, so a tool never reads metadata a live
// target is changing, nor writes what a server holds; only reading the
// metadata snapshot of a live target goes without). An RBD image is opened
// read-only without a lock, or written under its exclusive lock, created
// (or grown from size 0) to `create_size` when that is non-zero. `what` is
// "metadata" or "image"; errors are whole sentences (their context).
Result<std::shared_ptr<BlockDevice>> open_era_place(const EraPlace& place, const char* what, bool read_only,
                                                    bool lock = true, uint64_t create_size = 0);

}  // namespace bowstack::cli
