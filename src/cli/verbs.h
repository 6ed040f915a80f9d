// The `bowstack` command's verbs. main.cc owns argument parsing (CLI11);
// each verb gets plain option structs and returns the process exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace bowstack::cli {

inline constexpr const char* kDefaultImage = "bowstack.img";
inline constexpr const char* kDefaultControl = "bowstack.ctl";
inline constexpr const char* kDefaultListen = "127.0.0.1:10809";
inline constexpr const char* kDefaultImageSize = "1G";

// Worker threads per NBD connection unless --threads says otherwise: two
// per CPU, at least 4, at most 16. More threads than that only help while
// requests block on the disk; when the data is in the page cache they run
// at once and fight for the CPUs and the targets' locks. On 2 CPUs, bow's
// first overwrites at QD16 ran ~35% faster with 4 workers than with 16, and
// passthrough was the same with either (docs/performance.md).
unsigned default_serve_threads();

struct ServeOptions {
  std::string image;                // empty: kDefaultImage, created if absent
  std::string create_size;          // --create SIZE
  std::vector<std::string> listen;  // HOST:PORT, may be empty
  std::string unix_path;
  std::string control = kDefaultControl;
  std::vector<std::string> targets;
  std::string table;  // --table FILE ('-': stdin) instead of IMAGE/--target
  std::string export_name = "bowstack";
  bool read_only = false;
  bool direct = false;
  unsigned threads = default_serve_threads();
  std::string log_level = "info";
  unsigned control_idle_timeout = 30;  // seconds before an idle control client is dropped
  // TLS, spelled as nbdkit's options (docs/tls.md).
  std::string tls = "off";  // off, on, require
  std::string tls_certificates;
  std::string tls_psk;
  bool tls_verify_peer = false;
};

int run_serve(const ServeOptions& opts);

struct ClientOptions {
  std::string control = kDefaultControl;
  bool json = false;
};

int run_status(const ClientOptions& opts);
int run_message(const ClientOptions& opts, const std::string& text, const std::string& target);
int run_suspend(const ClientOptions& opts, bool suspend);
// Lists the registered targets, their params and slots.
int run_targets(bool json);
// Prints the running server's table (JSON with --json; serve --table reads it).
int run_table(const ClientOptions& opts);
// Replaces the running server's table with the one in `file` ('-': stdin).
int run_reload(const ClientOptions& opts, const std::string& file, bool noflush);
// The text of a table file; "-" reads stdin. Errors name the file.
Result<std::string> read_table_text(const std::string& file);

}  // namespace bowstack::cli
