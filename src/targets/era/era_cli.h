// era's verbs on the `bowstack` command (era_cli.cc registers them;
// era_tools_cli.cc runs the offline tools).
#pragma once

#include <cstdint>
#include <string>

namespace bowstack::cli {

// Offline era tools (era_tools_cli.cc). Each returns the exit code:
// 0 on success, 1 on any error or (check) any damage.
struct EraCliOptions {
  std::string metadata;
  std::string image;
  std::string table;      // --table FILE instead of METADATA (and IMAGE): the table's era node
  std::string input;      // restore: XML; apply: export file
  std::string output;     // dump/invalidate: "-" or empty for stdout; export: the file
  int64_t since = 0;      // invalidate --written-since, export --since
  bool snapshot = false;  // read the metadata snapshot
  bool json = false;
  bool logical = false;
  bool compact = false;
  bool dry_run = false;
};
int run_era_dump(const EraCliOptions& o);
int run_era_invalidate(const EraCliOptions& o);
int run_era_check(const EraCliOptions& o);
int run_era_restore(const EraCliOptions& o);
int run_era_export(const EraCliOptions& o);
int run_era_apply(const EraCliOptions& o);

}  // namespace bowstack::cli
