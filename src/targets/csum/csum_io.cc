// csum's data path (mode dual): reads verified against their block's
// checksums, writes queued behind their checksums' group commit, flushes
// that settle old checksums.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/aligned_buf.h"
#include "targets/csum/csum_target.h"
#include "targets/csum/whole_blocks.h"

namespace bowstack::csum {

namespace {
// Reads that race writes to their blocks are tried again, this often at most.
constexpr int kReadAttempts = 16;
}  // namespace

Status CsumTarget::read(uint64_t offset, std::span<std::byte> buf) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size()) / bs_;
  uint64_t bad = 0;
  if (!opts_.verify) {
    // verify=off, for measuring what verification costs: nothing checked.
    wb_->wait_not_pending(first, end);
    return lower_device()->read(offset, buf);
  }
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    const uint64_t queued = wb_->submitted();
    // Read-your-writes: an acknowledged write may still be queued.
    wb_->wait_not_pending(first, end);
    if (Status s = lower_device()->read(offset, buf); !s.ok()) return s;
    bool ok = false;
    if (Status s = verify(first, end, buf, &bad, &ok); !s.ok()) {
      metadata_errors_.fetch_add(1, std::memory_order_relaxed);
      return Status::Error(EIO, "csum: the checksums of blocks " + std::to_string(first) + ".." +
                                    std::to_string(end - 1) + " cannot be read: " + why(s));
    }
    if (ok) return Status::Ok();
    // A write queued since this read began may have landed between the
    // data read and the pair lookup: read again. With none, the mismatch
    // is real damage.
    if (wb_->submitted() == queued) break;
  }
  mismatches_.fetch_add(1, std::memory_order_relaxed);
  if (note_bad(bad, false, "read")) {
    spdlog::error("csum: block {} (bytes {}..{}) does not match its checksum: read fails with EIO", bad,
                  bad * bs_, (bad + 1) * bs_ - 1);
  }
  return Status::Error(
      EIO, fmt::format("csum: block {} (byte offset {}) does not match its checksum", bad, bad * bs_));
}

Status CsumTarget::verify(uint64_t first, uint64_t end, std::span<const std::byte> buf, uint64_t* bad,
                          bool* ok) {
  std::vector<Pair> pairs;
  {
    std::lock_guard lock(pairs_mu_);
    if (Status s = md_->pairs(first, end, &pairs); !s.ok()) return s;
  }
  for (uint64_t b = first; b < end; ++b) {
    const auto data = buf.subspan((b - first) * bs_, bs_);
    const uint32_t c = block_checksum(b, bs_, data);
    const Pair& p = pairs[b - first];
    const bool match = p.state == PairState::kEmpty ? c == zero_checksum(b, bs_) : (c == p.a || c == p.b);
    if (!match) {
      *bad = b;
      *ok = false;
      return Status::Ok();
    }
  }
  *ok = true;
  return Status::Ok();
}

Status CsumTarget::queue(uint64_t first, uint64_t end, const std::byte* data, uint32_t flags, int kind) {
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  if (first >= end) return Status::Ok();
  {
    // A block whose pair sector is damaged cannot take a new checksum: refuse
    // now rather than fail a write already acknowledged.
    std::vector<Pair> pairs;
    std::lock_guard lock(pairs_mu_);
    if (Status s = md_->pairs(first, end, &pairs); !s.ok()) {
      metadata_errors_.fetch_add(1, std::memory_order_relaxed);
      return Status::Error(EIO, "csum: cannot record checksums: " + why(s));
    }
  }
  auto op = make_checksum_op(first, end, data, flags, kind, bs_);
  return wb_->submit(std::move(op));
}

Status CsumTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  const BlockRange r = blocks_of(offset, buf.size(), bs_);
  return queue(r.first, r.end, buf.data(), flags, kOpWrite);
}

Status CsumTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  // Only whole blocks, which then read as zeroes (with z(b)).
  const BlockRange r = whole_blocks_inside(offset, length, bs_);
  return queue(r.first, r.end, nullptr, flags, kOpTrim);
}

Status CsumTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  if (flags & kFastZero) return Status::Error(ENOTSUP, "csum: no fast zeroing");
  const BlockRange r = blocks_of(offset, length, bs_);
  return queue(r.first, r.end, nullptr, flags, kOpZeroes);
}

Status CsumTarget::final_checksums(WriteBehind::Batch& batch, std::unordered_map<uint64_t, uint32_t>* out) {
  auto& fin = *out;
  for (const auto& q : batch) {
    const ChecksumOp& op = static_cast<const ChecksumOp&>(*q);
    if (op.kind != kOpAccept) {
      for (uint64_t b = op.first; b < op.end; ++b) fin[b] = op.sums[b - op.first];
      continue;
    }
    // Accepting a block's current data: what the device holds now (every
    // earlier batch is applied; apply runs on this job). A write earlier in
    // this batch is that data already and keeps its checksum.
    AlignedBuf blk(bs_);
    for (uint64_t b = op.first; b < op.end; ++b) {
      if (fin.count(b) != 0) continue;
      // Other ops of the batch are acknowledged: failing it must be sticky.
      if (Status s = lower_device()->read(b * bs_, blk.span()); !s.ok()) return wb_->fail(s);
      fin[b] = block_checksum(b, bs_, blk.span());
    }
  }
  return Status::Ok();
}

Status CsumTarget::commit_batch(WriteBehind::Batch& batch) {
  // The newest checksum of each block in the batch: its last write's.
  std::unordered_map<uint64_t, uint32_t> fin;
  if (Status s = final_checksums(batch, &fin); !s.ok()) return s;
  if (mode_ == Mode::kRebuild) return commit_rebuild(fin);
  if (mode_ == Mode::kJournal) return commit_journal(batch, fin);
  bool rewrite = false;
  {
    std::lock_guard lock(pairs_mu_);
    for (const auto& [b, c] : fin) {
      if (pending_.count(b) != 0) {
        rewrite = true;
        break;
      }
    }
  }
  if (rewrite) {
    // A block written since the last data flush: its pair's older slot
    // still describes durable data, and the newest is not durable yet.
    // Flush the data (every earlier batch is applied: apply runs on this
    // job), which settles every pending block.
    if (Status s = lower_device()->flush(); !s.ok()) return wb_->fail(s);
    data_flushes_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lock(pairs_mu_);
    retire_locked(applied_seq_);
  }
  std::vector<uint64_t> blocks;
  blocks.reserve(fin.size());
  for (const auto& [b, c] : fin) blocks.push_back(b);
  std::sort(blocks.begin(), blocks.end());
  // Pairs left with two checksums by a crash (not pending, yet unsettled):
  // settle them on the one the data on the device matches, first.
  std::vector<std::pair<uint64_t, Pair>> current;
  std::vector<uint64_t> ambiguous;
  {
    std::lock_guard lock(pairs_mu_);
    std::vector<Pair> one;
    for (uint64_t b : blocks) {
      if (Status s = md_->pairs(b, b + 1, &one); !s.ok()) return wb_->fail(s);
      current.emplace_back(b, one[0]);
      if (one[0].state != PairState::kEmpty && one[0].a != one[0].b) ambiguous.push_back(b);
    }
  }
  if (!ambiguous.empty()) {
    AlignedBuf blk(bs_);
    size_t k = 0;
    for (auto& [b, p] : current) {
      if (k == ambiguous.size() || ambiguous[k] != b) continue;
      ++k;
      if (Status s = lower_device()->read(b * bs_, blk.span()); !s.ok()) return wb_->fail(s);
      const uint32_t c = block_checksum(b, bs_, blk.span());
      const uint32_t keep = c == p.older() ? p.older() : p.newest();  // torn data matches neither
      p.a = p.b = keep;
    }
  }
  std::vector<std::pair<uint64_t, Pair>> updates;
  updates.reserve(current.size());
  for (auto& [b, p] : current) {
    const uint32_t n = fin[b];
    Pair q;
    if (p.state == PairState::kEmpty) {
      q = Pair{PairState::kA, n, zero_checksum(b, bs_)};
    } else if (p.state == PairState::kA) {
      q = Pair{PairState::kB, p.a, n};  // the new checksum beside the settled one
    } else {
      q = Pair{PairState::kA, n, p.b};
    }
    updates.emplace_back(b, q);
  }
  {
    std::lock_guard lock(pairs_mu_);
    if (Status s = md_->set_pairs(std::move(updates)); !s.ok()) return wb_->fail(s);
  }
  // Group commit: one metadata flush for every write of the batch.
  if (Status s = md_->write_dirty(); !s.ok()) {
    return wb_->fail(Status::Error(s.code(), "csum: writing checksums failed: " + why(s)));
  }
  commits_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(pairs_mu_);
  ++committed_seq_;
  for (uint64_t b : blocks) pending_[b] = committed_seq_;
  return Status::Ok();
}

void CsumTarget::apply_batch(WriteBehind::Batch& batch, const Status& committed) {
  if (!committed.ok()) {
    for (auto& q : batch) q->status = Status::Error(EIO, "csum: checksum commit failed: " + why(committed));
    return;
  }
  if (mode_ == Mode::kJournal) {
    // The commit wrote everything in place already (csum_journal.cc).
    std::lock_guard lock(pairs_mu_);
    applied_seq_ = committed_seq_;
    return;
  }
  // A block written twice in the batch got the last write's checksum: only
  // that write's data goes to it.
  std::unordered_map<uint64_t, size_t> last;
  uint64_t total = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ChecksumOp& op = static_cast<const ChecksumOp&>(*batch[i]);
    if (op.kind == kOpAccept) continue;  // writes nothing
    for (uint64_t b = op.first; b < op.end; ++b) last[b] = i;
    total += op.end - op.first;
  }
  const bool overlaps = last.size() != total;
  for (size_t i = 0; i < batch.size(); ++i) {
    ChecksumOp& op = static_cast<ChecksumOp&>(*batch[i]);
    if (op.kind == kOpAccept) continue;
    Status s;
    uint64_t b = op.first;
    while (s.ok() && b < op.end) {
      // The next run of blocks this op owns.
      while (b < op.end && overlaps && last[b] != i) ++b;
      uint64_t e = b;
      while (e < op.end && (!overlaps || last[e] == i)) ++e;
      if (b == e) break;
      const uint64_t off = b * bs_, len = (e - b) * bs_;
      if (op.kind == kOpWrite) {
        s = lower_device()->write(off, op.data.span().subspan((b - op.first) * bs_, len), op.flags);
      } else {
        // Trim becomes zeroes that may unmap: the checksum says zeroes.
        s = lower_device()->write_zeroes(off, len, op.kind == kOpTrim ? (op.flags & kFua) : op.flags);
      }
      b = e;
    }
    // An acknowledged write that cannot be written is lost: only a sticky
    // failure can tell the client (at its next flush).
    if (!s.ok() && !op.wait)
      (void)wb_->fail(Status::Error(s.code(), "csum: writing acknowledged data: " + why(s)));
    op.status = std::move(s);
  }
  std::lock_guard lock(pairs_mu_);
  applied_seq_ = committed_seq_;
}

void CsumTarget::retire_locked(uint64_t upto) {
  std::vector<std::pair<uint64_t, Pair>> updates;
  std::vector<uint64_t> done;
  for (const auto& [b, seq] : pending_) {
    if (seq <= upto) done.push_back(b);
  }
  if (done.empty()) return;
  std::sort(done.begin(), done.end());
  std::vector<Pair> one;
  for (uint64_t b : done) {
    pending_.erase(b);
    if (!md_->pairs(b, b + 1, &one).ok()) continue;  // damaged since: reads report it
    Pair p = one[0];
    if (p.state == PairState::kEmpty || p.a == p.b) continue;
    p.a = p.b = p.newest();
    updates.emplace_back(b, p);
  }
  // Written whenever the cache likes: the data they describe is durable.
  if (Status s = md_->set_pairs(std::move(updates)); !s.ok()) {
    spdlog::warn("csum: settling checksums after a flush: {}", why(s));
  }
}

Status CsumTarget::flush() {
  if (mode_ == Mode::kRebuild) return flush_rebuild();
  if (mode_ == Mode::kJournal) {
    // Every acknowledged write is in a durable journal record once drained.
    if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
    return Status::Ok();
  }
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  uint64_t upto;
  {
    std::lock_guard lock(pairs_mu_);
    upto = applied_seq_;
  }
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  std::lock_guard lock(pairs_mu_);
  retire_locked(upto);
  return Status::Ok();
}

Status CsumTarget::detach() {
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  return Status::Ok();
}

}  // namespace bowstack::csum
