// csum: construction, the registry factory, clean close, status.
#include "targets/csum/csum_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "core/parse.h"
#include "targets/csum/integrity_target.h"
#include "targets/csum/whole_blocks.h"

namespace bowstack::csum {

CsumTarget::CsumTarget(std::shared_ptr<BlockDevice> data, std::unique_ptr<CsumMetadata> md, CsumOptions opts)
    : StackedDevice(std::move(data)),
      opts_(std::move(opts)),
      md_(std::move(md)),
      bs_(md_->layout().block_size),
      blocks_(md_->layout().nr_blocks),
      scrub_rate_(opts_.scrub_rate) {
  jobs_ = opts_.jobs ? opts_.jobs : std::make_shared<JobRunner>("csum");
}

Result<std::shared_ptr<CsumTarget>> CsumTarget::open(std::shared_ptr<BlockDevice> data,
                                                     std::shared_ptr<BlockDevice> metadata,
                                                     CsumOptions opts) {
  const Geometry dg = data->geometry();
  auto blank = CsumMetadata::is_blank(*metadata);
  if (!blank.ok()) return Status::Error(blank.status().code(), "csum: metadata: " + why(blank.status()));
  if (*blank) {
    auto empty = only_holes(*data, 0, dg.size);
    if (!empty.ok()) return empty.status();
    if (!*empty) {
      return Status::Error(
          EINVAL,
          "csum: the checksum metadata is blank but the data device already holds data; csum "
          "never takes existing data as correct by itself: accept it explicitly with "
          "'bowstack csum format IMAGE' (server stopped), or start from an empty image");
    }
    FormatParams p;
    p.block_size = opts.block_size;
    p.mode = opts.mode;
    if (opts.mode == Mode::kJournal) p.journal_sectors = opts.journal_size / kSector;
    p.data_size = dg.size;
    p.uuid = random_uuid();
    p.created = opts.now != 0 ? opts.now
                              : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                          std::chrono::system_clock::now().time_since_epoch())
                                                          .count());
    if (Status s = CsumMetadata::format(*metadata, p); !s.ok()) {
      return Status::Error(s.code(), "csum: formatting the metadata: " + why(s));
    }
    spdlog::info("csum: formatted new metadata: {} blocks of {} bytes, mode {}", dg.size / p.block_size,
                 p.block_size, mode_name(p.mode));
  }
  auto md = CsumMetadata::open(metadata, opts.cache);
  if (!md.ok())
    return Status::Error(md.status().code(), "csum: cannot use the metadata: " + why(md.status()));
  const Superblock sb = (*md)->superblock();
  if (opts.block_size_given && opts.block_size != sb.layout.block_size) {
    return Status::Error(EINVAL, fmt::format("csum: block_size={} given, but the metadata uses {}",
                                             opts.block_size, sb.layout.block_size));
  }
  if (sb.layout.data_size != dg.size) {
    return Status::Error(EINVAL,
                         fmt::format("csum: the metadata belongs to a data device of {} bytes; this one "
                                     "has {}; refusing to use it",
                                     sb.layout.data_size, dg.size));
  }
  const Mode mode = opts.mode_given ? opts.mode : sb.mode;
  if (mode == Mode::kJournal && sb.layout.journal_sectors == 0) {
    return Status::Error(EINVAL,
                         "csum: mode=journal needs a journal, and this metadata was formatted without one; "
                         "'bowstack csum format --force --journal-size N IMAGE' (server stopped) makes one, "
                         "accepting the current data");
  }
  auto t =
      std::shared_ptr<CsumTarget>(new CsumTarget(std::move(data), std::move(md.value()), std::move(opts)));
  if (Status s = t->start(); !s.ok()) return s;
  return t;
}

Status CsumTarget::start() {
  Superblock sb = md_->superblock();
  mode_ = opts_.mode_given ? opts_.mode : sb.mode;
  if (!opts_.verify) spdlog::warn("csum: verify=off: reads are not checked against their checksums");
  region_seq_.assign(md_->layout().nr_regions(), 0);
  if (!sb.clean()) {
    // Recovery follows the mode the last writer used.
    if (sb.mode == Mode::kRebuild) {
      if (Status s = recover_rebuild(); !s.ok()) {
        return Status::Error(s.code(), "csum: recomputing dirty regions: " + why(s));
      }
    } else if (sb.mode == Mode::kJournal) {
      if (Status s = recover_journal(); !s.ok()) {
        return Status::Error(s.code(), "csum: replaying the journal: " + why(s));
      }
      const uint64_t unclean = sb.unclean_opens;
      sb = md_->superblock();
      sb.unclean_opens = unclean;
    } else {
      // The last writer stopped without closing: what it wrote may still
      // sit in a cache below. Flush first, so that what reads verify is
      // durable. Pairs with two checksums are then read as either (no scan).
      if (Status s = lower_device()->flush(); !s.ok()) return s;
      spdlog::warn(
          "csum: the last stop was not clean; blocks written just before it may read as either "
          "version, and a torn one fails with EIO");
    }
    ++sb.unclean_opens;
  }
  if (sb.clean()) {
    jhead_ = jtail_ = sb.journal_tail;
    jseq_ = sb.journal_tail_seq;
  }
  // From now on the volume is in use: CLEAN is clear on disk before the
  // first write to either device.
  sb.flags &= ~kFlagClean;
  sb.mode = mode_;
  if (Status s = md_->commit_superblock(sb); !s.ok()) {
    return Status::Error(s.code(), "csum: writing the superblock: " + why(s));
  }
  WriteBehind::Hooks h;
  h.commit = [this](WriteBehind::Batch& batch) { return commit_batch(batch); };
  h.apply = [this](WriteBehind::Batch& batch, const Status& committed) { apply_batch(batch, committed); };
  // In mode journal a batch must fit in the journal after a checkpoint:
  // queued bytes stay below an eighth of it (a batch holds at most that
  // plus one request).
  uint64_t max_pending = opts_.max_pending_bytes;
  if (mode_ == Mode::kJournal) {
    max_pending = std::max<uint64_t>(bs_, std::min(max_pending, md_->layout().journal_sectors * kSector / 8));
  }
  wb_ = std::make_unique<WriteBehind>(
      jobs_, WriteBehind::Options{.max_pending_bytes = max_pending, .blocks = blocks_}, std::move(h));
  // A pass that was running or paused at the last stop goes on from its
  // cursor (the count of what it found so far with it).
  if (sb.scrub_state == 1 || sb.scrub_state == 2) {
    std::lock_guard lock(admin_mu_);
    scrub_cursor_ = std::min(sb.scrub_cursor, blocks_);
    scrub_found_ = sb.scrub_mismatches;
    spdlog::info("csum: continuing the scrub at block {} of {}{}", scrub_cursor_.load(), blocks_,
                 sb.scrub_state == 2 ? " (paused)" : "");
    return start_scrub_locked(scrub_cursor_.load(), sb.scrub_state == 2);
  }
  return Status::Ok();
}

CsumTarget::~CsumTarget() {
  if (Status s = close_cleanly(); !s.ok()) {
    spdlog::error("csum: closing: {}; the next open recovers as after a crash", why(s));
  }
}

Status CsumTarget::close_cleanly() {
  if (!wb_ || closed_) return Status::Ok();
  closed_ = true;
  // The scrub reads through the pipeline: stop it first. A pass that is
  // still running (or paused by request) is recorded so the next open
  // continues it.
  closing_ = true;
  Job* scrub = nullptr;
  {
    std::lock_guard lock(admin_mu_);
    scrub = scrub_job_;
  }
  bool scrub_live = false;
  if (scrub) {
    scrub_live = scrub->state() == JobState::kRunning || scrub->state() == JobState::kPaused;
    scrub->stop();
  }
  wb_->stop();  // applies everything queued
  if (wb_->failed()) return wb_->failure();
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  if (mode_ == Mode::kRebuild) {
    if (Status s = settle_rebuild(); !s.ok()) return s;
  } else if (mode_ == Mode::kJournal) {
    if (Status s = journal_checkpoint(); !s.ok()) return s;  // the journal is empty after it
  } else {
    {
      std::lock_guard lock(pairs_mu_);
      retire_locked(applied_seq_);
    }
    if (Status s = md_->write_dirty(); !s.ok()) return s;
  }
  std::lock_guard lock(admin_mu_);
  Superblock sb = md_->superblock();
  sb.flags |= kFlagClean;
  sb.mismatches_total += mismatches_.load() + scrub_found_run_.load();
  if (scrub_live) {
    sb.scrub_state = scrub_user_paused_ ? 2 : 1;
    sb.scrub_cursor = scrub_cursor_.load();
    sb.scrub_mismatches = scrub_found_.load();
  }
  return md_->commit_superblock(sb);
}

Result<std::shared_ptr<BlockDevice>> CsumTarget::create(TargetContext& ctx, const TargetArgs& args) {
  const std::string layout = args.get_string("layout", "csum");
  if (layout == "integrity") return IntegrityTarget::create(ctx, args);
  if (layout != "csum") {
    return Status::Error(EINVAL, fmt::format("csum: layout '{}' is not csum or integrity", layout));
  }
  CsumOptions o;
  auto bs = args.get_size("block_size", 4096);
  if (!bs.ok()) return bs.status();
  if (*bs < 512 || *bs > 4096 || (*bs & (*bs - 1)) != 0) {
    return Status::Error(EINVAL, fmt::format("csum: block_size {} must be 512, 1024, 2048 or 4096", *bs));
  }
  o.block_size = static_cast<uint32_t>(*bs);
  o.block_size_given = args.has("block_size");
  o.mode_given = args.has("mode");
  const std::string mode = args.get_string("mode", "dual");
  if (mode == "dual") {
    o.mode = Mode::kDual;
  } else if (mode == "rebuild") {
    o.mode = Mode::kRebuild;
  } else if (mode == "journal") {
    o.mode = Mode::kJournal;
  } else {
    return Status::Error(EINVAL, fmt::format("csum: mode '{}' is not dual, journal or rebuild", mode));
  }
  auto jsize = args.get_size("journal_size", o.journal_size);
  if (!jsize.ok()) return jsize.status();
  if (*jsize < (2u << 20) || *jsize % 4096 != 0) {
    return Status::Error(EINVAL,
                         fmt::format("csum: journal_size {} must be at least 2M and whole pages", *jsize));
  }
  o.journal_size = *jsize;
  auto verify = args.get_bool("verify", true);
  if (!verify.ok()) return verify.status();
  o.verify = *verify;
  auto rate = args.get_size("scrub_rate", o.scrub_rate);
  if (!rate.ok()) return rate.status();
  o.scrub_rate = *rate;
  auto cache = args.get_size("cache", o.cache.max_bytes);
  if (!cache.ok()) return cache.status();
  o.cache.max_bytes = *cache;
  o.metadata_path = ctx.side_file("metadata");
  o.jobs = ctx.jobs();
  std::shared_ptr<BlockDevice> data = ctx.data();
  FormatParams p;
  p.block_size = o.block_size;
  p.data_size = data->geometry().size;
  if (o.mode == Mode::kJournal) p.journal_sectors = o.journal_size / kSector;
  auto bytes = CsumMetadata::bytes_needed(p);
  if (!bytes.ok()) return bytes.status();
  auto dev = ctx.side_device("metadata", *bytes);
  if (!dev.ok()) return Status::Error(dev.status().code(), "csum: metadata: " + why(dev.status()));
  if (!dev.value()) {
    return Status::Error(EINVAL,
                         "csum: layout=csum needs a metadata device (slot metadata); only "
                         "layout=integrity keeps its checksums in the data device");
  }
  auto t = open(std::move(data), dev.value(), std::move(o));
  if (!t.ok()) return t.status();
  return std::shared_ptr<BlockDevice>(t.value());
}

TargetInfo CsumTarget::info() {
  return TargetInfo{
      "csum",
      "a checksum per block, crash-consistent (old+new checksums), verified on every read",
      {{"block_size",
        "bytes per checksummed block: 512, 1024, 2048 or 4096 (default 4096; existing metadata "
        "keeps its own)"},
       {"mode",
        "dual (old and new checksum per block: crash-consistent), journal (data and checksums "
        "journalled first, replayed after a crash: crash-consistent, data written twice) or rebuild "
        "(no crash protection: checksums of regions written before a crash are recomputed, which "
        "cannot detect damage the crash did); default: the mode the metadata records, dual for a "
        "new volume",
        ParamType::kString},
       {"journal_size", "bytes of journal a new volume gets with mode=journal (default 32M, at least 2M)"},
       {"cache", "metadata cache size in bytes (default 16M)"},
       {"layout",
        "csum (checksums on the metadata device; default) or integrity (Linux dm-integrity's format inside "
        "the data device, made by 'bowstack csum format --layout integrity'; the metadata slot is not used; "
        "mode rebuild only)",
        ParamType::kString},
       {"verify",
        "on (default) or off: off reads without checking, for measuring what verification costs; "
        "never for data you care about",
        ParamType::kBool},
       {"scrub_rate",
        "bytes per second a scrub reads at most (default 64M; 0 unlimited; message "
        "'scrub_rate=N' changes it)"}},
      {{"data", SlotKind::kDevice, true, "", "", "the device whose blocks are checksummed"},
       {"metadata", SlotKind::kSideDevice, false, ".csum", "metadata",
        "the checksums, created sparse if absent (default IMAGE.csum beside the data image); null, or "
        "not opened, with layout=integrity"}},
      &CsumTarget::create,
  };
}

Geometry CsumTarget::geometry() const {
  Geometry g = lower_device()->geometry();
  return whole_block_geometry(g, bs_);
}

Capabilities CsumTarget::capabilities() const {
  return checksummed_capabilities(lower_device()->capabilities());
}

CsumTarget::Stats CsumTarget::stats() const {
  Stats s;
  s.mismatches = mismatches_.load();
  s.metadata_errors = metadata_errors_.load();
  s.commits = commits_.load();
  s.data_flushes = data_flushes_.load();
  s.failed = wb_ && wb_->failed();
  std::lock_guard lock(pairs_mu_);
  s.pending_blocks = pending_.size();
  s.dirty_regions = static_cast<uint64_t>(
      std::count_if(region_seq_.begin(), region_seq_.end(), [](uint64_t r) { return r != 0; }));
  return s;
}

void CsumTarget::describe(nlohmann::json* out) const {
  const Stats st = stats();
  const Superblock sb = md_->superblock();
  auto& j = *out;
  j["metadata"] = opts_.metadata_path;
  j["mode"] = mode_name(mode_);
  j["block_size"] = bs_;
  j["nr_blocks"] = blocks_;
  j["uuid"] = uuid_string(sb.uuid);
  j["mismatches"] = st.mismatches;
  j["metadata_errors"] = st.metadata_errors;
  j["commits"] = st.commits;
  j["data_flushes"] = st.data_flushes;
  j["pending_blocks"] = st.pending_blocks;
  if (mode_ == Mode::kRebuild) j["dirty_regions"] = st.dirty_regions;
  if (mode_ == Mode::kJournal) {
    j["journal_sectors"] = md_->layout().journal_sectors;
    j["journal_checkpoints"] = journal_checkpoints_.load();
  }
  j["unclean_opens"] = sb.unclean_opens;
  j["failed"] = st.failed;
  j["verify"] = opts_.verify;
  describe_scrub(out);
}

std::string CsumTarget::status_line() const {
  const Stats st = stats();
  return fmt::format("{}, {} blocks of {}, {} mismatches, {} metadata errors{}", mode_name(mode_), blocks_,
                     format_size(bs_), st.mismatches, st.metadata_errors, st.failed ? ", FAILED" : "");
}

}  // namespace bowstack::csum
