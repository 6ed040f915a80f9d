#include "core/target_registry.h"

#include <fmt/format.h>

#include <algorithm>

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
  for (const auto& param : spec.params) {
    // Not a structured binding: clang 14 cannot capture those in a lambda.
    const std::string& key = param.first;
    bool known = std::any_of(info->params.begin(), info->params.end(),
                             [&](const TargetParamInfo& p) { return p.key == key; });
    if (!known) {
      std::string keys;
      for (const auto& p : info->params) keys += (keys.empty() ? "" : ", ") + p.key;
      return Status::Error(EINVAL, fmt::format("target '{}' has no key '{}' (valid keys: {})", spec.name, key,
                                               keys.empty() ? "none" : keys));
    }
  }
  return Status::Ok();
}

Result<std::shared_ptr<BlockDevice>> TargetRegistry::create(std::shared_ptr<BlockDevice> lower,
                                                            const TargetSpec& spec) const {
  if (Status s = check(spec); !s.ok()) return s;
  return find(spec.name)->create(std::move(lower), TargetArgs(spec));
}

Result<std::shared_ptr<BlockDevice>> TargetRegistry::build(std::shared_ptr<BlockDevice> base,
                                                           const std::vector<TargetSpec>& specs) const {
  std::shared_ptr<BlockDevice> top = std::move(base);
  for (const TargetSpec& spec : specs) {
    auto layer = create(top, spec);
    if (!layer.ok()) return layer.status();
    top = std::move(layer.value());
  }
  return top;
}

}  // namespace bowstack
