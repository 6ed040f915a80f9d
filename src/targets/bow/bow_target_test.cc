// Randomized model tests for the bow target on a memory device: after
// commit the device equals the model; after restore it equals the
// checkpoint image on every block that was in use at checkpoint.
#include "targets/bow/bow_target.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "core/memory_device.h"
#include "targets/bow/bow_format.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_test_util.h"

namespace bowstack::bow {
namespace {

using test_util::Bytes;
using test_util::random_bytes;

std::shared_ptr<MemoryDevice> memory_with(const Bytes& contents) {
  auto m = std::make_shared<MemoryDevice>(contents.size());
  EXPECT_TRUE(m->write(0, contents, 0).ok());
  return m;
}

// Runs the offline restore over a copy of `dev` and returns the result.
Bytes restored_copy(const MemoryDevice& dev) {
  auto copy = memory_with(dev.contents());
  auto r = restore(*copy, RestoreOptions{});
  EXPECT_TRUE(r.ok()) << r.status().message();
  return copy->contents();
}

struct Model {
  Bytes data;
  std::vector<bool> defined;  // per byte: contents known
  explicit Model(Bytes d) : data(std::move(d)), defined(data.size(), true) {}
  void write(uint64_t off, const Bytes& b) {
    std::memcpy(data.data() + off, b.data(), b.size());
    std::fill(defined.begin() + off, defined.begin() + off + b.size(), true);
  }
  void forget(uint64_t off, uint64_t len, uint32_t bs) {
    // A discard leaves whole blocks' contents unspecified.
    uint64_t first = (off + bs - 1) / bs, end = (off + len) / bs;
    if (first < end) std::fill(defined.begin() + first * bs, defined.begin() + end * bs, false);
  }
  // First byte in [off, off+len) where `got` (holding that range) differs
  // from a defined model byte, or -1.
  int64_t mismatch(const std::byte* got, uint64_t off, uint64_t len) const {
    for (uint64_t i = 0; i < len; ++i) {
      if (defined[off + i] && got[i] != data[off + i]) return static_cast<int64_t>(off + i);
    }
    return -1;
  }
};

void expect_equal_where_defined(const Bytes& got, const Model& m, const char* what) {
  ASSERT_EQ(got.size(), m.data.size());
  EXPECT_EQ(m.mismatch(got.data(), 0, got.size()), -1) << what;
}

class BowModelTest : public ::testing::TestWithParam<std::tuple<uint32_t, int>> {};

TEST_P(BowModelTest, RandomOpsCommitAndRestore) {
  const auto [bs, seed] = GetParam();
  std::mt19937_64 rng(seed * 7919 + bs);
  const uint64_t size = 4u << 20;
  Bytes initial = random_bytes(rng, size);
  auto mem = memory_with(initial);
  auto opened = BowTarget::open(mem, BowOptions{.block_size = bs});
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  auto bow = opened.value();
  EXPECT_EQ(bow->geometry().logical_block_size, 512u);  // serves partial blocks itself
  EXPECT_TRUE(bow->geometry().accepts_unaligned);
  Model model(initial);
  const uint64_t blocks = size / bs;

  auto rand_range = [&](uint64_t max_len) {
    uint64_t off = rng() % size;
    uint64_t len = 1 + rng() % std::min<uint64_t>(max_len, size - off);
    if (rng() % 2) {  // aligned most of the time
      off = off / bs * bs;
      len = std::max<uint64_t>(bs, len / bs * bs);
      if (off + len > size) len = size - off;
    }
    return std::pair{off, len};
  };

  // TRIM phase: trims declare free space; writes take it back.
  std::vector<bool> free_at_cp(blocks, false);
  for (int i = 0; i < 60; ++i) {
    auto [off, len] = rand_range(256 << 10);
    if (rng() % 3) {
      ASSERT_TRUE(bow->trim(off, len, 0).ok());
      model.forget(off, len, bs);
      for (uint64_t b = std::max<uint64_t>(1, (off + bs - 1) / bs); b < (off + len) / bs; ++b)
        free_at_cp[b] = true;
    } else {
      Bytes d = random_bytes(rng, len);
      ASSERT_TRUE(bow->write(off, d, 0).ok());
      model.write(off, d);
      for (uint64_t b = off / bs; b < (off + len + bs - 1) / bs; ++b) free_at_cp[b] = false;
    }
  }
  ASSERT_TRUE(bow->checkpoint().ok());
  EXPECT_EQ(bow->state(), State::kCheckpoint);
  EXPECT_EQ(bow->checkpoint().code(), EINVAL);  // only once
  const Model at_checkpoint = model;

  // CHECKPOINT phase.
  int enospc = 0;
  for (int i = 0; i < 400; ++i) {
    int op = static_cast<int>(rng() % 10);
    auto [off, len] = rand_range(64 << 10);
    if (op < 6) {
      Bytes d = random_bytes(rng, len);
      Status s = bow->write(off, d, rng() % 5 == 0 ? uint32_t{kFua} : 0u);
      if (s.code() == ENOSPC) {
        ++enospc;
        continue;
      }
      ASSERT_TRUE(s.ok()) << s.message();
      model.write(off, d);
    } else if (op == 6) {
      ASSERT_TRUE(bow->trim(off, len, 0).ok());
      model.forget(off, len, bs);
    } else if (op == 7) {
      Status s = bow->write_zeroes(off, len, 0);
      if (s.code() == ENOSPC) {
        ++enospc;
        continue;
      }
      ASSERT_TRUE(s.ok()) << s.message();
      model.write(off, Bytes(len));
    } else if (op == 8) {
      ASSERT_TRUE(bow->flush().ok());
    } else {
      Bytes got(len);
      ASSERT_TRUE(bow->read(off, got).ok());
      ASSERT_EQ(model.mismatch(got.data(), off, len), -1) << "read of " << len << " at " << off;
    }
  }
  ASSERT_TRUE(bow->flush().ok());
  auto st = bow->stats();
  EXPECT_GT(st.log_entries, 1u);
  EXPECT_GT(st.backed_up_bytes, 0u);

  // Restore path, on a copy of the device as it is now.
  {
    SCOPED_TRACE("restore");
    Bytes restored = restored_copy(*mem);
    Model expect = at_checkpoint;
    for (uint64_t b = 0; b < blocks; ++b) {
      if (free_at_cp[b])
        std::fill(expect.defined.begin() + b * bs, expect.defined.begin() + (b + 1) * bs, false);
    }
    expect_equal_where_defined(restored, expect, "restored image");
  }
  // Commit path.
  ASSERT_TRUE(bow->commit().ok());
  EXPECT_EQ(bow->state(), State::kCommitted);
  EXPECT_EQ(bow->commit().code(), EINVAL);
  ASSERT_TRUE(bow->flush().ok());
  expect_equal_where_defined(mem->contents(), model, "committed device");
  // Pass-through after commit.
  Bytes d = random_bytes(rng, 3 * bs);
  ASSERT_TRUE(bow->write(bs, d, 0).ok());
  model.write(bs, d);
  expect_equal_where_defined(mem->contents(), model, "after commit");
  (void)enospc;
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, BowModelTest,
                         ::testing::Combine(::testing::Values(512u, 1024u, 2048u, 4096u),
                                            ::testing::Values(1, 2, 3)));

TEST(Bow, IllegalTransitionsAreClearErrors) {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  auto bow = BowTarget::open(mem, BowOptions{}).value();
  Status s = bow->commit();
  EXPECT_EQ(s.code(), EINVAL);
  EXPECT_NE(s.context().find("no checkpoint"), std::string::npos);
  // No free space known: checkpoint refuses and says how to fix it.
  s = bow->checkpoint();
  EXPECT_EQ(s.code(), ENOSPC);
  EXPECT_NE(s.context().find("fstrim"), std::string::npos);
  EXPECT_EQ(bow->state(), State::kTrim);
  EXPECT_EQ(bow->message("nonsense").status().code(), ENOTSUP);
}

TEST(Bow, BadBlockSizes) {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  for (uint32_t bad : {0u, 256u, 1000u, 8192u}) {
    EXPECT_EQ(BowTarget::open(mem, BowOptions{.block_size = bad}).status().code(), EINVAL) << bad;
  }
  auto tiny = std::make_shared<MemoryDevice>(8192);
  EXPECT_EQ(BowTarget::open(tiny, BowOptions{.block_size = 4096}).status().code(), EINVAL);
}

TEST(Bow, WriteHintsAreHarmlessInEveryState) {
  // will_write is a hint a front end sends before validating much: any
  // offset, in any state, must neither fail nor change what is stored.
  std::mt19937_64 rng(9);
  const uint32_t bs = 4096;
  Bytes initial = random_bytes(rng, 1 << 20);
  auto mem = memory_with(initial);
  auto bow = BowTarget::open(mem, BowOptions{.block_size = bs}).value();
  auto hint_everywhere = [&] {
    for (uint64_t off : {uint64_t{0}, uint64_t{bs} * 7 + 100, uint64_t{1} << 20, ~uint64_t{0}})
      bow->will_write(off, bs);
  };
  hint_everywhere();
  ASSERT_TRUE(bow->trim(128 * bs, 64 * bs, 0).ok());
  ASSERT_TRUE(bow->checkpoint().ok());
  hint_everywhere();
  Bytes d = random_bytes(rng, bs);
  ASSERT_TRUE(bow->write(130 * bs, d, 0).ok());  // into free space, hinted or not
  hint_everywhere();
  ASSERT_TRUE(bow->commit().ok());
  hint_everywhere();
  Bytes back(bs);
  ASSERT_TRUE(bow->read(130 * bs, back).ok());
  EXPECT_EQ(back, d);
  ASSERT_TRUE(bow->read(0, back).ok());
  EXPECT_EQ(std::memcmp(back.data(), initial.data(), bs), 0);
}

TEST(Bow, OutOfSpaceFailsWritesAndKeepsCheckpoint) {
  std::mt19937_64 rng(5);
  const uint32_t bs = 4096;
  Bytes initial = random_bytes(rng, 1 << 20);
  auto mem = memory_with(initial);
  auto bow = BowTarget::open(mem, BowOptions{.block_size = bs}).value();
  ASSERT_TRUE(bow->trim(200 * bs, 16 * bs, 0).ok());  // 16 free blocks
  ASSERT_TRUE(bow->checkpoint().ok());
  int ok = 0, nospc = 0;
  for (uint64_t b = 1; b < 100; ++b) {
    Bytes d = random_bytes(rng, bs);
    Status s = bow->write(b * bs, d, 0);
    if (s.ok()) ++ok;
    if (s.code() == ENOSPC) ++nospc;
  }
  EXPECT_GT(ok, 5);
  EXPECT_GT(nospc, 50);
  ASSERT_TRUE(bow->flush().ok());
  EXPECT_EQ(bow->state(), State::kCheckpoint);
  Bytes restored = restored_copy(*mem);
  EXPECT_EQ(std::memcmp(restored.data(), initial.data(), 200 * bs), 0);
}

TEST(Bow, AutoCommitWhenSpaceRunsLow) {
  std::mt19937_64 rng(6);
  const uint32_t bs = 4096;
  auto mem = memory_with(random_bytes(rng, 1 << 20));
  auto bow = BowTarget::open(mem, BowOptions{.block_size = bs, .auto_commit_below = 8 * bs}).value();
  ASSERT_TRUE(bow->trim(200 * bs, 16 * bs, 0).ok());
  ASSERT_TRUE(bow->checkpoint().ok());
  Model model(mem->contents());
  for (uint64_t b = 1; b < 100; ++b) {
    Bytes d = random_bytes(rng, bs);
    Status s = bow->write(b * bs, d, 0);
    ASSERT_TRUE(s.ok()) << b << ": " << s.message();  // never ENOSPC: it commits instead
  }
  ASSERT_TRUE(bow->flush().ok());
  for (int i = 0; i < 200 && bow->state() != State::kCommitted; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(bow->state(), State::kCommitted);
}

// Threads own interleaved slices that span both checkpoint data and free
// space, so claims, allocations, backup moves and live-block-0 moves race
// with each other; restore must still give back the checkpoint and commit
// every thread's final data. Bytes of free blocks a thread has not written
// are undefined: bow may put other writers' saved copies there.
void ConcurrentWriters(uint32_t bs, int seed) {
  std::mt19937_64 rng(seed);
  const uint64_t size = 8u << 20;
  const uint64_t blocks = size / bs;
  Bytes initial = random_bytes(rng, size);
  auto mem = memory_with(initial);
  auto bow = BowTarget::open(mem, BowOptions{.block_size = bs}).value();
  // Every third block of the upper three quarters is free space.
  std::vector<bool> free_at_cp(blocks, false);
  for (uint64_t b = blocks / 4; b < blocks; b += 3) {
    ASSERT_TRUE(bow->trim(b * bs, bs, 0).ok());
    free_at_cp[b] = true;
  }
  ASSERT_TRUE(bow->checkpoint().ok());
  const int kThreads = 8;
  const uint64_t slice = size / kThreads;
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<Model>> finals(kThreads);
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 r(seed * 100 + t);
      const uint64_t base = t * slice + (t == 0 ? bs : 0);  // keep off block 0 itself
      const uint64_t span = slice - (t == 0 ? bs : 0);
      auto mine = std::make_unique<Model>(Bytes(initial.begin() + base, initial.begin() + base + span));
      for (uint64_t b = base / bs; b < (base + span) / bs; ++b) {
        if (free_at_cp[b]) std::fill_n(mine->defined.begin() + (b * bs - base), bs, false);
      }
      for (int i = 0; i < 150; ++i) {
        uint64_t off = r() % span, len = 1 + r() % std::min<uint64_t>(4 * bs, span - off);
        if (r() % 2) off = off / bs * bs;
        len = std::min<uint64_t>(len, span - off);
        Bytes d = random_bytes(r, len);
        Status s = bow->write(base + off, d, i % 17 == 0 ? uint32_t{kFua} : 0u);
        if (s.code() == ENOSPC) continue;  // refused whole: nothing changed
        if (!s.ok()) ++errors;
        mine->write(off, d);
        if (i % 10 == 0) {
          Bytes got(span);
          if (!bow->read(base, got).ok() || mine->mismatch(got.data(), 0, span) != -1) ++errors;
        }
        if (i % 50 == 0 && !bow->flush().ok()) ++errors;
      }
      finals[t] = std::move(mine);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  ASSERT_TRUE(bow->flush().ok());
  auto restored = memory_with(mem->contents());
  auto r = restore(*restored, RestoreOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  Bytes back = restored->contents();
  for (uint64_t b = 0; b < blocks; ++b) {
    if (free_at_cp[b]) continue;
    ASSERT_EQ(std::memcmp(back.data() + b * bs, initial.data() + b * bs, bs), 0) << "block " << b;
  }
  ASSERT_TRUE(bow->commit().ok());
  Bytes now(size);
  ASSERT_TRUE(bow->read(0, now).ok());
  for (int t = 0; t < kThreads; ++t) {
    const uint64_t base = t * slice + (t == 0 ? bs : 0);
    EXPECT_EQ(finals[t]->mismatch(now.data() + base, 0, finals[t]->data.size()), -1) << "thread " << t;
  }
}

// ThreadSanitizer makes each run ~20x slower; one seed per block size
// still gives it every kind of race to look at.
#if defined(__SANITIZE_THREAD__)
constexpr int kConcurrentSeeds = 1;
#else
constexpr int kConcurrentSeeds = 3;
#endif

TEST(Bow, ConcurrentWritersBatchAndStayCorrect) {
  for (uint32_t bs : {512u, 4096u}) {
    for (int seed = 1; seed <= kConcurrentSeeds; ++seed) {
      SCOPED_TRACE(testing::Message() << "bs " << bs << " seed " << seed);
      ConcurrentWriters(bs, seed);
      if (HasFatalFailure()) return;
    }
  }
}

// Counts barriers (flushes and FUA writes) and can hold flushes until
// released, so that a test can pile writes up behind one batch.
class BarrierGate final : public StackedDevice {
 public:
  using StackedDevice::StackedDevice;
  std::string_view kind() const override { return "barrier-gate"; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override {
    if (flags & kFua) ++barriers;
    return StackedDevice::write(offset, buf, flags);
  }
  Status flush() override {
    ++barriers;
    std::unique_lock lock(mu_);
    ++held_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return !hold_; });
    --held_;
    return StackedDevice::flush();
  }
  void hold() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  bool wait_held() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return held_ > 0; });
  }
  void release() {
    std::lock_guard lock(mu_);
    hold_ = false;
    cv_.notify_all();
  }
  std::atomic<int> barriers{0};

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_ = false;
  int held_ = 0;
};

// A batch of first overwrites larger than the room in the log block is
// logged behind two barriers (saved copies and log blocks, then block 0's
// first sector), with the last log block saved partly filled; restore and
// commit still give the checkpoint and the new data.
TEST(Bow, OverflowingBatchTakesTwoBarriersAndSavesPartlyFilledLogBlock) {
  const uint32_t bs = 4096;
  const uint64_t size = 8u << 20, blocks = size / bs;
  std::mt19937_64 rng(7);
  Bytes initial = random_bytes(rng, size);
  auto mem = memory_with(initial);
  auto gate = std::make_shared<BarrierGate>(mem);
  auto bow = BowTarget::open(gate, BowOptions{.block_size = bs}).value();
  ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
  ASSERT_TRUE(bow->checkpoint().ok());

  Bytes expect = initial;
  auto overwrite = [&](uint64_t block) {
    Bytes d = random_bytes(rng, bs);
    ASSERT_TRUE(bow->write(block * bs, d, 0).ok());
    std::memcpy(expect.data() + block * bs, d.data(), bs);
  };
  gate->hold();
  overwrite(1);  // its batch waits in the barrier...
  ASSERT_TRUE(gate->wait_held());
  const uint64_t kBig = 400;  // ...while these queue up as the next batch
  for (uint64_t b = 2; b < 2 + kBig; ++b) overwrite(b);
  const int before = gate->barriers.load();
  gate->release();
  ASSERT_TRUE(bow->flush().ok());
  // The first batch's header, two for the big batch, the flush's own.
  EXPECT_EQ(gate->barriers.load() - before, 4);

  auto chain = read_and_validate(*mem);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  const uint32_t cap = log_capacity(bs, kHeaderSize);
  const auto& logs = chain->blocks;
  ASSERT_GE(logs.size(), 3u);
  EXPECT_EQ(logs.back().header.count, 1u);  // block 0 holds just the pointer to its predecessor
  bool partial = false;
  uint64_t entries = 0;
  for (size_t i = 0; i + 1 < logs.size(); ++i) {
    partial = partial || logs[i].header.count < cap;
    entries += logs[i].header.count;
  }
  EXPECT_TRUE(partial);
  // Every block's entry 0 (the original block 0, then each predecessor),
  // the first batch's entry and the big batch's.
  EXPECT_EQ(entries + 1, logs.size() + 1 + kBig);

  Bytes restored = restored_copy(*mem);
  for (uint64_t b = 0; b < blocks / 2; ++b) {
    ASSERT_EQ(std::memcmp(restored.data() + b * bs, initial.data() + b * bs, bs), 0) << "block " << b;
  }
  ASSERT_TRUE(bow->commit().ok());
  Bytes now(size);
  ASSERT_TRUE(bow->read(0, now).ok());
  EXPECT_EQ(std::memcmp(now.data(), expect.data(), size / 2), 0);
}

// The committer gathers acknowledged overwrites into bigger batches, but a
// flush, a FUA write, a full batch or the target's destruction never waits
// for the gathering window (here 10 s, so that a wait would show).
TEST(Bow, GatheringNeverDelaysFlushesFuaOrFullBatches) {
  const uint32_t bs = 4096;
  const uint64_t size = 4u << 20;
  std::mt19937_64 rng(11);
  Bytes initial = random_bytes(rng, size);
  auto mem = memory_with(initial);
  auto bow = BowTarget::open(mem, BowOptions{.block_size = bs, .gather_us = 10'000'000}).value();
  ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
  ASSERT_TRUE(bow->checkpoint().ok());
  using Clock = std::chrono::steady_clock;
  const auto quick = std::chrono::seconds(5);
  Bytes d = random_bytes(rng, bs);
  const uint64_t entries0 = bow->stats().log_entries;

  auto t0 = Clock::now();
  ASSERT_TRUE(bow->write(1 * bs, d, 0).ok());
  ASSERT_TRUE(bow->flush().ok());
  EXPECT_LT(Clock::now() - t0, quick);
  EXPECT_EQ(bow->stats().log_entries, entries0 + 1);

  t0 = Clock::now();
  ASSERT_TRUE(bow->write(2 * bs, d, kFua).ok());
  EXPECT_LT(Clock::now() - t0, quick);
  EXPECT_EQ(bow->stats().log_entries, entries0 + 2);

  // A full batch (64 writes) is committed without a flush.
  t0 = Clock::now();
  for (uint64_t b = 3; b < 3 + 64; ++b) ASSERT_TRUE(bow->write(b * bs, d, 0).ok());
  while (bow->stats().log_entries < entries0 + 2 + 64 && Clock::now() - t0 < quick) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GE(bow->stats().log_entries, entries0 + 2 + 64);

  // A write still gathering when the target goes is committed on the way out.
  ASSERT_TRUE(bow->write(100 * bs, d, 0).ok());
  t0 = Clock::now();
  bow.reset();
  EXPECT_LT(Clock::now() - t0, quick);
  auto chain = read_and_validate(*mem);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  uint64_t entries = 0;
  for (const auto& lb : chain->blocks) entries += lb.entries.size();
  EXPECT_EQ(entries, entries0 + 2 + 64 + 1 + (chain->blocks.size() - 1));
  Bytes restored = restored_copy(*mem);
  EXPECT_EQ(std::memcmp(restored.data(), initial.data(), size / 2), 0);
}

}  // namespace
}  // namespace bowstack::bow
