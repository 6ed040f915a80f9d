// Offline tools for csum's layout=integrity (docs/format/csum.md section
// 11): make a whole dm-integrity volume in a device, and verify every block
// of one against its crc32c tag; the journal checks serving shares with
// them. Serving is integrity_target.h.
//
// Thread-safety: none needed; one call at a time per device, and nothing
// else may write the device meanwhile (the CLI holds file locks).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "targets/csum/csum_verify.h"
#include "targets/csum/integrity_format.h"

namespace bowstack::csum::integrity {

struct FormatParams {
  uint32_t block_size = 4096;
  uint32_t journal_sections = 0;  // 0: the kernel's default for the device's size
  uint32_t log2_interleave_sectors = kDefaultLog2Interleave;
};

// Makes `dev` a dm-integrity volume the kernel opens as it would one it
// formatted itself: superblock version 4 (FIXED_PADDING, crc32c, tag size
// 4), an empty journal, every data block zero (written as zeroes or holes)
// with its tag, and a flush. Whatever the device held is lost. The old
// superblock is cleared and flushed first and the new one written last, so
// an interrupted format leaves a device that is not a volume rather than one
// whose tags do not match. Errors: EINVAL for parameters or a device too
// small, or the device's I/O error.
Result<Superblock> format_integrity(BlockDevice& dev, const FormatParams& params);

// The result of verify_integrity(). Not csum_verify.h's VerifyReport: that
// one carries layout=csum's superblock (uuid, generation, clean flag) which
// an integrity volume has none of, and has no count of discarded blocks. The
// entries are the same types.
struct IntegrityVerifyReport {
  Superblock sb;
  uint64_t blocks = 0;                        // verified against their tags
  uint64_t discarded = 0;                     // tags of 0xF6 bytes: accepted unverified, as the kernel does
  std::vector<VerifyReport::Bad> mismatches;  // block and byte offset in the exported data
  // Blocks above recalc_sector while RECALCULATING: their tags are not yet
  // computed, so they cannot be verified.
  std::vector<VerifyReport::Unverifiable> unverifiable;
  bool clean() const { return mismatches.empty() && unverifiable.empty(); }
};

// Reads the kernel's journal. ENOTSUP when an entry is in use (a crash the
// kernel has not replayed, or would replay again: data in place may be
// older than the journal's), EUCLEAN when a sector's commit id belongs to
// no sequence. *canonical (optional): every section is byte for byte the
// empty journal format writes (sequence 0).
Status check_journal(BlockDevice& dev, const Layout& l, bool* canonical = nullptr);
// Writes the empty journal of sequence 0, as format does. No flush.
Status write_empty_journal(BlockDevice& dev, const Layout& l);

// Reads every exported block and its tag and compares them. Writes nothing.
// progress(done, total) in blocks, now and then. Errors: no superblock
// (EMEDIUMTYPE), a damaged superblock or journal (EUCLEAN), a feature we do
// not implement or a journal holding entries the kernel has not replayed
// (ENOTSUP), or a read error.
Result<IntegrityVerifyReport> verify_integrity(std::shared_ptr<BlockDevice> dev,
                                               const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace bowstack::csum::integrity
