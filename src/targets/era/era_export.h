// Incremental backup: the blocks written since an era, as a self-checking
// file (format in docs/format/era.md, "Export file"), and replaying it onto
// a copy of the device.
#pragma once

#include <string>

#include "core/block_device.h"
#include "targets/era/era_tools.h"

namespace bowstack::era {

inline constexpr char kExportMagic[8] = {'B', 'S', 'E', 'R', 'A', 'E', 'X', 'P'};
inline constexpr uint32_t kExportVersion = 1;
inline constexpr uint32_t kExportHeaderSize = 64;
inline constexpr uint32_t kRecordHeaderSize = 32;
inline constexpr uint32_t kTrailerSize = 32;
inline constexpr uint32_t kRecordMagic = 0x4e555245;   // "ERUN"
inline constexpr uint32_t kTrailerMagic = 0x444e4545;  // "EEND"
inline constexpr uint64_t kMaxRecordBytes = 1u << 20;

struct ExportStats {
  uint64_t records = 0;
  uint64_t blocks = 0;
  uint64_t bytes = 0;  // data bytes
  uint32_t since = 0;
  uint32_t current_era = 0;
  uint32_t block_size = 0;
  uint64_t device_size = 0;
};

// Writes the blocks of `image` written in era `since` or later (per `src`)
// to `path` (through a temporary file renamed into place). `image` must be
// the device the metadata tracks: same number of blocks.
Result<ExportStats> export_changes(EraSource& src, BlockDevice& image, uint32_t since,
                                   const std::string& path);

// Validates the whole file first (header, every record and checksum, the
// trailer, the device size); then, unless `dry_run`, writes the records to
// `target` and flushes it. Nothing is written if anything is wrong.
Result<ExportStats> apply_changes(const std::string& path, BlockDevice& target, bool dry_run);

}  // namespace bowstack::era
