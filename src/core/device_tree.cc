#include "core/device_tree.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/file_device.h"
#include "core/file_lock.h"
#include "core/leaf.h"
#include "core/rbd_env.h"

namespace bowstack {

namespace {

// The factory's error with the node's place in the table in front.
Status at_node(const TableNode& n, const Status& s) {
  return Status::Error(s.code(), fmt::format("{}: {}", n.json_path, why(s)));
}

class Builder {
 public:
  Builder(const TargetRegistry& registry, const BuildOptions& opts, NodePool* pool)
      : registry_(registry), opts_(opts), pool_(pool) {}

  Result<std::shared_ptr<BuiltNode>> node(const TableNode& n);
  // A file leaf: borrowed from the pool, or opened (and locked) now. A side
  // device that is absent or empty is first created with `side_size` bytes.
  Result<std::shared_ptr<BuiltNode>> file(const TableNode& n, bool side, uint64_t side_size);
  // An RBD leaf: borrowed from the pool, or opened (and locked) now. A side
  // device that is absent or empty is first created with `side_size` bytes.
  Result<std::shared_ptr<BuiltNode>> rbd(const TableNode& n, uint64_t side_size = 0);
  Env* env() const { return opts_.env ? opts_.env : Env::posix(); }

 private:
  // The leaf's node kept from the tree being replaced (a reload), or null
  // when there is none; an error when the table changes its read_only.
  Result<std::shared_ptr<BuiltNode>> borrowed(const TableNode& n);
  Result<std::shared_ptr<BuiltNode>> target(const TableNode& n);

  const TargetRegistry& registry_;
  const BuildOptions opts_;
  NodePool* pool_;
};

class Context final : public TargetContext {
 public:
  Context(Builder* b, BuiltNode* node, const TargetInfo& info) : b_(b), node_(node), info_(info) {}

  const std::string& node_path() const override { return node_->spec.json_path; }
  std::shared_ptr<BlockDevice> data() const override {
    auto l = list("data");
    return l.empty() ? nullptr : l[0];
  }
  std::vector<std::shared_ptr<BlockDevice>> list(std::string_view slot) const override {
    std::vector<std::shared_ptr<BlockDevice>> out;
    for (const auto& c : node_->children) {
      if (c.slot == slot) out.push_back(c.node->device);
    }
    return out;
  }
  std::vector<std::shared_ptr<BlockDevice>> children() const override {
    std::vector<std::shared_ptr<BlockDevice>> out;
    for (const auto& si : info_.slots) {
      if (si.kind != SlotKind::kDevice && si.kind != SlotKind::kDeviceList) continue;
      for (auto& d : list(si.name)) out.push_back(std::move(d));
    }
    return out;
  }
  Result<std::shared_ptr<BlockDevice>> side_device(std::string_view slot, uint64_t create_size) override {
    const TableSlot* s = node_->spec.slot(slot);
    const TargetSlotInfo* si = info_.slot(slot);
    if (!si || si->kind != SlotKind::kSideDevice) {
      return Status::Error(EINVAL, fmt::format("{}: no side device slot '{}'", node_path(), slot));
    }
    if (!s || s->nodes.empty()) return std::shared_ptr<BlockDevice>();
    const TableNode& n = s->nodes[0];
    auto f = n.kind == TableNode::Kind::kRbd ? b_->rbd(n, create_size) : b_->file(n, true, create_size);
    if (!f.ok()) return f.status();
    node_->children.push_back({std::string(slot), f.value()});
    return f.value()->device;
  }
  std::string side_file(std::string_view slot) const override {
    const TableSlot* s = node_->spec.slot(slot);
    return !s || s->nodes.empty() ? std::string() : s->nodes[0].side_path();
  }
  // Side files on RBD go through the RBD Env (their paths say "rbd:").
  Env* env() const override {
    for (const auto& si : info_.slots) {
      const TableSlot* s = node_->spec.slot(si.name);
      if (si.kind == SlotKind::kSideFile && s && !s->nodes.empty() &&
          s->nodes[0].kind == TableNode::Kind::kRbd)
        return rbd_env();
    }
    return b_->env();
  }
  std::shared_ptr<JobRunner> jobs() override { return node_->jobs; }

 private:
  Builder* b_;
  BuiltNode* node_;
  const TargetInfo& info_;
};

Result<std::shared_ptr<BuiltNode>> Builder::node(const TableNode& n) {
  if (n.kind == TableNode::Kind::kFile) return file(n, false, 0);
  if (n.kind == TableNode::Kind::kRbd) return rbd(n);
  return target(n);
}

Result<std::shared_ptr<BuiltNode>> Builder::borrowed(const TableNode& n) {
  if (!pool_) return std::shared_ptr<BuiltNode>();
  auto it = pool_->files.find(n.leaf_key());
  if (it == pool_->files.end()) return std::shared_ptr<BuiltNode>();
  if (it->second->spec.read_only != n.read_only) {
    return Status::Error(EINVAL, fmt::format("{}: '{}' is open {}; a reload cannot change that (restart the "
                                             "server)",
                                             n.json_path, n.leaf_name(),
                                             it->second->spec.read_only ? "read-only" : "read-write"));
  }
  return it->second;
}

Result<std::shared_ptr<BuiltNode>> Builder::rbd(const TableNode& n, uint64_t side_size) {
  if (auto kept = borrowed(n); !kept.ok() || kept.value()) return kept;
  auto dev = open_leaf(n, LeafOpen{.read_only = n.read_only, .create_size = side_size});
  if (!dev.ok()) return at_node(n, dev.status());
  auto b = std::make_shared<BuiltNode>();
  b->spec = n;
  b->device = std::move(dev.value());
  return b;
}

Result<std::shared_ptr<BuiltNode>> Builder::file(const TableNode& n, bool side, uint64_t side_size) {
  if (auto kept = borrowed(n); !kept.ok() || kept.value()) return kept;
  struct stat st {};
  const bool exists = ::stat(n.path.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    return Status::Error(errno, fmt::format("{}: cannot look at '{}'", n.json_path, n.path));
  }
  const uint64_t create = n.create_size ? *n.create_size : (side ? side_size : 0);
  if (!exists) {
    if (create == 0) {
      return Status::Error(ENOENT,
                           fmt::format("{}: '{}' does not exist{}", n.json_path, n.path,
                                       side ? ""
                                            : " (create it with --create SIZE, or \"create\": SIZE in "
                                              "a table)"));
    }
    if (Status s = FileDevice::create(n.path, create); !s.ok()) return at_node(n, s);
  } else if (S_ISREG(st.st_mode) && st.st_size == 0 && create > 0 && side) {
    // An empty side store is a new one: size it, holding the lock meanwhile.
    int fd = ::open(n.path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return Status::Error(errno, fmt::format("{}: cannot open '{}'", n.json_path, n.path));
    Status locked = lock_file(fd, "'" + n.path + "'", true);
    if (locked.ok() && ::ftruncate(fd, static_cast<off_t>(create)) != 0) {
      locked = Status::Error(errno, fmt::format("cannot size '{}'", n.path));
    }
    ::close(fd);
    if (!locked.ok()) return at_node(n, locked);
  } else if (S_ISREG(st.st_mode) && n.create_size && static_cast<uint64_t>(st.st_size) != *n.create_size &&
             !side) {
    return Status::Error(EEXIST, fmt::format("{}: '{}' exists with size {}, not the {} that \"create\" asks; "
                                             "refusing to resize it",
                                             n.json_path, n.path, st.st_size, *n.create_size));
  }
  FileDeviceOptions o;
  o.read_only = n.read_only;
  o.direct = opts_.direct && !side;
  o.lock = true;
  auto dev = FileDevice::open(n.path, o);
  if (!dev.ok()) return at_node(n, dev.status());
  auto b = std::make_shared<BuiltNode>();
  b->spec = n;
  b->file = dev.value();
  b->device = dev.value();
  return b;
}

Result<std::shared_ptr<BuiltNode>> Builder::target(const TableNode& n) {
  if (pool_) {
    auto it = pool_->targets.find(n.identity());
    if (it != pool_->targets.end()) return it->second;
  }
  const TargetInfo* info = registry_.find(n.target);
  if (!info) return Status::Error(EINVAL, fmt::format("{}: unknown target '{}'", n.json_path, n.target));
  auto b = std::make_shared<BuiltNode>();
  b->spec = n;
  b->jobs = std::make_shared<JobRunner>(n.target);
  for (const TargetSlotInfo& si : info->slots) {
    if (si.kind != SlotKind::kDevice && si.kind != SlotKind::kDeviceList) continue;
    const TableSlot* s = n.slot(si.name);
    if (!s) continue;
    for (const TableNode& c : s->nodes) {
      auto child = node(c);
      if (!child.ok()) return child.status();
      b->children.push_back({si.name, child.value()});
    }
  }
  for (const TargetSlotInfo& si : info->slots) {
    if (si.kind != SlotKind::kSideFile) continue;
    const TableSlot* s = n.slot(si.name);
    if (!s || s->nodes.empty()) continue;
    auto side = std::make_shared<BuiltNode>();
    side->spec = s->nodes[0];
    b->children.push_back({si.name, std::move(side)});
  }
  Context ctx(this, b.get(), *info);
  const TargetSpec spec = n.spec();
  auto dev = info->create(ctx, TargetArgs(spec));
  if (!dev.ok()) return at_node(n, dev.status());
  b->device = std::move(dev.value());
  return b;
}

void collect(const std::shared_ptr<BuiltNode>& n, NodePool* pool) {
  if (n->spec.is_leaf()) {
    if (n->device) pool->files.emplace(n->spec.leaf_key(), n);  // not a side file
    return;
  }
  pool->targets.emplace(n->spec.identity(), n);
  for (const auto& c : n->children) collect(c.node, pool);
}

void collect_targets(BuiltNode* n, std::vector<BuiltNode*>* out) {
  if (n->spec.kind != TableNode::Kind::kTarget) return;
  out->push_back(n);
  for (const auto& c : n->children) collect_targets(c.node.get(), out);
}

}  // namespace

// Gives every node of a freshly built tree the spec (and so the JSON path)
// it has in `table`: a node kept from an older tree may sit elsewhere now.
static void adopt_specs(BuiltNode* n, const TableNode& table) {
  n->spec = table;
  if (table.kind != TableNode::Kind::kTarget) return;
  for (const auto& slot : table.slots) {
    size_t i = 0;
    for (auto& c : n->children) {
      if (c.slot == slot.name && i < slot.nodes.size()) adopt_specs(c.node.get(), slot.nodes[i++]);
    }
  }
}

void NodePool::add_tree(const std::shared_ptr<BuiltNode>& root) { collect(root, this); }

nlohmann::json BuiltNode::status() const {
  nlohmann::json j = nlohmann::json::object();
  j["path"] = spec.json_path;
  if (spec.kind == TableNode::Kind::kRbd) {
    j["rbd"] = spec.leaf_name();
  } else if (spec.kind == TableNode::Kind::kFile) {
    j["file"] = spec.path;
  } else {
    j["target"] = spec.target;
  }
  if (!device) {  // a side file, which its target opens when it needs it
    j["kind"] = "side file";
    if (spec.kind == TableNode::Kind::kFile) {
      struct stat st {};
      j["exists"] = ::stat(spec.path.c_str(), &st) == 0;
    }
    return j;
  }
  j["kind"] = std::string(device->kind());
  j["size"] = device->geometry().size;
  device->describe(&j);
  if (std::string line = device->status_line(); !line.empty()) j["status"] = line;
  if (jobs) j["jobs"] = jobs->describe();
  if (spec.kind == TableNode::Kind::kTarget) {
    nlohmann::json devices = nlohmann::json::object();
    for (const auto& slot : spec.slots) {
      nlohmann::json entries = nlohmann::json::array();
      for (const auto& c : children) {
        if (c.slot == slot.name) entries.push_back(c.node->status());
      }
      if (slot.nodes.empty()) {
        devices[slot.name] = nullptr;
      } else if (slot.is_list) {
        devices[slot.name] = std::move(entries);
      } else if (!entries.empty()) {
        devices[slot.name] = std::move(entries[0]);
      }
    }
    j["devices"] = std::move(devices);
  }
  return j;
}

Result<std::unique_ptr<DeviceTree>> DeviceTree::build(const TableNode& table, const TargetRegistry& registry,
                                                      const BuildOptions& opts, NodePool* pool) {
  Builder b(registry, opts, pool);
  auto root = b.node(table);
  if (!root.ok()) return root.status();
  adopt_specs(root.value().get(), table);
  return std::unique_ptr<DeviceTree>(new DeviceTree(std::move(root.value())));
}

namespace {
Status open_files_of(const TableNode& n, bool side_device, const TargetRegistry& registry, Builder* b,
                     NodePool* pool) {
  if (n.kind == TableNode::Kind::kRbd) {
    // A side device may not exist yet: its target creates and sizes it
    // during the build.
    if (side_device || pool->files.count(n.leaf_key())) return Status::Ok();
    auto r = b->node(n);
    if (!r.ok()) return r.status();
    pool->files.emplace(n.leaf_key(), r.value());
    return Status::Ok();
  }
  if (n.kind == TableNode::Kind::kFile) {
    const std::string key = canonical_path(n.path);
    struct stat st {};
    if (!pool->files.count(key) && side_device &&
        (::stat(n.path.c_str(), &st) != 0 || (S_ISREG(st.st_mode) && st.st_size == 0))) {
      return Status::Ok();  // created and sized by its target during the build
    }
    auto f = b->file(n, side_device, 0);
    if (!f.ok()) return f.status();
    pool->files.emplace(key, f.value());
    return Status::Ok();
  }
  const TargetInfo* info = registry.find(n.target);
  if (!info) return Status::Error(EINVAL, fmt::format("{}: unknown target '{}'", n.json_path, n.target));
  for (const auto& slot : n.slots) {
    const TargetSlotInfo* si = info->slot(slot.name);
    if (!si || si->kind == SlotKind::kSideFile) continue;
    for (const auto& c : slot.nodes) {
      if (Status s = open_files_of(c, si->kind == SlotKind::kSideDevice, registry, b, pool); !s.ok())
        return s;
    }
  }
  return Status::Ok();
}
}  // namespace

Status DeviceTree::open_files(const TableNode& table, const TargetRegistry& registry,
                              const BuildOptions& opts, NodePool* pool) {
  Builder b(registry, opts, pool);
  return open_files_of(table, false, registry, &b, pool);
}

nlohmann::json DeviceTree::status() const { return root_->status(); }

std::vector<BuiltNode*> DeviceTree::targets() const {
  std::vector<BuiltNode*> out;
  collect_targets(root_.get(), &out);
  return out;
}

Result<std::string> DeviceTree::message(std::string_view text, std::string_view target) const {
  bool found = target.empty();
  for (BuiltNode* n : targets()) {
    if (!target.empty()) {
      const bool match = target.front() == '$' ? n->spec.json_path == target : n->spec.target == target;
      if (!match) continue;
      found = true;
    }
    Result<std::string> r = n->jobs->message(text);
    if (r.ok() || r.status().code() != ENOTSUP) return r;
    r = n->device->message(text);
    if (r.ok() || r.status().code() != ENOTSUP || !target.empty()) return r;
  }
  if (!found) {
    return Status::Error(ENOENT, fmt::format("no node {} '{}' in the table",
                                             target.front() == '$' ? "at" : "of target", target));
  }
  return Status::Error(ENOTSUP, fmt::format("no node understands '{}'", text));
}

void DeviceTree::pause_tasks() const {
  for (BuiltNode* n : targets()) n->jobs->pause_tasks();
}

void DeviceTree::resume_tasks() const {
  for (BuiltNode* n : targets()) n->jobs->resume_tasks();
}

}  // namespace bowstack
