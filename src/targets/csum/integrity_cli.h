// The layout=integrity halves of csum's verbs (`bowstack csum format|verify
// --layout integrity IMAGE`), kept out of csum_cli.cc, which only routes to
// them. Logic lives in integrity_volume.cc; these open files and print.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/block_device.h"

namespace bowstack::cli {

struct IntegrityFormatOptions {
  std::string image;
  uint32_t block_size = 4096;
  uint32_t journal_sections = 0;  // 0: the kernel's default for the image's size
};

// Exit status 0 formatted, 1 not (the reason on stderr).
int run_integrity_format(const IntegrityFormatOptions& o);
// Exit status as `csum verify`: 0 every block verified, 1 mismatches or
// unverifiable blocks, 2 the volume cannot be verified at all.
int run_integrity_verify(const std::string& image, bool json);
// The same on a device the caller opened (a table's data leaf, `--table`;
// formatting needs it written, under its lock), named `name` in messages.
int run_integrity_format_on(BlockDevice& dev, const std::string& name, const IntegrityFormatOptions& o);
int run_integrity_verify_on(std::shared_ptr<BlockDevice> dev, const std::string& name, bool json);

}  // namespace bowstack::cli
