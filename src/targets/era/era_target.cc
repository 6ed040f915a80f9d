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

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

bool valid_block_size(uint64_t bs) { return bs >= 512 && bs <= (1u << 30) && (bs & (bs - 1)) == 0; }

}  // namespace

// One queued first write (or trim / write-zeroes) waiting for its bits.
// QueuedOp::first/end are its blocks; wait is set for FUA, trim and zeroes.
struct EraTarget::Op : QueuedOp {
  enum Type { kWrite, kTrim, kZeroes };
  Type type = kWrite;
  uint64_t offset = 0, length = 0;
  uint32_t flags = 0;
  std::unique_ptr<std::byte, FreeDeleter> data;
  std::vector<uint64_t> new_bits;  // bits this op asked to commit (set under the pipeline's lock)
};

EraTarget::EraTarget(std::shared_ptr<BlockDevice> origin, std::unique_ptr<EraMetadata> md, EraOptions opts,
                     uint64_t nr_blocks)
    : StackedDevice(std::move(origin)),
      bs_(opts.block_size),
      nr_blocks_(nr_blocks),
      opts_(std::move(opts)),
      md_(std::move(md)),
      marked_((nr_blocks + 63) / 64),
      committed_(md_->layout().ws_blocks * kWordsPerWritesetBlock, 0) {
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

// ---- Recovery, eras -------------------------------------------------------

Status EraTarget::recover() {
  std::lock_guard admin(admin_mu_);
  for (int region = 0; region < 2; ++region) {
    if (Status s = md_->scan_region(region, nullptr); !s.ok()) {
      return Status::Error(s.code(),
                           "era: the metadata is damaged: " + why(s) + " (see 'bowstack era check')");
    }
  }
  era_.store(md_->superblock().current_era, std::memory_order_release);
  if (md_->superblock().fold_era != 0) {
    spdlog::info("era: finishing the interrupted archive of era {}", md_->superblock().fold_era);
    if (Status s = finish_fold(); !s.ok()) return s;
  }
  // A crash (or a previous run) leaves the current writeset on disk: archive
  // it under its era, so nothing written in it is ever lost.
  std::vector<uint64_t> words;
  if (Status s = md_->read_writeset(era_.load(), &words); !s.ok()) return s;
  uint64_t bits = 0;
  for (uint64_t w : words) bits += static_cast<uint64_t>(std::popcount(w));
  if (bits > 0) {
    const uint32_t e = era_.load();
    if (Status s = advance_era(); !s.ok()) return s;
    if (Status s = finish_fold(); !s.ok()) return s;
    spdlog::info("era: recovered the writeset of era {} ({} blocks written) and archived it; now era {}", e,
                 bits, era_.load());
  }
  return Status::Ok();
}

Status EraTarget::advance_era() {
  const uint32_t e = era_.load();
  if (e == UINT32_MAX) return Status::Error(EOVERFLOW, "era: the era counter is exhausted");
  Superblock next = md_->superblock();
  next.current_era = e + 1;
  next.fold_era = e;
  if (Status s = md_->commit_superblock(next); !s.ok()) return s;
  for (auto& w : marked_) w.store(0, std::memory_order_relaxed);
  std::fill(committed_.begin(), committed_.end(), 0);
  committed_bits_.store(0);
  era_.store(e + 1, std::memory_order_release);
  return Status::Ok();
}

Status EraTarget::finish_fold() {
  Superblock sb = md_->superblock();
  if (sb.fold_era == 0) return Status::Ok();
  if (Status s = md_->fold(sb.fold_era); !s.ok()) return s;
  sb = md_->superblock();
  sb.fold_era = 0;
  return md_->commit_superblock(sb);
}

Result<uint32_t> EraTarget::checkpoint() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  if (md_->superblock().fold_era != 0) {
    if (Status s = finish_fold(); !s.ok()) return fail(s);
  }
  if (era_.load() == UINT32_MAX) return Status::Error(EOVERFLOW, "era: the era counter is exhausted");
  gate_close();
  Status s = advance_era();
  gate_open();
  if (!s.ok()) return fail(s);
  if (Status f = finish_fold(); !f.ok()) return fail(f);
  return era_.load();
}

Status EraTarget::take_metadata_snap() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  if (md_->superblock().snap_held) {
    return Status::Error(EBUSY,
                         fmt::format("era: a metadata snapshot is already held (at block {}); drop it first",
                                     md_->layout().snap_writeset(0)));
  }
  if (md_->superblock().fold_era != 0) {
    if (Status s = finish_fold(); !s.ok()) return fail(s);
  }
  // The queue drained and nothing new admitted: committed_ is exactly the
  // durable current writeset, and every write acknowledged so far is in it.
  gate_close();
  std::vector<uint64_t> words = committed_;
  const uint32_t e = era_.load();
  gate_open();
  const uint64_t snap_id = md_->superblock().generation + 1;  // the generation of the commit below
  if (Status s = md_->write_snapshot(words, e, snap_id); !s.ok()) return fail(s);
  Superblock next = md_->superblock();
  next.snap_held = true;
  next.snap_era = e;
  next.snap_id = snap_id;
  if (Status s = md_->commit_superblock(next); !s.ok()) return fail(s);
  return Status::Ok();
}

Status EraTarget::drop_metadata_snap() {
  std::lock_guard admin(admin_mu_);
  if (Status f = failure(); !f.ok()) return f;
  Superblock next = md_->superblock();
  if (!next.snap_held) return Status::Error(EINVAL, "era: no metadata snapshot is held");
  next.snap_held = false;
  if (Status s = md_->commit_superblock(next); !s.ok()) return fail(s);
  return Status::Ok();
}

// ---- Gate -----------------------------------------------------------------

void EraTarget::gate_enter() {
  std::unique_lock lock(gate_mu_);
  gate_cv_.wait(lock, [this] { return !closed_; });
  ++active_;
}

void EraTarget::gate_leave(uint64_t n) {
  std::lock_guard lock(gate_mu_);
  active_ -= n;
  if (active_ == 0 && closed_) gate_cv_.notify_all();
}

void EraTarget::gate_close() {
  std::unique_lock lock(gate_mu_);
  closed_ = true;
  gate_cv_.wait(lock, [this] { return active_ == 0; });
}

void EraTarget::gate_open() {
  std::lock_guard lock(gate_mu_);
  closed_ = false;
  gate_cv_.notify_all();
}

// ---- Bits -----------------------------------------------------------------

std::pair<uint64_t, uint64_t> EraTarget::block_range(uint64_t offset, uint64_t length) const {
  const uint64_t first = offset / bs_;
  if (length == 0) return {first, first};
  return {first, std::min(nr_blocks_, (offset + length - 1) / bs_ + 1)};
}

bool EraTarget::all_marked(uint64_t first, uint64_t end) const {
  for (uint64_t b = first; b < end; ++b) {
    if (((marked_[b / 64].load(std::memory_order_acquire) >> (b % 64)) & 1) == 0) return false;
  }
  return true;
}

bool EraTarget::marked(uint64_t block) const { return block < nr_blocks_ && all_marked(block, block + 1); }

void EraTarget::set_marked(uint64_t b) {
  marked_[b / 64].fetch_or(uint64_t{1} << (b % 64), std::memory_order_release);
}

void EraTarget::clear_marked(uint64_t b) {
  marked_[b / 64].fetch_and(~(uint64_t{1} << (b % 64)), std::memory_order_release);
}

// ---- Data path ------------------------------------------------------------

Status EraTarget::failure() const { return wb_ ? wb_->failure() : Status::Ok(); }

Status EraTarget::fail(Status s) {
  return wb_->fail(Status::Error(s.code(), "era: metadata failed earlier: " + why(s) +
                                               " (the blocks later writes touch could not be tracked)"));
}

void EraTarget::start_write_behind() {
  WriteBehind::Hooks h;
  // A block newly pending: if its bit is committed already, clear the
  // in-core bit so that later writes queue behind this op instead of
  // overtaking it; otherwise this op commits the bit.
  h.block_queued = [this](QueuedOp& op, uint64_t b) {
    if (all_marked(b, b + 1)) {
      clear_marked(b);
    } else {
      static_cast<Op&>(op).new_bits.push_back(b);
    }
  };
  h.commit = [this](WriteBehind::Batch& batch) {
    std::vector<uint64_t> bits;
    for (const auto& op : batch) {
      const auto& nb = static_cast<const Op&>(*op).new_bits;
      bits.insert(bits.end(), nb.begin(), nb.end());
    }
    if (bits.empty()) return Status::Ok();
    Status s = commit_bits(bits);
    if (!s.ok()) (void)fail(s);
    return s;
  };
  h.apply = [this](WriteBehind::Batch& batch, const Status& committed) { apply_batch(batch, committed); };
  // No queued op holds the block any more: writes may pass straight
  // through again once its bit is durable. committed_ changes only on the
  // commit job, which is also where this runs (no apply job).
  h.block_released = [this](uint64_t b, bool healthy) {
    if (healthy && test_bit(committed_, b)) set_marked(b);
  };
  h.finished = [this](WriteBehind::Batch& batch) { gate_leave(batch.size()); };
  wb_ = std::make_unique<WriteBehind>(
      jobs_, WriteBehind::Options{.max_pending_bytes = opts_.max_pending_bytes, .blocks = nr_blocks_},
      std::move(h));
}

void EraTarget::apply_batch(WriteBehind::Batch& batch, const Status& committed) {
  for (auto& qop : batch) {
    Op& op = static_cast<Op&>(*qop);
    if (!committed.ok()) {
      op.status = Status::Error(EIO, "era: metadata commit failed: " + why(committed));
      continue;
    }
    Status s;
    switch (op.type) {
      case Op::kWrite:
        s = lower_device()->write(op.offset, std::span<const std::byte>(op.data.get(), op.length), op.flags);
        break;
      case Op::kTrim:
        s = lower_device()->trim(op.offset, op.length, op.flags);
        break;
      case Op::kZeroes:
        s = lower_device()->write_zeroes(op.offset, op.length, op.flags);
        break;
    }
    // An acknowledged write that cannot be applied is lost: only a sticky
    // failure tells the client (at its next flush).
    if (!s.ok() && !op.wait)
      (void)fail(Status::Error(s.code(), "writing acknowledged data failed: " + why(s)));
    op.status = std::move(s);
  }
}

void EraTarget::wait_not_pending(uint64_t offset, uint64_t length) {
  const auto [first, end] = block_range(offset, length);
  wb_->wait_not_pending(first, end);
}

Status EraTarget::read(uint64_t offset, std::span<std::byte> buf) {
  // Read-your-writes: an acknowledged first write may still be queued.
  wait_not_pending(offset, buf.size());
  return lower_device()->read(offset, buf);
}

Status EraTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  // A queued write is not in the device below yet: it could report a hole.
  wait_not_pending(offset, length);
  return lower_device()->block_status(offset, length, out);
}

Status EraTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  const auto [first, end] = block_range(offset, buf.size());
  gate_enter();
  if (all_marked(first, end)) {
    fast_writes_.fetch_add(1, std::memory_order_relaxed);
    Status s = lower_device()->write(offset, buf, flags);
    gate_leave();
    return s;
  }
  // The write is acknowledged before it reaches the origin: make sure the
  // origin has space for it now, while a full disk can still fail just this
  // write (ENOSPC) instead of an acknowledged one later, which would fail
  // the target.
  if (Status r = lower_device()->reserve(offset, buf.size()); !r.ok()) {
    gate_leave();
    return r;
  }
  auto op = std::make_shared<Op>();
  op->type = Op::kWrite;
  op->offset = offset;
  op->length = buf.size();
  op->flags = flags;
  op->data.reset(static_cast<std::byte*>(std::aligned_alloc(4096, (buf.size() + 4095) / 4096 * 4096)));
  if (!op->data) {
    gate_leave();
    return Status::Error(ENOMEM, "era: no memory to queue a first write");
  }
  std::memcpy(op->data.get(), buf.data(), buf.size());
  op->first = first;
  op->end = end;
  op->bytes = buf.size();
  op->wait = (flags & kFua) != 0;
  return submit(std::move(op));
}

Status EraTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  return range_op(/*zeroes=*/false, offset, length, flags);
}

Status EraTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  return range_op(/*zeroes=*/true, offset, length, flags);
}

// Trim and write-zeroes change what their blocks read back: like a write,
// a range with blocks not yet marked in this era goes through the queue
// (bits committed before it is applied), and the caller waits for it.
Status EraTarget::range_op(bool zeroes, uint64_t offset, uint64_t length, uint32_t flags) {
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  const auto [first, end] = block_range(offset, length);
  gate_enter();
  if (all_marked(first, end)) {
    Status s = zeroes ? lower_device()->write_zeroes(offset, length, flags)
                      : lower_device()->trim(offset, length, flags);
    gate_leave();
    return s;
  }
  auto op = std::make_shared<Op>();
  op->type = zeroes ? Op::kZeroes : Op::kTrim;
  op->offset = offset;
  op->length = length;
  op->flags = flags;
  op->first = first;
  op->end = end;
  op->wait = true;
  return submit(std::move(op));
}

// REQUIRES: the gate entered for `op`; it is left when the op is applied
// (the pipeline's finished hook), or here if the pipeline refuses it.
Status EraTarget::submit(std::shared_ptr<Op> op) {
  queued_writes_.fetch_add(1, std::memory_order_relaxed);
  Status s = wb_->submit(op);
  if (!op->queued) gate_leave();  // refused (a failure earlier, or stopping): s says why
  return s;
}

Status EraTarget::commit_bits(std::vector<uint64_t>& bits) {
  const uint32_t e = era_.load(std::memory_order_acquire);
  std::sort(bits.begin(), bits.end());
  for (uint64_t b : bits) set_bit(committed_, b);
  std::vector<Flip> flips;
  uint64_t staged = UINT64_MAX;
  for (uint64_t b : bits) {
    const uint64_t i = b / kBitsPerWritesetBlock;
    if (i == staged) continue;
    staged = i;
    auto f = md_->stage_writeset(
        e, i,
        std::span<const uint64_t>(committed_.data() + i * kWordsPerWritesetBlock, kWordsPerWritesetBlock));
    if (!f.ok()) return f.status();
    flips.push_back(f.value());
  }
  if (Status s = md_->cache().write_dirty_buffers(); !s.ok()) return s;
  md_->apply(flips);
  commits_.fetch_add(1, std::memory_order_relaxed);
  committed_bits_.fetch_add(bits.size(), std::memory_order_relaxed);
  return Status::Ok();
}

Status EraTarget::flush() {
  if (Status s = detach(); !s.ok()) return s;
  return lower_device()->flush();
}

Status EraTarget::detach() {
  // Every bit is committed before its data is written, so applying the
  // queue is all that is owed; the data's durability is the next flush's.
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  return Status::Ok();
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
