// bow: construction, start-up and shutdown, status and messages.
#include "targets/bow/bow_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/parse.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_target_internal.h"

namespace bowstack::bow {

using namespace internal;

const char* state_name(State s) {
  switch (s) {
    case State::kTrim:
      return "TRIM";
    case State::kCheckpoint:
      return "CHECKPOINT";
    case State::kCommitted:
      return "COMMITTED";
  }
  return "?";
}

BowTarget::BowTarget(std::shared_ptr<BlockDevice> lower, BowOptions opts, uint64_t blocks)
    : StackedDevice(std::move(lower)),
      opts_(std::move(opts)),
      env_(opts_.env != nullptr ? opts_.env : Env::posix()),
      jobs_(opts_.jobs ? opts_.jobs : std::make_shared<JobRunner>("bow")),
      bs_(opts_.block_size),
      pool_(opts_.block_size, opts_.max_pending_bytes / opts_.block_size + 64),
      spb_(opts_.block_size / 512),
      blocks_(blocks),
      map_(blocks),
      busy_(blocks),
      space_(lower_device().get(), lower_device()->geometry().size) {
  geometry_ = lower_device()->geometry();
  geometry_.size = blocks_ * bs_;
  // bow serves partial blocks itself (read-modify-write under its busy set,
  // with the whole block backed up first), so it needs no sub-block adapter
  // (core/sub_block.h) and tells clients 512 bytes: what a loop device or a
  // kernel filesystem sends at the least.
  geometry_.logical_block_size = 512;
  geometry_.preferred_block_size = std::max(bs_, geometry_.preferred_block_size);
  geometry_.max_io_size = std::max<uint32_t>(bs_, geometry_.max_io_size / bs_ * bs_);
  geometry_.accepts_unaligned = true;
}

BowTarget::~BowTarget() {
  // In this order: the automatic commit uses the pipeline, which applies
  // everything queued before it stops.
  if (auto_commit_) auto_commit_->stop();
  if (wb_) wb_->stop();
}

Result<std::shared_ptr<BowTarget>> BowTarget::open(std::shared_ptr<BlockDevice> lower, BowOptions opts) {
  if (opts.block_size < 512 || opts.block_size > 4096 || (opts.block_size & (opts.block_size - 1)) != 0) {
    return Status::Error(
        EINVAL, fmt::format("bow: block_size {} must be a power of two from 512 to 4096", opts.block_size));
  }
  // A resumed checkpoint dictates the block size.
  auto probed = probe(*lower);
  if (!probed.ok()) return probed.status();
  if (*probed == ProbeResult::kInterruptedRestore) {
    return Status::Error(EBUSY,
                         "bow: the image holds an interrupted restore (magic WOB); finish it with "
                         "'bowstack restore IMAGE' before serving it");
  }
  std::optional<LogChain> chain;
  if (*probed == ProbeResult::kCheckpoint) {
    auto c = read_and_validate(*lower, ValidateOptions{.verify_checksums = false});
    if (!c.ok()) {
      return Status::Error(c.status().code(),
                           "bow: the image holds a checkpoint log that cannot be resumed (" +
                               c.status().message() +
                               "); run 'bowstack restore IMAGE' (add --roll-forward to keep "
                               "the changes)");
    }
    if (opts.block_size_given && opts.block_size != c->block_size) {
      return Status::Error(EINVAL,
                           fmt::format("bow: block_size={} given, but the image's checkpoint log uses {}",
                                       opts.block_size, c->block_size));
    }
    opts.block_size = c->block_size;
    chain = std::move(c.value());
  }
  const Geometry lg = lower->geometry();
  if (opts.block_size % lg.logical_block_size != 0) {
    return Status::Error(EINVAL,
                         fmt::format("bow: block_size {} is not a multiple of the device's block size {}",
                                     opts.block_size, lg.logical_block_size));
  }
  uint64_t blocks = lg.size / opts.block_size;
  if (blocks < 4) {
    return Status::Error(EINVAL,
                         fmt::format("bow: the device below is too small ({} bytes): bow needs at least "
                                     "4 blocks of {} bytes",
                                     lg.size, opts.block_size));
  }
  auto t = std::shared_ptr<BowTarget>(new BowTarget(std::move(lower), std::move(opts), blocks));
  if (chain) {
    if (Status s = t->resume_from(*chain); !s.ok()) return s;
  } else if (!t->opts_.meta_path.empty()) {
    // No checkpoint on the device: any journal is left over from a finished
    // (committed) or never-completed checkpoint.
    if (Status s = ResumeJournal::remove(t->env_, t->opts_.meta_path); !s.ok()) return s;
  }
  t->start_write_behind();
  return t;
}

Result<std::shared_ptr<BlockDevice>> BowTarget::create(TargetContext& ctx, const TargetArgs& args) {
  BowOptions o;
  auto bs = args.get_size("block_size", 4096);
  if (!bs.ok()) return bs.status();
  if (*bs > 4096) return Status::Error(EINVAL, fmt::format("bow: block_size {} must be 512..4096", *bs));
  o.block_size = static_cast<uint32_t>(*bs);
  o.block_size_given = args.has("block_size");
  auto below = args.get_size("auto_commit_below", 0);
  if (!below.ok()) return below.status();
  o.auto_commit_below = *below;
  auto gather = args.get_size("gather_us", o.gather_us);
  if (!gather.ok()) return gather.status();
  if (*gather > 100000) {
    return Status::Error(EINVAL, fmt::format("bow: gather_us {} must be at most 100000 (0.1 s)", *gather));
  }
  o.gather_us = static_cast<uint32_t>(*gather);
  o.meta_path = ctx.side_file("metadata");
  o.env = ctx.env();
  o.jobs = ctx.jobs();
  auto t = open(ctx.data(), std::move(o));
  if (!t.ok()) return t.status();
  if (t.value()->opts_.meta_path.empty()) {
    spdlog::warn(
        "bow: no resume journal (metadata slot off): a crash during a checkpoint can be restored but not "
        "resumed");
  }
  return std::shared_ptr<BlockDevice>(t.value());
}

TargetInfo BowTarget::info() {
  return TargetInfo{
      "bow",
      "backup on write: checkpoint the device in its own free space, then commit or restore (Android dm-bow)",
      {
          {"block_size", "block size in bytes, 512..4096 (default 4096; a resumed checkpoint keeps its own)"},
          {"auto_commit_below",
           "commit automatically when free space falls below this many bytes (default: "
           "never; writes fail with ENOSPC instead)"},
          {"gather_us",
           "microseconds the committer waits to gather acknowledged overwrites into one log commit "
           "(default 500; 0: commit at once; flushes and FUA writes never wait)"},
      },
      {{"data", SlotKind::kDevice, true, "", "", "the device to checkpoint"},
       {"metadata", SlotKind::kSideFile, false, ".bowmeta", "meta",
        "the resume journal (default IMAGE.bowmeta beside the data image; null: none, a crash can then be "
        "restored but not resumed)"}},
      &BowTarget::create,
  };
}

Capabilities BowTarget::capabilities() const {
  Capabilities c = lower_device()->capabilities();
  c.trim = !c.read_only;
  c.write_zeroes = !c.read_only;
  c.fast_zero = false;
  return c;
}

Status BowTarget::fail(Status s) {
  std::lock_guard lock(mu_);
  if (failed_.ok()) {
    spdlog::error("bow: {}; all further I/O fails until the server is restarted", s.message());
    failed_ = s;
  }
  cv_.notify_all();
  return s;
}

Status BowTarget::failure() const {
  std::lock_guard lock(mu_);
  return failed_;
}

// ---- Control --------------------------------------------------------------

Result<std::string> BowTarget::message(std::string_view text) {
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text == "checkpoint") {
    if (Status s = checkpoint(); !s.ok()) return s;
    return std::string("checkpoint taken");
  }
  if (text == "commit") {
    if (Status s = commit(); !s.ok()) return s;
    return std::string("committed");
  }
  return BlockDevice::message(text);
}

BowTarget::Stats BowTarget::stats() const {
  std::lock_guard lock(mu_);
  Stats s{};
  s.state = state_;
  s.block_size = bs_;
  s.free_bytes = state_ == State::kCommitted ? 0 : map_.count(BlockType::kFree) * bs_;
  s.backed_up_bytes = state_ == State::kCheckpoint ? backed_up_bytes_.load() : 0;
  s.log_blocks = state_ == State::kCheckpoint ? log_blocks_.load() : 0;
  s.log_entries = state_ == State::kCheckpoint ? log_entries_.load() : 0;
  s.range_count = map_.run_count();
  s.sector0_block = state_ == State::kCheckpoint ? s0c_ : 0;
  s.failed = !failed_.ok();
  s.pending_bytes = wb_->stats().pending_bytes;
  return s;
}

BlockType BowTarget::block_type(uint64_t block) const {
  std::lock_guard lock(mu_);
  return map_.type_at(block);
}

void BowTarget::describe(nlohmann::json* out) const {
  Stats s = stats();
  auto& j = *out;
  j["state"] = state_name(s.state);
  j["block_size"] = s.block_size;
  j["free_bytes"] = s.free_bytes;
  j["backed_up_bytes"] = s.backed_up_bytes;
  j["log_blocks"] = s.log_blocks;
  j["log_entries"] = s.log_entries;
  j["range_count"] = s.range_count;
  j["pending_bytes"] = s.pending_bytes;
  j["sector0_block"] = s.sector0_block;
  j["resume_journal"] = opts_.meta_path;
  j["auto_commit_below"] = opts_.auto_commit_below;
  j["failed"] = s.failed;
}

std::string BowTarget::status_line() const {
  Stats s = stats();
  return fmt::format("{}, block size {}, free {}, backed up {}, {} log blocks ({} entries), {} ranges{}",
                     state_name(s.state), s.block_size, format_size(s.free_bytes),
                     format_size(s.backed_up_bytes), s.log_blocks, s.log_entries, s.range_count,
                     s.failed ? ", FAILED" : "");
}

}  // namespace bowstack::bow
