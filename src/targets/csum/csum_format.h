// csum's on-disk structures (layout=csum), as docs/format/csum.md specifies
// them: the metadata layout, the superblock (two copies), pair sectors (two
// checksum slots and a state per data block), dirty-region sectors, and the
// block checksum shared with dm-integrity's crc32c tags.
//
// Every metadata sector checks itself (crc32c, magic, its own location), so
// decoding never trusts bytes from the wrong place, a torn write or another
// format. Decoders take untrusted input: any byte pattern yields a value or
// an error Status (EUCLEAN damaged, EMEDIUMTYPE not csum metadata, ENOTSUP a
// newer version or unknown feature), never a crash.
//
// Thread-safety: pure functions and value types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/uuid.h"

namespace bowstack::csum {

inline constexpr uint32_t kSector = 512;
inline constexpr uint32_t kPairsPerSector = 60;
inline constexpr uint32_t kRegionsPerSector = 3840;  // bits in bytes 32..511
inline constexpr uint32_t kVersion = 1;
inline constexpr uint64_t kMaxBlocks = uint64_t{1} << 40;
inline constexpr uint64_t kSuperblockSectors[2] = {0, 8};
inline constexpr uint64_t kPairsStart = 16;

// Magics: the four ASCII bytes as a little-endian u32.
inline constexpr uint32_t magic_of(const char (&s)[5]) {
  return static_cast<uint32_t>(static_cast<unsigned char>(s[0])) |
         static_cast<uint32_t>(static_cast<unsigned char>(s[1])) << 8 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[2])) << 16 |
         static_cast<uint32_t>(static_cast<unsigned char>(s[3])) << 24;
}
inline constexpr uint32_t kMagicSuperblock = magic_of("CSSB");
inline constexpr uint32_t kMagicPairs = magic_of("CSPR");
inline constexpr uint32_t kMagicDirty = magic_of("CSDR");

enum class Mode : uint32_t { kDual = 1, kJournal = 2, kRebuild = 3 };
const char* mode_name(Mode m);
inline constexpr uint32_t kFlagClean = 1;

using bowstack::Uuid;  // core/uuid.h

// Where everything lives on the metadata device, in sectors (section 2).
struct Layout {
  uint32_t block_size = 0;
  uint64_t data_size = 0;
  uint64_t nr_blocks = 0;
  uint32_t log2_region_blocks = 0;
  uint64_t pairs_start = kPairsStart;
  uint64_t pairs_sectors = 0;
  uint64_t bitmap_start = 0;
  uint64_t bitmap_sectors = 0;
  uint64_t journal_start = 0;  // 0 when journal_sectors is 0
  uint64_t journal_sectors = 0;
  uint64_t total_sectors = 0;

  // EINVAL (with a sentence) for a block size other than 512..4096 (a power
  // of two), a data size that is not a positive multiple of it or holds more
  // than kMaxBlocks blocks, a region size out of range or a journal size that
  // is not a multiple of 8 sectors.
  static Result<Layout> compute(uint32_t block_size, uint64_t data_size, uint32_t log2_region_blocks,
                                uint64_t journal_sectors);
  // The default region: 16 MiB of data.
  static uint32_t default_log2_region_blocks(uint32_t block_size);

  uint64_t nr_regions() const {
    return (nr_blocks + (uint64_t{1} << log2_region_blocks) - 1) >> log2_region_blocks;
  }
  uint64_t pair_sector(uint64_t block) const { return pairs_start + block / kPairsPerSector; }
  uint32_t pair_index(uint64_t block) const { return static_cast<uint32_t>(block % kPairsPerSector); }
  uint64_t region(uint64_t block) const { return block >> log2_region_blocks; }
  uint64_t dirty_sector(uint64_t region) const { return bitmap_start + region / kRegionsPerSector; }
};

struct Superblock {
  uint32_t version = kVersion;
  uint32_t incompat = 0, ro_compat = 0, compat = 0;
  Uuid uuid{};
  uint64_t generation = 0;
  Layout layout;
  Mode mode = Mode::kDual;
  uint32_t flags = 0;
  uint64_t journal_tail = 0;
  uint64_t journal_tail_seq = 0;
  uint32_t scrub_state = 0;
  uint64_t scrub_cursor = 0;
  uint64_t scrub_started = 0;
  uint64_t scrub_finished = 0;
  uint64_t scrub_mismatches = 0;
  uint64_t mismatches_total = 0;
  uint64_t unclean_opens = 0;
  uint64_t created = 0;

  bool clean() const { return (flags & kFlagClean) != 0; }
};

// One 512-byte sector. REQUIRES: out.size() == kSector, location one of
// kSuperblockSectors.
void encode_superblock(const Superblock& sb, uint64_t location, std::span<std::byte> out);
// Checks crc, magic, location, version, features and that every layout
// field is what compute() gives for its parameters and fits `device_sectors`.
Result<Superblock> decode_superblock(std::span<const std::byte> sector, uint64_t location,
                                     uint64_t device_sectors);

// Picks the current superblock from both copies (sectors 0 and 8, as read):
// the valid one with the higher generation. With neither valid:
// EMEDIUMTYPE "blank" when both are all zero or neither carries the magic,
// else the copies' errors (EUCLEAN, or ENOTSUP for a newer version).
struct Chosen {
  Superblock sb;
  uint64_t location = 0;  // where the current copy is
};
Result<Chosen> choose_superblock(std::span<const std::byte> copy0, std::span<const std::byte> copy1,
                                 uint64_t device_sectors);

// A data block's two checksums and which is newest (section 3.2).
enum class PairState : uint8_t { kEmpty = 0, kA = 1, kB = 2 };
struct Pair {
  PairState state = PairState::kEmpty;
  uint32_t a = 0, b = 0;
  uint32_t newest() const { return state == PairState::kB ? b : a; }
  uint32_t older() const { return state == PairState::kB ? a : b; }
  friend bool operator==(const Pair&, const Pair&) = default;
};
using PairSector = std::array<Pair, kPairsPerSector>;

// Encodes pair sector `location` (all pairs EMPTY encode to a valid sector
// with a header, not to zeroes). REQUIRES: out.size() == kSector.
void encode_pairs(const PairSector& pairs, const Uuid& uuid, uint64_t location, std::span<std::byte> out);
// An all-zero sector is valid: every pair EMPTY. A pair in state 3, a
// non-zero EMPTY pair, or a bad header is EUCLEAN.
Result<PairSector> decode_pairs(std::span<const std::byte> sector, const Uuid& uuid, uint64_t location);

// Dirty-region sector: bit i is region (sector index * kRegionsPerSector + i).
using DirtyBits = std::array<uint64_t, kRegionsPerSector / 64>;
void encode_dirty(const DirtyBits& bits, const Uuid& uuid, uint64_t location, std::span<std::byte> out);
Result<DirtyBits> decode_dirty(std::span<const std::byte> sector, const Uuid& uuid, uint64_t location);

// crc32c(0, le64(first_sector) ‖ D): dm-integrity's crc32c tag of the block
// whose first (logical) sector that is.
uint32_t sector_checksum(uint64_t first_sector, std::span<const std::byte> data);
// c(b, D) = sector_checksum(first sector of b, D). REQUIRES: data.size() ==
// block_size.
uint32_t block_checksum(uint64_t block, uint32_t block_size, std::span<const std::byte> data);
// z(b): the checksum of a block of zeroes.
uint32_t zero_checksum(uint64_t block, uint32_t block_size);

}  // namespace bowstack::csum
