// bow's verbs on the `bowstack` command (bow_cli.cc registers them;
// bow_tools_cli.cc runs the offline ones).
#pragma once

#include <cstdint>
#include <string>

namespace bowstack::cli {

struct RestoreCliOptions {
  std::string image;
  std::string table;  // --table FILE: the data image and journal of the table's bow node
  bool dry_run = false;
  bool roll_forward = false;
  int64_t stop_after_writes = -1;  // hidden test hook
};
// Offline bow rollback (exit 0 also when there is no checkpoint).
int run_restore(const RestoreCliOptions& opts);
struct InspectCliOptions {
  std::string image;
  std::string table;  // --table FILE: the data image and journal of the table's bow node
  bool json = false;
};
// Prints an image's bow checkpoint log.
int run_inspect(const InspectCliOptions& opts);

}  // namespace bowstack::cli
