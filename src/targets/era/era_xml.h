// era metadata as XML, in the dialect of thin-provisioning-tools' era_dump
// and era_restore (and as JSON). Grammar in docs/format/era.md.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include "targets/era/era_tools.h"

namespace bowstack::era {

struct DumpOptions {
  bool logical = false;  // fold the writesets into the era array; print no writesets
  bool compact = false;  // writesets as <marked block_begin len/> runs instead of one <bit/> per block
};

// Streams the metadata (or its snapshot) to `out`. I/O errors on `out` and
// damage in the metadata are returned; output may be partial then.
Status write_xml(EraSource& src, const DumpOptions& opts, std::FILE* out);
Status write_json(EraSource& src, const DumpOptions& opts, std::FILE* out);

// What a parse may believe of the XML's claims before it allocates for them.
struct ParseLimits {
  // nr_blocks at most this (what the metadata device can hold).
  uint64_t max_blocks = kMaxDataBlocks;
  std::string max_blocks_why = "eras and block numbers are 32-bit";
  // Memory the model may take (the era array, 4 bytes a block, and one bit
  // a block for each writeset); 0: no limit.
  uint64_t max_bytes = 0;
};

// Parses what write_xml writes (either writeset style). Errors are EINVAL
// with a one-line reason and the XML line where it was found. Claims are
// checked against `limits` before anything is allocated for them.
Result<EraModel> parse_xml(std::string_view text, const ParseLimits& limits = {});

}  // namespace bowstack::era
