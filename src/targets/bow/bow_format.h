// Android dm-bow v1.0 log block: constants and little-endian codecs. The
// format is specified in docs/format/bow.md; this header only names it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace bowstack::bow {

inline constexpr uint32_t kMagic = 0x00574f42;         // "BOW\0"
inline constexpr uint32_t kRestoreMagic = 0x00424f57;  // "WOB\0": a restore was interrupted
inline constexpr uint16_t kHeaderVersion = 0x0100;
inline constexpr uint16_t kHeaderSize = 28;
inline constexpr uint32_t kEntrySize = 24;

struct LogHeader {
  uint32_t magic = kMagic;
  uint16_t header_version = kHeaderVersion;
  uint16_t header_size = kHeaderSize;
  uint32_t block_size = 0;
  uint32_t count = 0;
  uint32_t sequence = 0;
  uint64_t sector0 = 0;  // 512-byte sector of the live block 0
};

struct LogEntry {
  uint64_t source = 0;  // sectors
  uint64_t dest = 0;    // sectors
  uint32_t size = 0;    // bytes
  uint32_t checksum = 0;
  bool operator==(const LogEntry&) const = default;
};

// REQUIRES: out.size() >= kHeaderSize.
void pack_header(const LogHeader& h, std::span<std::byte> out);
// REQUIRES: in.size() >= kHeaderSize.
LogHeader unpack_header(std::span<const std::byte> in);
// REQUIRES: out.size() >= kEntrySize.
void pack_entry(const LogEntry& e, std::span<std::byte> out);
// REQUIRES: in.size() >= kEntrySize.
LogEntry unpack_entry(std::span<const std::byte> in);

// Entries a log block holds: the largest n with header_size + 24 n <= block_size.
// 0 if the header does not fit.
uint32_t log_capacity(uint32_t block_size, uint32_t header_size);

// The Linux kernel's crc32_le: reflected polynomial 0xEDB88320, no pre- or
// post-inversion, continuing from `seed`.
uint32_t bow_crc(uint32_t seed, std::span<const std::byte> data);
// An entry's checksum: bow_crc seeded with the source's block index, over
// each block of `data` in order. REQUIRES: data.size() % block_size == 0.
uint32_t entry_checksum(uint64_t source_sector, uint32_t block_size, std::span<const std::byte> data);

}  // namespace bowstack::bow
