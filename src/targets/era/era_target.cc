// era: construction, the registry factory, control messages and status.
#include "targets/era/era_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/parse.h"

namespace bowstack::era {

namespace {

bool valid_block_size(uint64_t bs) { return bs >= 512 && bs <= (1u << 30) && (bs & (bs - 1)) == 0; }

}  // namespace

EraTarget::EraTarget(std::shared_ptr<BlockDevice> origin, std::unique_ptr<EraMetadata> md, EraOptions opts,
                     uint64_t nr_blocks)
    : StackedDevice(std::move(origin)),
      bs_(opts.block_size),
      nr_blocks_(nr_blocks),
      opts_(std::move(opts)),
      md_(std::move(md)),
      marked_((nr_blocks + 63) / 64),
      committed_(md_->layout().ws_blocks * kWordsPerWritesetBlock, 0),
      space_(lower_device().get(), lower_device()->geometry().size) {
  jobs_ = opts_.jobs ? opts_.jobs : std::make_shared<JobRunner>("era");
}

EraTarget::~EraTarget() {
  // Applies everything queued before the members the hooks use go.
  if (wb_) wb_->stop();
}

Result<std::shared_ptr<EraTarget>> EraTarget::open(std::shared_ptr<BlockDevice> origin,
                                                   std::shared_ptr<BlockDevice> metadata, EraOptions opts) {
  const Geometry og = origin->geometry();
  auto blank = EraMetadata::is_blank(*metadata);
  if (!blank.ok()) return blank.status();
  std::unique_ptr<EraMetadata> md;
  if (!*blank) {
    auto m = EraMetadata::open(metadata, opts.bufio);
    if (!m.ok()) {
      return Status::Error(m.status().code(),
                           "era: cannot use the metadata: " + why(m.status()) +
                               " (see 'bowstack era check'; 'bowstack era restore' rebuilds it)");
    }
    md = std::move(m.value());
    const Superblock sb = md->superblock();
    if (opts.block_size_given && opts.block_size != sb.data_block_size) {
      return Status::Error(EINVAL,
                           fmt::format("era: block_size={} given, but the metadata tracks blocks of {} "
                                       "bytes",
                                       opts.block_size, sb.data_block_size));
    }
    opts.block_size = sb.data_block_size;
  }
  if (!valid_block_size(opts.block_size) || opts.block_size % og.logical_block_size != 0) {
    return Status::Error(EINVAL,
                         fmt::format("era: block_size {} must be a power of two from 512 bytes to 1 GiB "
                                     "and a multiple of the origin's block size {}",
                                     opts.block_size, og.logical_block_size));
  }
  const uint64_t nr = (og.size + opts.block_size - 1) / opts.block_size;
  if (nr > kMaxDataBlocks) {
    return Status::Error(EINVAL, fmt::format("era: the origin has {} blocks of {} bytes; at most {} can be "
                                             "tracked (use a larger block_size)",
                                             nr, opts.block_size, kMaxDataBlocks));
  }
  if (md) {
    const Superblock sb = md->superblock();
    if (sb.nr_blocks != nr) {
      return Status::Error(EINVAL,
                           fmt::format("era: the metadata belongs to a device of {} blocks of {} bytes "
                                       "(created for {} bytes); this origin has {} bytes = {} blocks; "
                                       "refusing to use it",
                                       sb.nr_blocks, sb.data_block_size, sb.origin_size, og.size, nr));
    }
  } else {
    FormatParams p{opts.block_size, nr, og.size, random_uuid(), kFirstEra};
    auto m = EraMetadata::format(metadata, p, opts.bufio);
    if (!m.ok()) return m.status();
    md = std::move(m.value());
    spdlog::info("era: formatted new metadata: {} blocks of {} bytes, era {}", nr, opts.block_size,
                 kFirstEra);
  }
  auto t = std::shared_ptr<EraTarget>(new EraTarget(std::move(origin), std::move(md), std::move(opts), nr));
  if (Status s = t->recover(); !s.ok()) {
    return Status::Error(s.code(), "era: cannot use the metadata: " + why(s) + " (see 'bowstack era check')");
  }
  t->start_write_behind();
  return t;
}

Result<std::shared_ptr<BlockDevice>> EraTarget::create(TargetContext& ctx, const TargetArgs& args) {
  EraOptions o;
  auto bs = args.get_size("block_size", 4096);
  if (!bs.ok()) return bs.status();
  if (!valid_block_size(*bs)) {
    return Status::Error(
        EINVAL, fmt::format("era: block_size {} must be a power of two from 512 bytes to 1 GiB", *bs));
  }
  o.block_size = static_cast<uint32_t>(*bs);
  o.block_size_given = args.has("block_size");
  auto pending = args.get_size("max_pending", o.max_pending_bytes);
  if (!pending.ok()) return pending.status();
  o.max_pending_bytes = *pending;
  auto cache = args.get_size("cache", o.bufio.max_bytes);
  if (!cache.ok()) return cache.status();
  o.bufio.max_bytes = *cache;
  o.metadata_path = ctx.side_file("metadata");
  o.jobs = ctx.jobs();
  std::shared_ptr<BlockDevice> origin = ctx.data();
  // New metadata is created sparse, sized for this origin; the core holds
  // it (locked) for the target's lifetime.
  const uint64_t nr = (origin->geometry().size + o.block_size - 1) / o.block_size;
  const uint64_t bytes = Layout::for_blocks(nr).total * kMetaBlockSize;
  auto dev = ctx.side_device("metadata", bytes);
  if (!dev.ok()) return Status::Error(dev.status().code(), "era: metadata: " + why(dev.status()));
  if (!dev.value()) return Status::Error(EINVAL, "era: needs a metadata device (slot metadata)");
  auto t = open(std::move(origin), dev.value(), std::move(o));
  if (!t.ok()) return t.status();
  return std::shared_ptr<BlockDevice>(t.value());
}

TargetInfo EraTarget::info() {
  return TargetInfo{
      "era",
      "tracks which blocks are written in each era, for incremental backup and cache invalidation (dm-era)",
      {{"block_size",
        "bytes per tracked block, a power of two >= 512 (default 4096; existing metadata keeps "
        "its own)"},
       {"max_pending",
        "bytes of acknowledged first writes that may wait for their metadata commit (default 64M)"},
       {"cache", "metadata cache size in bytes (default 16M)"}},
      {{"data", SlotKind::kDevice, true, "", "", "the origin: the device whose writes are tracked"},
       {"metadata", SlotKind::kSideDevice, true, ".era", "metadata",
        "the era metadata, created sparse if absent or empty (default IMAGE.era beside the data image)"}},
      &EraTarget::create,
  };
}
// ---- Control --------------------------------------------------------------

Result<std::string> EraTarget::message(std::string_view text) {
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text == "checkpoint") {
    auto r = checkpoint();
    if (!r.ok()) return r.status();
    return fmt::format("current era {}", r.value());
  }
  if (text == "take_metadata_snap") {
    if (Status s = take_metadata_snap(); !s.ok()) return s;
    const Superblock sb = md_->superblock();
    return fmt::format("metadata snapshot held at block {} (era {})", md_->layout().snap_writeset(0),
                       sb.snap_era);
  }
  if (text == "drop_metadata_snap") {
    if (Status s = drop_metadata_snap(); !s.ok()) return s;
    return std::string("metadata snapshot dropped");
  }
  return BlockDevice::message(text);
}

std::string EraTarget::dm_status() const {
  const Superblock sb = md_->superblock();
  return fmt::format("{} {}/{} {} {}", kMetaBlockSize / 512, md_->layout().used(sb.snap_held),
                     md_->device_blocks(), sb.current_era,
                     sb.snap_held ? std::to_string(md_->layout().snap_writeset(0)) : "-");
}

EraTarget::Stats EraTarget::stats() const {
  Stats s;
  s.commits = commits_.load();
  s.committed_bits = committed_bits_.load();
  s.fast_writes = fast_writes_.load();
  s.queued_writes = queued_writes_.load();
  s.pending_bytes = wb_->stats().pending_bytes;
  s.failed = wb_->failed();
  return s;
}

void EraTarget::describe(nlohmann::json* out) const {
  const Superblock sb = md_->superblock();
  const Stats st = stats();
  auto& j = *out;
  j["metadata"] = opts_.metadata_path;
  j["block_size"] = bs_;
  j["nr_blocks"] = nr_blocks_;
  j["current_era"] = sb.current_era;
  j["metadata_block_size"] = kMetaBlockSize;
  j["metadata_blocks_used"] = md_->layout().used(sb.snap_held);
  j["metadata_blocks_total"] = md_->device_blocks();
  if (sb.snap_held) {
    j["metadata_snap"] = {{"block", md_->layout().snap_writeset(0)}, {"era", sb.snap_era}};
  } else {
    j["metadata_snap"] = nullptr;
  }
  j["written_blocks"] = st.committed_bits;  // marked in the current era
  j["commits"] = st.commits;
  j["fast_writes"] = st.fast_writes;
  j["queued_writes"] = st.queued_writes;
  j["pending_bytes"] = st.pending_bytes;
  j["fold_pending"] = sb.fold_era != 0;
  j["failed"] = st.failed;
  j["dm_status"] = dm_status();
}

std::string EraTarget::status_line() const {
  const Superblock sb = md_->superblock();
  const Stats st = stats();
  return fmt::format("era {}, {} of {} blocks of {} written in it, metadata snapshot {}, dm: {}{}",
                     sb.current_era, st.committed_bits, nr_blocks_, format_size(bs_),
                     sb.snap_held ? fmt::format("held (era {})", sb.snap_era) : std::string("none"),
                     dm_status(), st.failed ? ", FAILED" : "");
}

}  // namespace bowstack::era
