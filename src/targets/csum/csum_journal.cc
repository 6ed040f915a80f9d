// csum mode `journal` (docs/format/csum.md section 6; seed 000, option 2):
// data and checksums go to a journal on the metadata device first, made
// durable by one metadata flush per batch (group commit), then the data is
// written in place and the pairs settle on the new checksums. After a crash
// the journal is replayed from its tail, so data and checksum never
// disagree: a torn in-place write is rewritten from the journal, a torn
// record is not committed and was never written in place.
//
// The commit job does everything for a batch (records, flush, in-place
// writes, pairs), in rounds when the batch does not fit in the journal's
// free space: a round is the records that fit, and a checkpoint (data
// flush, pairs written, superblock with the new tail) frees the journal
// between rounds. The pipeline's apply hook has nothing left to write.
//
// Thread-safety: jhead_, jtail_, jused_ and jseq_ belong to the commit job
// (and to start/close, which run while it does not).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>

#include "core/aligned_buf.h"
#include "targets/csum/csum_journal_format.h"
#include "targets/csum/csum_target.h"

namespace bowstack::csum {

namespace {

// One journal entry of the batch, with where its data is (data entries).
struct Item {
  JournalEntry e;
  const std::byte* data = nullptr;
};

}  // namespace

bool CsumTarget::journal_fit(uint64_t* pos, uint64_t* used, uint64_t n) const {
  const uint64_t j = md_->layout().journal_sectors;
  if (*used == 0 || *pos >= jtail_) {
    // Live records (if any) are [jtail_, *pos): room up to the end, or from
    // offset 0 up to (not onto) the tail, the end-space left as waste.
    if (*pos + n <= j) {
      *pos += n;
      *used += n;
      return true;
    }
    if (n < jtail_ || (*used == 0 && n < *pos)) {
      *used += (j - *pos) + n;
      *pos = n;
      return true;
    }
    return false;
  }
  // Wrapped: live records are [jtail_, j) and [0, *pos).
  if (*pos + n < jtail_) {
    *pos += n;
    *used += n;
    return true;
  }
  return false;
}

Status CsumTarget::journal_checkpoint() {
  // Every earlier round and batch is written in place (this job wrote it).
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  if (Status s = md_->write_dirty(); !s.ok()) return s;
  {
    std::lock_guard lock(admin_mu_);
    Superblock sb = md_->superblock();
    sb.journal_tail = jhead_ >= md_->layout().journal_sectors ? 0 : jhead_;
    sb.journal_tail_seq = jseq_;
    if (Status s = md_->commit_superblock(sb); !s.ok()) return s;
    jtail_ = jhead_ = sb.journal_tail;
  }
  jused_ = 0;
  journal_checkpoints_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

Status CsumTarget::journal_apply(const std::vector<JournalEntry>& entries,
                                 const std::vector<const std::byte*>& data) {
  // Pairs first (the records are durable, so any version of them that
  // reaches the disk is backed by the journal), then the data in place,
  // consecutive blocks of one buffer in one write.
  std::vector<std::pair<uint64_t, Pair>> updates;
  for (size_t i = 0; i < entries.size(); ++i) {
    const JournalEntry& e = entries[i];
    if (e.zero()) {
      for (uint64_t b = e.block; b < e.block + e.value; ++b) updates.emplace_back(b, Pair{});
    } else {
      const uint32_t c = e.value;
      updates.emplace_back(e.block, Pair{PairState::kA, c, c});
    }
  }
  // A block written twice keeps its last entry's pair.
  std::stable_sort(updates.begin(), updates.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::pair<uint64_t, Pair>> last;
  for (size_t i = 0; i < updates.size(); ++i) {
    if (i + 1 < updates.size() && updates[i + 1].first == updates[i].first) continue;
    last.push_back(updates[i]);
  }
  {
    std::lock_guard lock(pairs_mu_);
    if (Status s = md_->set_pairs(std::move(last)); !s.ok()) return s;
  }
  size_t i = 0;
  while (i < entries.size()) {
    const JournalEntry& e = entries[i];
    if (e.zero()) {
      if (Status s = lower_device()->write_zeroes(e.block * bs_, uint64_t{e.value} * bs_, 0); !s.ok())
        return s;
      ++i;
      continue;
    }
    size_t k = i + 1;
    while (k < entries.size() && !entries[k].zero() && entries[k].block == e.block + (k - i) &&
           data[k] == data[i] + (k - i) * bs_) {
      ++k;
    }
    if (Status s =
            lower_device()->write(e.block * bs_, std::span<const std::byte>(data[i], (k - i) * bs_), 0);
        !s.ok()) {
      return s;
    }
    i = k;
  }
  return Status::Ok();
}

Status CsumTarget::commit_journal(WriteBehind::Batch& batch,
                                  const std::unordered_map<uint64_t, uint32_t>& fin) {
  const Layout& l = md_->layout();
  std::vector<Item> items;
  std::unordered_map<uint64_t, bool> written;  // blocks the batch's entries cover
  for (const auto& q : batch) {
    const ChecksumOp& op = static_cast<const ChecksumOp&>(*q);
    if (op.kind == kOpWrite) {
      for (uint64_t b = op.first; b < op.end; ++b) {
        items.push_back({JournalEntry{b, op.sums[b - op.first], 0}, op.data.data() + (b - op.first) * bs_});
        written[b] = true;
      }
    } else if (op.kind == kOpTrim || op.kind == kOpZeroes) {
      for (uint64_t b = op.first; b < op.end;) {
        const uint64_t n = std::min<uint64_t>(op.end - b, UINT32_MAX);
        items.push_back({JournalEntry{b, static_cast<uint32_t>(n), kEntryZero}, nullptr});
        for (uint64_t x = b; x < b + n; ++x) written[x] = true;
        b += n;
      }
    }
  }
  size_t i = 0;
  uint64_t rounds = 0;
  while (i < items.size()) {
    if (jused_ > l.journal_sectors / 2) {
      if (Status s = journal_checkpoint(); !s.ok()) return wb_->fail(s);
    }
    // Records for items[i..], as many as fit now.
    struct Rec {
      size_t first, end;
      uint64_t pos, sectors, data_blocks;
    };
    std::vector<Rec> recs;
    uint64_t pos = jhead_, used = jused_;
    size_t k = i;
    while (k < items.size()) {
      const size_t end = std::min(items.size(), k + kJournalMaxEntries);
      uint64_t data_blocks = 0;
      for (size_t x = k; x < end; ++x) data_blocks += items[x].e.zero() ? 0 : 1;
      const uint64_t n = journal_record_sectors(data_blocks, bs_);
      uint64_t p = pos, u = used;
      if (!journal_fit(&p, &u, n)) break;
      recs.push_back({k, end, p - n, n, data_blocks});
      pos = p;
      used = u;
      k = end;
    }
    if (recs.empty()) {
      if (jused_ == 0) {
        return wb_->fail(Status::Error(
            ENOSPC, fmt::format("csum: the journal ({} sectors) cannot hold one record", l.journal_sectors)));
      }
      if (Status s = journal_checkpoint(); !s.ok()) return wb_->fail(s);
      continue;
    }
    // Write the round's records, then one metadata flush: the group commit.
    std::vector<JournalEntry> entries;
    std::vector<const std::byte*> data;
    for (const Rec& r : recs) {
      AlignedBuf buf(r.sectors * kSector);
      JournalDescriptor d;
      d.location = l.journal_start + r.pos;
      d.sequence = jseq_++;
      d.data_sectors = r.data_blocks * (bs_ / kSector);
      std::byte* out = buf.data() + kJournalPage;
      for (size_t x = r.first; x < r.end; ++x) {
        d.entries.push_back(items[x].e);
        entries.push_back(items[x].e);
        data.push_back(items[x].data);
        if (!items[x].e.zero()) {
          std::copy(items[x].data, items[x].data + bs_, out);
          out += bs_;
        }
      }
      encode_journal_descriptor(d, md_->superblock().uuid, buf.span().first(kJournalPage));
      if (Status s = md_->device().write(d.location * kSector, buf.span(), 0); !s.ok()) {
        return wb_->fail(Status::Error(s.code(), "csum: writing the journal failed: " + why(s)));
      }
    }
    if (Status s = md_->device().flush(); !s.ok()) {
      return wb_->fail(Status::Error(s.code(), "csum: flushing the journal failed: " + why(s)));
    }
    jhead_ = pos;
    jused_ = used;
    commits_.fetch_add(1, std::memory_order_relaxed);
    ++rounds;
    if (Status s = journal_apply(entries, data); !s.ok()) {
      return wb_->fail(Status::Error(s.code(), "csum: writing journalled data in place: " + why(s)));
    }
    i = k;
  }
  // Blocks only accepted (no entry): their checksum is that of the data the
  // device holds, which is durable or in the journal still.
  std::vector<std::pair<uint64_t, Pair>> accepted;
  for (const auto& [b, c] : fin) {
    if (written.count(b) == 0) accepted.emplace_back(b, Pair{PairState::kA, c, c});
  }
  std::lock_guard lock(pairs_mu_);
  if (!accepted.empty()) {
    if (Status s = md_->set_pairs(std::move(accepted)); !s.ok()) return wb_->fail(s);
  }
  ++committed_seq_;
  return Status::Ok();
}

Status CsumTarget::recover_journal() {
  const Superblock sb = md_->superblock();
  uint64_t records = 0, blocks = 0;
  auto end = walk_journal(md_->device(), sb, [&](const JournalRecord& r) -> Status {
    std::vector<const std::byte*> data;
    const std::byte* p = r.data.data();
    for (const JournalEntry& e : r.desc.entries) {
      data.push_back(e.zero() ? nullptr : p);
      if (!e.zero()) p += bs_;
      blocks += e.zero() ? e.value : 1;
    }
    ++records;
    return journal_apply(r.desc.entries, data);
  });
  if (!end.ok()) return end.status();
  uint64_t pos = end->pos, seq = end->seq;
  jhead_ = jtail_ = pos >= md_->layout().journal_sectors ? 0 : pos;
  // Records past the one that stopped replay may still be on disk (written
  // before the crash, never committed as a whole): new records must never
  // reuse their sequence numbers, or a later replay could apply them after
  // newer data. No more than journal_sectors / 8 records fit in the journal.
  jseq_ = seq + md_->layout().journal_sectors / 8 + 1;
  jused_ = 0;
  spdlog::warn("csum: the last stop was not clean: replayed {} journal records ({} blocks)", records, blocks);
  // Durable in place, then the tail past what was replayed.
  return journal_checkpoint();
}

}  // namespace bowstack::csum
