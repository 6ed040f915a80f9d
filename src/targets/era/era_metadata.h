// era metadata access over a BufferCache: format, open, slotted-pair
// reads and writes, superblock commits, folding a writeset into the era
// array, metadata snapshots. Shared by the target and the offline tools.
// The format is in docs/format/era.md.
//
// Slotted pairs: the writeset and era-array blocks each have two slots. A
// new version always goes to the slot that does NOT hold the newest durable
// version, with generation+1; only after a flush that covers it does it
// become the durable one (apply()). So a torn or early (write-back) write
// can only damage a version nobody relies on yet, and readers take the
// valid slot with the highest generation.
//
// Thread-safety: superblock() may be called from any thread. The target
// serialises everything else: writeset blocks of the current era are staged
// by one committing thread at a time; fold, snapshot and superblock commits
// by one administrative thread at a time; the two touch disjoint state.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/bufio.h"
#include "targets/era/era_format.h"

namespace bowstack::era {

// Which slot of a pair holds the newest valid version.
struct SlotState {
  int8_t durable = -1;  // -1: not known yet (era array blocks are resolved lazily)
  uint64_t generation = 0;
  uint32_t era = 0;  // writesets: the era the bits belong to
};

// Something wrong in the metadata (for check and tolerant readers).
struct Damage {
  uint64_t block = 0;  // metadata block number
  std::string what;    // one sentence
};
// Receives damage; when null, the first damage is returned as an EUCLEAN error.
using DamageSink = std::vector<Damage>;

struct FormatParams {
  uint32_t data_block_size = 0;
  uint64_t nr_blocks = 0;
  uint64_t origin_size = 0;
  Uuid uuid{};
  uint32_t current_era = kFirstEra;
};

// A staged new version of a slotted block, to apply once a flush covered it.
struct Flip {
  Kind kind = Kind::kWriteset;
  int region = 0;
  uint64_t index = 0;
  int8_t slot = 0;
  uint64_t generation = 0;
  uint32_t era = 0;
};

class EraMetadata {
 public:
  // True when both superblock slots are all zeroes (a new file or device).
  static Result<bool> is_blank(BlockDevice& dev);
  // Writes fresh metadata (empty writesets, every era 0), lets `populate`
  // (if given) stage more on top (restore), flushes, then writes the
  // superblock and flushes again: until that last flush the device holds no
  // valid superblock for this metadata.
  using Populate = std::function<Status(EraMetadata&)>;
  static Result<std::unique_ptr<EraMetadata>> format(std::shared_ptr<BlockDevice> dev, const FormatParams& p,
                                                     BufioOptions opts = {}, const Populate& populate = {});
  // Reads the newest valid superblock and checks it. Damage to one slot is
  // recorded in `sink` (if given); neither slot valid is an EUCLEAN error.
  static Result<std::unique_ptr<EraMetadata>> open(std::shared_ptr<BlockDevice> dev, BufioOptions opts = {},
                                                   DamageSink* sink = nullptr);

  Superblock superblock() const;
  const Layout& layout() const { return layout_; }
  BufferCache& cache() { return *cache_; }
  uint64_t device_blocks() const { return cache_->block_count(); }

  // Writes `next` (generation set here) to the other superblock slot and
  // flushes. On success it is the superblock.
  Status commit_superblock(Superblock next);

  // ---- writesets -----------------------------------------------------------
  // Reads both slots of every block of `region` and records the newest
  // valid one. Both slots invalid: damage.
  Status scan_region(int region, DamageSink* sink);
  const SlotState& writeset_state(int region, uint64_t i) const { return ws_[region][i]; }
  // ORs the bits of `era` (blocks of region era%2 tagged with it, durable
  // slots as scanned) into `words` (layout().ws_blocks * 504 words).
  Status read_writeset(uint32_t era, std::vector<uint64_t>* words);
  // Stages a new version of writeset block i of `era` holding `words`
  // (kWordsPerWritesetBlock of them), marked dirty.
  Result<Flip> stage_writeset(uint32_t era, uint64_t i, std::span<const uint64_t> words);

  // ---- era array -----------------------------------------------------------
  // The newest valid version of era array block i (resolving its pair).
  Result<Buffer> read_era_block(uint64_t i, DamageSink* sink = nullptr);
  // A new version of era array block i, a copy of the durable one with
  // generation+1, held for the caller to modify and mark dirty.
  Result<std::pair<Buffer, Flip>> edit_era_block(uint64_t i);
  // Starts reading era array blocks [first, first+count) (both slots where
  // not yet resolved).
  void prefetch_era_blocks(uint64_t first, uint64_t count);

  // Folds the writeset of `era` (region era%2) into the era array: every
  // block whose bit is set gets era `era` unless it already has a later one.
  // Idempotent. Ends with write_dirty_buffers and apply. Does not touch the
  // superblock.
  Status fold(uint32_t era);

  // Writes a metadata snapshot: `writeset` (the current era's bits) and a
  // copy of the era array, stamped with `snap_id`; ends with
  // write_dirty_buffers. The caller then records it in the superblock.
  Status write_snapshot(const std::vector<uint64_t>& writeset, uint32_t era, uint64_t snap_id);
  // Reads a held snapshot (tools).
  Status read_snapshot_writeset(std::vector<uint64_t>* words, DamageSink* sink);
  Result<Buffer> read_snapshot_era_block(uint64_t i, DamageSink* sink = nullptr);

  // Marks flips durable (after a write_dirty_buffers that covered them).
  void apply(const std::vector<Flip>& flips);

  const EraValidator& writeset_validator() const { return ws_v_; }

 private:
  EraMetadata(std::shared_ptr<BlockDevice> dev, std::unique_ptr<BufferCache> cache, Superblock sb,
              int sb_slot);
  struct PairChoice {
    int8_t slot = -1;
    uint64_t generation = 0;
    uint32_t era = 0;
    std::string damage[2];  // why each slot is invalid (empty: valid)
  };
  Result<PairChoice> choose(uint64_t b0, uint64_t b1, const EraValidator& v, uint64_t index);
  Status resolve_era_block(uint64_t i, DamageSink* sink);

  const std::shared_ptr<BlockDevice> dev_;
  const std::unique_ptr<BufferCache> cache_;
  const Layout layout_;
  const EraValidator sb_v_, ws_v_, arr_v_, snap_ws_v_, snap_arr_v_;

  mutable std::mutex sb_mu_;
  Superblock sb_;  // guarded by sb_mu_
  int sb_slot_;    // guarded by sb_mu_

  std::vector<SlotState> ws_[2];  // per region
  std::vector<SlotState> arr_;
};

// Bit helpers over a writeset word vector.
inline bool test_bit(const std::vector<uint64_t>& w, uint64_t b) { return (w[b / 64] >> (b % 64)) & 1; }
inline void set_bit(std::vector<uint64_t>& w, uint64_t b) { w[b / 64] |= uint64_t{1} << (b % 64); }

}  // namespace bowstack::era
