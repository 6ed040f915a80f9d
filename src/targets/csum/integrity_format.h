// csum's layout=integrity: Linux dm-integrity's on-disk format
// (docs/format/csum.md section 11; facts from the kernel's
// drivers/md/dm-integrity.c). The superblock, the geometry that places every
// block's data and tag on the one device, and the bytes of an empty journal.
//
// Supported: internal_hash crc32c (tag size 4), metadata on the data device,
// journal (J) or direct (D) volumes whose journal holds no entries, with or
// without FIXED_PADDING. Everything else a superblock can announce (HMAC,
// journal MAC, inline mode, a dirty bitmap, a separate metadata device) is
// refused with ENOTSUP, naming it.
//
// decode_superblock() takes untrusted bytes: any pattern yields a value or an
// error Status (EMEDIUMTYPE not dm-integrity, EUCLEAN damaged, ENOTSUP a
// feature or version we do not implement), never a crash.
//
// Thread-safety: pure functions and value types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/status.h"

namespace bowstack::csum::integrity {

inline constexpr uint32_t kSector = 512;
// The superblock area: sector 0, 8 sectors reserved (64 bytes used).
inline constexpr uint32_t kSbSectors = 8;
inline constexpr uint32_t kSbBytes = kSbSectors * kSector;
inline constexpr uint32_t kSbUsedBytes = 64;
inline constexpr char kMagic[8] = {'i', 'n', 't', 'e', 'g', 'r', 't', '\0'};

inline constexpr uint8_t kVersionFixedPadding = 4;  // what format writes
inline constexpr uint8_t kMaxVersion = 6;           // newest the kernel knows (inline)

inline constexpr uint32_t kFlagJournalMac = 0x1;
inline constexpr uint32_t kFlagRecalculating = 0x2;
inline constexpr uint32_t kFlagDirtyBitmap = 0x4;
inline constexpr uint32_t kFlagFixedPadding = 0x8;
inline constexpr uint32_t kFlagFixedHmac = 0x10;
inline constexpr uint32_t kFlagInline = 0x20;

inline constexpr uint32_t kTagSize = 4;  // crc32c
inline constexpr uint8_t kDiscardFiller = 0xF6;
inline constexpr uint32_t kDefaultLog2Interleave = 15;
inline constexpr uint32_t kMinLog2Interleave = 3;
inline constexpr uint32_t kMaxLog2Interleave = 31;
inline constexpr uint32_t kMaxLog2SectorsPerBlock = 3;  // blocks of 512..4096 bytes

// Journal: each sector is 504 bytes of entries (the last 8 of them a MAC
// with HAVE_JOURNAL_MAC) and an 8-byte commit id; a section is 8 sectors of
// entries followed by the data of those entries.
inline constexpr uint32_t kJournalSectorData = 504;
inline constexpr uint32_t kJournalBlockSectors = 8;
inline constexpr uint32_t kCommitIds = 4;
// The kernel's journal size when none is asked for: device >> 7, at most
// 131072 sectors (64-bit kernels).
inline constexpr uint64_t kDefaultMaxJournalSectors = 131072;
inline constexpr uint32_t kDefaultJournalSizeShift = 7;

struct Superblock {
  uint8_t version = kVersionFixedPadding;
  uint8_t log2_interleave_sectors = kDefaultLog2Interleave;
  uint16_t tag_size = kTagSize;
  uint32_t journal_sections = 1;
  uint64_t provided_data_sectors = 0;
  uint32_t flags = kFlagFixedPadding;
  uint8_t log2_sectors_per_block = 3;
  uint8_t log2_blocks_per_bitmap_bit = 0;
  uint64_t recalc_sector = 0;
  std::array<uint8_t, 16> salt{};

  uint32_t block_size() const { return kSector << log2_sectors_per_block; }
  bool recalculating() const { return (flags & kFlagRecalculating) != 0; }
  friend bool operator==(const Superblock&, const Superblock&) = default;
};

// Where everything lives, in 512-byte sectors of the device, as the kernel's
// calculate_journal_section_size() and calculate_device_limits() compute it.
struct Layout {
  uint32_t log2_sectors_per_block = 0;
  uint32_t log2_interleave_sectors = 0;
  bool fixed_padding = true;
  uint32_t journal_sections = 0;
  uint32_t journal_entry_size = 0;  // bytes
  uint32_t journal_entries_per_sector = 0;
  uint32_t journal_section_entries = 0;
  uint32_t journal_section_sectors = 0;
  uint64_t initial_sectors = 0;  // superblock + journal: the first area starts here
  uint64_t metadata_run = 0;     // tag sectors at the head of each area
  uint64_t device_sectors = 0;
  // The largest export that fits, found bit by bit from the top as the
  // kernel's get_provided_data_sectors() does (a multiple of 8 sectors).
  uint64_t provided_data_sectors = 0;

  // EINVAL (with a sentence) for parameters out of range or a device too
  // small to hold the superblock, the journal and one block.
  static Result<Layout> compute(uint32_t log2_sectors_per_block, uint32_t log2_interleave_sectors,
                                bool fixed_padding, uint32_t journal_sections, uint64_t device_sectors);
  // The geometry a valid superblock describes on a device of this size.
  static Result<Layout> of(const Superblock& sb, uint64_t device_sectors);

  uint32_t sectors_per_block() const { return 1u << log2_sectors_per_block; }
  uint32_t block_size() const { return kSector << log2_sectors_per_block; }
  uint64_t interleave_sectors() const { return uint64_t{1} << log2_interleave_sectors; }
  // Whether an export of `provided` sectors fits (calculate_device_limits).
  bool fits(uint64_t provided) const;
  // First sector of area `area` (its tag run; its data follows the run).
  uint64_t area_start(uint64_t area) const {
    return initial_sectors + area * (interleave_sectors() + metadata_run);
  }
  // For logical (exported) sector `l`, block-aligned: where its data lives,
  // and the byte offset of its tag on the device.
  uint64_t data_sector(uint64_t l) const;
  uint64_t tag_offset(uint64_t l) const;
};

// The kernel's default number of journal sections for a device: its
// default journal size (kDefaultJournalSizeShift, kDefaultMaxJournalSectors)
// in whole sections, at least 1.
uint32_t default_journal_sections(uint32_t log2_sectors_per_block, uint64_t device_sectors);
// log2_blocks_per_bitmap_bit as the kernel's constructor stores it when it
// formats: 32768 sectors per bit, raised until the bitmap fits the journal.
uint8_t format_log2_blocks_per_bitmap_bit(const Layout& l);

// The superblock a fresh format writes for this geometry: version 4,
// FIXED_PADDING, crc32c tags, no recalculation.
Superblock new_superblock(const Layout& l);

// Writes the whole 4096-byte superblock area (zero but for the fields).
// REQUIRES: out.size() == kSbBytes.
void encode_superblock(const Superblock& sb, std::span<std::byte> out);
// Checks magic, version, features, the fields the kernel checks and that the
// export fits a device of `device_sectors`. `bytes` may be any length.
Result<Superblock> decode_superblock(std::span<const std::byte> bytes, uint64_t device_sectors);

// Journal. The commit id of sector `sector` of section `section` in commit
// sequence `seq` (0..3), unencrypted journal: the kernel's create_journal()
// sets commit_ids[seq] = 0x1111111111111111 * (seq + 1) and
// dm_integrity_commit_id() xors in (section << 32) ^ sector.
uint64_t commit_id(uint32_t section, uint32_t sector, uint32_t seq);
// One section of an empty journal as the kernel's init_journal() writes it
// (format uses sequence 0): zero but every entry marked unused (high 32 bits
// of its sector 0xFFFFFFFF) and each sector's commit id.
// REQUIRES: out.size() == l.journal_section_sectors * kSector.
void encode_empty_journal_section(const Layout& l, uint32_t section, uint32_t seq, std::span<std::byte> out);
// Entries of one section that are not unused (in use or in progress). EUCLEAN
// when a sector's commit id belongs to no sequence: the kernel fails the
// device on such a journal rather than replay it.
// REQUIRES: bytes.size() == l.journal_section_sectors * kSector.
Result<uint32_t> journal_section_entries_in_use(const Layout& l, uint32_t section,
                                                std::span<const std::byte> bytes);

// The crc32c tag of the block at logical sector `l` holding `data`:
// crc32c(0, le64(l) ‖ data), the same function as csum's c(b, D).
uint32_t tag_of(uint64_t l, std::span<const std::byte> data);

}  // namespace bowstack::csum::integrity
