#include "core/table_target.h"

#include <fmt/format.h>

#include <vector>

namespace bowstack {

Result<TableTarget> find_table_target(const TableNode& root, const TableTargetQuery& q) {
  std::vector<const TableNode*> found;
  std::vector<const TableNode*> todo{&root};
  while (!todo.empty()) {
    const TableNode* n = todo.back();
    todo.pop_back();
    if (n->kind != TableNode::Kind::kTarget) continue;
    if (n->target == q.target) found.push_back(n);
    for (const auto& slot : n->slots) {
      for (const auto& c : slot.nodes) todo.push_back(&c);
    }
  }
  if (found.size() != 1) {
    return Status::Error(EINVAL, fmt::format("the table has {} {} nodes; {} --table needs exactly one",
                                             found.size(), q.target, q.tool));
  }
  const TableNode& node = *found[0];
  TableTarget t{.node = node};
  const TableSlot* data = node.slot("data");
  const bool over_leaf = data && data->nodes.size() == 1 && data->nodes[0].is_leaf();
  if (q.need_data_leaf && !over_leaf) {
    return Status::Error(EINVAL, fmt::format("{}: {} --table needs {} directly over a file or an RBD image, "
                                             "since it reads the data device itself",
                                             node.json_path, q.tool, q.target));
  }
  if (over_leaf) t.data = data->nodes[0];
  // The parser resolved a side store left out to its default leaf; an
  // empty slot is one turned off with null.
  const TableSlot* side = node.slot(q.side_slot);
  if (side && !side->nodes.empty()) t.side = side->nodes[0];
  return t;
}

}  // namespace bowstack
