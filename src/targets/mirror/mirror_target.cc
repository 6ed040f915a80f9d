// The mirror target's construction, start and clean stop. The data path is
// mirror_io.cc, metadata commits mirror_meta.cc, jobs mirror_sync.cc.
#include "targets/mirror/mirror_target.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/aligned_buf.h"
#include "core/bytes.h"
#include "core/uuid.h"

namespace bowstack::mirror {

namespace {

constexpr uint64_t kSbAt = md::kSuperOffset * md::kSector;  // 4096

// The file at the bottom of a leg, for messages.
std::string leg_name(BlockDevice& dev, size_t index) {
  BlockDevice* d = &dev;
  while (d->lower() != nullptr) d = d->lower();
  nlohmann::json j = nlohmann::json::object();
  d->describe(&j);
  if (j.contains("path") && j["path"].is_string()) return j["path"].get<std::string>();
  return fmt::format("leg {}", index);
}

Result<LegProbe> probe(BlockDevice& dev, size_t index) {
  LegProbe p;
  const uint64_t bytes = dev.geometry().size;
  p.device_sectors = bytes / md::kSector;
  if (bytes < 2 * kSbAt) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: leg {} has {} bytes, too small for md metadata", index, bytes));
  }
  AlignedBuf buf(4096);
  if (Status s = dev.read(kSbAt, buf.span()); !s.ok()) {
    return Status::Error(s.code(), fmt::format("mirror: leg {}: reading its superblock: {}", index, why(s)));
  }
  auto sb = md::decode_superblock(buf.span(), p.device_sectors);
  if (!sb.ok()) {
    if (sb.status().code() == EMEDIUMTYPE && all_zero(buf.span())) return p;  // blank
    if (sb.status().code() == EMEDIUMTYPE) {
      return Status::Error(EINVAL,
                           fmt::format("mirror: leg {} holds something other than md metadata at byte "
                                       "4096; refusing to overwrite it (zero bytes 4096..8191 to make "
                                       "it a new leg)",
                                       index));
    }
    return Status::Error(EINVAL, fmt::format("mirror: leg {}: {}", index, why(sb.status())));
  }
  p.sb = *sb;
  if (!sb->has_bitmap()) return p;
  const uint64_t at = (md::kSuperOffset + static_cast<uint64_t>(sb->bitmap_offset)) * md::kSector;
  if (Status s = dev.read(at, buf.span()); !s.ok()) {
    return Status::Error(s.code(), fmt::format("mirror: leg {}: reading its bitmap: {}", index, why(s)));
  }
  auto bm = md::decode_bitmap_superblock(buf.span());
  if (!bm.ok() || !md::check_bitmap(*sb, *bm).ok()) {
    spdlog::warn("mirror: leg {}: its bitmap is unusable ({}); it is written anew", index,
                 bm.ok() ? why(md::check_bitmap(*sb, *bm)) : why(bm.status()));
    return p;
  }
  const uint64_t area = md::bitmap_area_bytes(md::bitmap_bits(sb->size, bm->chunksize));
  AlignedBuf whole(area);
  if (Status s = dev.read(at, whole.span()); !s.ok()) {
    return Status::Error(s.code(), fmt::format("mirror: leg {}: reading its bitmap: {}", index, why(s)));
  }
  p.bitmap = *bm;
  p.bitmap_area.assign(whole.data(), whole.data() + area);
  return p;
}

Result<ReadPolicy> parse_policy(const std::string& s) {
  if (s.empty() || s == "balance") return ReadPolicy::kBalance;
  if (s == "round-robin" || s == "round_robin") return ReadPolicy::kRoundRobin;
  if (s == "first") return ReadPolicy::kFirst;
  return Status::Error(EINVAL, "mirror: read_policy must be balance, round-robin or first, not '" + s + "'");
}

Result<ParallelWrites> parse_parallel(const std::string& s) {
  if (s.empty() || s == "auto") return ParallelWrites::kAuto;
  if (s == "on") return ParallelWrites::kOn;
  if (s == "off") return ParallelWrites::kOff;
  return Status::Error(EINVAL, "mirror: parallel_writes must be auto, on or off, not '" + s + "'");
}

// "1", "0+2", "1:3": table indexes of write-mostly legs.
Result<std::vector<bool>> parse_leg_list(const std::string& s, size_t legs) {
  std::vector<bool> out(legs, false);
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find_first_of("+: ", pos);
    if (end == std::string::npos) end = s.size();
    const std::string one = s.substr(pos, end - pos);
    pos = end + 1;
    if (one.empty()) continue;
    char* stop = nullptr;
    const unsigned long v = std::strtoul(one.c_str(), &stop, 10);
    if (*stop != '\0' || v >= legs) {
      return Status::Error(EINVAL,
                           fmt::format("mirror: write_mostly names leg '{}'; legs are 0..{}", one, legs - 1));
    }
    out[v] = true;
  }
  return out;
}

}  // namespace

TargetInfo MirrorTarget::info() {
  return TargetInfo{
      "mirror",
      "an N-way mirror (RAID1) on legs with Linux md v1.2 metadata and a write-intent bitmap",
      {{"region_size",
        "bytes per write-intent bit, a power of two >= 4K (default: 4M, or larger so that the bitmap fits "
        "before the data; fixed when the array is made)"},
       {"read_policy", "balance (fewest reads in flight; default), round-robin or first", ParamType::kString},
       {"sync_min", "bytes/s resync and recovery keep while clients do I/O (default 16M)"},
       {"sync_max", "bytes/s resync and recovery take when clients are idle (default 0: unlimited)"},
       {"write_mostly",
        "legs that reads avoid while another can serve: table indexes joined by '+' (\"1\", \"1+2\")",
        ParamType::kString},
       {"parallel_writes",
        "auto (default: write the legs at once when two or more take over 100 us a write, as RBD or disk "
        "legs do), on, or off (one leg after the other on the client's thread)",
        ParamType::kString},
       {"max_read_errors",
        "read errors a leg may have corrected before it is failed, halved every hour (md's "
        "max_corr_read_errors; default 20, 0: never)"},
       {"name", "array name for a new array, stored as bowstack:NAME (default mirror)", ParamType::kString}},
      {{"legs", SlotKind::kDeviceList, true, "", "", "1 to 8 devices, each a whole md leg"}},
      [](TargetContext& ctx, const TargetArgs& args) -> Result<std::shared_ptr<BlockDevice>> {
        auto legs = ctx.list("legs");
        MirrorOptions o;
        auto region = args.get_size("region_size", 0);
        if (!region.ok()) return region.status();
        if (*region > (uint64_t{1} << 31)) return Status::Error(EINVAL, "mirror: region_size is at most 2G");
        o.region_size = static_cast<uint32_t>(*region);
        auto pol = parse_policy(args.get_string("read_policy"));
        if (!pol.ok()) return pol.status();
        o.read_policy = *pol;
        auto smin = args.get_size("sync_min", o.sync_min);
        if (!smin.ok()) return smin.status();
        auto smax = args.get_size("sync_max", o.sync_max);
        if (!smax.ok()) return smax.status();
        o.sync_min = *smin;
        o.sync_max = *smax;
        auto wm = parse_leg_list(args.get_string("write_mostly"), legs.size());
        if (!wm.ok()) return wm.status();
        o.write_mostly = *wm;
        auto pw = parse_parallel(args.get_string("parallel_writes"));
        if (!pw.ok()) return pw.status();
        o.parallel_writes = *pw;
        auto mre = args.get_size("max_read_errors", o.max_read_errors);
        if (!mre.ok()) return mre.status();
        if (*mre > UINT32_MAX) return Status::Error(EINVAL, "mirror: max_read_errors is at most 4294967295");
        o.max_read_errors = static_cast<uint32_t>(*mre);
        o.name = args.get_string("name", "mirror");
        o.jobs = ctx.jobs();
        return create(std::move(legs), std::move(o));
      },
  };
}

MirrorTarget::MirrorTarget(std::vector<std::shared_ptr<BlockDevice>> legs, MirrorOptions opts)
    : devs_(std::move(legs)), opts_(std::move(opts)), jobs_(opts_.jobs), copying_(0), writing_(0) {}

Result<std::shared_ptr<BlockDevice>> MirrorTarget::create(std::vector<std::shared_ptr<BlockDevice>> legs,
                                                          MirrorOptions opts) {
  if (legs.empty() || legs.size() > 8) {
    return Status::Error(EINVAL, fmt::format("mirror: takes 1 to 8 legs, not {}", legs.size()));
  }
  if (!opts.jobs) opts.jobs = std::make_shared<JobRunner>("mirror");
  std::vector<LegProbe> probes;
  for (size_t i = 0; i < legs.size(); ++i) {
    if (legs[i]->capabilities().read_only) {
      return Status::Error(EINVAL, fmt::format("mirror: leg {} is read-only; every leg must be writable", i));
    }
    auto p = probe(*legs[i], i);
    if (!p.ok()) return p.status();
    probes.push_back(std::move(p.value()));
  }
  AssembleParams ap;
  ap.region_size = opts.region_size;
  ap.name = "bowstack:" + opts.name;
  ap.write_mostly = opts.write_mostly;
  ap.now = md::encode_time(static_cast<uint64_t>(std::time(nullptr)));
  ap.new_set_uuid = random_uuid();
  for (size_t i = 0; i < legs.size(); ++i) ap.new_device_uuids.push_back(random_uuid());
  auto a = assemble(probes, ap);
  if (!a.ok()) return a.status();
  auto t = std::shared_ptr<MirrorTarget>(new MirrorTarget(std::move(legs), std::move(opts)));
  if (Status s = t->start(std::move(a.value())); !s.ok()) return s;
  return std::shared_ptr<BlockDevice>(std::move(t));
}

Status MirrorTarget::start(Assembly a) {
  chunk_ = a.chunk;
  bits_ = a.bits;
  size_ = a.size_sectors * md::kSector;
  copying_ = BlockSet(bits_);
  writing_ = BlockSet((size_ + kWriteUnit - 1) / kWriteUnit);
  area_.assign(md::bitmap_area_bytes(bits_), std::byte{0});
  dirty_pages_.assign(area_.size() / md::kBitmapAlign, true);
  resync_.assign(bits_, false);
  events_cleared_ = a.events_cleared;

  // A new array whose legs are all sparse holes starts in sync; otherwise
  // leg 0 is copied to the others, as md's first resync would.
  if (a.created && a.legs.size() > 1) {
    bool holes = true;
    for (size_t i = 0; i < devs_.size() && holes; ++i) {
      auto h = only_holes(*devs_[i], a.legs[i].sb.data_offset * md::kSector, size_);
      holes = h.ok() && *h;
    }
    if (!holes) {
      for (size_t i = 1; i < a.legs.size(); ++i) {
        a.legs[i].state = LegState::kStale;
        a.legs[i].why = "new array: leg 0's data is copied to it";
      }
    }
  }

  Geometry g;
  g.size = size_;
  g.logical_block_size = 512;
  g.preferred_block_size = 4096;
  g.max_io_size = 32u << 20;
  Capabilities c;
  c.flush = true;
  c.fua = true;
  c.trim = true;
  c.write_zeroes = true;
  c.fast_zero = true;
  c.multi_conn = true;
  c.block_status = true;
  for (size_t i = 0; i < devs_.size(); ++i) {
    const Geometry lg = devs_[i]->geometry();
    const Capabilities lc = devs_[i]->capabilities();
    g.logical_block_size = std::max(g.logical_block_size, lg.logical_block_size);
    g.preferred_block_size = std::max(g.preferred_block_size, lg.preferred_block_size);
    g.max_io_size = std::min(g.max_io_size, lg.max_io_size);
    c.trim = c.trim && lc.write_zeroes;
    c.write_zeroes = c.write_zeroes && lc.write_zeroes;
    c.fast_zero = c.fast_zero && lc.fast_zero;
    c.multi_conn = c.multi_conn && lc.multi_conn;
    c.block_status = c.block_status && lc.block_status;
    c.rotational = c.rotational || lc.rotational;

    auto leg = std::make_unique<Leg>();
    PlannedLeg& pl = a.legs[i];
    leg->dev = devs_[i];
    leg->name = leg_name(*devs_[i], i);
    leg->sb = pl.sb;
    leg->state = pl.state;
    leg->mark = pl.mark_sectors * md::kSector;
    leg->durable_mark = leg->mark;
    leg->offset = pl.sb.data_offset * md::kSector;
    leg->bitmap_at = (md::kSuperOffset + static_cast<uint64_t>(pl.sb.bitmap_offset)) * md::kSector;
    leg->write_mostly = pl.sb.write_mostly();
    leg->verifies = lc.verified_reads;
    leg->fua = lc.fua;
    leg->new_metadata = pl.new_metadata;
    leg->guided = pl.guided;
    leg->corrected = pl.sb.cnt_corrected_read;
    if (leg->offset % g.logical_block_size != 0) {
      return Status::Error(EINVAL, fmt::format("mirror: leg {}'s data starts at byte {}, not aligned to its "
                                               "block size {}",
                                               i, leg->offset, g.logical_block_size));
    }
    if (pl.state != LegState::kInSync)
      spdlog::info("mirror: {} ({}): {}", leg->name, leg_state_name(pl.state), pl.why);
    legs_.push_back(std::move(leg));
  }
  if (size_ % g.logical_block_size != 0) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: the array's size {} is not a multiple of the legs' block "
                                     "size {}",
                                     size_, g.logical_block_size));
  }
  geometry_ = g;
  caps_ = c;

  // The in-sync legs' bits stay set: they record what a missing leg lacks
  // (cleared as usual once no leg is missing), and they are what a guided
  // leg lacks: writes reach it from now on.
  lacking_.assign(bits_, false);
  for (uint64_t b : a.dirty_bits) {
    md::set_bit(area_, b, true);
    active_[b];
    lacking_[b] = true;
  }
  for (uint64_t b : a.resync) {
    resync_[b] = true;
    md::set_bit(area_, b, true);
    active_[b];
  }
  resync_left_ = a.resync.size();
  for (auto& l : legs_) {
    if (l->state != LegState::kStale && l->state != LegState::kRecovering) continue;
    for (uint64_t b = l->mark / chunk_; b < bits_; ++b) l->rebuild_regions += !l->guided || lacking_[b];
  }
  workers_ = std::make_unique<LegWorkers>(*jobs_, legs_.size());
  // Enough threads that a client queue of this depth stays in flight on
  // every other leg; started only when a write needs them.
  write_pool_ = std::make_unique<WritePool>(*jobs_, "write", std::min<size_t>(32, 16 * (legs_.size() - 1)));
  array_sb_ = a.legs[primary_locked()].sb;
  array_sb_.events = a.events;
  std::unique_lock lock(mu_);
  // Legs outside this array have at most the assembled events.
  min_cleared_ = a.events + 1;
  // With no leg missing, every bit records what is not yet known equal on
  // all legs, and no leg outside may be re-added on them: events_cleared
  // goes to this start's events at once (the commit below makes it
  // events + 1), so bits can be cleared with no commit of its own first.
  if (!degraded_locked()) events_cleared_ = std::max(events_cleared_, min_cleared_);
  want_active_ = resync_left_ > 0;
  sb_change_ = true;
  last_write_ = std::chrono::steady_clock::now();
  last_recover_checkpoint_ = last_write_;
  if (Status s = commit_locked(lock); !s.ok())
    return Status::Error(s.code(), "mirror: writing metadata: " + why(s));
  if (a.dirty) {
    spdlog::warn("mirror: the last stop was not clean; {} of {} regions are resynced from {}", resync_left_,
                 bits_, legs_[primary_locked()]->name);
  }
  start_jobs_locked();
  started_ = true;
  return Status::Ok();
}

Status MirrorTarget::close() {
  // A mirror whose start failed wrote nothing it must finish, or wrote
  // metadata that must stay as the failure left it.
  if (!started_ || closed_.exchange(true)) return Status::Ok();
  std::vector<Job*> jobs;
  {
    std::lock_guard lock(mu_);
    jobs = sync_jobs_;
  }
  for (Job* j : jobs) j->stop();
  if (intent_job_ != nullptr) intent_job_->stop();
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return writes_inflight_ == 0 && !committing_ && !cleaning_; });
    if (!meta_failure_.ok()) return meta_failure_;
  }
  Status flushed = flush_settling_marks();
  std::unique_lock lock(mu_);
  if (!meta_failure_.ok()) return meta_failure_;
  if (flushed.ok() && !clear_idle_bits_locked(true)) {
    // events_cleared first, then the bits (clear_idle_bits_locked).
    if (Status s = commit_locked(lock); !s.ok()) return s;
    clear_idle_bits_locked(true);
  }
  want_active_ = resync_left_ > 0 || !flushed.ok();
  sb_change_ = true;
  return commit_locked(lock);
}

MirrorTarget::~MirrorTarget() {
  if (!detached_.load()) {
    if (Status s = close(); !s.ok()) spdlog::error("mirror: stopping: {}", why(s));
  } else {
    closed_ = true;
  }
  // Jobs use members: stop them before the members go (close() stopped
  // them unless it was detached, which stopped them too).
  std::vector<Job*> jobs;
  {
    std::lock_guard lock(mu_);
    jobs = sync_jobs_;
  }
  for (Job* j : jobs) j->stop();
  if (intent_job_ != nullptr) intent_job_->stop();
  if (workers_) workers_->stop();
  if (write_pool_) write_pool_->stop();
}

Status MirrorTarget::detach() {
  Status s = close();
  detached_ = true;
  return s;
}

void MirrorTarget::start_jobs_locked() {
  intent_job_ = jobs_->start(
      "intent", Job::Kind::kService, [this](JobControl& jc) { return intent_body(jc); },
      [this] {
        std::lock_guard wake(mu_);  // not lost between the job's check and its wait
        intent_cv_.notify_all();
      });
  start_sync_jobs_locked();
}

void MirrorTarget::reattach() {
  // A reload that detached this mirror failed and the old table serves on:
  // it owns the legs again.
  std::unique_lock lock(mu_);
  if (!detached_.load()) return;
  detached_ = false;
  closed_ = false;
  start_jobs_locked();
}

}  // namespace bowstack::mirror
