// The queued request both csum layouts put on the core's write-behind
// pipeline: whole blocks [first, end), their new contents (writes) and the
// checksum each block ends with, computed in the submitter's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/aligned_buf.h"
#include "core/write_behind.h"

namespace bowstack::csum {

// What an op does to its blocks. kOpAccept (layout=csum) stores the checksum
// of the data the device holds when its batch commits, and writes nothing.
enum OpKind : int { kOpWrite = 0, kOpTrim = 1, kOpZeroes = 2, kOpAccept = 3 };

struct ChecksumOp : QueuedOp {
  int kind = kOpWrite;
  uint32_t flags = 0;
  AlignedBuf data;             // kOpWrite: the blocks' new contents
  std::vector<uint32_t> sums;  // each block's new checksum c(b, D) (z(b) for trim and zeroes; accept: unset)
};

// A write's data is copied (the client's buffer is gone once it is
// acknowledged). The submitter waits for every op but a plain write.
// REQUIRES: first < end; `data` holds (end - first) blocks for kOpWrite.
std::shared_ptr<ChecksumOp> make_checksum_op(uint64_t first, uint64_t end, const std::byte* data,
                                             uint32_t flags, int kind, uint32_t block_size);

}  // namespace bowstack::csum
