// Offline reading of era metadata for the tools (dump, invalidate, check,
// export) and writing it back (restore). Works on a metadata device that no
// target is using, or on a live one through its metadata snapshot.
//
// Memory: the writesets are loaded as bitsets (one bit per data block each);
// the era array is streamed block by block, never held whole.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "targets/era/era_metadata.h"

namespace bowstack::era {

// What the tools read: the era array plus the writesets not folded into it.
struct EraSource {
  std::unique_ptr<EraMetadata> md;
  Superblock sb;
  bool snapshot = false;
  uint32_t current_era = 0;        // the superblock's, or the snapshot's
  std::vector<uint64_t> current;   // bits written in current_era
  uint32_t unfolded_era = 0;       // 0, or an archived era whose fold was interrupted
  std::vector<uint64_t> unfolded;  // its bits
};

// Opens the metadata (or its snapshot) and loads the writesets. Damage goes
// to `sink` when given (the caller decides), else it is an EUCLEAN error.
// EMEDIUMTYPE: no superblock slot holds era's magic, so the device holds
// no era metadata at all (never formatted, or something else); the context
// says what it found.
Result<EraSource> open_source(std::shared_ptr<BlockDevice> dev, bool snapshot, DamageSink* sink = nullptr);

// Calls fn(first data block, eras) for each era array block in order, as
// stored (`logical`: with the unfolded and current writesets folded in, the
// era each block was last written in). A damaged array block is reported to
// `sink` and skipped (or is an error without a sink).
using EraChunkFn = std::function<Status(uint64_t first, std::span<const uint32_t> eras)>;
Status for_each_era(EraSource& src, bool logical, DamageSink* sink, const EraChunkFn& fn);

// Data blocks written in era `since` or later (including the current,
// not yet archived writeset), as sorted [begin, end) runs.
using Runs = std::vector<std::pair<uint64_t, uint64_t>>;
Result<Runs> written_since(EraSource& src, uint32_t since);

// Everything wrong with the metadata, including eras beyond the current one.
struct CheckResult {
  bool superblock_ok = false;
  Superblock sb;
  std::vector<Damage> damage;
};
Result<CheckResult> check_metadata(std::shared_ptr<BlockDevice> dev);

// The logical content of era metadata (what era_dump prints and
// era_restore reads).
struct EraModel {
  std::string uuid;
  uint32_t block_size_sectors = 0;
  uint64_t nr_blocks = 0;
  uint32_t current_era = 0;
  struct Writeset {
    uint32_t era = 0;
    uint64_t nr_bits = 0;
    std::vector<uint64_t> bits;  // words
  };
  std::vector<Writeset> writesets;
  std::vector<uint32_t> eras;  // nr_blocks entries
};
// Writes `m` as fresh metadata on `dev` (archived writesets folded into the
// era array, the one of current_era becomes the current writeset).
Status restore_metadata(const EraModel& m, std::shared_ptr<BlockDevice> dev);
// Metadata blocks `m` needs.
uint64_t metadata_blocks_for(uint64_t nr_blocks);
// The most data blocks whose metadata fits in `bytes` (0 if none do).
uint64_t max_blocks_for_metadata(uint64_t bytes);

}  // namespace bowstack::era
