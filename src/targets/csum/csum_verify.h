// Offline verification of a csum volume (layout=csum): every block of the
// data device against its pair, by the same rule the target reads with
// (either slot; zeroes for a never-written block), taking an unclean
// volume's recovery into account (journal records to replay, rebuild
// regions to recompute). Writes nothing.
//
// Thread-safety: none needed; one call at a time per volume.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/block_device.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum {

struct VerifyReport {
  Superblock sb;
  uint64_t blocks = 0;  // verified
  // An unclean volume in mode journal: blocks in committed journal records,
  // which the next open rewrites (their mismatches in place do not count).
  uint64_t journalled = 0;
  struct Bad {
    uint64_t block = 0;
    uint64_t offset = 0;  // bytes into the data device
  };
  std::vector<Bad> mismatches;  // data that matches neither checksum
  // Pair sectors that do not decode: their blocks [first, end) cannot be
  // verified, with the reason.
  struct Unverifiable {
    uint64_t first = 0, end = 0;
    std::string why;
  };
  std::vector<Unverifiable> unverifiable;
  bool clean() const { return mismatches.empty() && unverifiable.empty(); }
};

// progress(done, total) in blocks, now and then. Errors: the metadata is
// unusable (EMEDIUMTYPE, EUCLEAN superblock, ENOTSUP), it belongs to a data
// device of another size (EINVAL), or reading fails.
Result<VerifyReport> verify_volume(std::shared_ptr<BlockDevice> data, std::shared_ptr<BlockDevice> md,
                                   const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace bowstack::csum
