#include "core/table.h"

#include <fmt/format.h>
#include <limits.h>
#include <stdlib.h>

#include <map>

#include "core/parse.h"
#include "core/rbd_env.h"

namespace bowstack {

namespace {

Status path_error(const std::string& path, const std::string& what) {
  return Status::Error(EINVAL, fmt::format("{}: {}", path, what));
}

std::string type_name(const nlohmann::json& j) {
  if (j.is_null()) return "null";
  if (j.is_boolean()) return "a boolean";
  if (j.is_number()) return "a number";
  if (j.is_string()) return "a string";
  if (j.is_array()) return "a list";
  return "an object";
}

// A param as the factory reads it: numbers in decimal, booleans as words.
Result<std::string> param_text(const nlohmann::json& v, const std::string& path) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) {
    return path_error(path, fmt::format("must not be negative (got {})", v.get<int64_t>()));
  }
  if (v.is_boolean()) return std::string(v.get<bool>() ? "true" : "false");
  return path_error(path, fmt::format("must be a string or a number, not {}", type_name(v)));
}

Status parse_node(const nlohmann::json& j, const std::string& path, const TargetRegistry& registry,
                  bool side_file, TableNode* out);

Status parse_file(const nlohmann::json& j, const std::string& path, bool side_file, TableNode* out) {
  out->kind = TableNode::Kind::kFile;
  for (const auto& [key, value] : j.items()) {
    const std::string kp = path + "." + key;
    if (key == "file") {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return path_error(kp, "must be a non-empty string (a file or block device path)");
      }
      out->path = value.get<std::string>();
    } else if (key == "create" && !side_file) {
      auto text = param_text(value, kp);
      if (!text.ok()) return text.status();
      auto size = parse_size(*text, "size");
      if (!size.ok()) return path_error(kp, size.status().context());
      if (*size == 0 || *size % 4096 != 0) return path_error(kp, "must be a non-zero multiple of 4096 bytes");
      out->create_size = *size;
    } else if (key == "read_only" && !side_file) {
      if (!value.is_boolean())
        return path_error(kp, fmt::format("must be true or false, not {}", type_name(value)));
      out->read_only = value.get<bool>();
    } else {
      return path_error(kp, side_file
                                ? "unknown key (a side file takes only \"file\")"
                                : "unknown key (a file node takes \"file\", \"create\", \"read_only\")");
    }
  }
  return Status::Ok();
}

Status parse_rbd(const nlohmann::json& j, const std::string& path, TableNode* out) {
  out->kind = TableNode::Kind::kRbd;
  for (const auto& [key, value] : j.items()) {
    if (key == "read_only") {
      if (!value.is_boolean())
        return path_error(path + "." + key, fmt::format("must be true or false, not {}", type_name(value)));
      out->read_only = value.get<bool>();
    } else if (key != "rbd") {
      return path_error(path + "." + key, "unknown key (an RBD node takes \"rbd\", \"read_only\")");
    }
  }
  const std::string rp = path + ".rbd";
  const nlohmann::json& r = j["rbd"];
  if (!r.is_object()) {
    return path_error(
        rp, fmt::format("must be an object {{\"pool\", \"image\", \"conf\", \"id\", \"snapshot\"}}, "
                        "not {}",
                        type_name(r)));
  }
  RbdLeaf& leaf = out->rbd;
  for (const auto& [key, value] : r.items()) {
    const std::string kp = rp + "." + key;
    std::string* field = key == "pool"    ? &leaf.pool
                         : key == "image" ? &leaf.image
                         : key == "conf"  ? &leaf.conf
                         : key == "id"    ? &leaf.id
                                          : nullptr;
    if (key == "snapshot") {
      if (value.is_null()) continue;
      if (!value.is_string() || value.get<std::string>().empty())
        return path_error(kp, "must be a snapshot name or null");
      leaf.snapshot = value.get<std::string>();
    } else if (!field) {
      return path_error(
          kp, "unknown key (an RBD leaf takes \"pool\", \"image\", \"conf\", \"id\", \"snapshot\")");
    } else if (!value.is_string() || value.get<std::string>().empty()) {
      return path_error(kp, fmt::format("must be a non-empty string, not {}", type_name(value)));
    } else {
      *field = value.get<std::string>();
    }
  }
  if (leaf.image.empty()) return path_error(rp, "needs \"image\" (the RBD image's name in its pool)");
  // RBD names cannot hold these; '@' would be read as a snapshot.
  for (const auto& [name, v] : {std::pair{"pool", leaf.pool}, std::pair{"image", leaf.image}}) {
    if (v.find_first_of("/@") != std::string::npos)
      return path_error(rp + "." + name, "must not contain '/' or '@'");
  }
  if (leaf.snapshot && leaf.snapshot->find('/') != std::string::npos)
    return path_error(rp + ".snapshot", "must not contain '/'");
  if (leaf.snapshot && j.contains("read_only") && !out->read_only) {
    return path_error(path + ".read_only", "a snapshot is read-only: it cannot be opened read_only: false");
  }
  if (leaf.snapshot) out->read_only = true;
  return Status::Ok();
}

Status parse_target(const nlohmann::json& j, const std::string& path, const TargetRegistry& registry,
                    TableNode* out) {
  out->kind = TableNode::Kind::kTarget;
  for (const auto& [key, value] : j.items()) {
    if (key != "target" && key != "params" && key != "devices") {
      return path_error(path + "." + key,
                        "unknown key (a target node takes \"target\", \"params\", \"devices\")");
    }
  }
  const nlohmann::json& t = j["target"];
  if (!t.is_string()) return path_error(path + ".target", "must be a string (a target name)");
  out->target = t.get<std::string>();
  const TargetInfo* info = registry.find(out->target);
  if (!info) {
    return path_error(path + ".target",
                      fmt::format("unknown target '{}' (valid targets: {})", out->target, registry.names()));
  }
  if (j.contains("params")) {
    const nlohmann::json& p = j["params"];
    if (!p.is_object()) return path_error(path + ".params", "must be an object of KEY: VALUE");
    for (const auto& [key, value] : p.items()) {
      const std::string kp = path + ".params." + key;
      auto text = param_text(value, kp);
      if (!text.ok()) return text.status();
      TargetSpec one{out->target, {{key, *text}}};
      if (Status s = registry.check(one); !s.ok()) return path_error(kp, s.context());
    }
    out->params = p;
  }
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& devices = j.contains("devices") ? j["devices"] : empty;
  if (!devices.is_object()) return path_error(path + ".devices", "must be an object of SLOT: NODE");
  for (const auto& [key, value] : devices.items()) {
    (void)value;
    if (!info->slot(key)) {
      std::string names;
      for (const auto& s : info->slots) names += (names.empty() ? "" : ", ") + s.name;
      return path_error(path + ".devices." + key,
                        fmt::format("target '{}' has no slot '{}' (its slots: {})", out->target, key,
                                    names.empty() ? "none" : names));
    }
  }
  // Children first, in the target's slot order, so that defaults can look
  // at the data image.
  for (const TargetSlotInfo& si : info->slots) {
    const std::string sp = path + ".devices." + si.name;
    TableSlot slot;
    slot.name = si.name;
    slot.is_list = si.kind == SlotKind::kDeviceList;
    const bool side = si.kind == SlotKind::kSideDevice || si.kind == SlotKind::kSideFile;
    if (!devices.contains(si.name)) {
      if (side) continue;  // resolved below
      if (si.required) {
        return path_error(path + ".devices",
                          fmt::format("target '{}' needs slot '{}' ({})", out->target, si.name, si.help));
      }
      continue;
    }
    const nlohmann::json& v = devices[si.name];
    if (v.is_null()) {
      if (!side || si.required) return path_error(sp, "cannot be null: the target needs this device");
      out->slots.push_back(std::move(slot));  // turned off
      continue;
    }
    if (slot.is_list) {
      if (!v.is_array() || v.empty()) return path_error(sp, "must be a non-empty list of nodes");
      for (size_t i = 0; i < v.size(); ++i) {
        TableNode child;
        if (Status s = parse_node(v[i], fmt::format("{}[{}]", sp, i), registry, false, &child); !s.ok())
          return s;
        slot.nodes.push_back(std::move(child));
      }
    } else {
      TableNode child;
      if (Status s = parse_node(v, sp, registry, si.kind == SlotKind::kSideFile, &child); !s.ok()) return s;
      if (side && child.kind == TableNode::Kind::kTarget) {
        return path_error(sp,
                          "a side store must be a file or RBD node ({\"file\": PATH} or {\"rbd\": {...}})");
      }
      if (side && child.kind == TableNode::Kind::kRbd && (child.read_only || child.rbd.snapshot)) {
        return path_error(sp, "a side store is written: it cannot be read-only or a snapshot");
      }
      slot.nodes.push_back(std::move(child));
    }
    out->slots.push_back(std::move(slot));
  }
  // Defaults of side stores left out: a file beside the data image, or an
  // RBD image beside an RBD data image (docs/rbd.md).
  for (const TargetSlotInfo& si : info->slots) {
    const bool side = si.kind == SlotKind::kSideDevice || si.kind == SlotKind::kSideFile;
    if (!side || devices.contains(si.name)) continue;
    const TableNode* image = data_image(*out);
    if (si.default_suffix.empty() || !image) {
      if (si.required) {
        return path_error(path + ".devices",
                          fmt::format("target '{}' needs slot '{}' ({}); there is no data image below to put "
                                      "it beside",
                                      out->target, si.name, si.help));
      }
      continue;
    }
    TableNode leaf;
    leaf.json_path = path + ".devices." + si.name;
    if (image->kind == TableNode::Kind::kRbd) {
      // An image beside the data image, in its pool and cluster, so that
      // the stack's state moves with it from host to host.
      leaf.kind = TableNode::Kind::kRbd;
      leaf.rbd = image->rbd;
      leaf.rbd.snapshot.reset();
      leaf.rbd.image += si.default_suffix;
    } else {
      leaf.kind = TableNode::Kind::kFile;
      leaf.path = image->path + si.default_suffix;
    }
    out->slots.push_back(TableSlot{si.name, false, {std::move(leaf)}});
  }
  // Keep the declared slot order whatever order the defaults came in.
  std::vector<TableSlot> ordered;
  for (const TargetSlotInfo& si : info->slots) {
    for (auto& s : out->slots) {
      if (s.name == si.name) ordered.push_back(std::move(s));
    }
  }
  out->slots = std::move(ordered);
  return Status::Ok();
}

Status parse_node(const nlohmann::json& j, const std::string& path, const TargetRegistry& registry,
                  bool side_file, TableNode* out) {
  out->json_path = path;
  if (!j.is_object()) {
    return path_error(path,
                      fmt::format("must be a node object ({{\"file\": ...}} or {{\"target\": ...}}), not {}",
                                  type_name(j)));
  }
  const bool file = j.contains("file"), target = j.contains("target"), rbd = j.contains("rbd");
  if (int(file) + int(target) + int(rbd) != 1) {
    return path_error(path, file || target || rbd
                                ? "a node has one of \"file\", \"rbd\" or \"target\", not several"
                                : "a node needs \"file\" or \"rbd\" (a leaf) or \"target\" (a target node)");
  }
  if (file) return parse_file(j, path, side_file, out);
  if (side_file && !rbd) {
    return path_error(path, "a side file must be a file or RBD node ({\"file\": PATH} or {\"rbd\": {...}})");
  }
  if (rbd) return parse_rbd(j, path, out);
  return parse_target(j, path, registry, out);
}

void collect_leaves(const TableNode& n, bool files_only, std::vector<const TableNode*>* out) {
  if (n.is_leaf()) {
    if (!files_only || n.kind == TableNode::Kind::kFile) out->push_back(&n);
    return;
  }
  for (const auto& s : n.slots) {
    for (const auto& c : s.nodes) collect_leaves(c, files_only, out);
  }
}

}  // namespace

std::string canonical_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf)) return buf;
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (::realpath(dir.c_str(), buf)) return std::string(buf) + (std::string(buf) == "/" ? "" : "/") + base;
  return path;
}

TargetSpec TableNode::spec() const {
  TargetSpec s;
  s.name = target;
  for (const auto& [key, value] : params.items()) {
    auto text = param_text(value, key);
    s.params.emplace_back(key, text.ok() ? *text : std::string());
  }
  return s;
}

const TableSlot* TableNode::slot(std::string_view name) const {
  for (const auto& s : slots) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

nlohmann::json TableNode::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  if (kind == Kind::kFile) {
    j["file"] = path;
    if (create_size) j["create"] = *create_size;
    if (read_only) j["read_only"] = true;
    return j;
  }
  if (kind == Kind::kRbd) {
    j["rbd"] = {{"pool", rbd.pool},
                {"image", rbd.image},
                {"conf", rbd.conf},
                {"id", rbd.id},
                {"snapshot", rbd.snapshot ? nlohmann::json(*rbd.snapshot) : nlohmann::json(nullptr)}};
    if (read_only && !rbd.snapshot) j["read_only"] = true;
    return j;
  }
  j["target"] = target;
  if (!params.empty()) j["params"] = params;
  nlohmann::json devices = nlohmann::json::object();
  for (const auto& s : slots) {
    if (s.nodes.empty()) {
      devices[s.name] = nullptr;
    } else if (s.is_list) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& n : s.nodes) arr.push_back(n.to_json());
      devices[s.name] = std::move(arr);
    } else {
      devices[s.name] = s.nodes[0].to_json();
    }
  }
  if (!devices.empty()) j["devices"] = std::move(devices);
  return j;
}

namespace {
// Creating an absent file does not change what a node is.
void drop_create(nlohmann::json* j) {
  if (j->is_array()) {
    for (auto& e : *j) drop_create(&e);
  } else if (j->is_object()) {
    j->erase("create");
    if (j->contains("devices")) {
      for (auto& [slot, child] : (*j)["devices"].items()) drop_create(&child);
    }
  }
}
}  // namespace

std::string TableNode::identity() const {
  nlohmann::json j = to_json();
  drop_create(&j);
  return j.dump();
}

const TableNode* data_image(const TableNode& n) {
  const TableNode* cur = &n;
  while (cur->kind == TableNode::Kind::kTarget) {
    const TableSlot* s = cur->slot("data");
    if (!s || s->nodes.size() != 1) return nullptr;
    cur = &s->nodes[0];
  }
  return cur;
}

std::vector<const TableNode*> file_leaves(const TableNode& root) {
  std::vector<const TableNode*> out;
  collect_leaves(root, true, &out);
  return out;
}

std::vector<const TableNode*> leaves(const TableNode& root) {
  std::vector<const TableNode*> out;
  collect_leaves(root, false, &out);
  return out;
}

std::string TableNode::leaf_name() const {
  if (kind == Kind::kRbd)
    return "rbd:" + rbd.pool + "/" + rbd.image + (rbd.snapshot ? "@" + *rbd.snapshot : "");
  return kind == Kind::kFile ? path : target;
}

std::string TableNode::side_path() const { return kind == Kind::kRbd ? rbd_file_path(rbd) : path; }

std::string TableNode::leaf_key() const {
  if (kind == Kind::kRbd) return leaf_name() + " of " + canonical_path(rbd.conf);
  return canonical_path(path);
}

Result<TableNode> parse_table(const nlohmann::json& table, const TargetRegistry& registry) {
  TableNode root;
  if (Status s = parse_node(table, "$", registry, false, &root); !s.ok()) return s;
  std::map<std::string, const TableNode*> seen;
  for (const TableNode* leaf : leaves(root)) {
    auto [it, inserted] = seen.emplace(leaf->leaf_key(), leaf);
    if (!inserted) {
      const bool file = leaf->kind == TableNode::Kind::kFile;
      return path_error(leaf->json_path,
                        fmt::format("{} '{}' is already used at {}: {} can have only one place in a table",
                                    file ? "file" : "image", leaf->leaf_name(), it->second->json_path,
                                    file ? "a file" : "an image"));
    }
  }
  return root;
}

Result<nlohmann::json> parse_json_text(std::string_view text) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() is "[json.exception.parse_error.101] parse error at line L, column C: ..."
    std::string what = e.what();
    const size_t at = what.find("parse error");
    return Status::Error(EINVAL, "$: not valid JSON: " + (at == std::string::npos ? what : what.substr(at)));
  }
}

Result<TableNode> parse_table_text(std::string_view text, const TargetRegistry& registry) {
  auto j = parse_json_text(text);
  if (!j.ok()) return j.status();
  return parse_table(*j, registry);
}

Result<TableNode> table_from_shorthand(const std::string& image, std::optional<uint64_t> create_size,
                                       bool read_only, const std::vector<TargetSpec>& specs,
                                       const TargetRegistry& registry) {
  nlohmann::json node{{"file", image}};
  if (create_size) node["create"] = *create_size;
  if (read_only) node["read_only"] = true;
  for (const TargetSpec& spec : specs) {
    const TargetInfo* info = registry.find(spec.name);
    if (!info) {
      return Status::Error(
          EINVAL, fmt::format("unknown target '{}' (valid targets: {})", spec.name, registry.names()));
    }
    nlohmann::json params = nlohmann::json::object();
    nlohmann::json devices = nlohmann::json::object();
    TargetSpec plain{spec.name, {}};
    for (const auto& [key, value] : spec.params) {
      const TargetSlotInfo* side = nullptr;
      for (const auto& s : info->slots) {
        if (!s.shorthand_key.empty() && s.shorthand_key == key) side = &s;
      }
      if (!side) {
        params[key] = value;
        plain.params.emplace_back(key, value);
      } else if (value == "none") {
        devices[side->name] = nullptr;
      } else {
        devices[side->name] = {{"file", value}};
      }
    }
    // The --target spelling of errors (key lists) before the table's.
    if (Status st = registry.check(plain); !st.ok()) return st;
    devices["data"] = std::move(node);
    node = nlohmann::json{{"target", spec.name}, {"devices", std::move(devices)}};
    if (!params.empty()) node["params"] = std::move(params);
  }
  auto parsed = parse_table(node, registry);
  if (!parsed.ok()) {
    return Status::Error(parsed.status().code(),
                         "in the table --target builds: " + parsed.status().context());
  }
  return parsed;
}

}  // namespace bowstack
