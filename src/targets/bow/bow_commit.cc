// bow's commit pipeline, on the core's write-behind: the commit job makes
// batches of saved copies and log entries durable; the apply job then
// writes their overwrites.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/parse.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/bow_target_internal.h"

namespace bowstack::bow {

using namespace internal;

// ---- The pipeline -------------------------------------------------------

void BowTarget::start_write_behind() {
  WriteBehind::Hooks h;
  h.commit = [this](WriteBehind::Batch& batch) { return log_batch(batch); };
  // The saved copies are on disk (or failed): their memory can go before
  // the overwrites are applied.
  h.committed = [](WriteBehind::Batch& batch) {
    for (auto& op : batch) {
      auto& p = static_cast<Pending&>(*op);
      uint64_t n = 0;
      for (const auto& sv : p.saved) n += sv.data.size();
      p.saved.clear();
      p.bytes -= n;
    }
  };
  h.apply = [this](WriteBehind::Batch& batch, const Status& logged) {
    Status s = apply_batch(batch, logged);
    for (auto& op : batch) op->status = s;
  };
  // Group commit, gathered: a batch costs two barriers however many writes
  // it holds, and these writes are acknowledged already, so waiting briefly
  // for more costs no client anything, while waking per handful of writes
  // cost a context switch and two barriers each (docs/performance.md, run
  // 9). The applier runs beside the committer, so the next batch's barriers
  // wait for the device while this one's data is written. Bow orders
  // overlapping writes with its own busy set (they wait there, before
  // planning), so the pipeline keeps no pending blocks.
  wb_ = std::make_unique<WriteBehind>(jobs_,
                                      WriteBehind::Options{.max_pending_bytes = opts_.max_pending_bytes,
                                                           .gather_us = opts_.gather_us,
                                                           .full_batch = kGatherWrites,
                                                           .apply_job = true},
                                      std::move(h));
}

Status BowTarget::log_batch(WriteBehind::Batch& batch) {
  Status s = failure();
  if (!s.ok()) return s;
  std::vector<LogEntry> entries;
  std::optional<size_t> move;
  for (auto& op : batch) {
    const auto& p = static_cast<const Pending&>(*op);
    for (size_t i = 0; i < p.entries.size(); ++i) {
      // A write that moves the live block 0 has that entry first.
      if (p.moves_s0c && i == 0) move = entries.size();
      entries.push_back(p.entries[i]);
    }
  }
  // The saved copies become durable together with the log writes that
  // must precede the new header (append_entries decides the grouping).
  std::vector<WriteRef> saved;
  for (auto& op : batch) {
    for (auto& sv : static_cast<Pending&>(*op).saved) saved.push_back({sv.dest * bs_, sv.data.span()});
  }
  std::lock_guard log_lock(log_mu_);
  return append_entries(entries, move, std::move(saved));
}

Status BowTarget::apply_batch(WriteBehind::Batch& ops, Status s) {
  // The log covers every saved copy of this batch: the overwrites may go.
  // Batches are applied in log order, so s0c_ already reflects every
  // earlier move of the live block 0; a move inside this batch applies to
  // all of it (the batch's writes hold disjoint blocks).
  std::vector<Pending*> batch;
  batch.reserve(ops.size());
  uint64_t new_s0c = 0;
  for (auto& op : ops) {
    batch.push_back(static_cast<Pending*>(op.get()));
    if (batch.back()->moves_s0c) new_s0c = batch.back()->new_s0c;
  }
  uint64_t s0c;
  std::shared_ptr<ResumeJournal> journal;
  {
    std::lock_guard lock(mu_);
    s0c = new_s0c != 0 ? new_s0c : s0c_;
    journal = journal_;
    if (s.ok() && !failed_.ok()) s = Status::Error(EIO, "bow: device failed earlier");
  }
  bool fua = false, claims = false;
  for (auto& p : batch) {
    fua = fua || (p->flags & kFua);
    claims = claims || p->has_claims;
  }
  for (auto& p : batch) {
    if (!s.ok()) break;
    s = write_physical(p->data_block, p->data.span(), p->flags & kFua, s0c);
  }
  if (s.ok() && fua && claims && journal) s = journal->sync();
  if (!s.ok()) (void)fail(s);

  std::lock_guard lock(mu_);
  if (s.ok()) {
    for (auto& p : batch) {
      for (const auto& [b, e] : p->sources) map_.set(b, e - b, BlockType::kChanged);
      if (p->moves_s0c) {
        map_.set(p->old_s0c, 1, BlockType::kChanged);
        map_.set(p->new_s0c, 1, BlockType::kSector0Live);
        s0c_ = p->new_s0c;
      }
    }
  }
  for (auto& p : batch) {
    for (const auto& [b, e] : p->busy) busy_.clear(b, e);
  }
  cv_.notify_all();
  return s;
}

}  // namespace bowstack::bow
