// Tables: a stack written as a tree of JSON nodes (docs/tables.md).
//
//   leaf:   {"file": "disk.img", "create": "10G", "read_only": true}
//           {"rbd": {"pool": "rbd", "image": "disk", "conf": "/etc/ceph/ceph.conf",
//                    "id": "admin", "snapshot": null}, "read_only": false}
//   target: {"target": "era", "params": {"block_size": "64k"},
//            "devices": {"data": NODE, "metadata": NODE}}
//
// parse_table() checks a table completely against a registry without
// touching any file (unknown targets, keys, slots, param types, the same
// file in two places, unparsable JSON): every error names the JSON path of
// what is wrong. It also resolves what the table leaves out (a side store's
// default file beside the data image), so that the parsed table, printed by
// to_json(), is the whole truth and parses back to itself.
//
// Thread-safety: values; no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/target_registry.h"

namespace bowstack {

struct TableNode;

// What a slot of a target node holds: one node, a list (legs), or nothing
// (a side store turned off with null).
struct TableSlot {
  std::string name;
  bool is_list = false;
  std::vector<TableNode> nodes;  // empty: turned off (null)
};

// Where an RBD leaf's image is (docs/rbd.md). Defaults filled in by
// parse_table, so a parsed table states them.
struct RbdLeaf {
  std::string pool = "rbd";
  std::string image;
  std::string conf = "/etc/ceph/ceph.conf";
  std::string id = "admin";             // client.<id>
  std::optional<std::string> snapshot;  // read-only when set
};

struct TableNode {
  enum class Kind { kFile, kRbd, kTarget };
  Kind kind = Kind::kFile;
  std::string json_path;  // "$", "$.devices.data", ... for messages

  // kFile
  std::string path;                     // as written
  std::optional<uint64_t> create_size;  // "create": create the file with this size if absent
  bool read_only = false;               // kFile, kRbd

  // kRbd
  RbdLeaf rbd;

  // kTarget
  std::string target;
  nlohmann::json params = nlohmann::json::object();  // as written (strings or numbers)
  std::vector<TableSlot> slots;                      // in the target's declared order

  // The parameters as the target's factory reads them.
  TargetSpec spec() const;
  const TableSlot* slot(std::string_view name) const;
  // The node as JSON, in the table syntax; parse_table(to_json()) yields
  // an equal node.
  nlohmann::json to_json() const;
  // A stable text that is equal for two nodes exactly when they would build
  // the same device (same target, params and children, recursively).
  std::string identity() const;
  bool is_leaf() const { return kind != Kind::kTarget; }
  // A leaf for humans: its file path, or "rbd:POOL/IMAGE[@SNAP]".
  std::string leaf_name() const;
  // A side store's path for an Env: a file's path, or an RBD image's
  // "rbd:POOL/IMAGE:conf=..:id=.." (rbd_env.h).
  std::string side_path() const;
  // Equal for two leaves exactly when they name the same storage: a file's
  // canonical path, or an RBD image with its cluster's config.
  std::string leaf_key() const;
};

// Parses and checks a whole table. Paths are kept as written (relative ones
// are relative to the server's working directory).
Result<TableNode> parse_table(const nlohmann::json& table, const TargetRegistry& registry);
// The same from text (errors for unparsable JSON name the line and column).
Result<TableNode> parse_table_text(std::string_view text, const TargetRegistry& registry);
// Parses JSON text only (no check against a registry): EINVAL "$: not valid
// JSON: parse error at line L, column C: ..." when it is not JSON.
Result<nlohmann::json> parse_json_text(std::string_view text);

// The table `serve IMAGE --target a --target b` stands for: a file leaf
// with the targets stacked on it, bottom first. A shorthand key naming a
// side store (era's metadata=PATH, bow's meta=PATH|none) becomes that slot.
Result<TableNode> table_from_shorthand(const std::string& image, std::optional<uint64_t> create_size,
                                       bool read_only, const std::vector<TargetSpec>& specs,
                                       const TargetRegistry& registry);

// An absolute, symlink-free name for a path that may not exist yet (its
// directory must; otherwise the path as given).
std::string canonical_path(const std::string& path);

// The leaf (file or RBD image) at the bottom of the node's "data" slots
// (the data image), or nullptr when there is none (a mirror's legs).
const TableNode* data_image(const TableNode& node);

// Every file leaf of the tree, depth first.
std::vector<const TableNode*> file_leaves(const TableNode& root);
// Every leaf of the tree (files and RBD images), depth first.
std::vector<const TableNode*> leaves(const TableNode& root);

}  // namespace bowstack
