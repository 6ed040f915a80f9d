// Helpers shared by era's unit tests.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace bowstack::era::test_util {

using Bytes = std::vector<std::byte>;

// `n` pseudo-random bytes, the same for the same seed.
inline Bytes pattern(uint64_t seed, size_t n) {
  Bytes b(n);
  std::mt19937_64 rng(seed);
  for (auto& x : b) x = std::byte(static_cast<unsigned char>(rng()));
  return b;
}

}  // namespace bowstack::era::test_util
