// Helpers shared by era's unit tests.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "targets/era/era_target.h"
#include "targets/era/era_tools.h"

namespace bowstack::era::test_util {

using Bytes = std::vector<std::byte>;

// `n` pseudo-random bytes, the same for the same seed.
inline Bytes pattern(uint64_t seed, size_t n) {
  Bytes b(n);
  std::mt19937_64 rng(seed);
  for (auto& x : b) x = std::byte(static_cast<unsigned char>(rng()));
  return b;
}

// Bytes of metadata for a device of `nr_blocks` era blocks.
inline uint64_t meta_size(uint64_t nr_blocks) { return Layout::for_blocks(nr_blocks).total * kMetaBlockSize; }

inline std::shared_ptr<EraTarget> open_era(std::shared_ptr<BlockDevice> origin,
                                           std::shared_ptr<BlockDevice> md, uint32_t bs = 4096) {
  EraOptions o;
  o.block_size = bs;
  o.bufio.max_bytes = 256 * 1024;  // small: exercises eviction and write-back
  auto t = EraTarget::open(std::move(origin), std::move(md), o);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? t.value() : nullptr;
}

// Logical era of every block, and the current era, read offline.
inline std::vector<uint32_t> logical_eras(std::shared_ptr<BlockDevice> md, uint32_t* current = nullptr) {
  auto src = open_source(std::move(md), false);
  EXPECT_TRUE(src.ok()) << src.status().message();
  if (!src.ok()) return {};
  if (current != nullptr) *current = src->current_era;
  std::vector<uint32_t> out;
  Status s = for_each_era(src.value(), true, nullptr, [&](uint64_t, std::span<const uint32_t> e) {
    out.insert(out.end(), e.begin(), e.end());
    return Status::Ok();
  });
  EXPECT_TRUE(s.ok()) << s.message();
  return out;
}

}  // namespace bowstack::era::test_util
