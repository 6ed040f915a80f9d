// Small byte-buffer predicates shared by the on-disk formats.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>

namespace bowstack {

// Every byte zero (an empty span too): a blank sector, an unwritten block.
inline bool all_zero(std::span<const std::byte> b) {
  return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
}

}  // namespace bowstack
