// csum over layout=integrity: open (journal check, recomputation after a
// crash, RECALCULATING), clean close, the factory, status.
#include "targets/csum/integrity_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/endian.h"
#include "core/parse.h"
#include "targets/csum/integrity_volume.h"
#include "targets/csum/whole_blocks.h"

namespace bowstack::csum {

using namespace integrity;

namespace {

constexpr size_t kChunk = 1u << 20;  // data read per request while recomputing

// The version the kernel's sb_set_version() gives these flags, among the
// volumes we accept (no HMAC, inline mode or bitmap).
void set_version(integrity::Superblock* sb) {
  if (sb->flags & kFlagFixedPadding) {
    sb->version = kVersionFixedPadding;
  } else if (sb->version <= 2) {
    sb->version = sb->recalculating() ? 2 : 1;
  }
}

}  // namespace

IntegrityTarget::IntegrityTarget(std::shared_ptr<BlockDevice> dev, IntegrityOptions opts,
                                 integrity::Superblock sb, integrity::Layout l, bool read_only)
    : StackedDevice(std::move(dev)),
      opts_(std::move(opts)),
      l_(l),
      bs_(l.block_size()),
      blocks_(sb.provided_data_sectors >> l.log2_sectors_per_block),
      read_only_(read_only),
      sb_(sb) {
  jobs_ = opts_.jobs ? opts_.jobs : std::make_shared<JobRunner>("csum");
  recalculating_ = sb_.recalculating();
}

Result<std::shared_ptr<IntegrityTarget>> IntegrityTarget::open(std::shared_ptr<BlockDevice> dev,
                                                               IntegrityOptions opts) {
  const Geometry g = dev->geometry();
  if (g.size < kSbBytes) {
    return Status::Error(EMEDIUMTYPE,
                         fmt::format("csum: {} bytes cannot hold a dm-integrity volume", g.size));
  }
  if (g.logical_block_size > 4096) {
    return Status::Error(EINVAL, fmt::format("csum: the device's {}-byte logical blocks are larger than "
                                             "dm-integrity's 4096-byte alignment",
                                             g.logical_block_size));
  }
  AlignedBuf sbuf(kSbBytes);
  if (Status s = dev->read(0, sbuf.span()); !s.ok()) return s;
  auto sb = decode_superblock(sbuf.span(), g.size / integrity::kSector);
  if (!sb.ok()) {
    const Status& s = sb.status();
    return Status::Error(s.code(), s.code() == EMEDIUMTYPE
                                       ? "csum: not a dm-integrity volume (make one with 'bowstack csum "
                                         "format --layout integrity IMAGE'): " +
                                             s.context()
                                       : "csum: " + why(s));
  }
  auto l = integrity::Layout::of(*sb, g.size / integrity::kSector);
  if (!l.ok()) return Status::Error(EUCLEAN, "csum: " + l.status().context());
  if (opts.block_size != 0 && opts.block_size != sb->block_size()) {
    return Status::Error(EINVAL, fmt::format("csum: block_size={} given, but the volume uses {}",
                                             opts.block_size, sb->block_size()));
  }
  const bool ro = dev->capabilities().read_only;
  auto t =
      std::shared_ptr<IntegrityTarget>(new IntegrityTarget(std::move(dev), std::move(opts), *sb, *l, ro));
  if (Status s = t->start(); !s.ok()) return s;
  return t;
}

Status IntegrityTarget::start() {
  bool canonical = false;
  if (Status s = check_journal(*lower_device(), l_, &canonical); !s.ok()) {
    return Status::Error(s.code(), "csum: dm-integrity journal: " + why(s));
  }
  auto cache =
      BufferCache::create(lower_device(), BufioOptions{.block_size = 4096, .max_bytes = opts_.cache_bytes});
  if (!cache.ok()) return cache.status();
  cache_ = std::move(cache.value());
  if (read_only_) {
    if (sb_.recalculating()) {
      spdlog::warn(
          "csum: read-only dm-integrity volume with RECALCULATING set: blocks from sector {} up read "
          "unverified",
          sb_.recalc_sector);
    }
    return Status::Ok();
  }
  // Every entry is unused, so the kernel would replay nothing. Still, a
  // journal it re-initialised in other commit sequences is made the one
  // format writes before any write in place: what the kernel finds next is
  // a journal we wrote, not one whose sequences it might continue.
  if (!canonical) {
    spdlog::info("csum: re-initialising the dm-integrity journal (left in another commit sequence)");
    if (Status s = write_empty_journal(*lower_device(), l_); !s.ok()) return s;
    if (Status s = lower_device()->flush(); !s.ok()) return s;
  }
  if (sb_.recalculating()) {
    if (Status s = recalculate(); !s.ok()) {
      return Status::Error(s.code(), "csum: recomputing tags after an unclean stop: " + why(s));
    }
  }
  // From here on the volume is in use: a crash leaves tags that may not
  // match, and the flag makes the next open (ours or the kernel's, given
  // `recalculate`) recompute them all.
  sb_.flags |= kFlagRecalculating;
  sb_.recalc_sector = 0;
  set_version(&sb_);
  if (Status s = write_superblock(); !s.ok()) {
    return Status::Error(s.code(), "csum: writing the dm-integrity superblock: " + why(s));
  }
  recalculating_ = true;
  WriteBehind::Hooks h;
  h.commit = [this](WriteBehind::Batch& batch) { return commit_batch(batch); };
  h.apply = [this](WriteBehind::Batch& batch, const Status& committed) { apply_batch(batch, committed); };
  wb_ = std::make_unique<WriteBehind>(
      jobs_, WriteBehind::Options{.max_pending_bytes = opts_.max_pending_bytes, .blocks = blocks_},
      std::move(h));
  return Status::Ok();
}

Status IntegrityTarget::write_superblock() {
  AlignedBuf buf(kSbBytes);
  encode_superblock(sb_, buf.span());
  if (Status s = lower_device()->write(0, buf.span(), 0); !s.ok()) return s;
  return lower_device()->flush();
}

Status IntegrityTarget::recalculate() {
  const uint64_t spb = l_.sectors_per_block();
  const uint64_t provided = sb_.provided_data_sectors;
  const uint64_t from = std::min(sb_.recalc_sector, provided) / spb * spb;
  spdlog::warn(
      "csum: dm-integrity volume not closed cleanly (RECALCULATING): recomputing the tags of sectors {}..{} "
      "from the data; damage the crash did there cannot be detected",
      from, provided - 1);
  // What is read must be durable, even if only the server died.
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  AlignedBuf run(l_.metadata_run * integrity::kSector);
  AlignedBuf data(std::min<uint64_t>(kChunk, l_.interleave_sectors() * integrity::kSector));
  const uint64_t chunk_sectors = data.size() / integrity::kSector;
  auto persisted = std::chrono::steady_clock::now();
  for (uint64_t area = from >> l_.log2_interleave_sectors; (area << l_.log2_interleave_sectors) < provided;
       ++area) {
    const uint64_t area_first = area << l_.log2_interleave_sectors;
    const uint64_t area_end = std::min(provided, area_first + l_.interleave_sectors());
    // The tags below `from` in this area are good: read the run, replace the rest.
    if (Status s = lower_device()->read(l_.tag_offset(area_first), run.span()); !s.ok()) return s;
    for (uint64_t first = std::max(from, area_first); first < area_end; first += chunk_sectors) {
      const uint64_t n = std::min(chunk_sectors, area_end - first);
      auto span = data.span().first(n * integrity::kSector);
      if (Status s = lower_device()->read(l_.data_sector(first) * integrity::kSector, span); !s.ok())
        return s;
      for (uint64_t s = first; s < first + n; s += spb) {
        store_le(run.span(), (s - area_first) / spb * kTagSize,
                 tag_of(s, span.subspan((s - first) * integrity::kSector, bs_)), 4);
      }
      recomputed_.fetch_add(n / spb, std::memory_order_relaxed);
    }
    if (Status s = lower_device()->write(l_.tag_offset(area_first), run.span(), 0); !s.ok()) return s;
    if (area_end < provided && std::chrono::steady_clock::now() - persisted >= opts_.recalc_persist_every) {
      // Tags first, then the position that vouches for them.
      if (Status s = lower_device()->flush(); !s.ok()) return s;
      sb_.recalc_sector = area_end;
      if (Status s = write_superblock(); !s.ok()) return s;
      persisted = std::chrono::steady_clock::now();
    }
  }
  spdlog::info("csum: recomputed the tags of {} blocks", recomputed_.load());
  return lower_device()->flush();
}

IntegrityTarget::~IntegrityTarget() {
  if (Status s = close_cleanly(); !s.ok()) {
    spdlog::error(
        "csum: closing the dm-integrity volume: {}; RECALCULATING stays set, the next open "
        "recomputes every tag",
        why(s));
  }
}

Status IntegrityTarget::close_cleanly() {
  if (!wb_ || closed_) return Status::Ok();
  closed_ = true;
  wb_->stop();  // applies everything queued
  if (wb_->failed()) return wb_->failure();
  // Nobody holds a tag page now, so every dirty one is written.
  if (Status s = cache_->write_dirty_buffers(); !s.ok()) return s;
  sb_.flags &= ~kFlagRecalculating;
  sb_.recalc_sector = 0;
  set_version(&sb_);
  if (Status s = write_superblock(); !s.ok()) return s;
  recalculating_ = false;
  return Status::Ok();
}

Result<std::shared_ptr<BlockDevice>> IntegrityTarget::create(TargetContext& ctx, const TargetArgs& args) {
  IntegrityOptions o;
  const std::string mode = args.get_string("mode", "rebuild");
  if (mode == "dual") {
    return Status::Error(EINVAL,
                         "csum: layout=integrity cannot use mode=dual: dm-integrity keeps one tag per block, "
                         "which cannot hold a block's old and new checksums; use mode=rebuild");
  }
  if (mode == "journal") {
    return Status::Error(ENOTSUP,
                         "csum: layout=integrity with mode=journal (the kernel's journal) is not "
                         "implemented yet; mode=rebuild is");
  }
  if (mode != "rebuild") {
    return Status::Error(EINVAL, fmt::format("csum: mode '{}' is not dual, journal or rebuild", mode));
  }
  if (args.has("block_size")) {
    auto bs = args.get_size("block_size", 0);
    if (!bs.ok()) return bs.status();
    if (*bs < 512 || *bs > 4096 || (*bs & (*bs - 1)) != 0) {
      return Status::Error(EINVAL, fmt::format("csum: block_size {} must be 512, 1024, 2048 or 4096", *bs));
    }
    o.block_size = static_cast<uint32_t>(*bs);
  }
  auto cache = args.get_size("cache", o.cache_bytes);
  if (!cache.ok()) return cache.status();
  o.cache_bytes = *cache;
  o.jobs = ctx.jobs();
  // The tags live in the data device: the metadata slot (null, or the
  // default file the table names) is neither opened nor created.
  auto t = open(ctx.data(), std::move(o));
  if (!t.ok()) return t.status();
  return std::shared_ptr<BlockDevice>(t.value());
}

Geometry IntegrityTarget::geometry() const {
  Geometry g = lower_device()->geometry();
  g.size = sb_.provided_data_sectors * integrity::kSector;
  return whole_block_geometry(g, bs_);
}

Capabilities IntegrityTarget::capabilities() const {
  return checksummed_capabilities(lower_device()->capabilities());
}

IntegrityTarget::Stats IntegrityTarget::stats() const {
  Stats s;
  s.mismatches = mismatches_.load();
  s.discard_tags_read = discard_tags_read_.load();
  s.unverified_reads = unverified_reads_.load();
  s.recomputed_blocks = recomputed_.load();
  s.recalculating = recalculating_.load();
  s.failed = (wb_ && wb_->failed()) || (cache_ && !cache_->failure().ok());
  return s;
}

void IntegrityTarget::describe(nlohmann::json* out) const {
  const Stats st = stats();
  auto& j = *out;
  j["layout"] = "integrity";
  j["mode"] = "rebuild";
  j["block_size"] = bs_;
  j["nr_blocks"] = blocks_;
  j["provided_data_sectors"] = sb_.provided_data_sectors;
  j["size"] = sb_.provided_data_sectors * integrity::kSector;
  j["mismatches"] = st.mismatches;
  j["discard_tags_read"] = st.discard_tags_read;
  if (read_only_) j["unverified_reads"] = st.unverified_reads;
  j["recomputed_blocks"] = st.recomputed_blocks;
  j["recalculating"] = st.recalculating;
  j["failed"] = st.failed;
}

std::string IntegrityTarget::status_line() const {
  const Stats st = stats();
  return fmt::format("integrity rebuild, {} blocks of {}, {} mismatches, {} discard tags read{}", blocks_,
                     format_size(bs_), st.mismatches, st.discard_tags_read, st.failed ? ", FAILED" : "");
}

}  // namespace bowstack::csum
