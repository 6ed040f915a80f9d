// `bowstack table` and `bowstack reload`: the running server's table.
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/report.h"
#include "cli/verbs.h"
#include "control/control_server.h"
#include "core/table.h"

namespace bowstack::cli {

namespace {

// One line per node, indented by depth: "era  block_size=64k" / "data: file disk.img".
void print_node(const nlohmann::json& n, const std::string& slot, int depth) {
  std::string line(static_cast<size_t>(depth) * 2, ' ');
  if (!slot.empty()) line += slot + ": ";
  if (n.is_null()) {
    std::printf("%s(none)\n", line.c_str());
    return;
  }
  if (n.contains("file")) {
    line += "file " + n["file"].get<std::string>();
    if (n.contains("create")) line += fmt::format(" (create {})", n["create"].dump());
    if (n.value("read_only", false)) line += " (read-only)";
    std::printf("%s\n", line.c_str());
    return;
  }
  line += n.value("target", std::string("?"));
  if (n.contains("params")) {
    for (const auto& [k, v] : n["params"].items())
      line += " " + k + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  std::printf("%s\n", line.c_str());
  if (!n.contains("devices")) return;
  for (const auto& [name, child] : n["devices"].items()) {
    if (child.is_array()) {
      for (size_t i = 0; i < child.size(); ++i)
        print_node(child[i], fmt::format("{}[{}]", name, i), depth + 1);
    } else {
      print_node(child, name, depth + 1);
    }
  }
}

}  // namespace

Result<std::string> read_table_text(const std::string& file) {
  if (file == "-") {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    return text;
  }
  std::ifstream in(file);
  if (!in) return Status::Error(errno ? errno : ENOENT, fmt::format("cannot read table '{}'", file));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_table(const ClientOptions& opts) {
  auto reply = control_request(opts.control, {{"cmd", "table"}});
  if (!reply.ok()) return fail(reply.status().message());
  if (!reply->value("ok", false)) return fail(reply->value("error", std::string("request failed")));
  const nlohmann::json& table = (*reply)["table"];
  if (opts.json) {
    std::printf("%s\n", table.dump(2).c_str());
  } else {
    print_node(table, "", 0);
  }
  return 0;
}

int run_reload(const ClientOptions& opts, const std::string& file, bool noflush) {
  auto text = read_table_text(file);
  if (!text.ok()) return fail(text.status().message());
  auto table = parse_json_text(*text);
  if (!table.ok()) return fail(fmt::format("{}: {}", file, why(table.status())));
  auto reply = control_request(opts.control, {{"cmd", "reload"}, {"table", *table}, {"noflush", noflush}});
  if (!reply.ok()) return fail(reply.status().message());
  if (opts.json) std::printf("%s\n", reply->dump(2).c_str());
  if (!reply->value("ok", false)) {
    if (!opts.json)
      return fail(fmt::format("{}: {}", file, reply->value("error", std::string("reload failed"))));
    return 1;
  }
  if (!opts.json) {
    std::printf("reloaded: %llu node(s) kept, %llu built, %llu dropped; I/O held %.1f ms\n",
                static_cast<unsigned long long>(reply->value("kept_nodes", uint64_t{0})),
                static_cast<unsigned long long>(reply->value("built_nodes", uint64_t{0})),
                static_cast<unsigned long long>(reply->value("dropped_nodes", uint64_t{0})),
                static_cast<double>(reply->value("held_us", uint64_t{0})) / 1000.0);
  }
  return 0;
}

}  // namespace bowstack::cli
