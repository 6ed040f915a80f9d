// csum's online checks: the scrub job, the list of bad blocks, the control
// messages and the explicit acceptance of a block's data (`rewrite`).
//
// Scrub reads through the same rule as a client read (wait for a queued
// write to the range, read, compare with either slot, re-check a mismatch
// once) but never fails anyone: what it finds is counted and listed. Its
// progress (state, cursor, count) is in the superblock, written every
// kPersistEvery and at stop, pause and close, so a pass survives a restart.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>

#include "core/parse.h"
#include "targets/csum/csum_target.h"

namespace bowstack::csum {

namespace {

constexpr uint64_t kChunkBlocks = kPairsPerSector * 4;
constexpr auto kPersistEvery = std::chrono::seconds(30);
enum ScrubState : uint32_t { kNever = 0, kRunning = 1, kPaused = 2, kDone = 3, kStopped = 4 };

const char* scrub_state_name(uint32_t s) {
  switch (s) {
    case kRunning:
      return "running";
    case kPaused:
      return "paused";
    case kDone:
      return "done";
    case kStopped:
      return "stopped";
    default:
      return "never";
  }
}

uint64_t unix_now() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

std::string_view trim_spaces(std::string_view t) {
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  return t;
}

}  // namespace

bool CsumTarget::note_bad(uint64_t block, bool metadata, const char* found_by) {
  std::lock_guard lock(pairs_mu_);
  if (bad_.size() >= kMaxListed && bad_.count(block) == 0) return false;
  auto [it, added] = bad_.try_emplace(block, BadBlock{block, metadata, found_by, unix_now()});
  (void)it;
  return added;
}

std::vector<CsumTarget::BadBlock> CsumTarget::bad_blocks() const {
  std::lock_guard lock(pairs_mu_);
  std::vector<BadBlock> out;
  out.reserve(bad_.size());
  for (const auto& [b, v] : bad_) out.push_back(v);
  return out;
}

Status CsumTarget::rewrite_block(uint64_t block) {
  if (block >= blocks_) {
    return Status::Error(EINVAL, fmt::format("csum: block {} is past the end ({} blocks)", block, blocks_));
  }
  // The accept op takes the checksum of what the device holds when its batch
  // commits, after every earlier write to the block (csum_io.cc); the flush
  // then settles it, so only the accepted checksum remains.
  if (Status s = queue(block, block + 1, nullptr, 0, kOpAccept); !s.ok()) return s;
  if (Status s = flush(); !s.ok()) return s;
  {
    std::lock_guard lock(pairs_mu_);
    bad_.erase(block);
  }
  spdlog::warn("csum: block {} (byte offset {}): its current data was accepted as correct by request", block,
               block * bs_);
  return Status::Ok();
}

Status CsumTarget::persist_scrub_locked(uint32_t state, bool finished) {
  Superblock sb = md_->superblock();
  sb.scrub_state = state;
  sb.scrub_cursor = scrub_cursor_.load();
  sb.scrub_mismatches = scrub_found_.load();
  if (finished) sb.scrub_finished = unix_now();
  if (Status s = md_->commit_superblock(sb); !s.ok()) {
    spdlog::warn("csum: recording scrub progress: {}", why(s));
    return s;
  }
  return Status::Ok();
}

Status CsumTarget::start_scrub() {
  std::lock_guard lock(admin_mu_);
  if (scrub_job_ != nullptr) {
    const JobState st = scrub_job_->state();
    if (st == JobState::kRunning || st == JobState::kPaused) {
      return Status::Error(EBUSY, fmt::format("csum: a scrub is {} at block {} of {}; 'scrub stop' ends it{}",
                                              scrub_user_paused_ ? "paused" : "running", scrub_cursor_.load(),
                                              blocks_, scrub_user_paused_ ? ", 'scrub resume' goes on" : ""));
    }
  }
  Superblock sb = md_->superblock();
  sb.scrub_started = unix_now();
  sb.scrub_cursor = 0;
  sb.scrub_mismatches = 0;
  sb.scrub_state = kRunning;
  if (Status s = md_->commit_superblock(sb); !s.ok()) return s;
  scrub_cursor_ = 0;
  scrub_found_ = 0;
  return start_scrub_locked(0, false);
}

Status CsumTarget::start_scrub_locked(uint64_t from, bool paused) {
  scrub_user_paused_ = paused;
  scrub_job_ =
      jobs_->start("scrub", Job::Kind::kTask, [this, from](JobControl& jc) { return scrub_body(jc, from); });
  scrub_job_->set_rate(scrub_rate_);
  if (paused) scrub_job_->pause();
  return Status::Ok();
}

Status CsumTarget::scrub_body(JobControl& jc, uint64_t from) {
  // Progress counts what is left of the pass: done() paces by the bytes it
  // is given, so the part before a restart must not count.
  jc.set_total((blocks_ - std::min(from, blocks_)) * bs_);
  AlignedBuf buf(kChunkBlocks * bs_);
  auto persisted = std::chrono::steady_clock::now();
  uint64_t b = from;
  while (b < blocks_) {
    if (!jc.wait_while_paused() || jc.stopping()) break;
    const uint64_t e = std::min(blocks_, b + kChunkBlocks);
    uint64_t found = 0;
    if (Status s = scrub_range(b, e, buf, &found); !s.ok()) {
      const Status err = Status::Error(
          s.code(), fmt::format("csum: scrub stopped at block {}: reading the data failed: {}", b, why(s)));
      spdlog::error("{}", why(err));
      std::lock_guard lock(admin_mu_);
      (void)persist_scrub_locked(kStopped, false);
      return err;
    }
    scrub_found_ += found;
    scrub_found_run_ += found;
    jc.done((e - b) * bs_);
    b = e;
    scrub_cursor_ = b;
    if (std::chrono::steady_clock::now() - persisted >= kPersistEvery) {
      persisted = std::chrono::steady_clock::now();
      std::lock_guard lock(admin_mu_);
      (void)persist_scrub_locked(scrub_user_paused_ ? kPaused : kRunning, false);
    }
  }
  // Stopped by the target's close: the close records the pass as running,
  // so the next open continues it.
  if (closing_.load()) return Status::Ok();
  std::lock_guard lock(admin_mu_);
  if (b < blocks_) {
    (void)persist_scrub_locked(kStopped, false);
    spdlog::info("csum: scrub stopped at block {} of {}", b, blocks_);
    return Status::Ok();
  }
  spdlog::info("csum: scrub done: {} blocks, {} bad", blocks_, scrub_found_.load());
  return persist_scrub_locked(kDone, true);
}

Status CsumTarget::scrub_range(uint64_t first, uint64_t end, AlignedBuf& buf, uint64_t* found) {
  std::vector<Pair> pairs;
  for (uint64_t s0 = first; s0 < end;) {
    const uint64_t s1 = std::min(end, (s0 / kPairsPerSector + 1) * kPairsPerSector);
    Status ms;
    {
      std::lock_guard lock(pairs_mu_);
      ms = md_->pairs(s0, s1, &pairs);
    }
    if (!ms.ok()) {
      metadata_errors_.fetch_add(1, std::memory_order_relaxed);
      ++*found;
      if (note_bad(s0, true, "scrub")) {
        spdlog::error("csum: scrub: the checksums of blocks {}..{} cannot be read: {}", s0, s1 - 1, why(ms));
      }
      s0 = s1;
      continue;
    }
    const bool unwritten =
        std::all_of(pairs.begin(), pairs.end(), [](const Pair& p) { return p.state == PairState::kEmpty; });
    if (unwritten) {
      // Never written since format: nothing to read if the device agrees.
      auto holes = only_holes(*lower_device(), s0 * bs_, (s1 - s0) * bs_);
      if (holes.ok() && *holes) {
        s0 = s1;
        continue;
      }
    }
    auto span = buf.span().first((s1 - s0) * bs_);
    wb_->wait_not_pending(s0, s1);
    if (Status s = lower_device()->read(s0 * bs_, span); !s.ok()) return s;
    uint64_t from = s0;
    while (from < s1) {
      uint64_t bad = 0;
      bool ok = false;
      if (Status s = verify(from, s1, span.subspan((from - s0) * bs_), &bad, &ok); !s.ok()) return s;
      if (ok) break;
      // A write may have landed between the read and the lookup: read that
      // block again once it is not queued.
      auto one = span.subspan((bad - s0) * bs_, bs_);
      const uint64_t queued = wb_->submitted();
      wb_->wait_not_pending(bad, bad + 1);
      if (Status s = lower_device()->read(bad * bs_, one); !s.ok()) return s;
      if (Status s = verify(bad, bad + 1, one, &bad, &ok); !s.ok()) return s;
      // Still racing writes to it: the block is being rewritten, not bad.
      if (!ok && wb_->submitted() != queued) ok = true;
      if (!ok) {
        ++*found;
        if (note_bad(bad, false, "scrub")) {
          spdlog::error("csum: scrub: block {} (bytes {}..{}) does not match its checksum", bad, bad * bs_,
                        (bad + 1) * bs_ - 1);
        }
      }
      from = bad + 1;
    }
    s0 = s1;
  }
  return Status::Ok();
}

Result<std::string> CsumTarget::message(std::string_view text) {
  text = trim_spaces(text);
  if (text == "scrub" || text == "scrub start") {
    if (Status s = start_scrub(); !s.ok()) return s;
    return fmt::format("scrub started: {} blocks at {}", blocks_,
                       scrub_rate_ == 0 ? std::string("full speed") : format_size(scrub_rate_) + "/s");
  }
  if (text == "scrub stop" || text == "scrub pause" || text == "scrub resume") {
    Job* job = nullptr;
    {
      std::lock_guard lock(admin_mu_);
      job = scrub_job_;
      const bool live = job && (job->state() == JobState::kRunning || job->state() == JobState::kPaused);
      if (!live) return Status::Error(EINVAL, "csum: no scrub is running (start one with 'scrub')");
      if (text == "scrub pause") {
        job->pause();
        scrub_user_paused_ = true;
        (void)persist_scrub_locked(kPaused, false);
        return fmt::format("scrub paused at block {} of {}", scrub_cursor_.load(), blocks_);
      }
      if (text == "scrub resume") {
        job->resume();
        scrub_user_paused_ = false;
        (void)persist_scrub_locked(kRunning, false);
        return fmt::format("scrub resumed at block {} of {}", scrub_cursor_.load(), blocks_);
      }
    }
    // Not under admin_mu_: the job takes it to record that it stopped.
    job->stop();
    return fmt::format("scrub stopped at block {} of {}", scrub_cursor_.load(), blocks_);
  }
  for (std::string_view prefix : {"scrub_rate=", "scrub rate="}) {
    if (text.substr(0, prefix.size()) != prefix) continue;
    auto rate = parse_size(text.substr(prefix.size()), "scrub_rate");
    if (!rate.ok()) return rate.status();
    std::lock_guard lock(admin_mu_);
    scrub_rate_ = *rate;
    if (scrub_job_) scrub_job_->set_rate(*rate);
    return *rate == 0 ? std::string("scrub rate: unlimited") : "scrub rate: " + format_size(*rate) + "/s";
  }
  if (text == "mismatches") {
    nlohmann::json j;
    j["block_size"] = bs_;
    j["blocks"] = nlohmann::json::array();
    for (const BadBlock& b : bad_blocks()) {
      j["blocks"].push_back({{"block", b.block},
                             {"offset", b.block * bs_},
                             {"found_by", b.found_by},
                             {"what", b.metadata ? "checksums unreadable" : "data mismatch"},
                             {"when", b.when}});
    }
    j["read_mismatches"] = mismatches_.load();
    j["scrub_found"] = scrub_found_.load();
    return j.dump();
  }
  if (text.substr(0, 8) == "rewrite ") {
    const std::string_view arg = trim_spaces(text.substr(8));
    uint64_t n = 0;
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
    if (ec != std::errc() || end != arg.data() + arg.size() || arg.empty()) {
      return Status::Error(EINVAL, fmt::format("csum: rewrite: '{}' is not a block number", arg));
    }
    if (Status s = rewrite_block(n); !s.ok()) return s;
    return fmt::format("block {} accepted: its checksum now describes its current data", n);
  }
  return BlockDevice::message(text);
}

void CsumTarget::describe_scrub(nlohmann::json* out) const {
  const Superblock sb = md_->superblock();
  const char* state = scrub_state_name(sb.scrub_state);
  uint64_t rate;
  {
    std::lock_guard lock(admin_mu_);
    rate = scrub_rate_;
    if (scrub_job_) {
      const JobState js = scrub_job_->state();
      // A pause asked for takes effect at the next chunk: report it now.
      state = js == JobState::kRunning && scrub_user_paused_ ? "paused" : job_state_name(js);
    }
  }
  const uint64_t cursor = scrub_cursor_.load();
  (*out)["scrub"] = {{"state", state},
                     {"cursor", cursor},
                     {"percent", blocks_ == 0 ? 100.0 : 100.0 * static_cast<double>(cursor) / blocks_},
                     {"found", scrub_found_.load()},
                     {"rate_bytes_s", rate},
                     {"started", sb.scrub_started},
                     {"finished", sb.scrub_finished}};
}

}  // namespace bowstack::csum
