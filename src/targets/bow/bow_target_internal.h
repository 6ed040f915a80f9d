// Private to bow's implementation files (bow_*.cc): what they share besides
// the class itself. Not for other targets or the core.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/aligned_buf.h"
#include "targets/bow/bow_target.h"

namespace bowstack::bow::internal {

using Spans = std::vector<std::pair<uint64_t, uint64_t>>;  // [start, end) in blocks

inline constexpr uint64_t kZeroChunk = 1u << 20;
// The planner never hands out the last free blocks: commit needs one for an
// atomic final log rollover (see commit()).
inline constexpr uint64_t kCommitSpare = 1;
// Writes that make a batch worth committing without gathering more: the two
// barriers then cost little per write.
inline constexpr size_t kGatherWrites = 64;

// The busy spans an operation on logical blocks [first, end) needs while the
// live block 0 is at `s0c` (0: not redirected): its own blocks, plus block 0
// and the live copy when either is involved, since they move together. At
// most two, sorted.
inline SpanList spans_for(uint64_t first, uint64_t end, uint64_t s0c) {
  SpanList spans;
  spans.emplace_back(first, end);
  if (s0c != 0) {
    bool has0 = first == 0;
    bool has_live = s0c >= first && s0c < end;
    if (has0 && !has_live) spans.emplace_back(s0c, s0c + 1);
    if (has_live && !has0) spans.emplace_back(0, 1);
  }
  if (spans.size() == 2 && spans.data()[1] < spans.data()[0]) std::swap(spans.data()[0], spans.data()[1]);
  return spans;
}

}  // namespace bowstack::bow::internal

namespace bowstack::bow {

using internal::Spans;

// One acknowledged write waiting for its log entries to become durable.
// QueuedOp::bytes is the memory it holds (data + saved copies); wait is
// set for FUA.
struct BowTarget::Pending : QueuedOp {
  struct Saved {
    uint64_t dest = 0;  // block
    AlignedBuf data;    // the checkpoint data to save there
  };
  std::vector<Saved> saved;  // written by the committer, before the log; dropped once written
  std::vector<LogEntry> entries;
  Spans sources;           // ranges that become kChanged once durable (blocks)
  bool moves_s0c = false;  // this write moved the live block 0
  uint64_t old_s0c = 0, new_s0c = 0;
  Spans busy;               // released once applied
  uint64_t data_block = 0;  // logical block of `data`
  AlignedBuf data;
  uint32_t flags = 0;
  bool has_claims = false;  // FUA must also make the journal durable
};

// What a checkpoint write needs: saved copies to make, blocks to claim.
struct BowTarget::Plan {
  struct Copy {
    uint64_t src = 0;   // physical block to save
    uint64_t dest = 0;  // free block receiving the copy
    uint64_t count = 0;
    bool s0c_move = false;
  };
  std::vector<Copy> copies;
  SpanList claims;                   // free -> changed
  Spans sources;                     // saved ranges (logical == physical; never block 0)
  std::vector<uint64_t> unreserved;  // log rollover reservations taken back (now claimed)
  std::vector<uint64_t> unbacked;    // rollover blocks whose backing space is not reserved yet
  bool moves_s0c = false;
  uint64_t old_s0c = 0, new_s0c = 0;
  uint64_t slots = 0;  // log entries reserved
};

}  // namespace bowstack::bow
