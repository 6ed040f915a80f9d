// The `bowstack` command's verbs. main.cc owns argument parsing (CLI11);
// each verb gets plain option structs and returns the process exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bowstack::cli {

inline constexpr const char* kDefaultImage = "bowstack.img";
inline constexpr const char* kDefaultControl = "bowstack.ctl";
inline constexpr const char* kDefaultListen = "127.0.0.1:10809";
inline constexpr const char* kDefaultImageSize = "1G";

struct ServeOptions {
  std::string image;              // empty: kDefaultImage, created if absent
  std::string create_size;        // --create SIZE
  std::vector<std::string> listen;  // HOST:PORT, may be empty
  std::string unix_path;
  std::string control = kDefaultControl;
  std::vector<std::string> targets;
  std::string export_name = "bowstack";
  bool read_only = false;
  bool direct = false;
  unsigned threads = 16;
  std::string log_level = "info";
};

int run_serve(const ServeOptions& opts);

struct ClientOptions {
  std::string control = kDefaultControl;
  bool json = false;
};

int run_status(const ClientOptions& opts);
int run_message(const ClientOptions& opts, const std::string& text, const std::string& target);
int run_suspend(const ClientOptions& opts, bool suspend);
// Lists the registered targets and their keys.
int run_targets();

struct RestoreCliOptions {
  std::string image;
  bool dry_run = false;
  bool roll_forward = false;
  int64_t stop_after_writes = -1;  // hidden test hook
};
// Offline bow rollback (exit 0 also when there is no checkpoint).
int run_restore(const RestoreCliOptions& opts);
// Prints an image's bow checkpoint log.
int run_inspect(const std::string& image, bool json);

}  // namespace bowstack::cli
