// Small parsers shared by the CLI and target constructors.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

namespace bowstack {

// "4096", "64K", "1M", "10G", "2T", "512B" (binary units, case-insensitive,
// optional "iB"/"B" suffix). Errors are EINVAL with a message naming `what`.
Result<uint64_t> parse_size(std::string_view text, std::string_view what);
// Human-readable size: "1.0 GiB", "512 B".
std::string format_size(uint64_t bytes);

}  // namespace bowstack
