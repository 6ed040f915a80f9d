// The csum metadata device (layout=csum, docs/format/csum.md sections 2-3):
// format, open (choosing the superblock copy), superblock commits, and the
// pair table read and written through the core's buffer cache.
//
// Durability: pair sectors are written by the cache whenever it likes
// after set_pairs() (see core/bufio.h); the dual protocol only ever changes
// a pair so that every version that may land describes the data on the
// device (section 5), so no write order inside the cache matters.
// write_dirty() is the durability point (one metadata flush).
//
// Thread-safety: superblock()/layout() may be called from any thread once
// opened; commit_superblock() is serialised by the caller (the target's
// admin path). pairs() and set_pairs() may run concurrently for different
// pair sectors; the caller serialises changes to one sector (the target
// changes pairs only on its commit job, or with writes held).
// write_dirty() waits for pairs() and set_pairs() calls in progress and
// holds new ones off until the pages are durable.
#pragma once

#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "core/bufio.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum {

struct FormatParams {
  uint32_t block_size = 4096;
  uint64_t data_size = 0;
  Mode mode = Mode::kDual;
  uint32_t log2_region_blocks = 0;  // 0: Layout::default_log2_region_blocks
  uint64_t journal_sectors = 0;
  Uuid uuid{};
  uint64_t created = 0;  // unix seconds
};

class CsumMetadata {
 public:
  // Bytes of metadata device a data device of `data_size` needs.
  static Result<uint64_t> bytes_needed(const FormatParams& p);
  // Writes the superblocks of a volume whose every block is unwritten
  // (EMPTY; the pair and bitmap areas must read as zeroes, as a new sparse
  // file does): copy 1 (generation 0), copy 0 (generation 1, CLEAN), each
  // followed by a flush. ENOSPC-free: EINVAL when the device is too small.
  static Status format(BlockDevice& md, const FormatParams& p);
  // Both superblock copies all zero: never formatted.
  static Result<bool> is_blank(BlockDevice& md);
  // Opens formatted metadata: EMEDIUMTYPE (not csum metadata), EUCLEAN
  // (damaged), ENOTSUP (newer) with a sentence naming the device's sectors.
  static Result<std::unique_ptr<CsumMetadata>> open(std::shared_ptr<BlockDevice> md, BufioOptions cache = {});
  ~CsumMetadata();

  Superblock superblock() const;
  const Layout& layout() const { return layout_; }
  // The device itself, for the journal area, which is not cached: its
  // writer (mode journal) reads and writes it directly.
  BlockDevice& device() const { return *md_; }

  // Writes `sb` as generation current+1 into the copy that is not current,
  // then flushes the device; the other copy stays as it was, so a torn or
  // lost write leaves the previous superblock. The layout may not change.
  Status commit_superblock(Superblock sb);

  // The pairs of blocks [first, end), one decode per pair sector. EUCLEAN
  // naming the sector when one is damaged (out is then incomplete).
  Status pairs(uint64_t first, uint64_t end, std::vector<Pair>* out);
  // Sets pairs (any order, each block once), re-sealing their sectors and
  // marking them dirty. EUCLEAN if a sector to change is damaged (nothing
  // of that sector changes).
  Status set_pairs(std::vector<std::pair<uint64_t, Pair>> updates);
  // Makes every pair and region bit set so far durable: writes and ONE
  // flush.
  Status write_dirty();

  // Dirty-region bits (section 3.3, mode rebuild), through the cache like
  // the pairs. dirty_regions() lists the set bits; every region of a
  // damaged sector counts as set (and *damaged counts the sector);
  // set_regions() sets or clears bits and marks their sectors
  // dirty (it serialises with itself; a damaged sector is rewritten whole
  // with only the requested bits set, which is safe: a lost dirty bit
  // costs at most false mismatches after a crash, never wrong data).
  Status dirty_regions(std::vector<uint64_t>* out, uint64_t* damaged = nullptr);
  Status set_regions(const std::vector<uint64_t>& regions, bool dirty);

 private:
  CsumMetadata(std::shared_ptr<BlockDevice> md, std::unique_ptr<BufferCache> cache, Chosen chosen);
  // The cache page holding a sector, and the sector's bytes in it.
  Result<Buffer> page_of(uint64_t sector);

  const std::shared_ptr<BlockDevice> md_;
  const std::unique_ptr<BufferCache> cache_;
  const Layout layout_;
  const Uuid uuid_;
  // The cache skips buffers someone holds when it makes dirty ones durable
  // (core/bufio.h): a reader holding a pair page during write_dirty() would
  // leave that page unwritten although write_dirty() succeeds. So pairs()
  // and set_pairs() hold pages only under this lock (shared), and
  // write_dirty() runs with it exclusive. The crash explorer found this: a
  // writer's damage check held the page while the commit job flushed.
  mutable std::shared_mutex hold_mu_;
  std::mutex bits_mu_;  // serialises set_regions()
  mutable std::mutex sb_mu_;
  Superblock sb_;         // guarded by sb_mu_
  uint64_t sb_location_;  // guarded by sb_mu_: the current copy
};

}  // namespace bowstack::csum
