#include "core/leaf.h"

#include "core/file_device.h"
#include "core/rbd_device.h"

namespace bowstack {

Result<std::shared_ptr<BlockDevice>> open_leaf(const TableNode& leaf, const LeafOpen& how) {
  if (leaf.kind == TableNode::Kind::kRbd) {
    RbdOptions o;
    o.pool = leaf.rbd.pool;
    o.image = leaf.rbd.image;
    o.conf = leaf.rbd.conf;
    o.id = leaf.rbd.id;
    o.snapshot = leaf.rbd.snapshot;
    o.read_only = how.read_only || leaf.read_only;
    o.create_size = how.create_size;
    o.refuse_if_locked = how.refuse_locked_image;
    auto dev = RbdDevice::open(o);
    if (!dev.ok()) return dev.status();
    return std::shared_ptr<BlockDevice>(std::move(dev.value()));
  }
  if (leaf.kind != TableNode::Kind::kFile) {
    return Status::Error(EINVAL, leaf.json_path + ": not a leaf (a file or an RBD image)");
  }
  auto dev = FileDevice::open(
      leaf.path, FileDeviceOptions{.read_only = how.read_only || leaf.read_only, .lock = how.lock});
  if (!dev.ok()) return dev.status();
  return std::shared_ptr<BlockDevice>(std::move(dev.value()));
}

}  // namespace bowstack
