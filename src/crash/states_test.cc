#include "crash/states.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/memory_device.h"
#include "crash/explorer.h"

namespace bowstack::crash {
namespace {

using Bytes = std::vector<std::byte>;

Bytes fill(size_t n, int v) { return Bytes(n, std::byte(static_cast<unsigned char>(v))); }

// A hand-made recording on one 8 KiB device: A and B before a completed
// flush, C (cached) and D (FUA) after it, then E completing while a second
// flush runs (so that flush does not cover it).
Recording sample() {
  Recorder rec("test", 1);
  rec.add_device("d", fill(8192, 0));
  auto mem = std::make_shared<MemoryDevice>(8192);
  RecordingDevice dev(mem, &rec, 0);
  EXPECT_TRUE(dev.write(0, fill(512, 'A'), 0).ok());
  EXPECT_TRUE(dev.write(512, fill(512, 'B'), 0).ok());
  EXPECT_TRUE(dev.flush().ok());
  EXPECT_TRUE(dev.write(1024, fill(2048, 'C'), 0).ok());
  EXPECT_TRUE(dev.write(4096, fill(512, 'D'), kFua).ok());
  rec.append(Record{.op = Op::kFlushStart, .stream = 0, .barrier = 99});
  EXPECT_TRUE(dev.write(5120, fill(512, 'E'), 0).ok());
  rec.append(Record{.op = Op::kFlushEnd, .stream = 0, .barrier = 99});
  return rec.snapshot();
}

std::vector<CrashState> all_states(const Recording& r, uint64_t seed, uint64_t random) {
  StateOptions so;
  so.random_states = random;
  auto specs = generate_states(r, seed, so);
  std::stable_sort(specs.begin(), specs.end(),
                   [](auto& a, auto& b) { return a.crash_point < b.crash_point; });
  Materializer m(r);
  std::vector<CrashState> out;
  for (const auto& s : specs) {
    m.advance(s.crash_point);
    out.push_back(m.build(s));
  }
  return out;
}

char at(const CrashState& s, uint64_t off) {
  std::byte b{};
  EXPECT_TRUE(s.devices[0]->read(off, std::span(&b, 1)).ok());
  return static_cast<char>(b);
}

TEST(CrashStates, DurabilityModel) {
  const Recording r = sample();
  const size_t end = r.records.size() - 1;
  bool c_kept = false, c_lost = false, c_torn = false, e_lost_at_end = false;
  for (const CrashState& s : all_states(r, 7, 400)) {
    if (s.spec.crash_point < 3) continue;  // before the first flush completed
    // Flushed: always there.
    EXPECT_EQ(at(s, 0), 'A') << s.description;
    EXPECT_EQ(at(s, 512), 'B') << s.description;
    // A completed FUA write: always there, and never torn.
    if (s.spec.crash_point >= 5) {
      EXPECT_EQ(at(s, 4096), 'D') << s.description;
    }
    // Cached: either, or torn at a sector boundary.
    const char c0 = at(s, 1024), c1 = at(s, 2560);
    c_kept = c_kept || (c0 == 'C' && c1 == 'C');
    c_lost = c_lost || (c0 == 0 && c1 == 0);
    c_torn = c_torn || (c0 != c1);
    // E completed during a flush that started before it: not covered.
    if (s.spec.crash_point == end && at(s, 5120) == 0) e_lost_at_end = true;
  }
  EXPECT_TRUE(c_kept);
  EXPECT_TRUE(c_lost);
  EXPECT_TRUE(c_torn);
  EXPECT_TRUE(e_lost_at_end) << "a flush covered a write that completed after it started";
}

TEST(CrashStates, PrefixesAtBarriersAndFuaAndDeterministic) {
  const Recording r = sample();
  StateOptions so;
  so.random_states = 50;
  auto a = generate_states(r, 3, so), b = generate_states(r, 3, so);
  ASSERT_EQ(a.size(), b.size());
  std::set<size_t> prefixes;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].crash_point, b[i].crash_point);
    EXPECT_EQ(a[i].rng, b[i].rng);
    EXPECT_EQ(a[i].index, i);
    if (a[i].kind == StateKind::kPrefix) prefixes.insert(a[i].crash_point);
  }
  // Flush ends (records 3 and 8; the second is also the end), the FUA write (5).
  EXPECT_EQ(prefixes, (std::set<size_t>{3, 5, 8}));
  // The same spec materializes to the same bytes.
  auto x = all_states(r, 3, 50), y = all_states(r, 3, 50);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(x[i].devices[0]->contents(), y[i].devices[0]->contents());
}

TEST(CrashStates, FilesFollowSyncAndDirectorySync) {
  Recorder rec("files", 1);
  auto store = std::make_shared<MemEnv>();
  RecordingEnv env(store, &rec);
  {
    auto f = env.open("/d/j", OpenMode::kCreateTruncate).value();
    ASSERT_TRUE(f->write(0, fill(64, 'h')).ok());
    ASSERT_TRUE(f->sync().ok());
    ASSERT_TRUE(env.sync_dir("/d/j").ok());
    ASSERT_TRUE(f->write(64, fill(64, 'x')).ok());  // not synced
  }
  ASSERT_TRUE(env.remove("/d/j").ok());  // not settled by a directory sync
  const Recording r = rec.snapshot();
  bool exists = false, gone = false, tail = false, no_tail = false;
  for (const CrashState& s : all_states(r, 5, 200)) {
    if (s.spec.crash_point < 5) continue;  // the directory sync has not completed
    auto c = s.env->contents("/d/j");
    if (!c) {
      gone = true;
      continue;
    }
    exists = true;
    ASSERT_GE(c->size(), 64u);
    EXPECT_EQ((*c)[0], std::byte('h'));
    (c->size() == 128 ? tail : no_tail) = true;
  }
  EXPECT_TRUE(exists && gone && tail && no_tail);
}

TEST(CrashRecording, SaveLoadRoundTripAndCorruption) {
  const Recording r = sample();
  const std::string path = "/tmp/bowstack-rec-test-" + std::to_string(::getpid());
  ASSERT_TRUE(r.save(path).ok());
  auto back = Recording::load(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->records.size(), r.records.size());
  EXPECT_EQ(back->arena, r.arena);
  EXPECT_EQ(back->devices[0].base, r.devices[0].base);
  // Any flipped byte is caught by the checksum; a truncated file too.
  std::vector<char> raw;
  {
    std::ifstream f(path, std::ios::binary);
    raw.assign(std::istreambuf_iterator<char>(f), {});
  }
  for (size_t at : {size_t{9}, raw.size() / 2, raw.size() - 5}) {
    auto bad = raw;
    bad[at] ^= 1;
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(bad.data(), static_cast<std::streamsize>(bad.size()));
    EXPECT_FALSE(Recording::load(path).ok()) << "flipped byte " << at;
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(raw.data(), 20);
  EXPECT_FALSE(Recording::load(path).ok());
  std::filesystem::remove(path);
  EXPECT_EQ(Recording::load(path).status().code(), ENOENT);
}

TEST(CowDevice, PrivateWritesAndClones) {
  auto base = std::make_shared<const Bytes>(fill(16384, 1));
  CowDevice a(base);
  ASSERT_TRUE(a.write(4000, fill(200, 2), 0).ok());  // spans two pages
  auto b = a.clone();
  ASSERT_TRUE(b->write(0, fill(10, 3), 0).ok());
  EXPECT_EQ((*base)[4000], std::byte(1));
  EXPECT_EQ(a.contents()[4100], std::byte(2));
  EXPECT_EQ(a.contents()[0], std::byte(1));
  EXPECT_EQ(b->contents()[0], std::byte(3));
  EXPECT_EQ(b->contents()[4199], std::byte(2));
  EXPECT_EQ(a.private_pages(), 2u);
  EXPECT_FALSE(a.write(16000, fill(1000, 0), 0).ok());
}

// The explorer must find an ordering bug: a toy "commit" that writes its
// data and its commit record with no flush between, and a checker that
// wants the data wherever the record is. Its correct twin flushes between
// them and must come out clean.
class ToyWorkload final : public Workload {
 public:
  explicit ToyWorkload(bool flush_between) : flush_(flush_between) {}
  std::string name() const override { return flush_ ? "toy-correct" : "toy-buggy"; }
  std::string description() const override { return "test"; }
  Result<Recording> record(uint64_t seed) const override {
    Recorder rec(name(), seed);
    rec.add_device("d", fill(65536, 0));
    RecordingDevice dev(std::make_shared<MemoryDevice>(65536), &rec, 0);
    for (int i = 1; i <= 8; ++i) {
      (void)dev.write(4096 * i, fill(4096, i), 0);  // the data
      if (flush_) (void)dev.flush();
      (void)dev.write(0, fill(512, i), 0);  // the commit record says "i is done"
      (void)dev.flush();
    }
    return rec.snapshot();
  }
  class Check final : public Checker {
   public:
    CheckResult check(CrashState& s) const override {
      std::byte rec{};
      (void)s.devices[0]->read(0, std::span(&rec, 1));
      const int done = static_cast<int>(rec);
      for (int i = 1; i <= done; ++i) {
        std::byte d{};
        (void)s.devices[0]->read(4096 * i + 4095, std::span(&d, 1));
        if (static_cast<int>(d) != i)
          return {"record says " + std::to_string(done) + " but data " + std::to_string(i) + " is missing"};
      }
      return {};
    }
  };
  Result<std::unique_ptr<Checker>> checker(const Recording&) const override {
    return std::unique_ptr<Checker>(new Check);
  }

 private:
  bool flush_;
};

TEST(CrashExplorer, FindsAnOrderingBugAndPassesItsFix) {
  ExploreOptions o;
  o.states = 500;
  o.per_recording = 500;
  std::ostringstream log;
  ExploreReport buggy = explore(ToyWorkload(false), o, log);
  EXPECT_GT(buggy.bad.size(), 0u) << log.str();
  EXPECT_NE(log.str().find("crash states explored: "), std::string::npos);
  ExploreReport fixed = explore(ToyWorkload(true), o, log);
  EXPECT_EQ(fixed.bad.size(), 0u) << log.str();
  EXPECT_GE(fixed.explored, 500u);
}

}  // namespace
}  // namespace bowstack::crash
