#include "targets/csum/csum_report.h"

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

namespace bowstack::cli {

std::function<void(uint64_t, uint64_t)> progress_line(const std::string& verb, const std::string& image,
                                                      bool quiet) {
  if (quiet || ::isatty(STDERR_FILENO) == 0) return {};
  auto shown = std::make_shared<uint64_t>(UINT64_MAX);
  return [shown, verb, image](uint64_t done, uint64_t total) {
    const uint64_t pct = total == 0 ? 100 : done * 100 / total;
    if (pct == *shown) return;
    *shown = pct;
    std::fprintf(stderr, "\r%s %s: %3llu%%", verb.c_str(), image.c_str(),
                 static_cast<unsigned long long>(pct));
    if (done == total) std::fprintf(stderr, "\n");
  };
}

void add_findings(nlohmann::json* j, const std::vector<csum::VerifyReport::Bad>& mismatches,
                  const std::vector<csum::VerifyReport::Unverifiable>& unverifiable) {
  (*j)["mismatches"] = nlohmann::json::array();
  for (const auto& b : mismatches) (*j)["mismatches"].push_back({{"block", b.block}, {"offset", b.offset}});
  (*j)["unverifiable"] = nlohmann::json::array();
  for (const auto& u : unverifiable) {
    (*j)["unverifiable"].push_back({{"first", u.first}, {"end", u.end}, {"why", u.why}});
  }
}

void print_findings(const std::vector<csum::VerifyReport::Bad>& mismatches,
                    const std::vector<csum::VerifyReport::Unverifiable>& unverifiable) {
  for (const auto& b : mismatches) {
    std::printf("mismatch: block %llu (byte offset %llu)\n", static_cast<unsigned long long>(b.block),
                static_cast<unsigned long long>(b.offset));
  }
  for (const auto& u : unverifiable) {
    std::printf("unverifiable: blocks %llu..%llu: %s\n", static_cast<unsigned long long>(u.first),
                static_cast<unsigned long long>(u.end - 1), u.why.c_str());
  }
}

}  // namespace bowstack::cli
