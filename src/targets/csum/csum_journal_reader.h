// Reading csum's journal (mode journal, docs/format/csum.md section 6):
// the committed records from the superblock's tail on, in order, as replay
// applies them and offline verify accounts for them. Reads only.
#pragma once

#include <cstdint>
#include <functional>

#include "core/aligned_buf.h"
#include "core/block_device.h"
#include "targets/csum/csum_format.h"
#include "targets/csum/csum_journal_format.h"

namespace bowstack::csum {

struct JournalRecord {
  JournalDescriptor desc;
  AlignedBuf data;  // the data entries' blocks, in entry order
};

// The committed record at journal offset `pos` (sectors) with sequence
// `seq`, or EUCLEAN (not there, torn, another lap's) or an I/O error.
Result<JournalRecord> read_journal_record(BlockDevice& md, const Superblock& sb, uint64_t pos, uint64_t seq);

// Where replay stops: the offset and sequence of the first record that is
// not committed.
struct JournalEnd {
  uint64_t pos = 0, seq = 0;
};
// Calls `each` for every committed record from the tail on (looking at
// offset 0 for the next one when it is not where the previous ended, as
// the writer wraps); stops at the first that is not committed, or at the
// first error of `each` or of the device (returned).
Result<JournalEnd> walk_journal(BlockDevice& md, const Superblock& sb,
                                const std::function<Status(const JournalRecord&)>& each);

}  // namespace bowstack::csum
