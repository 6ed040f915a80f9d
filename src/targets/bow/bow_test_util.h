// Helpers shared by the bow target's unit tests.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace bowstack::bow::test_util {

using Bytes = std::vector<std::byte>;

// `n` bytes from `rng`, for data whose exact value does not matter.
inline Bytes random_bytes(std::mt19937_64& rng, size_t n) {
  Bytes b(n);
  for (auto& x : b) x = std::byte(static_cast<unsigned char>(rng()));
  return b;
}

}  // namespace bowstack::bow::test_util
