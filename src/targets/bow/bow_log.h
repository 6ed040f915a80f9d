// Reading and validating a dm-bow log chain (docs/format/bow.md section 1),
// shared by `bowstack restore`, `bowstack inspect` and the target's resume.
//
// Nothing read from the device is trusted: every field is checked before it
// is used, and no allocation is sized by an unchecked field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "targets/bow/bow_format.h"

namespace bowstack::bow {

// Maps 512-byte sectors to where their current contents are, as if the
// entries seen so far had been restored. Runs of equal offset are stored by
// their start: O(log n) per lookup.
class RelocationMap {
 public:
  RelocationMap() { map_[0] = 0; }
  uint64_t lookup(uint64_t sector) const;
  // From now on, reads of [source, source+count) go wherever
  // [dest, dest+count) maps now.
  void relocate(uint64_t source, uint64_t dest, uint64_t count);
  size_t runs() const { return map_.size(); }

 private:
  std::map<uint64_t, uint64_t> map_;  // start -> target of start
};

struct LogBlock {
  LogHeader header;
  std::vector<LogEntry> entries;
};

struct LogChain {
  uint32_t block_size = 0;
  std::vector<LogBlock> blocks;  // index == sequence, 0..N
  uint64_t sector0 = 0;          // from the newest log block
};

enum class ProbeResult { kNoCheckpoint, kCheckpoint, kInterruptedRestore };

// Looks at block 0's magic only.
Result<ProbeResult> probe(BlockDevice& dev);

// Checks one log block's header against the device (magic BOW or, if
// allowed, WOB; version 1.x; header size; block size; count; sector0).
// `expect_block_size` 0 accepts any valid block size.
Status check_header(const LogHeader& h, uint64_t device_bytes, uint32_t expect_block_size, bool allow_wob);
// Checks one entry's alignment and bounds, and that its saved copy (dest)
// does not overlap the range it saves (source). `index` is its place in its
// block.
Status check_entry(const LogEntry& e, uint32_t index, uint32_t block_size, uint64_t device_bytes);

struct ValidateOptions {
  bool verify_checksums = true;
  // Accept block 0 holding an interrupted restore (magic WOB): it is then
  // the newest log block, its count what is left of it, and the chain is
  // what the restore still has to roll back.
  bool allow_interrupted = false;
};

// Walks the chain from the newest log block down to sequence 0 with the
// relocation map, as Android's restore does, checking every header, every
// entry and (optionally) every checksum. A device holding an interrupted
// restore (WOB) is refused with EBUSY unless `allow_interrupted`. Errors name the log block, entry and
// what is wrong.
Result<LogChain> read_and_validate(BlockDevice& dev, ValidateOptions opts = {});

// Parses a log block from its bytes (after check_header).
LogBlock parse_log_block(std::span<const std::byte> block);

}  // namespace bowstack::bow
