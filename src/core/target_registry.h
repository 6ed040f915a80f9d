// The registry of target types: what each one is called, which params and
// device slots it takes (tables, docs/tables.md), and its factory.
//
// The core defines no target: the program registers the built-in ones
// (src/targets/builtin.h) into a registry it owns, so tests can build
// registries of their own.
//
// Thread-safety: register during start-up, then only read.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/target_context.h"

namespace bowstack {

// One `--target` option, parsed.
struct TargetSpec {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;  // in the order given
};

// "name" or "name:key=value,key=value". Keys must be unique.
Result<TargetSpec> parse_target_spec(std::string_view text);

// How a table's param value is checked before anything is opened.
enum class ParamType {
  kSize,    // a number, or a string with K/M/G/T suffix
  kBool,    // true/false (or "yes", "on", "1", ...)
  kString,  // any string
};

struct TargetParamInfo {
  std::string key;
  std::string help;
  ParamType type = ParamType::kSize;
};

enum class SlotKind {
  kDevice,      // one child device (data)
  kDeviceList,  // a list of child devices (legs)
  kSideDevice,  // a side store the core opens as a device (era's metadata)
  kSideFile,    // a side store the target manages as a file through Env (bow's journal)
};

struct TargetSlotInfo {
  std::string name;  // "data", "metadata", "legs"
  SlotKind kind = SlotKind::kDevice;
  bool required = true;
  // Side stores: left out of a table, the slot gets a file named after the
  // data image plus this suffix ("disk.img" -> "disk.img.era"); empty: no
  // default (left out means off).
  std::string default_suffix;
  // The `--target NAME:KEY=PATH` shorthand key that names this slot ("meta"
  // for bow); "none" as its value turns the slot off.
  std::string shorthand_key;
  std::string help;
};

// Typed access to a spec's parameters; every error names the target and key.
class TargetArgs {
 public:
  explicit TargetArgs(const TargetSpec& spec) : spec_(spec) {}
  const std::string& target() const { return spec_.name; }
  bool has(std::string_view key) const;
  std::string get_string(std::string_view key, std::string fallback = {}) const;
  // Sizes accept K/M/G/T suffixes.
  Result<uint64_t> get_size(std::string_view key, uint64_t fallback) const;
  // "1/0/true/false/yes/no/on/off".
  Result<bool> get_bool(std::string_view key, bool fallback) const;

 private:
  const std::string* find(std::string_view key) const;
  const TargetSpec& spec_;
};

using TargetFactory = std::function<Result<std::shared_ptr<BlockDevice>>(TargetContext&, const TargetArgs&)>;

struct TargetInfo {
  std::string name;
  std::string summary;
  std::vector<TargetParamInfo> params;
  std::vector<TargetSlotInfo> slots;
  // Builds the target from its context's devices. Must fail cleanly
  // (Status) on bad arguments, a device too small, or unreadable metadata,
  // and must check its arguments before it writes anything.
  TargetFactory create;

  const TargetParamInfo* param(std::string_view key) const;
  const TargetSlotInfo* slot(std::string_view name) const;
  // {"name","summary","params":[{"key","type","help"}],"slots":[...]}
  nlohmann::json to_json() const;
};

class TargetRegistry {
 public:
  // REQUIRES: no target of that name registered yet.
  void add(TargetInfo info);
  const TargetInfo* find(std::string_view name) const;
  std::vector<const TargetInfo*> all() const;
  // "bow, era, linear"
  std::string names() const;

  // Checks the name, the keys and the value types without building
  // anything; errors list the valid names or keys.
  Status check(const TargetSpec& spec) const;

 private:
  std::map<std::string, TargetInfo, std::less<>> targets_;
};

}  // namespace bowstack
