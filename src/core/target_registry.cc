#include "core/target_registry.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/parse.h"

namespace bowstack {

Result<TargetSpec> parse_target_spec(std::string_view text) {
  TargetSpec spec;
  size_t colon = text.find(':');
  spec.name = std::string(text.substr(0, colon));
  if (spec.name.empty())
    return Status::Error(EINVAL, fmt::format("target spec '{}' has no target name", text));
  if (colon == std::string_view::npos) return spec;
  std::string_view rest = text.substr(colon + 1);
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      return Status::Error(EINVAL, fmt::format("target spec '{}': expected key=value, got '{}'", text, item));
    }
    std::string key(item.substr(0, eq));
    for (const auto& p : spec.params) {
      if (p.first == key) {
        return Status::Error(EINVAL, fmt::format("target spec '{}': key '{}' given twice", text, key));
      }
    }
    spec.params.emplace_back(std::move(key), std::string(item.substr(eq + 1)));
  }
  return spec;
}

const std::string* TargetArgs::find(std::string_view key) const {
  for (const auto& p : spec_.params) {
    if (p.first == key) return &p.second;
  }
  return nullptr;
}

bool TargetArgs::has(std::string_view key) const { return find(key) != nullptr; }

std::string TargetArgs::get_string(std::string_view key, std::string fallback) const {
  const std::string* v = find(key);
  return v ? *v : fallback;
}

Result<uint64_t> TargetArgs::get_size(std::string_view key, uint64_t fallback) const {
  const std::string* v = find(key);
  if (!v) return fallback;
  return parse_size(*v, fmt::format("{} {}", spec_.name, key));
}

Result<bool> TargetArgs::get_bool(std::string_view key, bool fallback) const {
  const std::string* v = find(key);
  if (!v) return fallback;
  if (*v == "1" || *v == "true" || *v == "yes" || *v == "on") return true;
  if (*v == "0" || *v == "false" || *v == "no" || *v == "off") return false;
  return Status::Error(EINVAL,
                       fmt::format("{} {}: '{}' is not a boolean (use true or false)", spec_.name, key, *v));
}

void TargetRegistry::add(TargetInfo info) {
  std::string name = info.name;
  targets_.emplace(std::move(name), std::move(info));
}

const TargetInfo* TargetRegistry::find(std::string_view name) const {
  auto it = targets_.find(name);
  return it == targets_.end() ? nullptr : &it->second;
}

std::vector<const TargetInfo*> TargetRegistry::all() const {
  std::vector<const TargetInfo*> v;
  for (const auto& [name, info] : targets_) v.push_back(&info);
  return v;
}

std::string TargetRegistry::names() const {
  std::string s;
  for (const auto& [name, info] : targets_) {
    if (!s.empty()) s += ", ";
    s += name;
  }
  return s;
}

Status TargetRegistry::check(const TargetSpec& spec) const {
  const TargetInfo* info = find(spec.name);
  if (!info) {
    return Status::Error(EINVAL, fmt::format("unknown target '{}' (valid targets: {})", spec.name, names()));
  }
  TargetArgs args(spec);
  for (const auto& [key, value] : spec.params) {
    const TargetParamInfo* p = info->param(key);
    if (!p) {
      std::string keys;
      for (const auto& k : info->params) keys += (keys.empty() ? "" : ", ") + k.key;
      return Status::Error(EINVAL, fmt::format("target '{}' has no key '{}' (valid keys: {})", spec.name, key,
                                               keys.empty() ? "none" : keys));
    }
    if (p->type == ParamType::kSize) {
      if (auto r = args.get_size(key, 0); !r.ok()) return r.status();
    } else if (p->type == ParamType::kBool) {
      if (auto r = args.get_bool(key, false); !r.ok()) return r.status();
    }
  }
  return Status::Ok();
}

const TargetParamInfo* TargetInfo::param(std::string_view key) const {
  for (const auto& p : params) {
    if (p.key == key) return &p;
  }
  return nullptr;
}

const TargetSlotInfo* TargetInfo::slot(std::string_view slot_name) const {
  for (const auto& s : slots) {
    if (s.name == slot_name) return &s;
  }
  return nullptr;
}

namespace {
const char* param_type_name(ParamType t) {
  switch (t) {
    case ParamType::kSize:
      return "size";
    case ParamType::kBool:
      return "bool";
    case ParamType::kString:
      return "string";
  }
  return "string";
}

const char* slot_kind_name(SlotKind k) {
  switch (k) {
    case SlotKind::kDevice:
      return "device";
    case SlotKind::kDeviceList:
      return "device list";
    case SlotKind::kSideDevice:
      return "side device";
    case SlotKind::kSideFile:
      return "side file";
  }
  return "device";
}
}  // namespace

nlohmann::json TargetInfo::to_json() const {
  nlohmann::json j;
  j["name"] = name;
  j["summary"] = summary;
  j["params"] = nlohmann::json::array();
  for (const auto& p : params) {
    j["params"].push_back({{"key", p.key}, {"type", param_type_name(p.type)}, {"help", p.help}});
  }
  j["slots"] = nlohmann::json::array();
  for (const auto& s : slots) {
    nlohmann::json o{
        {"name", s.name}, {"kind", slot_kind_name(s.kind)}, {"required", s.required}, {"help", s.help}};
    if (!s.default_suffix.empty()) o["default_suffix"] = s.default_suffix;
    if (!s.shorthand_key.empty()) o["shorthand_key"] = s.shorthand_key;
    j["slots"].push_back(std::move(o));
  }
  return j;
}

}  // namespace bowstack
