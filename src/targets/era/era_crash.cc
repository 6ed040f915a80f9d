// The era target under the crash-state explorer (src/crash/).
//
// Workload: an origin and a metadata device, both recorded (two streams, so
// their flushes are independent as on two disks). One client thread writes
// (aligned or not, some FUA), trims, flushes, checkpoints and takes and
// drops metadata snapshots; the metadata cache is kept small so dirty
// buffers are also written back early. Variants by seed: era block size
// 4 KiB or 16 KiB; the target closed cleanly at the end or not.
//
// Marks: "op <i> W <offset> <length> <era>" before a write issued in era
// <era>, "op <i> F" before a flush, "ack <i>" after an operation returned,
// "era <e>" after a checkpoint returned era <e> (its superblock durable).
//
// Checks at every crash state, on the metadata as the offline tools read it
// (before any recovery), then again after the target has opened it
// (recovery archives the current writeset) and closed:
//  * every block of every write acknowledged before the last acknowledged
//    flush has a logical era >= the era it was written in (its bit, or a
//    later one, survived);
//  * no block's era exceeds the current era;
//  * the current era is at least that of every acknowledged checkpoint;
//  * the metadata shows no damage, and the target opens on it.
#include <fmt/format.h>

#include <random>
#include <sstream>

#include "core/memory_device.h"
#include "crash/explorer.h"
#include "targets/era/era_target.h"
#include "targets/era/era_tools.h"

namespace bowstack::era {
namespace {

using crash::CheckResult;
using crash::CrashState;
using crash::Op;
using crash::Record;
using crash::Recording;

constexpr uint64_t kOriginSize = 1 << 20;

uint32_t block_size_for(uint64_t seed) { return seed % 2 == 1 ? 4096 : 16384; }

EraOptions options(uint32_t bs) {
  EraOptions o;
  o.block_size = bs;
  o.bufio.max_bytes = 64 * 1024;  // small: dirty metadata is also written back early
  o.max_pending_bytes = 64 * 1024;
  return o;
}

Result<Recording> record_era(uint64_t seed) {
  const uint32_t bs = block_size_for(seed);
  const uint64_t nr = (kOriginSize + bs - 1) / bs;
  std::mt19937_64 rng(seed * 7919 + 3);
  std::vector<std::byte> base(kOriginSize);
  for (auto& b : base) b = std::byte(static_cast<unsigned char>(rng()));
  const uint64_t md_size = metadata_blocks_for(nr) * kMetaBlockSize;
  crash::Recorder rec("era", seed);
  const uint32_t so = rec.add_device("origin", base);
  const uint32_t sm = rec.add_device("metadata", std::vector<std::byte>(md_size));
  auto origin_mem = std::make_shared<MemoryDevice>(kOriginSize);
  if (Status s = origin_mem->write(0, base, 0); !s.ok()) return s;
  auto origin = std::make_shared<crash::RecordingDevice>(origin_mem, &rec, so);
  auto md = std::make_shared<crash::RecordingDevice>(std::make_shared<MemoryDevice>(md_size), &rec, sm);
  auto opened = EraTarget::open(origin, md, options(bs));
  if (!opened.ok()) return opened.status();
  std::shared_ptr<EraTarget> t = opened.value();
  uint64_t next = 0;
  bool snap = false;
  auto finish = [&](uint64_t i, Status s) {
    rec.mark(s.ok() ? fmt::format("ack {}", i) : fmt::format("fail {} {}", i, s.code()));
    return s;
  };
  const int ops = 220;
  for (int k = 0; k < ops; ++k) {
    const uint64_t r = rng() % 100;
    Status s;
    if (r < 70) {
      uint64_t len = 1 + rng() % (3 * bs);
      uint64_t off = rng() % (kOriginSize - len + 1);
      if (rng() % 2) {
        off = off / 512 * 512;
        len = std::min<uint64_t>((len + 511) / 512 * 512, kOriginSize - off);
      }
      std::vector<std::byte> data(len, std::byte(static_cast<unsigned char>(k)));
      const uint64_t i = next++;
      rec.mark(fmt::format("op {} W {} {} {}", i, off, len, t->current_era()));
      s = finish(i, t->write(off, data, rng() % 12 == 0 ? uint32_t{kFua} : 0u));
    } else if (r < 75) {
      const uint64_t off = rng() % (kOriginSize / 512) * 512;
      const uint64_t i = next++;
      rec.mark(fmt::format("op {} T {} 0 0", i, off));
      s = finish(i, t->trim(off, std::min<uint64_t>(2 * bs, kOriginSize - off), 0));
    } else if (r < 88) {
      const uint64_t i = next++;
      rec.mark(fmt::format("op {} F 0 0 0", i));
      s = finish(i, t->flush());
    } else if (r < 96) {
      auto e = t->checkpoint();
      if (!e.ok()) return e.status();
      rec.mark(fmt::format("era {}", *e));
    } else {
      s = snap ? t->drop_metadata_snap() : t->take_metadata_snap();
      snap = !snap;
    }
    if (!s.ok()) return Status::Error(s.code(), "era workload: " + s.message());
  }
  // Half the runs end with a clean close (queue drained), half just stop.
  if (seed % 4 < 2) {
    const uint64_t i = next++;
    rec.mark(fmt::format("op {} F 0 0 0", i));
    if (Status s = finish(i, t->flush()); !s.ok()) return s;
  }
  t.reset();
  return rec.snapshot();
}

class EraChecker final : public crash::Checker {
 public:
  static Result<std::unique_ptr<EraChecker>> make(const Recording& rec) {
    if (rec.devices.size() != 2) return Status::Error(EINVAL, "era recording must have two devices");
    auto c = std::make_unique<EraChecker>();
    c->bs_ = block_size_for(rec.seed);
    std::map<uint64_t, Write> open;
    for (size_t j = 0; j < rec.records.size(); ++j) {
      const Record& r = rec.records[j];
      if (r.op != Op::kMark) continue;
      std::istringstream in(r.text);
      std::string word;
      in >> word;
      if (word == "op") {
        uint64_t i = 0, off = 0, len = 0, era = 0;
        char kind = 0;
        in >> i >> kind >> off >> len >> era;
        if (kind == 'W') open[i] = Write{i, off, len, static_cast<uint32_t>(era), 0};
        if (kind == 'F') c->flushes_.push_back({j, i, false});
      } else if (word == "ack") {
        uint64_t i = 0;
        in >> i;
        auto it = open.find(i);
        if (it != open.end()) {
          it->second.acked_at = j;
          c->writes_.push_back(it->second);
          open.erase(it);
        }
        for (auto& f : c->flushes_) {
          if (f.op == i) f.acked = true, f.at = j;
        }
      } else if (word == "era") {
        uint32_t e = 0;
        in >> e;
        c->eras_.push_back({j, e});
      }
    }
    return c;
  }

  CheckResult check(CrashState& st) const override {
    const size_t c = st.spec.crash_point;
    // Writes acknowledged before the last flush acknowledged by c.
    uint64_t durable_ops = 0;
    for (const auto& f : flushes_) {
      if (f.acked && f.at <= c) durable_ops = std::max(durable_ops, f.op);
    }
    uint32_t min_era = kFirstEra;
    for (const auto& [j, e] : eras_) {
      if (j <= c) min_era = std::max(min_era, e);
    }
    auto origin = st.devices[0]->clone();
    auto md = st.devices[1]->clone();
    CheckResult r;
    // The crashed metadata as the offline tools see it.
    auto damage = check_metadata(md);
    if (!damage.ok() && damage.status().code() == EMEDIUMTYPE) {
      // Not era metadata at all: the crash came before the format that the
      // first open writes was durable. Fine only if nothing was promised yet.
      if (durable_ops > 0 || min_era > kFirstEra) {
        return {"the metadata is not era metadata, though writes or checkpoints were acknowledged: " +
                damage.status().message()};
      }
      damage = era::CheckResult{};
    }
    if (!damage.ok()) return {"era check failed: " + damage.status().message()};
    if (damage->superblock_ok && !damage->damage.empty()) {
      return {"era check reports damage: " + damage->damage.front().what};
    }
    if (damage->superblock_ok) {
      if (auto e = check_eras(md, durable_ops, min_era, "crashed metadata"); !e.empty()) return {e};
    } else if (durable_ops > 0 || min_era > kFirstEra) {
      return {"no valid superblock, though writes or checkpoints were acknowledged"};
    }
    // Serve again: recovery archives the writeset; the promise still holds.
    {
      auto t = EraTarget::open(origin, md, options(bs_));
      if (!t.ok()) return {"serve again (recovery) failed: " + t.status().message()};
    }
    if (auto e = check_eras(md, durable_ops, min_era, "after recovery"); !e.empty()) return {e};
    return r;
  }

 private:
  struct Write {
    uint64_t op, off, len;
    uint32_t era;
    size_t acked_at;
  };
  struct Flush {
    size_t at;  // record index of its ack
    uint64_t op;
    bool acked;
  };

  std::string check_eras(const std::shared_ptr<BlockDevice>& md, uint64_t durable_ops, uint32_t min_era,
                         const char* what) const {
    auto src = open_source(md, false);
    if (!src.ok()) return fmt::format("{}: cannot read: {}", what, src.status().message());
    std::vector<uint32_t> eras;
    Status s = for_each_era(src.value(), true, nullptr, [&](uint64_t, std::span<const uint32_t> e) {
      eras.insert(eras.end(), e.begin(), e.end());
      return Status::Ok();
    });
    if (!s.ok()) return fmt::format("{}: cannot read the eras: {}", what, s.message());
    const uint32_t current = src->current_era;
    if (current < min_era) {
      return fmt::format("{}: current era {} is below era {} of an acknowledged checkpoint", what, current,
                         min_era);
    }
    for (size_t b = 0; b < eras.size(); ++b) {
      if (eras[b] > current)
        return fmt::format("{}: block {} has era {} beyond the current era {}", what, b, eras[b], current);
    }
    for (const Write& w : writes_) {
      if (w.op >= durable_ops) continue;
      for (uint64_t b = w.off / bs_; b < (w.off + w.len + bs_ - 1) / bs_; ++b) {
        if (b >= eras.size() || eras[b] < w.era) {
          return fmt::format("{}: block {} written in era {} (op {}, flushed) has era {}", what, b, w.era,
                             w.op, b < eras.size() ? eras[b] : 0);
        }
      }
    }
    return {};
  }

  uint32_t bs_ = 0;
  std::vector<Write> writes_;  // acknowledged writes, in order
  std::vector<Flush> flushes_;
  std::vector<std::pair<size_t, uint32_t>> eras_;  // (record, era) of acknowledged checkpoints
};

const bool registered = crash::register_workload(
    "era",
    "era: writes, trims, flushes, checkpoints and metadata snapshots on an origin and a metadata "
    "device; "
    "checks every flushed write keeps its era through crashes and recovery",
    &record_era, crash::checker_of<EraChecker>());

}  // namespace
}  // namespace bowstack::era
