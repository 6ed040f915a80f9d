// Volume::reload: live replacement of a volume's table (docs/tables.md,
// "Live reload"). Kept apart from volume.cc, whose job is the data path.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <set>

#include "core/sub_block.h"
#include "core/volume.h"

namespace bowstack {

namespace {

// Stands in for a stack that could be neither replaced nor rebuilt: every
// request fails with EIO, so clients see errors rather than hang.
class FailedDevice final : public BlockDevice {
 public:
  FailedDevice(Geometry g, Capabilities c) : g_(g), c_(c) {}
  std::string_view kind() const override { return "failed"; }
  Geometry geometry() const override { return g_; }
  Capabilities capabilities() const override { return c_; }
  Status read(uint64_t, std::span<std::byte>) override { return Status::Error(EIO); }
  Status write(uint64_t, std::span<const std::byte>, uint32_t) override { return Status::Error(EIO); }
  Status flush() override { return Status::Error(EIO); }
  Status trim(uint64_t, uint64_t, uint32_t) override { return Status::Error(EIO); }
  Status write_zeroes(uint64_t, uint64_t, uint32_t) override { return Status::Error(EIO); }

 private:
  Geometry g_;
  Capabilities c_;
};

void target_identities(const TableNode& n, std::set<std::string>* out) {
  if (n.kind != TableNode::Kind::kTarget) return;
  out->insert(n.identity());
  for (const auto& s : n.slots) {
    for (const auto& c : s.nodes) target_identities(c, out);
  }
}

// The side stores of target nodes: of `n` only, or of its whole subtree.
void side_stores(const TableNode& n, const TargetRegistry& registry, bool recurse,
                 std::set<std::string>* out) {
  if (n.kind != TableNode::Kind::kTarget) return;
  const TargetInfo* info = registry.find(n.target);
  for (const auto& slot : n.slots) {
    const TargetSlotInfo* si = info ? info->slot(slot.name) : nullptr;
    const bool side = si && (si->kind == SlotKind::kSideDevice || si->kind == SlotKind::kSideFile);
    for (const auto& c : slot.nodes) {
      if (side) out->insert(canonical_path(c.path));
      if (recurse) side_stores(c, registry, true, out);
    }
  }
}

}  // namespace

Status Volume::compatible(BlockDevice& top) const {
  // As served: with the sub-block adapter where the top needs one.
  const Geometry g = SubBlockDevice::served_geometry(top.geometry());
  const Capabilities c = top.capabilities();
  if (g.size != geometry_.size) {
    return Status::Error(EINVAL,
                         fmt::format("the new table's size is {} bytes, the export's {}: NBD cannot tell "
                                     "connected clients of a new size",
                                     g.size, geometry_.size));
  }
  // Clients were told the export's block size; compliant ones send nothing
  // smaller. A stack that needs alignment gets it from the volume's check.
  if (!g.accepts_unaligned && g.logical_block_size > geometry_.logical_block_size) {
    return Status::Error(EINVAL,
                         fmt::format("the new table needs I/O aligned to {} bytes; clients were told {}",
                                     g.logical_block_size, geometry_.logical_block_size));
  }
  if (g.max_io_size < geometry_.max_io_size) {
    return Status::Error(EINVAL,
                         fmt::format("the new table takes I/O of at most {} bytes; clients were told {}",
                                     g.max_io_size, geometry_.max_io_size));
  }
  if (c.read_only != caps_.read_only) {
    return Status::Error(
        EINVAL, fmt::format("the new table is {}, the export {}", c.read_only ? "read-only" : "writable",
                            caps_.read_only ? "read-only" : "writable"));
  }
  const std::pair<bool Capabilities::*, const char*> needed[] = {
      {&Capabilities::flush, "flush"},
      {&Capabilities::fua, "FUA"},
      {&Capabilities::trim, "trim"},
      {&Capabilities::write_zeroes, "write-zeroes"},
      {&Capabilities::multi_conn, "multi-conn"}};
  for (const auto& [field, name] : needed) {
    if (caps_.*field && !(c.*field)) {
      return Status::Error(EINVAL,
                           fmt::format("the new table cannot do {}, which clients were offered", name));
    }
  }
  return Status::Ok();
}

Result<ReloadReport> Volume::reload(const TableNode& table, const TargetRegistry& registry,
                                    const BuildOptions& build, const ReloadOptions& opts) {
  std::unique_lock control(control_mu_);
  if (!tree_) return Status::Error(ENOTSUP, "this volume was not built from a table");
  ReloadReport report;

  // Load: while I/O goes on, open the new table's new files. Nothing live
  // changes yet.
  NodePool pool;
  pool.add_tree(tree_->root());
  if (Status s = DeviceTree::open_files(table, registry, build, &pool); !s.ok()) return s;
  std::set<std::string> wanted;
  target_identities(table, &wanted);
  std::vector<BuiltNode*> dropped;
  for (BuiltNode* n : tree_->targets()) {
    if (wanted.count(n->spec.identity())) {
      ++report.kept_nodes;
    } else {
      dropped.push_back(n);
    }
  }
  report.dropped_nodes = dropped.size();
  report.built_nodes = wanted.size() - report.kept_nodes;
  // A new node may take over a side store of a node that goes (era's
  // metadata under new params): the old one must be gone before the new one
  // opens it. Otherwise the new nodes are built first, and a failure leaves
  // the old ones untouched.
  std::set<std::string> going, coming;
  for (BuiltNode* n : dropped) side_stores(n->spec, registry, false, &going);
  side_stores(table, registry, true, &coming);
  bool takes_over = false;
  for (const auto& path : coming) takes_over = takes_over || going.count(path) > 0;

  // Suspend: hold new requests, drain those in flight.
  const auto held = std::chrono::steady_clock::now();
  bool was_suspended = false;
  {
    std::unique_lock lock(mu_);
    was_suspended = suspended_;
    suspended_ = true;
    cv_.wait(lock, [this] { return in_flight_ == 0; });
  }
  close_hints();
  tree_->pause_tasks();
  auto resume_all = [&] {
    open_hints();
    if (!was_suspended) {  // else the user's suspend goes on, tasks held
      if (tree_) tree_->resume_tasks();
      open_gate();
    }
    report.held_us = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - held)
            .count());
  };

  // Everything a node that goes has acknowledged must reach the device
  // below it before it is destroyed (detach); with noflush nothing else is
  // flushed. Top first, so each node sees the one above it done.
  Status flushed = Status::Ok();
  if (!opts.noflush && caps_.flush && !caps_.read_only) flushed = top_->flush();
  // The nodes detached so far, told when the old table serves on after all.
  std::vector<std::shared_ptr<BlockDevice>> detached;
  auto reattach_all = [&] {
    for (auto& d : detached) d->reattach();
  };
  for (BuiltNode* n : dropped) {
    if (!flushed.ok()) break;
    detached.push_back(n->device);
    flushed = n->device->detach();
  }
  if (!flushed.ok()) {
    reattach_all();
    resume_all();
    return Status::Error(flushed.code(),
                         "reload abandoned, the old table serves on: a flush before the swap "
                         "failed: " +
                             why(flushed));
  }

  const TableNode old_table = tree_->table();
  for (BuiltNode* n : dropped) pool.targets.erase(n->spec.identity());
  dropped.clear();
  auto build_new = [&]() -> Result<std::unique_ptr<DeviceTree>> {
    auto built = DeviceTree::build(table, registry, build, &pool);
    if (!built.ok()) return built.status();
    if (Status c = compatible(*built.value()->top()); !c.ok()) return c;
    return built;
  };
  if (!takes_over) {
    auto built = build_new();
    if (!built.ok()) {
      // Nothing old was touched: the kept nodes never left the live tree,
      // and the detached ones own their devices again.
      reattach_all();
      resume_all();
      return Status::Error(built.status().code(),
                           "reload failed, the old table serves on: " + why(built.status()));
    }
    // The nodes that go are destroyed with the old tree (their jobs stop).
    tree_ = std::move(built.value());
    set_top(tree_->top());
    resume_all();
    return report;
  }

  // Destroy the nodes that go (their jobs stop with them), then build.
  set_top(nullptr);  // the sub-block adapter holds the old top too
  tree_.reset();
  auto built = build_new();
  if (built.ok()) {
    tree_ = std::move(built.value());
    set_top(tree_->top());
    resume_all();
    return report;
  }
  const Status failed = built.status();

  // Put the old table back: kept nodes are still in the pool, the nodes
  // that went are built again from their (flushed) state.
  auto old = DeviceTree::build(old_table, registry, build, &pool);
  if (!old.ok()) {
    spdlog::error(
        "reload: the new table failed ({}) and the old one could not be rebuilt ({}): failing all I/O",
        why(failed), why(old.status()));
    set_top(std::make_shared<FailedDevice>(geometry_, caps_));
    resume_all();
    return Status::Error(EIO, fmt::format("reload failed ({}), and rebuilding the old table failed too ({}); "
                                          "every request now fails: restart the server",
                                          why(failed), why(old.status())));
  }
  tree_ = std::move(old.value());
  set_top(tree_->top());
  resume_all();
  return Status::Error(failed.code(), "reload failed, the old table serves on: " + why(failed));
}

}  // namespace bowstack
