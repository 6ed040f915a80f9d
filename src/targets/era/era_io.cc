// era's data path: fast writes, first writes through the core's
// write-behind (its hooks commit the bits), reads that wait for them.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include "targets/era/era_target.h"

namespace bowstack::era {

namespace {

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

}  // namespace

// One queued first write (or trim / write-zeroes) waiting for its bits.
// QueuedOp::first/end are its blocks; wait is set for FUA, trim and zeroes.
struct EraTarget::Op : QueuedOp {
  enum Type { kWrite, kTrim, kZeroes };
  Type type = kWrite;
  uint64_t offset = 0, length = 0;
  uint32_t flags = 0;
  std::unique_ptr<std::byte, FreeDeleter> data;
  std::vector<uint64_t> new_bits;  // bits this op asked to commit (set under the pipeline's lock)
};

// ---- Data path ------------------------------------------------------------

Status EraTarget::failure() const { return wb_ ? wb_->failure() : Status::Ok(); }

Status EraTarget::fail(Status s) {
  return wb_->fail(Status::Error(s.code(), "era: metadata failed earlier: " + why(s) +
                                               " (the blocks later writes touch could not be tracked)"));
}

void EraTarget::start_write_behind() {
  WriteBehind::Hooks h;
  // A block newly pending: if its bit is committed already, clear the
  // in-core bit so that later writes queue behind this op instead of
  // overtaking it; otherwise this op commits the bit.
  h.block_queued = [this](QueuedOp& op, uint64_t b) {
    if (all_marked(b, b + 1)) {
      clear_marked(b);
    } else {
      static_cast<Op&>(op).new_bits.push_back(b);
    }
  };
  h.commit = [this](WriteBehind::Batch& batch) {
    std::vector<uint64_t> bits;
    for (const auto& op : batch) {
      const auto& nb = static_cast<const Op&>(*op).new_bits;
      bits.insert(bits.end(), nb.begin(), nb.end());
    }
    if (bits.empty()) return Status::Ok();
    Status s = commit_bits(bits);
    if (!s.ok()) (void)fail(s);
    return s;
  };
  h.apply = [this](WriteBehind::Batch& batch, const Status& committed) { apply_batch(batch, committed); };
  // No queued op holds the block any more: writes may pass straight
  // through again once its bit is durable. committed_ changes only on the
  // commit job, which is also where this runs (no apply job).
  h.block_released = [this](uint64_t b, bool healthy) {
    if (healthy && test_bit(committed_, b)) set_marked(b);
  };
  h.finished = [this](WriteBehind::Batch& batch) { gate_leave(batch.size()); };
  wb_ = std::make_unique<WriteBehind>(
      jobs_, WriteBehind::Options{.max_pending_bytes = opts_.max_pending_bytes, .blocks = nr_blocks_},
      std::move(h));
}

void EraTarget::apply_batch(WriteBehind::Batch& batch, const Status& committed) {
  for (auto& qop : batch) {
    Op& op = static_cast<Op&>(*qop);
    if (!committed.ok()) {
      op.status = Status::Error(EIO, "era: metadata commit failed: " + why(committed));
      continue;
    }
    Status s;
    switch (op.type) {
      case Op::kWrite:
        s = lower_device()->write(op.offset, std::span<const std::byte>(op.data.get(), op.length), op.flags);
        break;
      case Op::kTrim:
        s = lower_device()->trim(op.offset, op.length, op.flags);
        break;
      case Op::kZeroes:
        s = lower_device()->write_zeroes(op.offset, op.length, op.flags);
        break;
    }
    // An acknowledged write that cannot be applied is lost: only a sticky
    // failure tells the client (at its next flush).
    if (!s.ok() && !op.wait)
      (void)fail(Status::Error(s.code(), "writing acknowledged data failed: " + why(s)));
    op.status = std::move(s);
  }
}

void EraTarget::wait_not_pending(uint64_t offset, uint64_t length) {
  const auto [first, end] = block_range(offset, length);
  wb_->wait_not_pending(first, end);
}

Status EraTarget::read(uint64_t offset, std::span<std::byte> buf) {
  // Read-your-writes: an acknowledged first write may still be queued.
  wait_not_pending(offset, buf.size());
  return lower_device()->read(offset, buf);
}

Status EraTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  // A queued write is not in the device below yet: it could report a hole.
  wait_not_pending(offset, length);
  return lower_device()->block_status(offset, length, out);
}

Status EraTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  const auto [first, end] = block_range(offset, buf.size());
  gate_enter();
  if (all_marked(first, end)) {
    fast_writes_.fetch_add(1, std::memory_order_relaxed);
    Status s = lower_device()->write(offset, buf, flags);
    gate_leave();
    return s;
  }
  // The write is acknowledged before it reaches the origin: make sure the
  // origin has space for it now, while a full disk can still fail just this
  // write (ENOSPC) instead of an acknowledged one later, which would fail
  // the target.
  if (Status r = space_.reserve(offset, buf.size()); !r.ok()) {
    gate_leave();
    return r;
  }
  auto op = std::make_shared<Op>();
  op->type = Op::kWrite;
  op->offset = offset;
  op->length = buf.size();
  op->flags = flags;
  op->data.reset(static_cast<std::byte*>(std::aligned_alloc(4096, (buf.size() + 4095) / 4096 * 4096)));
  if (!op->data) {
    gate_leave();
    return Status::Error(ENOMEM, "era: no memory to queue a first write");
  }
  std::memcpy(op->data.get(), buf.data(), buf.size());
  op->first = first;
  op->end = end;
  op->bytes = buf.size();
  op->wait = (flags & kFua) != 0;
  return submit(std::move(op));
}

Status EraTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  return range_op(/*zeroes=*/false, offset, length, flags);
}

Status EraTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  return range_op(/*zeroes=*/true, offset, length, flags);
}

// Trim and write-zeroes change what their blocks read back: like a write,
// a range with blocks not yet marked in this era goes through the queue
// (bits committed before it is applied), and the caller waits for it.
Status EraTarget::range_op(bool zeroes, uint64_t offset, uint64_t length, uint32_t flags) {
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  // Either may punch holes below: the range is no longer known allocated
  // (forgotten before, so a racing reserve does not trust it, and after).
  space_.forget(offset, length);
  Status s = range_op_gated(zeroes, offset, length, flags);
  space_.forget(offset, length);
  return s;
}

Status EraTarget::range_op_gated(bool zeroes, uint64_t offset, uint64_t length, uint32_t flags) {
  const auto [first, end] = block_range(offset, length);
  gate_enter();
  if (all_marked(first, end)) {
    Status s = zeroes ? lower_device()->write_zeroes(offset, length, flags)
                      : lower_device()->trim(offset, length, flags);
    gate_leave();
    return s;
  }
  auto op = std::make_shared<Op>();
  op->type = zeroes ? Op::kZeroes : Op::kTrim;
  op->offset = offset;
  op->length = length;
  op->flags = flags;
  op->first = first;
  op->end = end;
  op->wait = true;
  return submit(std::move(op));
}

// REQUIRES: the gate entered for `op`; it is left when the op is applied
// (the pipeline's finished hook), or here if the pipeline refuses it.
Status EraTarget::submit(std::shared_ptr<Op> op) {
  queued_writes_.fetch_add(1, std::memory_order_relaxed);
  Status s = wb_->submit(op);
  if (!op->queued) gate_leave();  // refused (a failure earlier, or stopping): s says why
  return s;
}

Status EraTarget::commit_bits(std::vector<uint64_t>& bits) {
  const uint32_t e = era_.load(std::memory_order_acquire);
  std::sort(bits.begin(), bits.end());
  for (uint64_t b : bits) set_bit(committed_, b);
  std::vector<Flip> flips;
  uint64_t staged = UINT64_MAX;
  for (uint64_t b : bits) {
    const uint64_t i = b / kBitsPerWritesetBlock;
    if (i == staged) continue;
    staged = i;
    auto f = md_->stage_writeset(
        e, i,
        std::span<const uint64_t>(committed_.data() + i * kWordsPerWritesetBlock, kWordsPerWritesetBlock));
    if (!f.ok()) return f.status();
    flips.push_back(f.value());
  }
  if (Status s = md_->cache().write_dirty_buffers(); !s.ok()) return s;
  md_->apply(flips);
  commits_.fetch_add(1, std::memory_order_relaxed);
  committed_bits_.fetch_add(bits.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status EraTarget::flush() {
  if (Status s = detach(); !s.ok()) return s;
  return lower_device()->flush();
}

Status EraTarget::detach() {
  // Every bit is committed before its data is written, so applying the
  // queue is all that is owed; the data's durability is the next flush's.
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  return Status::Ok();
}

}  // namespace bowstack::era
