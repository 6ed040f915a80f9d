// A mirror leg's md internal write-intent bitmap (docs/format/mirror.md; facts
// from the kernel's md-bitmap.c/h and mdadm's bitmap.c): the 256-byte bitmap
// superblock at `bitmap_offset` sectors from the md superblock, then one bit
// per chunk of the array.
//
// The bitmap area is addressed from its first byte (the bitmap superblock):
// bit i lives in byte 256 + i / 8 under mask 1 << (i % 8) (version 4: bits
// in little-endian order) and covers array bytes [i * chunk, (i + 1) * chunk).
//
// decode_bitmap_superblock() takes untrusted bytes: any pattern yields a
// value or an error Status (EMEDIUMTYPE no bitmap magic, EUCLEAN damaged or
// inconsistent, ENOTSUP a bitmap kind bowstack does not handle), never a
// crash.
//
// Thread-safety: pure functions and value types.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/status.h"
#include "core/uuid.h"
#include "targets/mirror/md_format.h"

namespace bowstack::mirror::md {

inline constexpr uint32_t kBitmapMagic = 0x6d746962;  // "bitm"
inline constexpr uint32_t kBitmapVersion = 4;         // bits little-endian; every mdadm and kernel reads it
inline constexpr uint32_t kBitmapVersionHostEndian = 3;
inline constexpr uint32_t kBitmapVersionClustered = 5;
inline constexpr uint32_t kBitmapVersionLockless = 6;
inline constexpr uint32_t kBitmapSbBytes = 256;
inline constexpr uint32_t kBitmapAlign = 4096;  // the area is written in 4 KiB pages

// state bits.
inline constexpr uint32_t kBitmapStale = 0x2;  // "Out of date": every bit counts as set
inline constexpr uint32_t kBitmapWriteError = 0x4;

inline constexpr uint32_t kDefaultDaemonSleep = 5;            // seconds
inline constexpr uint32_t kMaxWriteBehind = 16383;            // the kernel's COUNTER_MAX
inline constexpr uint32_t kMinBitmapChunk = 4096;             // mdadm's smallest
inline constexpr uint32_t kMinKernelBitmapChunk = 512;        // the kernel's smallest
inline constexpr uint32_t kMdadmDefaultMinChunk = 64u << 20;  // mdadm's default is at least 64 MiB

// bitmap_super_t, field for field. nodes and cluster_name (clustered md) are
// written zero and refused when set.
struct BitmapSuperblock {
  uint32_t version = kBitmapVersion;
  Uuid uuid{};  // = the md superblock's set_uuid
  uint64_t events = 0;
  uint64_t events_cleared = 0;
  uint64_t sync_size = 0;  // sectors the bitmap covers (the component size)
  uint32_t state = 0;
  uint32_t chunksize = 0;  // bytes per bit
  uint32_t daemon_sleep = kDefaultDaemonSleep;
  uint32_t write_behind = 0;
  uint32_t sectors_reserved = 0;  // mdadm writes 0; a kernel records its own value

  bool stale() const { return (state & kBitmapStale) != 0; }
  friend bool operator==(const BitmapSuperblock&, const BitmapSuperblock&) = default;
};

// Number of bits for `sync_size` sectors: ceil(sync_size * 512 / chunk).
// REQUIRES: chunk > 0, sync_size < 2^55.
uint64_t bitmap_bits(uint64_t sync_size, uint32_t chunk);
// Bytes of the bitmap area: superblock and bits, rounded up to 4 KiB.
uint64_t bitmap_area_bytes(uint64_t bits);

// mdadm's default chunk for an array of `size` sectors: the smallest power of
// two >= 4 KiB whose bits fit in mdadm_bitmap_space(size) (at most 128 KiB),
// but at least 64 MiB. 0 when the array is too small for a bitmap.
uint32_t mdadm_default_bitmap_chunk(uint64_t size);

// The bitmap superblock of a new array: events and events_cleared = `events`,
// not stale.
BitmapSuperblock new_bitmap_superblock(const Superblock& sb, uint32_t chunk);

// Writes the 256-byte bitmap superblock and zeroes the rest of `out`.
// REQUIRES: out.size() >= kBitmapSbBytes.
void encode_bitmap_superblock(const BitmapSuperblock& bm, std::span<std::byte> out);
// Checks what the kernel checks (magic, version, chunk a power of two >= 512,
// daemon_sleep >= 1, write_behind <= 16383) and a sync_size whose byte count
// fits 64 bits. Any length of `bytes`.
Result<BitmapSuperblock> decode_bitmap_superblock(std::span<const std::byte> bytes);
// The bitmap belongs to this leg's superblock and fits its leg: same uuid (the
// kernel refuses another), its area between the superblock and the bad-block
// log or data, and bits for the array's size. EUCLEAN with a sentence
// otherwise.
Status check_bitmap(const Superblock& sb, const BitmapSuperblock& bm);
// The kernel treats a bitmap as out of date (all bits set) when flagged stale
// or when its events are behind the superblock's; one ahead is fine (the
// bitmap is written first).
inline bool bitmap_out_of_date(const Superblock& sb, const BitmapSuperblock& bm) {
  return bm.stale() || bm.events < sb.events;
}

// Bits and regions. `chunk` is BitmapSuperblock::chunksize (a power of two).
inline uint64_t bit_of_sector(uint64_t array_sector, uint32_t chunk) {
  return array_sector / (chunk / kSector);
}
inline uint64_t first_sector_of_bit(uint64_t bit, uint32_t chunk) { return bit * (chunk / kSector); }
// The bits [first, end) a write of `sectors` from `array_sector` dirties.
// REQUIRES: sectors > 0.
struct BitRange {
  uint64_t first = 0;
  uint64_t end = 0;
};
inline BitRange bits_of_range(uint64_t array_sector, uint64_t sectors, uint32_t chunk) {
  return {bit_of_sector(array_sector, chunk), bit_of_sector(array_sector + sectors - 1, chunk) + 1};
}
// Byte of the bitmap area that holds `bit`, and its mask.
inline uint64_t bit_byte(uint64_t bit) { return kBitmapSbBytes + bit / 8; }
inline std::byte bit_mask(uint64_t bit) { return std::byte{static_cast<unsigned char>(1u << (bit % 8))}; }
// REQUIRES: area.size() > bit_byte(bit).
bool test_bit(std::span<const std::byte> area, uint64_t bit);
void set_bit(std::span<std::byte> area, uint64_t bit, bool value);
// Set bits among the first `bits`. REQUIRES: area.size() >= bit_byte(bits - 1) + 1.
uint64_t count_set_bits(std::span<const std::byte> area, uint64_t bits);

}  // namespace bowstack::mirror::md
