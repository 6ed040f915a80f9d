// The bow target under the crash-state explorer (src/crash/).
//
// Workload: a device of random data served by bow, trims and writes in
// TRIM, a checkpoint, then random writes (aligned and not, some FUA),
// trims and flushes until free space runs short, and in half the runs a
// commit followed by more writes. One client thread, so the oracle is
// exact; bow's committer still batches behind it. Variants by seed: block
// size 512 or 4096, commit or not; and block size 1024 with free space in
// single blocks and some long writes, whose batches overflow the log block
// (log blocks saved partly filled).
//
// Marks: "op <i> W|T|F <offset> <length> <fua>" before op i (a write's
// mark carries its data), "ack <i>" / "fail <i> <errno>" after it,
// "checkpoint-start", "checkpoint-done" (data: the checkpoint image, then
// one byte per block, 1 = in use at checkpoint), "commit-start",
// "commit-done".
//
// Checks at every crash state (c = the crash point):
//  a. restore on a copy: with a checkpoint done and no commit started it
//     must restore, and every block in use at checkpoint must equal the
//     checkpoint image; with no checkpoint yet, or a commit started, it may
//     instead find no checkpoint, and then the device must hold what the
//     client was promised (below); after a commit is acknowledged it must
//     find none. Never an error, never a wrong "success".
//  b. serve again (resume) on another copy: must open; what it shows must
//     hold every write acknowledged before the last acknowledged flush (per
//     512-byte sector: the version as of that flush, or one written since by
//     an operation started before the crash); in CHECKPOINT, more writes
//     and a flush, then restore must still give the checkpoint image.
//  c. for one state in 32 where restore is expected to restore: the
//     restore is recorded and crashed after each of its writes to block 0
//     and each flush (its ordering points), after a spread of its other
//     writes, and in random subsets of its unflushed writes; each crashed
//     restore run again must give the checkpoint image.
//
// "Only where a commit was acknowledged" is read as: the committed outcome
// is allowed from the moment the commit starts. The commit's last durable
// write necessarily precedes its acknowledgement, so a crash between the
// two cannot be told from one after it.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <sstream>

#include "core/crc32.h"
#include "core/memory_device.h"
#include "crash/explorer.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"

namespace bowstack::bow {
namespace {

using crash::CheckResult;
using crash::CrashState;
using crash::Op;
using crash::Record;
using crash::Recording;

constexpr const char* kMeta = "/crash/image.bowmeta";
constexpr uint64_t kSector = 512;
constexpr uint64_t kUndefined = ~uint64_t{0};

struct Variant {
  uint32_t block_size;
  uint64_t size;
  bool commit;
  // Free space in single blocks (upper three quarters) and some long writes
  // to checkpoint data (first quarter): a write saves one copy per block, so batches overflow the log block
  // by more than fits in its first sector and bow saves log blocks partly filled.
  bool fragmented;
};

Variant variant(uint64_t seed) {
  const bool fragmented = seed % 2 == 0 && (seed / 4) % 2 == 1;
  const uint32_t bs = seed % 2 == 1 ? 512 : fragmented ? 1024 : 4096;
  return Variant{bs, bs == 512 ? uint64_t{1} << 20 : uint64_t{2} << 20, (seed / 2) % 2 == 1, fragmented};
}

uint64_t sector_hash(std::span<const std::byte> s) { return crc32(0, s); }

std::vector<std::byte> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<std::byte> b(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(b.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return b;
}

// ---- Recording the workload -------------------------------------------------

class Driver {
 public:
  Driver(BowTarget& t, crash::Recorder& rec, std::mt19937_64& rng, uint64_t size, uint32_t bs)
      : t_(t), rec_(rec), rng_(rng), size_(size), bs_(bs) {}

  Status write(uint64_t off, uint64_t len, bool fua) {
    auto data = random_bytes(rng_, len);
    const uint64_t i = next_++;
    rec_.mark(fmt::format("op {} W {} {} {}", i, off, len, fua ? 1 : 0), data);
    return finish(i, t_.write(off, data, fua ? uint32_t{kFua} : 0u));
  }
  Status trim(uint64_t off, uint64_t len) {
    const uint64_t i = next_++;
    rec_.mark(fmt::format("op {} T {} {} 0", i, off, len));
    return finish(i, t_.trim(off, len, 0));
  }
  Status flush() {
    const uint64_t i = next_++;
    rec_.mark(fmt::format("op {} F 0 0 0", i));
    return finish(i, t_.flush());
  }
  // A long aligned write of 16 to 40 blocks in the first quarter (checkpoint
  // data in the fragmented variant), sometimes FUA.
  Status long_write() {
    const uint64_t len = (16 + rng_() % 25) * bs_;
    const uint64_t off = rng_() % (size_ / 4 / bs_ - len / bs_ + 1) * bs_;
    return write(off, len, rng_() % 10 == 0);
  }
  // A random write: aligned or not, up to three blocks, sometimes FUA.
  Status random_write() {
    uint64_t len = 1 + rng_() % (3 * bs_);
    uint64_t off = rng_() % (size_ - len + 1);
    if (rng_() % 2) {
      off = off / bs_ * bs_;
      len = std::max<uint64_t>(bs_, len / bs_ * bs_);
      if (off + len > size_) off = size_ - len;
    }
    return write(off, len, rng_() % 10 == 0);
  }

 private:
  Status finish(uint64_t i, Status s) {
    if (s.ok()) {
      rec_.mark(fmt::format("ack {}", i));
    } else {
      rec_.mark(fmt::format("fail {} {}", i, s.code()));
    }
    return s;
  }

  BowTarget& t_;
  crash::Recorder& rec_;
  std::mt19937_64& rng_;
  const uint64_t size_;
  const uint32_t bs_;
  uint64_t next_ = 0;
};

Result<Recording> record_bow(uint64_t seed) {
  const Variant v = variant(seed);
  std::mt19937_64 rng(seed * 1000003);
  const std::vector<std::byte> base = random_bytes(rng, v.size);
  auto mem = std::make_shared<MemoryDevice>(v.size);
  if (Status s = mem->write(0, base, 0); !s.ok()) return s;
  crash::Recorder rec("bow", seed);
  const uint32_t stream = rec.add_device("image", base);
  auto dev = std::make_shared<crash::RecordingDevice>(mem, &rec, stream);
  auto store = std::make_shared<MemEnv>();
  crash::RecordingEnv env(store, &rec);
  BowOptions o;
  o.block_size = v.block_size;
  o.meta_path = kMeta;
  o.env = &env;
  o.max_pending_bytes = 16 * v.block_size;  // small: the writers also meet backpressure
  auto opened = BowTarget::open(dev, o);
  if (!opened.ok()) return opened.status();
  {
    std::shared_ptr<BowTarget> t = opened.value();
    Driver d(*t, rec, rng, v.size, v.block_size);
    // TRIM: free space in random runs (about half the device), a few writes
    // (some into what was just trimmed), a flush.
    const uint64_t blocks = v.size / v.block_size;
    for (int i = 0; i < 24 && !v.fragmented; ++i) {
      const uint64_t n = 1 + rng() % (blocks / 24);
      const uint64_t b = rng() % (blocks - n);
      if (Status s = d.trim(b * v.block_size, n * v.block_size); !s.ok()) return s;
    }
    for (uint64_t b = blocks / 4; b < blocks && v.fragmented; b += 2) {
      if (Status s = d.trim(b * v.block_size, v.block_size); !s.ok()) return s;
    }
    for (int i = 0; i < 8; ++i) {
      if (Status s = d.random_write(); !s.ok()) return s;
    }
    if (Status s = d.flush(); !s.ok()) return s;

    rec.mark("checkpoint-start");
    if (Status s = t->checkpoint(); !s.ok()) return Status::Error(s.code(), "checkpoint: " + s.message());
    std::vector<std::byte> image(v.size);
    if (Status s = t->read(0, image); !s.ok()) return s;
    for (uint64_t b = 0; b < blocks; ++b) {
      const BlockType bt = t->block_type(b);
      image.push_back(std::byte(bt == BlockType::kUnchanged || bt == BlockType::kSector0 ? 1 : 0));
    }
    rec.mark("checkpoint-done", image);

    // CHECKPOINT: writes, trims and flushes; ENOSPC is expected towards the
    // end and must leave everything as it was.
    const int ops = v.block_size == 512 ? 260 : 160;
    for (int i = 0; i < ops; ++i) {
      const uint64_t r = rng() % 20;
      Status s;
      if (r < 8 && v.fragmented) {
        s = d.long_write();
      } else if (r < 15) {
        s = d.random_write();
      } else if (r < 17) {
        const uint64_t len = (1 + rng() % 4) * v.block_size;
        s = d.trim(rng() % (v.size - len), len);
      } else {
        s = d.flush();
      }
      if (!s.ok() && s.code() != ENOSPC) return Status::Error(s.code(), "workload: " + s.message());
    }
    if (v.commit) {
      if (Status s = d.flush(); !s.ok()) return s;
      rec.mark("commit-start");
      if (Status s = t->commit(); !s.ok()) return Status::Error(s.code(), "commit: " + s.message());
      rec.mark("commit-done");
      for (int i = 0; i < 6; ++i) {
        if (Status s = d.random_write(); !s.ok()) return s;
      }
      if (Status s = d.flush(); !s.ok()) return s;
      for (int i = 0; i < 3; ++i) {
        if (Status s = d.random_write(); !s.ok()) return s;
      }
    }
    // No final flush: the last writes may be lost, as in a crash.
  }
  return rec.snapshot();
}

// ---- The oracle ------------------------------------------------------------

struct Phase {
  size_t checkpoint_start = SIZE_MAX, checkpoint_done = SIZE_MAX, commit_start = SIZE_MAX,
         commit_done = SIZE_MAX;
  uint64_t ops_before_checkpoint = 0, ops_before_commit = 0;
};

class BowChecker final : public crash::Checker {
 public:
  static Result<std::unique_ptr<BowChecker>> make(const Recording& rec);
  CheckResult check(CrashState& state) const override;

 private:
  struct Version {
    uint64_t op;
    uint64_t hash;  // kUndefined: unknown contents
  };
  // For a crash at c: ops below `durable` are covered by an acknowledged
  // flush; ops up to `started` (inclusive) may have happened.
  struct Promise {
    uint64_t durable = 0;
    int64_t started = -1;
  };
  Promise promise_at(size_t c) const;
  // "" or what is wrong with `dev` read as the client sees it.
  std::string check_versions(BlockDevice& dev, const Promise& p, const char* what) const;
  std::string check_checkpoint_image(BlockDevice& dev, const char* what) const;
  std::string check_restore(CrashState& st, size_t c, CheckResult* r) const;
  std::string check_resume(CrashState& st, size_t c) const;
  std::string crash_the_restore(const crash::CowDevice& before, uint64_t rng, CheckResult* r) const;

  uint32_t bs_ = 0;
  uint64_t size_ = 0;
  Phase ph_;
  std::vector<std::byte> cp_image_;
  std::vector<uint8_t> in_use_;
  std::vector<std::vector<Version>> versions_;  // per sector, by op
  std::vector<uint64_t> initial_;               // per sector
  // (record index, op) of op starts, flush acknowledgements (op = ops
  // before the flush), in record order.
  std::vector<std::pair<size_t, uint64_t>> starts_, flush_acks_;
};

Result<std::unique_ptr<BowChecker>> BowChecker::make(const Recording& rec) {
  if (rec.devices.size() != 1) return Status::Error(EINVAL, "bow recording must have one device");
  auto c = std::make_unique<BowChecker>();
  const Variant v = variant(rec.seed);
  c->bs_ = v.block_size;
  c->size_ = rec.devices[0].base.size();
  const uint64_t sectors = c->size_ / kSector;
  std::vector<std::byte> model = rec.devices[0].base;
  std::vector<bool> undefined(sectors, false);
  for (uint64_t s = 0; s < sectors; ++s)
    c->initial_.push_back(sector_hash(std::span(model).subspan(s * kSector, kSector)));
  c->versions_.resize(sectors);
  struct Pending {
    char kind = 0;
    uint64_t off = 0, len = 0;
    const Record* rec = nullptr;
  };
  std::map<uint64_t, Pending> open;
  uint64_t ops = 0;
  for (size_t j = 0; j < rec.records.size(); ++j) {
    const Record& r = rec.records[j];
    if (r.op != Op::kMark) continue;
    std::istringstream in(r.text);
    std::string word;
    in >> word;
    if (word == "op") {
      uint64_t i = 0, off = 0, len = 0, fua = 0;
      char kind = 0;
      in >> i >> kind >> off >> len >> fua;
      open[i] = Pending{kind, off, len, &r};
      c->starts_.push_back({j, i});
      ops = i + 1;
    } else if (word == "ack" || word == "fail") {
      uint64_t i = 0;
      in >> i;
      auto it = open.find(i);
      if (it == open.end()) return Status::Error(EINVAL, "recording: ack of an unknown op");
      const Pending p = it->second;
      open.erase(it);
      if (word == "fail") continue;  // ENOSPC: refused whole, nothing changed
      if (p.kind == 'F') {
        c->flush_acks_.push_back({j, i});
        continue;
      }
      // Apply to the model; record the new version of every sector touched.
      const uint64_t first = p.off / kSector, end = (p.off + p.len + kSector - 1) / kSector;
      if (p.kind == 'W') {
        auto d = rec.data(*p.rec);
        std::memcpy(model.data() + p.off, d.data(), d.size());
      }
      for (uint64_t s = first; s < end; ++s) {
        const bool whole = p.off <= s * kSector && p.off + p.len >= (s + 1) * kSector;
        if (p.kind == 'T') {
          undefined[s] = undefined[s] || whole;  // a partly trimmed sector keeps its data
        } else if (whole) {
          undefined[s] = false;
        }
        const uint64_t h =
            undefined[s] ? kUndefined : sector_hash(std::span(model).subspan(s * kSector, kSector));
        c->versions_[s].push_back({i, h});
      }
    } else if (word == "checkpoint-start") {
      c->ph_.checkpoint_start = j;
      c->ph_.ops_before_checkpoint = ops;
    } else if (word == "checkpoint-done") {
      c->ph_.checkpoint_done = j;
      auto d = rec.data(r);
      const uint64_t blocks = c->size_ / c->bs_;
      if (d.size() != c->size_ + blocks) return Status::Error(EINVAL, "recording: bad checkpoint image");
      c->cp_image_.assign(d.begin(), d.begin() + static_cast<ptrdiff_t>(c->size_));
      for (uint64_t b = 0; b < blocks; ++b) c->in_use_.push_back(static_cast<uint8_t>(d[c->size_ + b]));
      // The oracle and the target must agree on what the client sees.
      for (uint64_t s = 0; s < sectors; ++s) {
        if (undefined[s] || !c->in_use_[s * kSector / c->bs_]) continue;
        if (std::memcmp(c->cp_image_.data() + s * kSector, model.data() + s * kSector, kSector) != 0) {
          return Status::Error(EINVAL,
                               fmt::format("oracle disagrees with the target at sector {} at checkpoint", s));
        }
      }
    } else if (word == "commit-start") {
      c->ph_.commit_start = j;
      c->ph_.ops_before_commit = ops;
    } else if (word == "commit-done") {
      c->ph_.commit_done = j;
    }
  }
  if (c->ph_.checkpoint_done == SIZE_MAX) return Status::Error(EINVAL, "recording has no checkpoint");
  return c;
}

BowChecker::Promise BowChecker::promise_at(size_t c) const {
  Promise p;
  for (const auto& [j, op] : starts_) {
    if (j > c) break;
    p.started = static_cast<int64_t>(op);
  }
  for (const auto& [j, op] : flush_acks_) {
    if (j > c) break;
    p.durable = std::max(p.durable, op);
  }
  // A completed checkpoint and a completed commit each flushed the device
  // after every earlier write had been applied.
  if (ph_.checkpoint_done <= c) p.durable = std::max(p.durable, ph_.ops_before_checkpoint);
  if (ph_.commit_done <= c) p.durable = std::max(p.durable, ph_.ops_before_commit);
  return p;
}

// Checked in chunks through a per-thread buffer: whole-device buffers per
// state (allocated, zeroed, freed) dominated the run time under ASan.
constexpr uint64_t kChunk = 64 * 1024;

std::span<std::byte> scratch(uint64_t n) {
  thread_local std::vector<std::byte> buf;
  if (buf.size() < n) buf.resize(n);
  return {buf.data(), n};
}

std::string BowChecker::check_versions(BlockDevice& dev, const Promise& p, const char* what) const {
  for (uint64_t at = 0; at < size_; at += kChunk) {
    const uint64_t n = std::min(kChunk, size_ - at);
    auto got = scratch(n);
    if (Status s = dev.read(at, got); !s.ok()) return fmt::format("{}: read failed: {}", what, s.message());
    for (uint64_t s = at / kSector; s < (at + n) / kSector; ++s) {
      const auto& v = versions_[s];
      // The version as of the last acknowledged flush...
      auto it = std::lower_bound(v.begin(), v.end(), p.durable,
                                 [](const Version& x, uint64_t op) { return x.op < op; });
      uint64_t base = it == v.begin() ? initial_[s] : std::prev(it)->hash;
      if (base == kUndefined) continue;
      const uint64_t h = sector_hash(got.subspan(s * kSector - at, kSector));
      if (h == base) continue;
      // ...or one written since by an operation that had started.
      bool ok = false;
      for (; it != v.end() && static_cast<int64_t>(it->op) <= p.started; ++it) {
        if (it->hash == kUndefined || it->hash == h) {
          ok = true;
          break;
        }
      }
      if (!ok) {
        return fmt::format(
            "{}: sector {} (block {}) holds data the client never had there (flushed through op "
            "{}, started through op {})",
            what, s, s * kSector / bs_, static_cast<int64_t>(p.durable) - 1, p.started);
      }
    }
  }
  return {};
}

std::string BowChecker::check_checkpoint_image(BlockDevice& dev, const char* what) const {
  for (uint64_t at = 0; at < size_; at += kChunk) {
    const uint64_t n = std::min(kChunk, size_ - at);
    auto got = scratch(n);
    if (Status s = dev.read(at, got); !s.ok()) return fmt::format("{}: read failed: {}", what, s.message());
    for (uint64_t b = at / bs_; b < (at + n) / bs_; ++b) {
      if (!in_use_[b]) continue;
      if (std::memcmp(got.data() + (b * bs_ - at), cp_image_.data() + b * bs_, bs_) != 0) {
        return fmt::format("{}: block {} (in use at checkpoint) differs from the checkpoint image", what, b);
      }
    }
  }
  return {};
}

std::string BowChecker::crash_the_restore(const crash::CowDevice& before, uint64_t rng,
                                          CheckResult* r) const {
  crash::Recorder rec("bow-restore", rng);
  const uint32_t stream = rec.add_device("image", before.contents());
  crash::RecordingDevice dev(before.clone(), &rec, stream);
  auto first = restore(dev, RestoreOptions{});
  if (!first.ok()) return "restore (recorded) failed: " + first.status().message();
  const Recording rr = rec.snapshot();
  if (rr.records.empty()) return {};
  crash::StateOptions so;
  so.prefix_at_every_write = true;
  so.random_states = 6;
  std::vector<crash::StateSpec> specs = crash::generate_states(rr, rng, so);
  // Bounded: the prefix after every write to block 0 and every flush (the
  // restore's ordering points), evenly spaced other prefixes, and the
  // random ones. (The functional test crashes the real tool after every
  // single write.)
  std::vector<crash::StateSpec> pick;
  const size_t prefixes = specs.size() - so.random_states;
  const size_t step = std::max<size_t>(1, prefixes / 16);
  for (size_t i = 0; i < prefixes; ++i) {
    const crash::Record& x = rr.records[specs[i].crash_point];
    const bool ordering = x.op == Op::kFlushEnd || (x.op == Op::kWrite && x.offset < bs_);
    if (ordering || i % step == 0 || i + 1 == prefixes) pick.push_back(specs[i]);
  }
  pick.insert(pick.end(), specs.begin() + static_cast<ptrdiff_t>(prefixes), specs.end());
  std::stable_sort(pick.begin(), pick.end(), [](const crash::StateSpec& a, const crash::StateSpec& b) {
    return a.crash_point < b.crash_point;
  });
  crash::Materializer m(rr);
  for (const crash::StateSpec& spec : pick) {
    m.advance(spec.crash_point);
    CrashState sub = m.build(spec);
    ++r->sub_states;
    auto again = restore(*sub.devices[0], RestoreOptions{});
    if (!again.ok()) {
      return fmt::format("restore crashed ({}) and run again failed: {}", sub.description,
                         again.status().message());
    }
    if (auto e = check_checkpoint_image(*sub.devices[0], "restore crashed and run again"); !e.empty()) {
      return e + " (" + sub.description + ")";
    }
  }
  return {};
}

std::string BowChecker::check_restore(CrashState& st, size_t c, CheckResult* r) const {
  auto dev = st.devices[0]->clone();
  auto rep = restore(*dev, RestoreOptions{});
  if (!rep.ok()) return "restore failed: " + rep.status().message();
  using O = RestoreReport::Outcome;
  const bool checkpointed = ph_.checkpoint_done <= c && c < ph_.commit_start;
  if (rep->outcome == O::kRestored) {
    if (c < ph_.checkpoint_start) return "restore found a checkpoint before one was started";
    if (ph_.commit_done <= c) return "restore rolled back a commit that was acknowledged";
    if (auto e = check_checkpoint_image(*dev, "restore"); !e.empty()) return e;
    // One state in 32, by a hash of its index (prefix states all have rng 0).
    const uint64_t pick = (st.spec.index + 1) * 0x9e3779b97f4a7c15ull;
    if (checkpointed && (pick >> 59) == 0) return crash_the_restore(*st.devices[0], pick, r);
    return {};
  }
  if (rep->outcome != O::kNoCheckpoint) return "restore: unexpected outcome";
  if (checkpointed) return "the checkpoint is lost: restore finds none";
  return check_versions(*dev, promise_at(c), "no checkpoint left; the device");
}

std::string BowChecker::check_resume(CrashState& st, size_t c) const {
  auto dev = st.devices[0]->clone();
  MemEnv env;
  env.restore(st.env->snapshot());
  BowOptions o;
  o.block_size = bs_;
  o.meta_path = kMeta;
  o.env = &env;
  std::string err;
  {
    auto t = BowTarget::open(dev, o);
    if (!t.ok()) return "serve again (resume) failed: " + t.status().message();
    const State state = (*t)->state();
    if (state == State::kCheckpoint && ph_.commit_done <= c) return "resumed a checkpoint that was committed";
    if (state != State::kCheckpoint && ph_.checkpoint_done <= c && c < ph_.commit_start) {
      return "serve again lost the checkpoint";
    }
    if (auto e = check_versions(**t, promise_at(c), "after resume, the device"); !e.empty()) return e;
    if (state != State::kCheckpoint) return {};
    // More writes on the resumed checkpoint, a flush, then restore.
    std::mt19937_64 rng(st.spec.rng ^ 0xabcdef);
    for (int i = 0; i < 6; ++i) {
      const uint64_t len = 1 + rng() % (2 * bs_);
      const uint64_t off = rng() % (size_ - len);
      auto data = random_bytes(rng, len);
      Status s = (*t)->write(off, data, 0);
      if (!s.ok() && s.code() != ENOSPC) return "write after resume failed: " + s.message();
    }
    if (Status s = (*t)->flush(); !s.ok()) return "flush after resume failed: " + s.message();
  }
  auto rep = restore(*dev, RestoreOptions{});
  if (!rep.ok()) return "restore after resume failed: " + rep.status().message();
  if (rep->outcome != RestoreReport::Outcome::kRestored) return "restore after resume found no checkpoint";
  return check_checkpoint_image(*dev, "restore after resume");
}

CheckResult BowChecker::check(CrashState& st) const {
  CheckResult r;
  const size_t c = st.spec.crash_point;
  r.error = check_restore(st, c, &r);
  if (r.error.empty()) r.error = check_resume(st, c);
  return r;
}

const bool registered = crash::register_workload(
    "bow",
    "bow: TRIM, checkpoint, writes/trims/flushes until space runs short, commit in half the runs; "
    "checks "
    "restore, resume, and restore crashed at its own writes",
    &record_bow, crash::checker_of<BowChecker>());

}  // namespace
}  // namespace bowstack::bow
