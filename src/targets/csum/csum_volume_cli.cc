#include "targets/csum/csum_volume_cli.h"

#include <fmt/format.h>

#include "cli/offline_table.h"
#include "core/target_registry.h"

namespace bowstack::cli {

namespace {

TableNode file_leaf(const std::string& path) {
  TableNode n;
  n.kind = TableNode::Kind::kFile;
  n.path = path;
  return n;
}

}  // namespace

Result<CsumPlaces> csum_places(const CsumCliOptions& o, const char* tool) {
  if (o.table.empty()) {
    if (o.image.empty()) return Status::Error(EINVAL, fmt::format("{} needs IMAGE or --table FILE", tool));
    CsumPlaces p{.data = file_leaf(o.image), .layout = o.layout};
    p.md = file_leaf(o.metadata.empty() ? csum_default_metadata(o.image) : o.metadata);
    return p;
  }
  if (!o.image.empty() || !o.metadata.empty()) {
    return Status::Error(EINVAL,
                         fmt::format("{}: --table names the image and its checksums; give no IMAGE or "
                                     "--metadata with it",
                                     tool));
  }
  auto t =
      load_table_target(o.table, TableTargetQuery{.target = "csum", .need_data_leaf = true, .tool = tool});
  // A sentence either way: the table's own errors, or why it could not be read.
  if (!t.ok()) return Status::Error(t.status().code(), why(t.status()));
  CsumPlaces p{.data = *t->data, .md = t->side, .from_table = true};
  p.layout = TargetArgs(t->node.spec()).get_string("layout", "csum");
  if (o.layout_given && o.layout != p.layout) {
    return Status::Error(EINVAL, fmt::format("{}: --layout {} disagrees with the table's csum node ({}: "
                                             "layout={})",
                                             tool, o.layout, t->node.json_path, p.layout));
  }
  if (p.layout == "csum" && !p.md) {
    return Status::Error(EINVAL,
                         fmt::format("{}: {}: the csum node has no metadata (null), which layout=csum "
                                     "needs",
                                     o.table, t->node.json_path));
  }
  return p;
}

Result<std::shared_ptr<BlockDevice>> open_csum_leaf(const CsumPlaces& p, const TableNode& leaf,
                                                    const LeafOpen& how) {
  auto dev = p.from_table ? open_table_leaf(leaf, how) : open_leaf(leaf, how);
  if (!dev.ok()) return Status::Error(dev.status().code(), why(dev.status()));
  return dev;
}

}  // namespace bowstack::cli
