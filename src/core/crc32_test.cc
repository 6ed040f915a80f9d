#include "core/crc32.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <vector>

namespace bowstack {
namespace {

TEST(Crc32, MatchesZlibOnEveryLengthAndSeed) {
  std::mt19937_64 rng(3);
  std::vector<unsigned char> buf(9000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (size_t len : {0, 1, 3, 15, 16, 17, 63, 64, 65, 255, 256, 511, 512, 4095, 4096, 4097, 9000}) {
    for (uint32_t seed : {0u, 1u, 0xffffffffu, 0x12345678u}) {
      const uLong want = ::crc32(seed, buf.data(), static_cast<uInt>(len));
      EXPECT_EQ(crc32(seed, buf.data(), len), static_cast<uint32_t>(want))
          << "len " << len << " seed " << seed;
    }
  }
}

TEST(Crc32, ChainsLikeOneRun) {
  std::vector<unsigned char> buf(4096 * 3, 0xa5);
  const uint32_t whole = crc32(0, buf.data(), buf.size());
  uint32_t c = 0;
  for (size_t at = 0; at < buf.size(); at += 4096) c = crc32(c, buf.data() + at, 4096);
  EXPECT_EQ(c, whole);
  EXPECT_EQ(crc32(0, "123456789", 9), 0xcbf43926u);  // the standard check value
}

// Bit by bit, as the definition says: the reference crc32c() must match.
uint32_t crc32c_reference(uint32_t crc, const unsigned char* p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
  }
  return ~crc;
}

TEST(Crc32c, CheckValueAndReference) {
  EXPECT_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c(0, nullptr, 0), 0u);
  std::mt19937_64 rng(9);
  std::vector<unsigned char> buf(9000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (size_t len : {1, 7, 8, 31, 64, 255, 512, 4096, 4104, 9000}) {
    for (uint32_t seed : {0u, 1u, 0xffffffffu, 0xdeadbeefu}) {
      EXPECT_EQ(crc32c(seed, buf.data(), len), crc32c_reference(seed, buf.data(), len))
          << "len " << len << " seed " << seed;
    }
  }
  const uint32_t whole = crc32c(0, buf.data(), 9000);
  EXPECT_EQ(crc32c(crc32c(0, buf.data(), 4000), buf.data() + 4000, 5000), whole);
}

}  // namespace
}  // namespace bowstack
