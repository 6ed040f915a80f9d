#include "targets/era/era_files_cli.h"

#include <fmt/format.h>

#include <cstring>

#include "cli/offline_table.h"
#include "core/file_device.h"
#include "core/file_paths.h"
#include "targets/era/era_format.h"

namespace bowstack::cli {

namespace {

Result<std::shared_ptr<BlockDevice>> open_file(const std::string& path, const char* what, bool read_only,
                                               bool lock) {
  auto dev = FileDevice::open(path, FileDeviceOptions{.read_only = read_only, .lock = lock});
  if (!dev.ok() && dev.status().code() == EBUSY) {
    return Status::Error(EBUSY, fmt::format("{}{}", dev.status().context(),
                                            read_only && lock && std::string(what) == "metadata"
                                                ? " (or read its snapshot: take-metadata-snap, then "
                                                  "--metadata-snapshot)"
                                                : ""));
  }
  if (!dev.ok()) {
    const bool metadata = std::string(what) == "metadata";
    auto info = inspect_path(path);
    if (metadata && info.ok() && info->regular && info->size < 2 * era::kMetaBlockSize) {
      return Status::Error(
          EINVAL, info->size == 0 ? fmt::format("era metadata '{}' is empty (0 bytes): there is nothing to "
                                                "read (serving with --target era formats it; 'bowstack "
                                                "era restore' writes it from XML)",
                                                path)
                                  : fmt::format("era metadata '{}' has {} bytes, too few for era metadata "
                                                "(its two superblocks alone take {})",
                                                path, info->size, 2 * era::kMetaBlockSize));
    }
    // The errno says why the system refused; a device's own sentence (not a
    // file or block device) says more than "Invalid argument".
    const Status& s = dev.status();
    return Status::Error(s.code(), fmt::format("cannot open {} '{}': {}", what, path,
                                               s.code() == EINVAL ? s.context() : std::strerror(s.code())));
  }
  return std::shared_ptr<BlockDevice>(std::move(dev.value()));
}

EraPlace place_of(const TableNode& leaf) {
  if (leaf.kind == TableNode::Kind::kRbd) return EraPlace{.rbd = leaf};
  return EraPlace{.path = leaf.path};
}

}  // namespace

Result<EraPlaces> era_places(const EraCliOptions& o, const char* tool, bool need_image) {
  if (o.table.empty()) {
    if (o.metadata.empty() || (need_image && o.image.empty())) {
      return Status::Error(EINVAL, fmt::format("{} needs {} or --table FILE", tool,
                                               need_image ? "METADATA and IMAGE" : "METADATA"));
    }
    return EraPlaces{.metadata = {.path = o.metadata}, .image = {.path = o.image}, .args = o.metadata};
  }
  if (!o.metadata.empty() || !o.image.empty()) {
    return Status::Error(EINVAL, fmt::format("{}: give the paths or --table FILE, not both", tool));
  }
  auto t = load_table_target(o.table,
                             TableTargetQuery{.target = "era", .need_data_leaf = need_image, .tool = tool});
  // A sentence either way: the table's own errors, or why it could not be read.
  if (!t.ok()) return Status::Error(t.status().code(), why(t.status()));
  // era refuses a null metadata slot when the table is parsed.
  if (!t->side) return Status::Error(EINVAL, fmt::format("{}: the era node has no metadata", o.table));
  EraPlaces p{.metadata = place_of(*t->side), .args = "--table " + o.table};
  if (need_image) p.image = place_of(*t->data);
  return p;
}

Result<std::shared_ptr<BlockDevice>> open_era_place(const EraPlace& place, const char* what, bool read_only,
                                                    bool lock, uint64_t create_size) {
  if (!place.rbd) return open_file(place.path, what, read_only, lock);
  auto dev = open_table_leaf(*place.rbd, LeafOpen{.read_only = read_only, .create_size = create_size});
  if (!dev.ok()) return Status::Error(dev.status().code(), why(dev.status()));
  return dev;
}

}  // namespace bowstack::cli
