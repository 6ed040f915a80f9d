// Offline tools over a stopped csum volume (layout=csum): format over the
// data a device holds, rebuild every checksum, accept one block, and dump
// what the metadata says (docs/format/csum.md section 8).
//
// Every tool that writes is an explicit acceptance of the data the device
// holds now: it says so in its report and never runs implicitly. The caller
// holds both devices exclusively (the CLI opens them with locks) and passes
// them unmodified by anyone else for the duration.
//
// Crash safety: format makes the metadata invalid first (both superblocks
// zeroed, flushed), then writes pairs, flushes, then writes the
// superblocks: an interrupted format leaves "not csum metadata" and can run
// again. Rebuild writes pairs, flushes, then a superblock: interrupted, it
// can run again (it only ever writes checksums of the data present).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "targets/csum/csum_format.h"
#include "targets/csum/csum_metadata.h"

namespace bowstack::csum {

// progress(done, total), in blocks, now and then.
using ToolProgress = std::function<void(uint64_t, uint64_t)>;

struct FormatReport {
  Superblock sb;
  uint64_t data_blocks = 0;  // blocks holding data, whose checksums were stored
  uint64_t zero_blocks = 0;  // blocks of zeroes or holes (stored EMPTY: read as zeroes)
};
// Makes csum metadata on `md` for the data `data` holds now. Refuses
// (EEXIST) metadata that is csum metadata already or not blank, unless
// `overwrite`. EINVAL for a device too small or parameters out of range.
Result<FormatReport> format_over_data(BlockDevice& data, BlockDevice& md, FormatParams p, bool overwrite,
                                      const ToolProgress& progress = {});

struct RebuildReport {
  Superblock sb;                 // as written: CLEAN, every pair settled
  uint64_t blocks = 0;           // checksummed
  uint64_t changed = 0;          // blocks whose data matched neither slot before
  uint64_t damaged_sectors = 0;  // pair sectors that could not be decoded (rewritten)
  uint64_t replayed = 0;         // journal records applied first (unclean, mode journal)
};
// Recomputes every block's checksum from the data (flushed first) and
// stores it settled; clears the dirty bitmap; writes the superblock CLEAN.
// An unclean volume in mode journal has its committed records applied
// first (they hold acknowledged writes), and its journal emptied.
Result<RebuildReport> rebuild_volume(BlockDevice& data, std::shared_ptr<BlockDevice> md,
                                     const ToolProgress& progress = {});

struct RewriteReport {
  Pair before;
  bool matched = false;   // the data matched the pair already
  uint32_t checksum = 0;  // the checksum now stored
};
// Accepts block `block`'s current data: flushes the data device, then
// stores its checksum settled. EUCLEAN when the block's pair sector is
// damaged (that needs rebuild: the sector's other 59 blocks would be
// accepted too). EINVAL past the end. EBUSY for an unclean volume in mode
// journal (its journal may hold newer data for the block).
Result<RewriteReport> rewrite_block_offline(BlockDevice& data, std::shared_ptr<BlockDevice> md,
                                            uint64_t block);

struct DumpReport {
  Superblock sb;
  uint64_t empty = 0;          // pairs EMPTY (never written, or trimmed)
  uint64_t settled = 0;        // one checksum
  uint64_t two = 0;            // two different checksums (written since the last settle)
  uint64_t dirty_regions = 0;  // bits set in the dirty-region bitmap
  struct Damaged {
    uint64_t sector = 0;
    uint64_t first = 0, end = 0;  // blocks it covers
    std::string why;
  };
  std::vector<Damaged> damaged;  // pair and bitmap sectors that do not decode
};
// Reads the superblock and scans the pair and bitmap areas. Writes nothing.
Result<DumpReport> dump_volume(std::shared_ptr<BlockDevice> md);

struct BlockReport {
  uint64_t block = 0;
  uint32_t block_size = 0;
  Pair pair;
  std::string pair_error;  // non-empty: the pair sector does not decode
  uint32_t data_checksum = 0;
  bool matches = false;  // as a read would judge it
};
Result<BlockReport> inspect_block(BlockDevice& data, std::shared_ptr<BlockDevice> md, uint64_t block);

}  // namespace bowstack::csum
