// bow's commit pipeline: the committer makes batches of saved copies and
// log entries durable; the applier then writes their overwrites.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
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

// ---- Committer ------------------------------------------------------------

bool BowTarget::batch_full_locked() const {
  return queue_.size() >= kGatherWrites || pending_bytes_ >= opts_.max_pending_bytes / 2;
}

void BowTarget::end_gathering_locked() {
  if (committer_gathering_ && (commit_now_ || batch_full_locked())) {
    committer_gathering_ = false;  // one wake-up is enough
    work_cv_.notify_one();
  }
}

void BowTarget::committer_loop() {
  for (;;) {
    std::vector<std::shared_ptr<Pending>> batch;
    {
      std::unique_lock q(q_mu_);
      while (!stop_ && queue_.empty()) {
        committer_waiting_ = true;
        work_cv_.wait(q);
      }
      committer_waiting_ = false;
      if (queue_.empty()) return;  // stopping, and drained
      // Group commit, gathered: a batch costs two barriers however many
      // writes it holds, and these writes are acknowledged already, so
      // waiting briefly for more costs no client anything, while waking
      // per handful of writes cost a context switch and two barriers each
      // (docs/performance.md, run 9). A flush or FUA write, a full batch,
      // pressure on the pending memory or stopping ends the wait at once.
      if (opts_.gather_us > 0 && !stop_ && !commit_now_ && !batch_full_locked()) {
        committer_gathering_ = true;
        work_cv_.wait_for(q, std::chrono::microseconds(opts_.gather_us),
                          [this] { return stop_ || commit_now_ || batch_full_locked(); });
        committer_gathering_ = false;
      }
      commit_now_ = false;
      batch.assign(queue_.begin(), queue_.end());
      queue_.clear();
    }
    uint64_t new_s0c = 0;
    Status s = log_batch(batch, &new_s0c);
    // The saved copies are on disk (or failed): their memory can go now.
    uint64_t freed = 0;
    {
      std::lock_guard q(q_mu_);
      for (auto& p : batch) {
        uint64_t n = 0;
        for (const auto& sv : p->saved) n += sv.data.size();
        p->saved.clear();
        p->bytes -= n;
        freed += n;
      }
      pending_bytes_ -= freed;
      logged_.push_back(Logged{std::move(batch), std::move(s), new_s0c});
      if (applier_waiting_) {
        applier_waiting_ = false;
        logged_cv_.notify_one();
      }
    }
    if (freed > 0) space_cv_.notify_all();
  }
}

Status BowTarget::log_batch(std::vector<std::shared_ptr<Pending>>& batch, uint64_t* new_s0c) {
  Status s = failure();
  if (!s.ok()) return s;
  std::vector<LogEntry> entries;
  std::optional<size_t> move;
  for (auto& p : batch) {
    for (size_t i = 0; i < p->entries.size(); ++i) {
      // A write that moves the live block 0 has that entry first.
      if (p->moves_s0c && i == 0) move = entries.size();
      entries.push_back(p->entries[i]);
    }
    if (p->moves_s0c) *new_s0c = p->new_s0c;
  }
  // The saved copies become durable together with the log writes that
  // must precede the new header (append_entries decides the grouping).
  std::vector<WriteRef> saved;
  for (auto& p : batch) {
    for (auto& sv : p->saved) saved.push_back({sv.dest * bs_, sv.data.span()});
  }
  std::lock_guard log_lock(log_mu_);
  return append_entries(entries, move, std::move(saved));
}

void BowTarget::applier_loop() {
  for (;;) {
    Logged next;
    {
      std::unique_lock q(q_mu_);
      while (!applier_stop_ && logged_.empty()) {
        applier_waiting_ = true;
        logged_cv_.wait(q);
      }
      applier_waiting_ = false;
      if (logged_.empty()) return;  // stopping, and drained
      next = std::move(logged_.front());
      logged_.pop_front();
    }
    Status s = apply_batch(next.batch, std::move(next.status), next.new_s0c);
    {
      std::lock_guard q(q_mu_);
      for (auto& p : next.batch) {
        p->done = true;
        p->status = s;
        pending_bytes_ -= p->bytes;
      }
      applied_ += next.batch.size();
    }
    done_cv_.notify_all();
    space_cv_.notify_all();
  }
}

Status BowTarget::apply_batch(std::vector<std::shared_ptr<Pending>>& batch, Status s, uint64_t new_s0c) {
  // The log covers every saved copy of this batch: the overwrites may go.
  // Batches are applied in log order, so s0c_ already reflects every
  // earlier move of the live block 0.
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
    s = write_physical(p->first, p->data.span(), p->flags & kFua, s0c);
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
