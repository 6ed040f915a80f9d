#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "cli/verbs.h"
#include "control/control_server.h"
#include "core/parse.h"

namespace bowstack::cli {

namespace {

// Sends a request; prints the error and returns nullopt on failure.
std::optional<nlohmann::json> ask(const ClientOptions& opts, const nlohmann::json& request) {
  auto reply = control_request(opts.control, request);
  if (!reply.ok()) {
    fail(reply.status().message());
    return std::nullopt;
  }
  if (!reply->value("ok", false)) {
    if (opts.json) {
      std::printf("%s\n", reply->dump().c_str());
    } else {
      fail(reply->value("error", std::string("request failed")));
    }
    return std::nullopt;
  }
  return reply.value();
}

uint64_t u64(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_number_unsigned() ? j[key].get<uint64_t>() : 0;
}

void print_status_text(const nlohmann::json& s) {
  std::printf("image:       %s\n", s.value("image", std::string("?")).c_str());
  std::printf("size:        %s (%llu bytes), block size %llu\n", format_size(u64(s, "size")).c_str(),
              static_cast<unsigned long long>(u64(s, "size")),
              static_cast<unsigned long long>(u64(s, "block_size")));
  std::printf("state:       %s%s, %llu in flight\n", s.value("suspended", false) ? "suspended" : "running",
              s.value("read_only", false) ? " (read-only)" : "",
              static_cast<unsigned long long>(u64(s, "in_flight")));
  if (s.contains("endpoints")) {
    std::string where;
    for (const auto& e : s["endpoints"]) where += (where.empty() ? "" : ", ") + e.get<std::string>();
    std::printf("nbd:         %s (%llu connected, %llu since start)\n", where.c_str(),
                static_cast<unsigned long long>(u64(s, "connections")),
                static_cast<unsigned long long>(u64(s, "connections_total")));
  }
  if (s.contains("stats")) {
    const auto& st = s["stats"];
    std::printf("requests:    %llu reads (%s), %llu writes (%s), %llu flushes\n",
                static_cast<unsigned long long>(u64(st, "reads")), format_size(u64(st, "bytes_read")).c_str(),
                static_cast<unsigned long long>(u64(st, "writes")),
                format_size(u64(st, "bytes_written")).c_str(),
                static_cast<unsigned long long>(u64(st, "flushes")));
    std::printf(
        "             %llu trims (%s), %llu write-zeroes (%s), %llu errors\n",
        static_cast<unsigned long long>(u64(st, "trims")), format_size(u64(st, "bytes_trimmed")).c_str(),
        static_cast<unsigned long long>(u64(st, "write_zeroes")),
        format_size(u64(st, "bytes_zeroed")).c_str(), static_cast<unsigned long long>(u64(st, "errors")));
  }
  if (s.contains("layers")) {
    std::printf("stack (top first):\n");
    for (const auto& l : s["layers"]) {
      std::printf("  %-8s %s\n", l.value("kind", std::string("?")).c_str(),
                  l.value("status", std::string()).c_str());
    }
  }
}

}  // namespace

int run_status(const ClientOptions& opts) {
  auto reply = ask(opts, {{"cmd", "status"}});
  if (!reply) return 1;
  if (opts.json) {
    std::printf("%s\n", reply->dump(2).c_str());
  } else {
    print_status_text(*reply);
  }
  return 0;
}

int run_message(const ClientOptions& opts, const std::string& text, const std::string& target) {
  nlohmann::json request = {{"cmd", "message"}, {"text", text}};
  if (!target.empty()) request["target"] = target;
  auto reply = ask(opts, request);
  if (!reply) return 1;
  if (opts.json) {
    std::printf("%s\n", reply->dump(2).c_str());
  } else {
    std::string text_reply = reply->value("reply", std::string());
    if (!text_reply.empty()) std::printf("%s\n", text_reply.c_str());
  }
  return 0;
}

int run_suspend(const ClientOptions& opts, bool suspend) {
  auto reply = ask(opts, {{"cmd", suspend ? "suspend" : "resume"}});
  if (!reply) return 1;
  if (opts.json) std::printf("%s\n", reply->dump(2).c_str());
  return 0;
}

}  // namespace bowstack::cli
