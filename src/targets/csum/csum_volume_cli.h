// Where the offline csum tools find a volume: IMAGE with its checksums
// (--metadata, else IMAGE.csum, as serve finds them), or `--table FILE`,
// the table's one csum node (its data leaf and its metadata side store:
// files or RBD images, cli/offline_table.h). A file is opened the same way
// in both forms.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/block_device.h"
#include "core/leaf.h"
#include "core/table.h"
#include "targets/csum/csum_cli.h"

namespace bowstack::cli {

struct CsumPlaces {
  TableNode data;               // a file leaf for IMAGE, or the table's data leaf
  std::optional<TableNode> md;  // the checksums; none for a table's csum node whose metadata is null
  bool from_table = false;
  // The table node's layout ("csum" or "integrity"); from a command line,
  // what --layout says.
  std::string layout = "csum";
  // For messages: paths, or rbd:POOL/IMAGE.
  std::string data_name() const { return data.leaf_name(); }
  std::string md_name() const { return md ? md->leaf_name() : std::string("(none)"); }
};

// Resolves IMAGE [--metadata] or --table for `tool` ("csum verify"):
// exactly one of the two forms (EINVAL otherwise, saying what to give).
// From a table the csum node must sit directly on a leaf (the tools read
// and write the data device themselves), and a --layout given must agree
// with the node's.
Result<CsumPlaces> csum_places(const CsumCliOptions& o, const char* tool);

// Opens one of the places (core/leaf.h: a file's lock, shared when
// read-only; an RBD image's exclusive lock when written). Errors keep
// their code and are whole sentences (their context), naming the leaf.
Result<std::shared_ptr<BlockDevice>> open_csum_leaf(const CsumPlaces& p, const TableNode& leaf,
                                                    const LeafOpen& how);

}  // namespace bowstack::cli
