#include "cli/offline_table.h"

#include <fmt/format.h>

#include "cli/verbs.h"
#include "core/target_registry.h"
#include "targets/builtin.h"

namespace bowstack::cli {

Result<TableTarget> load_table_target(const std::string& file, const TableTargetQuery& q) {
  TargetRegistry registry;
  register_builtin_targets(&registry);
  auto text = read_table_text(file);
  if (!text.ok()) return text.status();
  auto table = parse_table_text(*text, registry);
  if (!table.ok()) return Status::Error(table.status().code(), file + ": " + table.status().context());
  auto t = find_table_target(table.value(), q);
  if (!t.ok()) return Status::Error(t.status().code(), file + ": " + t.status().context());
  return t;
}

Result<std::shared_ptr<BlockDevice>> open_table_leaf(const TableNode& leaf, const LeafOpen& how) {
  LeafOpen tool = how;
  tool.refuse_locked_image = how.lock;
  auto dev = open_leaf(leaf, tool);
  if (!dev.ok()) {
    return Status::Error(dev.status().code(), fmt::format("{}: {}", leaf.json_path, dev.status().context()));
  }
  return dev;
}

}  // namespace bowstack::cli
