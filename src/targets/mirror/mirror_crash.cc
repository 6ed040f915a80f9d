// The mirror target under the crash-state explorer (src/crash/).
//
// Workload: the legs are recorded devices (one stream each, so their
// flushes are independent as on separate disks). One client thread writes
// (512-byte aligned, 1 sector to 3 regions, some FUA), zeroes, trims and
// flushes while the mirror's own jobs run. Variants by seed % 4:
//  0: a new array on two blank legs;
//  1: two legs left by a crash (array active, a region with its bit set
//     differs between them): the resync runs under the client's writes;
//  2: a clean two-leg array and a blank third leg: the recovery runs under
//     the client's writes;
//  3: a two-leg array whose leg 1 was failed and missed writes into ten
//     regions, stopped cleanly: leg 1 is re-added, and its guided recovery
//     (only those regions) runs under the client's writes.
// And by seed / 3 % 2: a clean stop at the end, or none. The client pauses
// twice for longer than the mirror's idle time, so that it marks the array
// clean and active again while the jobs run.
//
// Marks: "op <i> W|Z <offset> <length>" before a write or zeroing (a trim
// is a zeroing for the mirror), "op <i> F" before a flush, "ack <i>" after
// an operation returned, "fua <i>" when op i was FUA.
//
// Checks at every crash state:
//  * on the crashed legs as md reads them: in-sync legs (trusted: events
//    at most one behind, an active role) hold equal data outside regions
//    whose bit is set in a current bitmap, and a leg being rebuilt holds
//    that data below its recovery_offset (the sync mark is never ahead of
//    the copy, so a read below it is right);
//  * after the mirror opened the legs and its resync and recovery ended:
//    every sector reads as the last write to it that a flush (or its own
//    FUA) made durable before the crash, or as a later write issued
//    before the crash (zeroes or the starting data when none was durable),
//    and every leg holds the same data.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "core/aligned_buf.h"
#include "core/memory_device.h"
#include "crash/explorer.h"
#include "targets/mirror/mirror_target.h"

namespace bowstack::mirror {
namespace {

using crash::CheckResult;
using crash::CrashState;
using crash::Op;
using crash::Record;
using crash::Recording;

constexpr uint64_t kLegSize = 4u << 20;
constexpr uint64_t kDataOffset = 2048 * md::kSector;  // md's for a 4 MiB leg
constexpr uint64_t kArraySize = kLegSize - kDataOffset;
constexpr uint32_t kRegion = 64u << 10;
constexpr uint64_t kSectors = kArraySize / md::kSector;

int variant_for(uint64_t seed) { return static_cast<int>(seed % 4); }
bool clean_stop_for(uint64_t seed) { return (seed / 3) % 2 == 0; }

// `sync_rate` 0: resync and recovery at full speed (checks); the recording
// slows them so that the client's pauses, the clean marking they cause and
// the superblock commits of the writes after them fall inside a recovery.
MirrorOptions options(uint64_t sync_rate = 0) {
  MirrorOptions o;
  o.region_size = kRegion;
  o.sync_min = sync_rate;
  o.sync_max = sync_rate;
  o.jobs = std::make_shared<JobRunner>("mirror");
  return o;
}

// What op `op` writes into array sector `s`: its number and the sector's.
void sector_contents(uint64_t op, uint64_t s, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte(static_cast<unsigned char>(op * 31 + s + 1)));
  for (int k = 0; k < 8; ++k) out[k] = std::byte(static_cast<unsigned char>((op + 1) >> (8 * k)));
  for (int k = 0; k < 8; ++k) out[8 + k] = std::byte(static_cast<unsigned char>(s >> (8 * k)));
}

bool mirror_settled(BlockDevice& m) {
  nlohmann::json j = nlohmann::json::object();
  m.describe(&j);
  if (j.value("sync_action", "") != "idle" || j.value("resync_pending_regions", 1) != 0) return false;
  for (const auto& l : j["legs"]) {
    if (l["state"] != "in_sync" && l["state"] != "faulty") return false;
  }
  return true;
}

bool wait_settled(BlockDevice& m) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!mirror_settled(m)) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::vector<std::shared_ptr<BlockDevice>> as_devices(const std::vector<std::shared_ptr<MemoryDevice>>& v) {
  return {v.begin(), v.end()};
}

// The legs' contents when recording starts, per variant.
Result<std::vector<std::vector<std::byte>>> starting_legs(uint64_t seed) {
  const int variant = variant_for(seed);
  if (variant == 0) return std::vector<std::vector<std::byte>>(2, std::vector<std::byte>(kLegSize));
  std::mt19937_64 rng(seed * 104729 + 7);
  std::vector<std::shared_ptr<MemoryDevice>> legs = {std::make_shared<MemoryDevice>(kLegSize),
                                                     std::make_shared<MemoryDevice>(kLegSize)};
  std::vector<std::vector<std::byte>> out;
  {
    auto m = MirrorTarget::create(as_devices(legs), options());
    if (!m.ok()) return m.status();
    std::vector<std::byte> data(kArraySize);
    for (auto& b : data) b = std::byte(static_cast<unsigned char>(rng()));
    if (Status s = (*m)->write(0, data, 0); !s.ok()) return s;
    if (Status s = (*m)->flush(); !s.ok()) return s;
    if (!wait_settled(**m))
      return Status::Error(ETIMEDOUT, "mirror workload: the first array did not settle");
    if (variant == 1) {
      // A crash while a write was in flight to region 5: copies as they are
      // now (active, bit 5 set), and the write reached leg 0 only.
      // Copies taken while the array is active, both with the same events
      // (under load the intent job may mark it clean in between: again).
      std::vector<std::byte> w(8192, std::byte{0x5a});
      for (int attempt = 0;; ++attempt) {
        if (Status s = (*m)->write(5 * kRegion + 4096, w, 0); !s.ok()) return s;
        out.clear();
        for (auto& l : legs) out.push_back(l->contents());
        auto sa = md::decode_superblock(std::span(out[0]).subspan(4096, 4096), kLegSize / md::kSector);
        auto sb = md::decode_superblock(std::span(out[1]).subspan(4096, 4096), kLegSize / md::kSector);
        if (sa.ok() && sb.ok() && !sa->clean() && !sb->clean() && sa->events == sb->events) break;
        if (attempt == 50) return Status::Error(ETIMEDOUT, "mirror workload: no active copy of the legs");
      }
      std::vector<std::byte> older(8192, std::byte{0xa5});
      std::copy(older.begin(), older.end(),
                out[1].begin() + static_cast<std::ptrdiff_t>(kDataOffset + 5 * kRegion + 4096));
    }
    if (variant == 3) {
      // Leg 1 fails; writes into ten regions reach leg 0 only, and the
      // clean stop keeps their bits (a leg is missing).
      if (auto r = (*m)->message("fail 1"); !r.ok()) return r.status();
      std::vector<std::byte> w(8192, std::byte{0x3c});
      for (uint64_t k = 0; k < 10; ++k) {
        if (Status s = (*m)->write((k * 5 + 2) * kRegion + 512, w, 0); !s.ok()) return s;
      }
    }
  }
  if (variant == 2 || variant == 3) {
    for (auto& l : legs) out.push_back(l->contents());
  }
  if (variant == 2) out.emplace_back(kLegSize);
  return out;
}

Result<Recording> record_mirror(uint64_t seed) {
  auto start = starting_legs(seed);
  if (!start.ok()) return start.status();
  crash::Recorder rec("mirror", seed);
  std::vector<std::shared_ptr<BlockDevice>> legs;
  for (size_t i = 0; i < start->size(); ++i) {
    auto mem = std::make_shared<MemoryDevice>(kLegSize);
    if (Status s = mem->write(0, (*start)[i], 0); !s.ok()) return s;
    const uint32_t stream = rec.add_device(fmt::format("leg{}", i), (*start)[i]);
    legs.push_back(std::make_shared<crash::RecordingDevice>(mem, &rec, stream));
  }
  auto opened = MirrorTarget::create(legs, options(1u << 20));
  if (!opened.ok()) return opened.status();
  std::shared_ptr<BlockDevice> m = opened.value();
  std::mt19937_64 rng(seed * 7919 + 11);
  uint64_t next = 0;
  const int ops = 160;
  for (int k = 0; k < ops; ++k) {
    if (k == ops / 3 || k == 2 * ops / 3) {
      // Idle long enough for the array to be marked clean: the next write
      // marks it active again, a superblock commit with no flush before it.
      std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    }
    const uint64_t r = rng() % 100;
    const uint64_t i = next++;
    Status s;
    if (r < 72) {
      const uint64_t sectors = 1 + rng() % (3 * kRegion / md::kSector);
      const uint64_t first = rng() % (kSectors - sectors + 1);
      AlignedBuf data(sectors * md::kSector);
      for (uint64_t q = 0; q < sectors; ++q) {
        sector_contents(i, first + q, data.span().subspan(q * md::kSector, md::kSector));
      }
      const bool fua = rng() % 10 == 0;
      rec.mark(fmt::format("op {} W {} {}", i, first * md::kSector, sectors * md::kSector));
      s = m->write(first * md::kSector, data.span(), fua ? uint32_t{kFua} : 0u);
      if (fua && s.ok()) rec.mark(fmt::format("fua {}", i));
    } else if (r < 80) {
      const uint64_t sectors = 1 + rng() % (2 * kRegion / md::kSector);
      const uint64_t first = rng() % (kSectors - sectors + 1);
      rec.mark(fmt::format("op {} Z {} {}", i, first * md::kSector, sectors * md::kSector));
      s = r < 76 ? m->trim(first * md::kSector, sectors * md::kSector, 0)
                 : m->write_zeroes(first * md::kSector, sectors * md::kSector, 0);
    } else {
      rec.mark(fmt::format("op {} F 0 0", i));
      s = m->flush();
    }
    rec.mark(s.ok() ? fmt::format("ack {}", i) : fmt::format("fail {} {}", i, s.code()));
    if (!s.ok()) return Status::Error(s.code(), "mirror workload: " + s.message());
  }
  if (clean_stop_for(seed)) {
    const uint64_t i = next++;
    rec.mark(fmt::format("op {} F 0 0", i));
    if (Status s = m->flush(); !s.ok()) return s;
    rec.mark(fmt::format("ack {}", i));
    m.reset();  // the clean stop is recorded
    return rec.snapshot();
  }
  Recording out = rec.snapshot();  // what a crash now leaves; the stop after it is not recorded
  m.reset();
  return out;
}

class MirrorChecker final : public crash::Checker {
 public:
  static Result<std::unique_ptr<MirrorChecker>> make(const Recording& rec) {
    if (rec.devices.size() < 2) return Status::Error(EINVAL, "a mirror recording has at least two legs");
    auto c = std::make_unique<MirrorChecker>();
    // The array's starting data: every in-sync leg's (they differ only
    // where variant 1 made them, and either is acceptable there). In
    // variant 3 leg 1 lacks writes: only leg 0's is the array's.
    const size_t truths = variant_for(rec.seed) == 3 ? 1 : 2;
    for (size_t i = 0; i < truths; ++i) {
      const auto& base = rec.devices[i].base;
      c->base_.emplace_back(base.begin() + kDataOffset, base.begin() + kDataOffset + kArraySize);
    }
    std::map<uint64_t, Write> open;
    for (size_t j = 0; j < rec.records.size(); ++j) {
      const Record& r = rec.records[j];
      if (r.op != Op::kMark) continue;
      std::istringstream in(r.text);
      std::string word;
      in >> word;
      uint64_t i = 0;
      in >> i;
      if (word == "op") {
        char kind = 0;
        uint64_t off = 0, len = 0;
        in >> kind >> off >> len;
        if (kind == 'F') {
          c->flushes_.push_back({i, SIZE_MAX});
        } else {
          c->writes_.push_back({i, j, SIZE_MAX, kind == 'Z', off / md::kSector, len / md::kSector});
        }
      } else if (word == "ack") {
        for (auto& f : c->flushes_) {
          if (f.op == i) f.acked_at = j;
        }
      } else if (word == "fua") {
        for (auto& w : c->writes_) {
          if (w.op == i) w.fua_at = j;
        }
      }
    }
    return c;
  }

  CheckResult check(CrashState& st) const override {
    const size_t c = st.spec.crash_point;
    std::vector<std::shared_ptr<BlockDevice>> legs;
    for (const auto& d : st.devices) legs.push_back(d->clone());
    if (auto e = check_raw(legs); !e.empty()) return {"crashed legs: " + e};
    auto m = MirrorTarget::create(legs, options());
    if (!m.ok()) return {"the mirror does not open on the crashed legs: " + m.status().message()};
    if (!wait_settled(**m)) return {"resync and recovery did not end within 30 s"};
    if (auto e = check_data(**m, c); !e.empty()) return {e};
    // Every leg the same, in the data area.
    std::vector<std::byte> a(kArraySize), b(kArraySize);
    if (!legs[0]->read(kDataOffset, a).ok()) return {"leg 0 unreadable"};
    for (size_t i = 1; i < legs.size(); ++i) {
      if (!legs[i]->read(kDataOffset, b).ok()) return {fmt::format("leg {} unreadable", i)};
      if (a != b)
        return {fmt::format("after resync and recovery, leg {} differs from leg 0 at byte {}", i,
                            first_diff(a, b))};
    }
    return {};
  }

 private:
  struct Write {
    uint64_t op;
    size_t issued_at;  // record index of its "op" mark
    size_t fua_at;     // record index of its "fua" mark, or SIZE_MAX
    bool zero;
    uint64_t first, sectors;
  };
  struct Flush {
    uint64_t op;
    size_t acked_at;
  };

  static uint64_t first_diff(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
    for (uint64_t k = 0; k < a.size(); ++k) {
      if (a[k] != b[k]) return k;
    }
    return a.size();
  }

  // md's invariant on the legs themselves.
  std::string check_raw(const std::vector<std::shared_ptr<BlockDevice>>& legs) const {
    struct Leg {
      md::Superblock sb;
      std::vector<std::byte> area;
      bool bitmap_ok = false;
      std::vector<std::byte> data;
    };
    std::vector<Leg> ok;
    uint64_t top = 0;
    for (const auto& d : legs) {
      std::vector<std::byte> raw(kLegSize);
      if (!d->read(0, raw).ok()) return "unreadable leg";
      auto sb = md::decode_superblock(std::span(raw).subspan(4096, 4096), kLegSize / md::kSector);
      if (!sb.ok()) continue;  // blank (not yet written): trusted by nobody
      Leg l;
      l.sb = *sb;
      const uint64_t at = (md::kSuperOffset + static_cast<uint64_t>(sb->bitmap_offset)) * md::kSector;
      auto bm = md::decode_bitmap_superblock(std::span(raw).subspan(at, md::kBitmapSbBytes));
      l.bitmap_ok = bm.ok() && md::check_bitmap(*sb, *bm).ok() && !md::bitmap_out_of_date(*sb, *bm);
      l.area.assign(raw.begin() + static_cast<std::ptrdiff_t>(at),
                    raw.begin() + static_cast<std::ptrdiff_t>(at + 4096));
      l.data.assign(raw.begin() + static_cast<std::ptrdiff_t>(sb->data_offset * md::kSector),
                    raw.begin() + static_cast<std::ptrdiff_t>(sb->data_offset * md::kSector + kArraySize));
      top = std::max(top, sb->events);
      ok.push_back(std::move(l));
    }
    const md::Superblock* fresh = nullptr;
    for (const auto& l : ok) {
      if (l.sb.events == top) fresh = &l.sb;
    }
    if (fresh == nullptr) return {};
    std::vector<const Leg*> in_sync, recovering;
    bool bitmaps = true;
    for (const auto& l : ok) {
      if (l.sb.events + 1 < top || l.sb.dev_number >= fresh->dev_roles.size() ||
          fresh->dev_roles[l.sb.dev_number] >= md::kRoleMax)
        continue;
      if (l.sb.recovering()) {
        recovering.push_back(&l);
      } else {
        in_sync.push_back(&l);
        bitmaps = bitmaps && l.bitmap_ok;
      }
    }
    if (in_sync.empty()) return "no trusted in-sync leg";
    if (!fresh->clean() && !bitmaps) return {};  // every region counts as dirty
    auto excused = [&](uint64_t byte) {
      if (fresh->clean()) return false;
      for (const Leg* l : in_sync) {
        if (md::test_bit(l->area, byte / kRegion)) return true;
      }
      return false;
    };
    const Leg& ref = *in_sync.front();
    auto compare = [&](const Leg& l, uint64_t upto, const char* what) -> std::string {
      for (uint64_t k = 0; k < upto; k += md::kSector) {
        if (std::equal(l.data.begin() + static_cast<std::ptrdiff_t>(k),
                       l.data.begin() + static_cast<std::ptrdiff_t>(k + md::kSector),
                       ref.data.begin() + static_cast<std::ptrdiff_t>(k)))
          continue;
        if (excused(k)) continue;
        return fmt::format(
            "{} leg (slot {}) differs from slot {} at array byte {} (region {}: bit clear, array {})", what,
            l.sb.dev_number, ref.sb.dev_number, k, k / kRegion, fresh->clean() ? "clean" : "active");
      }
      return {};
    };
    for (const Leg* l : in_sync) {
      if (auto e = compare(*l, kArraySize, "an in-sync"); !e.empty()) return e;
    }
    for (const Leg* l : recovering) {
      if (auto e = compare(*l, std::min(l->sb.recovery_offset * md::kSector, kArraySize),
                           "below its recovery_offset, a recovering");
          !e.empty())
        return e;
    }
    return {};
  }

  std::string check_data(BlockDevice& m, size_t c) const {
    // The last acknowledged flush before the crash: every op issued before
    // it is durable.
    uint64_t flushed_ops = 0;
    for (const auto& f : flushes_) {
      if (f.acked_at <= c) flushed_ops = std::max(flushed_ops, f.op);
    }
    std::vector<std::byte> got(kArraySize);
    if (Status s = m.read(0, got); !s.ok()) return "read of the array failed: " + s.message();
    std::vector<std::byte> want(md::kSector);
    for (uint64_t s = 0; s < kSectors; ++s) {
      // Writes to this sector issued before the crash, in order.
      std::vector<const Write*> ws;
      for (const auto& w : writes_) {
        if (w.issued_at <= c && s >= w.first && s < w.first + w.sectors) ws.push_back(&w);
      }
      size_t durable = SIZE_MAX;
      for (size_t k = 0; k < ws.size(); ++k) {
        if (ws[k]->op < flushed_ops || ws[k]->fua_at <= c) durable = k;
      }
      const std::span<const std::byte> have(got.data() + s * md::kSector, md::kSector);
      auto is = [&](const Write* w) {
        if (w->zero)
          return std::all_of(have.begin(), have.end(), [](std::byte x) { return x == std::byte{0}; });
        sector_contents(w->op, s, want);
        return std::equal(have.begin(), have.end(), want.begin());
      };
      bool match = false;
      for (size_t k = durable == SIZE_MAX ? 0 : durable; k < ws.size() && !match; ++k) match = is(ws[k]);
      if (!match && durable == SIZE_MAX) {
        for (const auto& b : base_) {
          match = match || std::equal(have.begin(), have.end(),
                                      b.begin() + static_cast<std::ptrdiff_t>(s * md::kSector));
        }
      }
      if (!match) {
        return fmt::format(
            "sector {} holds neither its durable contents ({}) nor a later write's", s,
            durable == SIZE_MAX ? std::string("the starting data") : fmt::format("op {}", ws[durable]->op));
      }
    }
    return {};
  }

  std::vector<std::vector<std::byte>> base_;
  std::vector<Write> writes_;  // in issue order
  std::vector<Flush> flushes_;
};

const bool registered = crash::register_workload(
    "mirror",
    "mirror: writes, zeroes, trims and flushes on md legs while resync (after a crash) or recovery (a new "
    "leg) runs; checks md's leg invariant on the crashed legs, then every flushed write and equal legs "
    "after the restart",
    &record_mirror, crash::checker_of<MirrorChecker>());

}  // namespace
}  // namespace bowstack::mirror
