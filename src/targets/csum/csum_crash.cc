// The csum target (modes dual and journal) under the crash-state explorer
// (src/crash/).
//
// Workload: a data device and a metadata device (formatted before the
// recording starts), both recorded as separate streams. A reader thread
// reads random blocks throughout (each must verify). One client thread
// writes whole blocks (1-3 at a time, some FUA; each block's contents name
// the write and the block), rewrites blocks before flushes (which forces
// csum's data flush between two checksums), trims and flushes; the
// metadata cache is small, so dirty pair sectors are also written back
// early. Variants by seed: block size 4096 or 512 (seed % 2); a clean
// close at the end or not (seed % 4); mode dual or journal ((seed / 4) %
// 2), the journal small (128 KiB) so that it wraps and checkpoints often.
//
// Marks: "op <i> W <first> <count>" before a write of blocks, "op <i> T
// <first> <count>" before a trim of whole blocks, "op <i> F" before a
// flush, "ack <i>" after an operation returned, "fua <i>" when op i was FUA.
//
// Check at every crash state (prefixes, reordered subsets, torn writes):
// open the target on the crashed devices (recovery), then read every
// block. Its *durable* contents are those of the last write to it covered
// by a flush acknowledged before the crash (or its own acknowledged FUA),
// zeroes if none; later writes (issued before the crash, not covered) are
// its other candidates. The device must hold the durable contents when no
// later write touched the block. Whatever the device holds, csum must read
// it without error when it is a candidate (old or new data, whole), and
// fail with EIO when it is not (torn): never good data that was never
// written, never EIO for data a flush or the format promised. In mode
// journal the device is judged after the open (the replay rewrites it), and
// no block may be torn then: replay finishes every write whose record
// committed, and no other write reached its place. Then a clean close and
// a second open must read the same as the first.
#include <fmt/format.h>

#include <atomic>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "core/memory_device.h"
#include "crash/explorer.h"
#include "targets/csum/csum_target.h"

namespace bowstack::csum {
namespace {

using crash::CheckResult;
using crash::CrashState;
using crash::Op;
using crash::Record;
using crash::Recording;

constexpr uint64_t kDataSize = 1 << 20;

uint32_t block_size_for(uint64_t seed) { return seed % 2 == 1 ? 4096 : 512; }
// Workload csum-journal records seeds with this bit set: mode journal
// whatever the seed (its recordings replay as workload csum).
constexpr uint64_t kJournalSeedBit = uint64_t{1} << 40;
Mode mode_for(uint64_t seed) {
  return (seed & kJournalSeedBit) != 0 || (seed / 4) % 2 == 1 ? Mode::kJournal : Mode::kDual;
}
constexpr uint64_t kJournalSectors = 256;

CsumOptions options(uint64_t seed) {
  CsumOptions o;
  o.mode = mode_for(seed);
  o.mode_given = true;
  o.cache.max_bytes = 16 * 1024;  // small: dirty pair sectors are written back early too
  o.max_pending_bytes = 32 * 1024;
  o.now = 1767225600;
  return o;
}

// What write `op` puts in block `b`: its number and the block's, so that a
// read tells which write it came from.
std::vector<std::byte> contents(uint64_t op, uint64_t b, uint32_t bs) {
  std::vector<std::byte> d(bs, std::byte(static_cast<unsigned char>(op * 31 + b)));
  for (int k = 0; k < 8; ++k) d[k] = std::byte(static_cast<unsigned char>(op >> (8 * k)));
  for (int k = 0; k < 8; ++k) d[8 + k] = std::byte(static_cast<unsigned char>(b >> (8 * k)));
  return d;
}

Result<Recording> record_csum(uint64_t seed) {
  const uint32_t bs = block_size_for(seed);
  const uint64_t nr = kDataSize / bs;
  std::mt19937_64 rng(seed * 104729 + 11);
  FormatParams p;
  p.block_size = bs;
  p.data_size = kDataSize;
  for (size_t i = 0; i < p.uuid.size(); ++i) p.uuid[i] = static_cast<uint8_t>(seed + i);
  p.created = 1767225600;
  p.mode = mode_for(seed);
  if (p.mode == Mode::kJournal) p.journal_sectors = kJournalSectors;
  auto md_bytes = CsumMetadata::bytes_needed(p);
  if (!md_bytes.ok()) return md_bytes.status();
  auto md_mem = std::make_shared<MemoryDevice>(*md_bytes);
  if (Status s = CsumMetadata::format(*md_mem, p); !s.ok()) return s;

  crash::Recorder rec("csum", seed);
  const uint32_t sd = rec.add_device("data", std::vector<std::byte>(kDataSize));
  const uint32_t sm = rec.add_device("metadata", md_mem->contents());
  auto data = std::make_shared<crash::RecordingDevice>(std::make_shared<MemoryDevice>(kDataSize), &rec, sd);
  auto md = std::make_shared<crash::RecordingDevice>(md_mem, &rec, sm);
  auto opened = CsumTarget::open(data, md, options(seed));
  if (!opened.ok()) return opened.status();
  std::shared_ptr<CsumTarget> t = opened.value();
  // A reader beside the client, as a filesystem has: reads hold metadata
  // pages while the commit job makes them durable (a race the explorer
  // found once: a held page was skipped by the metadata flush).
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> read_errors{0};
  std::thread reader([&] {
    std::mt19937_64 rr(seed);
    std::vector<std::byte> buf(bs);
    while (!stop.load()) {
      if (!t->read((rr() % nr) * bs, buf).ok()) read_errors.fetch_add(1);
    }
  });
  uint64_t next = 1;  // op 0's contents for block 0 would be all zeroes
  // A few hot blocks, so that rewrites before a flush are common.
  const uint64_t hot = std::min<uint64_t>(nr, 24);
  for (int k = 0; k < 200; ++k) {
    const uint64_t r = rng() % 100;
    const uint64_t i = next++;
    Status s;
    if (r < 72) {
      const uint64_t count = 1 + rng() % 3;
      const uint64_t first = (rng() % 2 ? rng() % hot : rng() % nr);
      const uint64_t n = std::min(count, nr - first);
      std::vector<std::byte> buf;
      for (uint64_t b = first; b < first + n; ++b) {
        auto d = contents(i, b, bs);
        buf.insert(buf.end(), d.begin(), d.end());
      }
      const bool fua = rng() % 10 == 0;
      rec.mark(fmt::format("op {} W {} {}", i, first, n));
      if (fua) rec.mark(fmt::format("fua {}", i));
      s = t->write(first * bs, buf, fua ? uint32_t{kFua} : 0u);
    } else if (r < 80) {
      const uint64_t first = rng() % nr;
      const uint64_t n = std::min<uint64_t>(1 + rng() % 4, nr - first);
      rec.mark(fmt::format("op {} T {} {}", i, first, n));
      s = t->trim(first * bs, n * bs, 0);
    } else {
      rec.mark(fmt::format("op {} F", i));
      s = t->flush();
    }
    if (!s.ok()) {
      stop = true;
      reader.join();
      return Status::Error(s.code(), "csum workload: " + s.message());
    }
    rec.mark(fmt::format("ack {}", i));
  }
  stop = true;
  reader.join();
  if (read_errors.load() != 0) {
    return Status::Error(EIO,
                         fmt::format("csum workload: {} reads failed while recording", read_errors.load()));
  }
  if (seed % 4 < 2) t.reset();  // a clean close; otherwise the devices just stop here
  auto snap = rec.snapshot();
  t.reset();
  return snap;
}

class CsumChecker final : public crash::Checker {
 public:
  static Result<std::unique_ptr<CsumChecker>> make(const Recording& rec) {
    if (rec.devices.size() != 2) return Status::Error(EINVAL, "csum recording must have two devices");
    auto c = std::make_unique<CsumChecker>();
    c->bs_ = block_size_for(rec.seed);
    c->seed_ = rec.seed;
    for (size_t j = 0; j < rec.records.size(); ++j) {
      const Record& r = rec.records[j];
      if (r.op != Op::kMark) continue;
      std::istringstream in(r.text);
      std::string word;
      in >> word;
      if (word == "op") {
        Event e;
        char kind = 0;
        in >> e.op >> kind;
        e.kind = kind;
        if (kind == 'W' || kind == 'T') in >> e.first >> e.count;
        e.issued = j;
        c->events_.push_back(e);
      } else if (word == "ack" || word == "fua") {
        uint64_t i = 0;
        in >> i;
        for (auto& e : c->events_) {
          if (e.op != i) continue;
          if (word == "ack") e.acked = j;
          if (word == "fua") e.fua = true;
        }
      }
    }
    return c;
  }

  CheckResult check(CrashState& st) const override {
    const size_t c = st.spec.crash_point;
    const uint64_t nr = kDataSize / bs_;
    // The last acknowledged flush before the crash covers every write
    // before it (one client thread: ops are sequential).
    uint64_t durable_before = 0;  // ops below this index are covered
    for (const Event& e : events_) {
      if (e.kind == 'F' && e.acked != kNever && e.acked <= c) durable_before = std::max(durable_before, e.op);
    }
    // Per block: durable contents (op, or -1 for zeroes) and the later
    // candidates (ops issued before the crash).
    std::vector<int64_t> durable(nr, -1);
    std::vector<std::vector<int64_t>> later(nr);
    for (const Event& e : events_) {
      if (e.kind == 'F' || e.issued > c) continue;
      const bool covered = e.op < durable_before || (e.fua && e.acked != kNever && e.acked <= c);
      const int64_t v = e.kind == 'W' ? static_cast<int64_t>(e.op) : -1;
      for (uint64_t b = e.first; b < e.first + e.count; ++b) {
        if (covered) {
          durable[b] = v;
          later[b].clear();  // anything before a covered write is superseded
        } else {
          later[b].push_back(v);
        }
      }
    }
    auto data = st.devices[0]->clone();
    auto md = st.devices[1]->clone();
    // What the data device holds, block by block: as the crash left it
    // (dual), or after the replay (journal).
    const bool journal = mode_for(seed_) == Mode::kJournal;
    std::vector<int64_t> raw(nr);
    auto read_raw = [&]() -> std::string {
      std::vector<std::byte> buf(bs_);
      for (uint64_t b = 0; b < nr; ++b) {
        if (Status s = data->read(b * bs_, buf); !s.ok()) return "reading the crashed data: " + s.message();
        raw[b] = identify(buf, b);
      }
      return {};
    };
    if (!journal) {
      if (std::string e = read_raw(); !e.empty()) return {e};
    }
    std::vector<std::string> first_pass(nr);
    {
      auto t = CsumTarget::open(data, md, options(seed_));
      if (!t.ok()) return {"open after the crash failed: " + t.status().message()};
      if (journal) {
        if (std::string e = read_raw(); !e.empty()) return {e};
      }
      std::vector<std::byte> buf(bs_);
      for (uint64_t b = 0; b < nr; ++b) {
        bool candidate = raw[b] == durable[b];
        for (int64_t v : later[b]) candidate = candidate || raw[b] == v;
        if (raw[b] == kUnknown) candidate = false;
        if (journal && !candidate) {
          return {fmt::format("block {} holds {} after the journal replay", b,
                              raw[b] == kUnknown ? std::string("torn data") : fmt::format("op {}", raw[b]))};
        }
        if (!candidate && later[b].empty()) {
          return {fmt::format(
              "block {} holds {} on the device although op {} was flushed there and nothing "
              "wrote it since (a data flush missing?)",
              b, raw[b] == kUnknown ? std::string("torn data") : fmt::format("op {}", raw[b]), durable[b])};
        }
        Status s = (*t)->read(b * bs_, buf);
        if (candidate) {
          // Old or new data, whole: it must verify (the old checksum may
          // only go once a flush made the new data durable).
          if (!s.ok()) {
            return {fmt::format("block {} holds {} (a version it may hold{}) but reading it fails: {}", b,
                                raw[b] < 0 ? std::string("zeroes") : fmt::format("op {}", raw[b]),
                                later[b].empty() ? ", flushed" : "", s.message())};
          }
          if (identify(buf, b) != raw[b]) return {fmt::format("block {} reads other data than it holds", b)};
          first_pass[b] = std::to_string(raw[b]);
        } else {
          // Torn by the crash: never returned as good data.
          if (s.ok()) return {fmt::format("block {} holds torn data, yet it reads without an error", b)};
          first_pass[b] = "EIO";
        }
      }
    }  // clean close
    auto t = CsumTarget::open(data, md, options(seed_));
    if (!t.ok()) return {"open after a clean close failed: " + t.status().message()};
    std::vector<std::byte> buf(bs_);
    for (uint64_t b = 0; b < nr; ++b) {
      Status s = (*t)->read(b * bs_, buf);
      const std::string now = s.ok() ? std::to_string(identify(buf, b)) : "EIO";
      if (now != first_pass[b]) {
        return {
            fmt::format("block {} read {} after recovery but {} after a clean close", b, first_pass[b], now)};
      }
    }
    return {};
  }

 private:
  static constexpr size_t kNever = SIZE_MAX;
  static constexpr int64_t kUnknown = -2;
  struct Event {
    uint64_t op = 0;
    char kind = 0;
    uint64_t first = 0, count = 0;
    size_t issued = 0;
    size_t acked = kNever;
    bool fua = false;
  };

  // Which write's contents `buf` holds (-1: zeroes), or kUnknown.
  int64_t identify(const std::vector<std::byte>& buf, uint64_t b) const {
    if (std::all_of(buf.begin(), buf.end(), [](std::byte x) { return x == std::byte{0}; })) return -1;
    uint64_t op = 0;
    for (int k = 0; k < 8; ++k) op |= std::to_integer<uint64_t>(buf[k]) << (8 * k);
    if (op > 1000000) return kUnknown;
    return buf == contents(op, b, bs_) ? static_cast<int64_t>(op) : kUnknown;
  }

  uint32_t bs_ = 0;
  uint64_t seed_ = 0;
  std::vector<Event> events_;
};

const bool registered = crash::register_workload(
    "csum",
    "csum (dual, journal): writes, rewrites before flushes, trims and flushes on a data and a metadata "
    "device; "
    "checks flushed blocks read back without EIO and no read returns data never written",
    &record_csum, crash::checker_of<CsumChecker>());

const bool registered_journal = crash::register_workload(
    "csum-journal", "the csum workload in mode journal only (for long runs of that mode)",
    [](uint64_t seed) { return record_csum(seed | kJournalSeedBit); }, crash::checker_of<CsumChecker>());

}  // namespace
}  // namespace bowstack::csum
