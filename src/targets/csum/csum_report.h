// How csum's offline verbs report (both layouts): a progress line on a
// terminal, and the findings of a verification as text or JSON, so that
// `csum verify` says the same thing the same way whatever the layout.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "targets/csum/csum_verify.h"

namespace bowstack::cli {

// "\r<verb> <image>: NN%" on stderr when it is a terminal and !quiet; an
// empty function otherwise. progress(done, total).
std::function<void(uint64_t, uint64_t)> progress_line(const std::string& verb, const std::string& image,
                                                      bool quiet);

// j["mismatches"] = [{"block","offset"}...], j["unverifiable"] =
// [{"first","end","why"}...].
void add_findings(nlohmann::json* j, const std::vector<csum::VerifyReport::Bad>& mismatches,
                  const std::vector<csum::VerifyReport::Unverifiable>& unverifiable);
// One line per finding on stdout: "mismatch: block N (byte offset O)",
// "unverifiable: blocks A..B: why".
void print_findings(const std::vector<csum::VerifyReport::Bad>& mismatches,
                    const std::vector<csum::VerifyReport::Unverifiable>& unverifiable);

}  // namespace bowstack::cli
