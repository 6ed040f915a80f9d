#include "core/aligned_buf.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

namespace bowstack {
namespace {

TEST(AlignedBuf, AlignedAndMovable) {
  AlignedBuf a(100);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % AlignedBuf::kAlignment, 0u);
  EXPECT_EQ(a.size(), 100u);
  std::byte* p = a.data();
  AlignedBuf b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(a.data(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  AlignedBuf zero(0);
  EXPECT_NE(zero.data(), nullptr);
  EXPECT_EQ(zero.size(), 0u);
}

TEST(BufferPool, RecyclesItsSizeOnlyAndRespectsTheCap) {
  BufferPool pool(4096, 2);
  std::byte* first;
  {
    AlignedBuf a = pool.get(4096);
    first = a.data();
  }
  {
    AlignedBuf again = pool.get(4096);
    EXPECT_EQ(again.data(), first) << "an idle buffer is reused";
    AlignedBuf other = pool.get(8192);
    EXPECT_EQ(other.size(), 8192u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(other.data()) % AlignedBuf::kAlignment, 0u);
  }
  // More buffers returned than the cap: the extra ones are freed (ASan
  // would report a leak otherwise), the pool keeps two.
  std::vector<AlignedBuf> many;
  for (int i = 0; i < 5; ++i) many.push_back(pool.get(4096));
  many.clear();
}

TEST(BufferPool, ConcurrentGetAndReturn) {
  BufferPool pool(512, 64);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < 2000; ++i) {
        AlignedBuf b = pool.get(512);
        b.data()[0] = std::byte(static_cast<unsigned char>(t));
        AlignedBuf moved = std::move(b);
        EXPECT_EQ(moved.data()[0], std::byte(static_cast<unsigned char>(t)));
      }
    });
  }
  for (auto& th : threads) th.join();
}

}  // namespace
}  // namespace bowstack
