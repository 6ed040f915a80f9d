// Test data for the unit tests of every target: bytes whose exact value
// does not matter, reproducible from a seeded generator.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace bowstack::testdata {

inline std::vector<std::byte> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<std::byte> b(n);
  for (auto& x : b) x = std::byte(static_cast<unsigned char>(rng()));
  return b;
}

}  // namespace bowstack::testdata
