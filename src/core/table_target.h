// The one node of a target in a table, for offline tools given a table
// instead of paths (`bowstack restore --table t.json`, `era dump --table`,
// `csum verify --table`): the table says where the data image and the side
// store are, files or RBD images, exactly as the server resolved them.
//
// Thread-safety: values; no shared state.
#pragma once

#include <optional>
#include <string_view>

#include "core/status.h"
#include "core/table.h"

namespace bowstack {

// What a tool works on: copies of the table's nodes, so that they outlive
// the parsed table.
struct TableTarget {
  TableNode node;                 // the target node (its params, for the tool)
  std::optional<TableNode> data;  // the leaf directly in its data slot (when asked for)
  std::optional<TableNode> side;  // the leaf in its side-store slot; none when that slot is null
};

struct TableTargetQuery {
  std::string_view target;                  // "bow", "era", "csum"
  std::string_view side_slot = "metadata";  // the side store the tool reads or writes
  // The tool reads the data device itself: the target must sit directly on
  // a leaf (reading a leaf under another target would see that target's
  // layout, not this one's data).
  bool need_data_leaf = false;
  std::string_view tool;  // "restore", "era dump": names the tool in errors
};

// Finds the table's one node of `q.target`. EINVAL with a sentence when the
// table has none or several ("the table has 2 era nodes; era dump --table
// needs exactly one"), or when `need_data_leaf` and the node's data slot
// does not hold a leaf (naming the node's JSON path).
Result<TableTarget> find_table_target(const TableNode& root, const TableTargetQuery& q);

}  // namespace bowstack
