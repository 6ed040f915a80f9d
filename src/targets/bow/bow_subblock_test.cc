// Concurrent 512-byte writes that share bow's 4 KiB blocks (what a loop
// device with 512-byte sectors sends): each is a read-modify-write of its
// block under bow's busy set, and in CHECKPOINT the whole block is backed
// up first. Run under TSan too (scripts/build.sh tsan).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "core/memory_device.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"

namespace bowstack::bow {
namespace {

using Bytes = std::vector<std::byte>;
constexpr uint32_t kBs = 4096;
constexpr uint64_t kSectors = kBs / 512;

#if defined(__SANITIZE_THREAD__)
constexpr int kRounds = 40;
#else
constexpr int kRounds = 150;
#endif

void fill(Bytes& b, uint64_t sector, int thread, int round) {
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = std::byte(static_cast<unsigned char>(sector * 31 + thread * 7 + round + i));
}

// Threads own interleaved sectors of the same blocks (block 0, which bow
// redirects while in CHECKPOINT, among them); one more thread writes
// sector-sized data over all of them with FUA now and then, and readers
// read byte ranges across block boundaries. Then: every sector holds its
// owner's last write, restore brings back the checkpoint exactly (whole
// blocks were saved before any sector of them changed), and commit keeps
// the new data.
TEST(BowSubBlock, ConcurrentSectorWritesShareBlocks) {
  const uint64_t size = 1u << 20;
  const uint64_t blocks = 16;  // the blocks the threads fight over
  std::mt19937_64 rng(7);
  Bytes initial(size);
  for (auto& x : initial) x = std::byte(static_cast<unsigned char>(rng()));
  auto mem = std::make_shared<MemoryDevice>(size);
  ASSERT_TRUE(mem->write(0, initial, 0).ok());
  auto opened = BowTarget::open(mem, BowOptions{.block_size = kBs});
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  auto bow = opened.value();
  // Free space for the saved copies: the second half, which nobody uses.
  ASSERT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
  ASSERT_TRUE(bow->checkpoint().ok());

  const int kThreads = 4;
  std::atomic<int> errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Bytes d(512);
      for (int r = 0; r < kRounds; ++r) {
        for (uint64_t s = static_cast<uint64_t>(t); s < blocks * kSectors; s += kThreads) {
          fill(d, s, t, r);
          const uint32_t flags = (r + s) % 23 == 0 ? uint32_t{kFua} : 0u;
          if (!bow->write(s * 512, d, flags).ok()) ++errors;
        }
        if (r % 10 == 0 && !bow->flush().ok()) ++errors;
      }
    });
  }
  // Readers of ranges across block boundaries: never an error; a sector
  // nobody writes (beyond `blocks`) never changes.
  std::thread reader([&] {
    std::mt19937_64 r(11);
    Bytes got(3 * 512 + 100);
    while (!stop) {
      const uint64_t off = r() % (blocks * kBs);
      if (!bow->read(off, got).ok()) ++errors;
      Bytes untouched(700);
      if (!bow->read(blocks * kBs + 300, untouched).ok() ||
          std::memcmp(untouched.data(), initial.data() + blocks * kBs + 300, untouched.size()) != 0) {
        ++errors;
      }
    }
  });
  for (auto& th : threads) th.join();
  stop = true;
  reader.join();
  EXPECT_EQ(errors.load(), 0);

  Bytes expect = initial;
  Bytes d(512);
  for (uint64_t s = 0; s < blocks * kSectors; ++s) {
    fill(d, s, static_cast<int>(s % kThreads), kRounds - 1);
    std::memcpy(expect.data() + s * 512, d.data(), 512);
  }
  Bytes now(size);
  ASSERT_TRUE(bow->read(0, now).ok());
  for (uint64_t s = 0; s < size / 2 / 512; ++s) {  // the second half was trimmed
    ASSERT_EQ(std::memcmp(now.data() + s * 512, expect.data() + s * 512, 512), 0) << "sector " << s;
  }

  ASSERT_TRUE(bow->flush().ok());
  auto copy = std::make_shared<MemoryDevice>(size);
  ASSERT_TRUE(copy->write(0, mem->contents(), 0).ok());
  auto restored = restore(*copy, RestoreOptions{});
  ASSERT_TRUE(restored.ok()) << restored.status().message();
  // Every block in use at the checkpoint (the first half) is back.
  const Bytes back = copy->contents();
  EXPECT_EQ(std::memcmp(back.data(), initial.data(), size / 2), 0)
      << "restore did not bring back the checkpoint";

  ASSERT_TRUE(bow->commit().ok());
  ASSERT_TRUE(bow->read(0, now).ok());
  EXPECT_EQ(std::memcmp(now.data(), expect.data(), size / 2), 0);
}

}  // namespace
}  // namespace bowstack::bow
