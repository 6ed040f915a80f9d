// Building a stack from `--target name[:key=value,...]` options.
//
// The registry maps target names to factories. The core defines no target:
// the program registers the built-in ones (src/targets/builtin.h) into a
// registry it owns, so tests can build registries of their own.
//
// Thread-safety: register during start-up, then only read.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/block_device.h"

namespace bowstack {

// One `--target` option, parsed.
struct TargetSpec {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;  // in the order given
};

// "name" or "name:key=value,key=value". Keys must be unique.
Result<TargetSpec> parse_target_spec(std::string_view text);

struct TargetParamInfo {
  std::string key;
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

struct TargetInfo {
  std::string name;
  std::string summary;
  std::vector<TargetParamInfo> params;
  // Builds the layer over `lower`. Must fail cleanly (Status) on bad
  // arguments, a lower device too small, or unreadable metadata.
  std::function<Result<std::shared_ptr<BlockDevice>>(std::shared_ptr<BlockDevice> lower, const TargetArgs&)>
      create;
};

class TargetRegistry {
 public:
  // REQUIRES: no target of that name registered yet.
  void add(TargetInfo info);
  const TargetInfo* find(std::string_view name) const;
  std::vector<const TargetInfo*> all() const;
  // "bow, era, linear"
  std::string names() const;

  // Checks the name and keys without building anything; errors list the
  // valid names or keys.
  Status check(const TargetSpec& spec) const;
  // Builds one layer: checks the name and keys (errors list the valid ones),
  // then calls the factory.
  Result<std::shared_ptr<BlockDevice>> create(std::shared_ptr<BlockDevice> lower,
                                              const TargetSpec& spec) const;
  // Builds the stack bottom-up: specs[0] sits directly on `base`.
  Result<std::shared_ptr<BlockDevice>> build(std::shared_ptr<BlockDevice> base,
                                             const std::vector<TargetSpec>& specs) const;

 private:
  std::map<std::string, TargetInfo, std::less<>> targets_;
};

}  // namespace bowstack
