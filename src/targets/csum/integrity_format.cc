#include "targets/csum/integrity_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>

#include "core/bytes.h"
#include "core/crc32.h"
#include "core/endian.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum::integrity {

namespace {

// Byte offsets of the superblock's fields (struct superblock in the kernel).
constexpr size_t kOffVersion = 8;
constexpr size_t kOffLog2Interleave = 9;
constexpr size_t kOffTagSize = 10;
constexpr size_t kOffJournalSections = 12;
constexpr size_t kOffProvided = 16;
constexpr size_t kOffFlags = 24;
constexpr size_t kOffLog2SectorsPerBlock = 28;
constexpr size_t kOffLog2BlocksPerBitmapBit = 29;
constexpr size_t kOffRecalcSector = 32;
constexpr size_t kOffSalt = 48;

constexpr uint32_t kKnownFlags = kFlagJournalMac | kFlagRecalculating | kFlagDirtyBitmap | kFlagFixedPadding |
                                 kFlagFixedHmac | kFlagInline;
// The unused marker sits in the high half of an entry's little-endian
// sector number (journal_entry_set_unused()).
constexpr uint32_t kEntryUnused = 0xFFFFFFFF;
constexpr uint64_t kCommitIdBase = 0x1111111111111111;
// Sectors of tag padding the kernel keeps before the first data sector.
constexpr uint64_t kMetadataPaddingSectors = 8;
constexpr uint32_t kDefaultLog2SectorsPerBitmapBit = 15;  // 32768 sectors

struct JournalShape {
  uint32_t entry_size, entries_per_sector, section_entries, section_sectors;
};

// calculate_journal_section_size() without a journal MAC: an entry is the
// 8-byte sector number, the last 8 bytes of each of the block's sectors
// (their place holds the commit id in the data copy) and the tag.
JournalShape journal_shape(uint32_t log2_sectors_per_block) {
  JournalShape s;
  s.entry_size = (8 + (8u << log2_sectors_per_block) + kTagSize + 7) / 8 * 8;
  s.entries_per_sector = kJournalSectorData / s.entry_size;
  s.section_entries = s.entries_per_sector * kJournalBlockSectors;
  s.section_sectors = (s.section_entries << log2_sectors_per_block) + kJournalBlockSectors;
  return s;
}

}  // namespace

Result<Layout> Layout::compute(uint32_t log2_sectors_per_block, uint32_t log2_interleave_sectors,
                               bool fixed_padding, uint32_t journal_sections, uint64_t device_sectors) {
  if (log2_sectors_per_block > kMaxLog2SectorsPerBlock) {
    return Status::Error(EINVAL,
                         fmt::format("integrity: log2_sectors_per_block {} (blocks are 512..4096 bytes)",
                                     log2_sectors_per_block));
  }
  if (log2_interleave_sectors < kMinLog2Interleave || log2_interleave_sectors > kMaxLog2Interleave) {
    return Status::Error(
        EINVAL, fmt::format("integrity: log2_interleave_sectors {} is not in {}..{}", log2_interleave_sectors,
                            kMinLog2Interleave, kMaxLog2Interleave));
  }
  if (journal_sections == 0)
    return Status::Error(EINVAL, "integrity: at least one journal section is needed");
  // Byte offsets (sector * 512) must not wrap.
  if (device_sectors > UINT64_MAX / kSector) {
    return Status::Error(EINVAL,
                         fmt::format("integrity: {} sectors are more than 2^64 bytes", device_sectors));
  }
  Layout l;
  l.log2_sectors_per_block = log2_sectors_per_block;
  l.log2_interleave_sectors = log2_interleave_sectors;
  l.fixed_padding = fixed_padding;
  l.journal_sections = journal_sections;
  const JournalShape js = journal_shape(log2_sectors_per_block);
  l.journal_entry_size = js.entry_size;
  l.journal_entries_per_sector = js.entries_per_sector;
  l.journal_section_entries = js.section_entries;
  l.journal_section_sectors = js.section_sectors;
  l.initial_sectors = kSbSectors + uint64_t{js.section_sectors} * journal_sections;
  l.device_sectors = device_sectors;
  // Old volumes padded each tag run to 128 KiB; FIXED_PADDING to 4 KiB.
  const uint64_t padding = fixed_padding ? kMetadataPaddingSectors * kSector : uint64_t{kSector} << 8;
  const uint64_t tag_bytes = uint64_t{kTagSize} << (log2_interleave_sectors - log2_sectors_per_block);
  l.metadata_run = (tag_bytes + padding - 1) / padding * padding / kSector;
  if (l.initial_sectors + kMetadataPaddingSectors >= device_sectors || l.initial_sectors > UINT_MAX) {
    return Status::Error(EINVAL,
                         fmt::format("integrity: {} journal sections of {} sectors do not fit a device "
                                     "of {} sectors",
                                     journal_sections, js.section_sectors, device_sectors));
  }
  // get_provided_data_sectors(): the export grows bit by bit from the top
  // while its last sector still lands on the device.
  for (int bit = 63 - std::countl_zero(device_sectors); bit >= 3; --bit) {
    const uint64_t more = l.provided_data_sectors | uint64_t{1} << bit;
    if (l.fits(more)) l.provided_data_sectors = more;
  }
  if (l.provided_data_sectors == 0) {
    return Status::Error(EINVAL,
                         fmt::format("integrity: a device of {} sectors is too small", device_sectors));
  }
  return l;
}

Result<Layout> Layout::of(const Superblock& sb, uint64_t device_sectors) {
  return compute(sb.log2_sectors_per_block, sb.log2_interleave_sectors, (sb.flags & kFlagFixedPadding) != 0,
                 sb.journal_sections, device_sectors);
}

bool Layout::fits(uint64_t provided) const {
  if (provided == 0 || initial_sectors + kMetadataPaddingSectors >= device_sectors) return false;
  const uint64_t last = provided - 1;
  const uint64_t area = last >> log2_interleave_sectors;
  // area_start() without overflow: untrusted sizes can make it wrap.
  uint64_t at = 0;
  if (__builtin_mul_overflow(area, interleave_sectors() + metadata_run, &at) ||
      __builtin_add_overflow(at, initial_sectors + metadata_run + (last & (interleave_sectors() - 1)), &at)) {
    return false;
  }
  return at < device_sectors;
}

uint64_t Layout::data_sector(uint64_t l) const {
  return area_start(l >> log2_interleave_sectors) + metadata_run + (l & (interleave_sectors() - 1));
}

uint64_t Layout::tag_offset(uint64_t l) const {
  const uint64_t off = l & (interleave_sectors() - 1);
  return area_start(l >> log2_interleave_sectors) * kSector + (off >> log2_sectors_per_block) * kTagSize;
}

uint32_t default_journal_sections(uint32_t log2_sectors_per_block, uint64_t device_sectors) {
  const uint64_t sectors = std::min(kDefaultMaxJournalSectors, device_sectors >> kDefaultJournalSizeShift);
  const uint64_t n =
      sectors / journal_shape(std::min(log2_sectors_per_block, kMaxLog2SectorsPerBlock)).section_sectors;
  return n == 0 ? 1 : static_cast<uint32_t>(n);
}

uint8_t format_log2_blocks_per_bitmap_bit(const Layout& l) {
  uint32_t s = std::max(kDefaultLog2SectorsPerBitmapBit, l.log2_sectors_per_block);
  const uint64_t bits =
      std::min<uint64_t>(UINT_MAX, (uint64_t{l.journal_section_sectors} * l.journal_sections) << 12);
  while (s < 63 && bits < (l.provided_data_sectors + (uint64_t{1} << s) - 1) >> s) ++s;
  return static_cast<uint8_t>(s - l.log2_sectors_per_block);
}

Superblock new_superblock(const Layout& l) {
  Superblock sb;
  sb.version = kVersionFixedPadding;
  sb.log2_interleave_sectors = static_cast<uint8_t>(l.log2_interleave_sectors);
  sb.tag_size = kTagSize;
  sb.journal_sections = l.journal_sections;
  sb.provided_data_sectors = l.provided_data_sectors;
  sb.flags = l.fixed_padding ? kFlagFixedPadding : 0;
  sb.log2_sectors_per_block = static_cast<uint8_t>(l.log2_sectors_per_block);
  sb.log2_blocks_per_bitmap_bit = format_log2_blocks_per_bitmap_bit(l);
  return sb;
}

void encode_superblock(const Superblock& sb, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  store_le(out, kOffVersion, sb.version, 1);
  store_le(out, kOffLog2Interleave, sb.log2_interleave_sectors, 1);
  store_le(out, kOffTagSize, sb.tag_size, 2);
  store_le(out, kOffJournalSections, sb.journal_sections, 4);
  store_le(out, kOffProvided, sb.provided_data_sectors, 8);
  store_le(out, kOffFlags, sb.flags, 4);
  store_le(out, kOffLog2SectorsPerBlock, sb.log2_sectors_per_block, 1);
  store_le(out, kOffLog2BlocksPerBitmapBit, sb.log2_blocks_per_bitmap_bit, 1);
  store_le(out, kOffRecalcSector, sb.recalc_sector, 8);
  for (size_t i = 0; i < sb.salt.size(); ++i) out[kOffSalt + i] = std::byte{sb.salt[i]};
}

Result<Superblock> decode_superblock(std::span<const std::byte> b, uint64_t device_sectors) {
  if (b.size() < sizeof kMagic || std::memcmp(b.data(), kMagic, sizeof kMagic) != 0) {
    return Status::Error(EMEDIUMTYPE, all_zero(b) ? "blank: the superblock area is all zero"
                                                  : "no dm-integrity superblock (magic \"integrt\" missing)");
  }
  if (b.size() < kSbUsedBytes) return Status::Error(EUCLEAN, "dm-integrity superblock: short read");
  Superblock sb;
  sb.version = static_cast<uint8_t>(load_le(b, kOffVersion, 1));
  sb.log2_interleave_sectors = static_cast<uint8_t>(load_le(b, kOffLog2Interleave, 1));
  sb.tag_size = static_cast<uint16_t>(load_le(b, kOffTagSize, 2));
  sb.journal_sections = static_cast<uint32_t>(load_le(b, kOffJournalSections, 4));
  sb.provided_data_sectors = load_le(b, kOffProvided, 8);
  sb.flags = static_cast<uint32_t>(load_le(b, kOffFlags, 4));
  sb.log2_sectors_per_block = static_cast<uint8_t>(load_le(b, kOffLog2SectorsPerBlock, 1));
  sb.log2_blocks_per_bitmap_bit = static_cast<uint8_t>(load_le(b, kOffLog2BlocksPerBitmapBit, 1));
  sb.recalc_sector = load_le(b, kOffRecalcSector, 8);
  for (size_t i = 0; i < sb.salt.size(); ++i) sb.salt[i] = std::to_integer<uint8_t>(b[kOffSalt + i]);

  auto unsupported = [](const std::string& what) {
    return Status::Error(ENOTSUP, "dm-integrity volume uses " + what + ", which csum does not support");
  };
  if (sb.version == 0) return Status::Error(EUCLEAN, "dm-integrity superblock: version 0");
  if (sb.version > kMaxVersion) {
    return Status::Error(ENOTSUP, fmt::format("dm-integrity superblock version {} is newer than any known "
                                              "(highest {})",
                                              sb.version, kMaxVersion));
  }
  if (sb.flags & ~kKnownFlags)
    return unsupported(fmt::format("unknown flags {:#x}", sb.flags & ~kKnownFlags));
  if (sb.flags & kFlagInline) return unsupported("inline mode (tags in the device's integrity profile)");
  if ((sb.flags & kFlagFixedHmac) != 0 || sb.version == 5) return unsupported("HMAC tags (fix_hmac)");
  if (sb.version == 6) return unsupported("inline mode (version 6)");
  if (sb.flags & kFlagJournalMac) return unsupported("a journal MAC");
  if (sb.flags & kFlagDirtyBitmap) return unsupported("bitmap mode (the journal area holds a dirty bitmap)");
  if (sb.tag_size == 0) return Status::Error(EUCLEAN, "dm-integrity superblock: tag size 0");
  if (sb.tag_size != kTagSize) return unsupported(fmt::format("{}-byte tags (crc32c's are 4)", sb.tag_size));
  if (sb.log2_sectors_per_block > kMaxLog2SectorsPerBlock) {
    return Status::Error(EUCLEAN, fmt::format("dm-integrity superblock: log2_sectors_per_block {}",
                                              sb.log2_sectors_per_block));
  }
  if (sb.journal_sections == 0)
    return Status::Error(EUCLEAN, "dm-integrity superblock: journal_sections is 0");
  // The kernel requires interleave 0 with a separate metadata device and
  // 3..31 without one.
  if (sb.log2_interleave_sectors == 0) return unsupported("a separate metadata device");
  if (sb.log2_interleave_sectors < kMinLog2Interleave || sb.log2_interleave_sectors > kMaxLog2Interleave) {
    return Status::Error(EUCLEAN, fmt::format("dm-integrity superblock: log2_interleave_sectors {}",
                                              sb.log2_interleave_sectors));
  }
  auto l = Layout::of(sb, device_sectors);
  if (!l.ok()) return Status::Error(EUCLEAN, "dm-integrity superblock: " + l.status().context());
  if (sb.provided_data_sectors == 0 || sb.provided_data_sectors % (1u << sb.log2_sectors_per_block) != 0) {
    return Status::Error(
        EUCLEAN, fmt::format("dm-integrity superblock: provided_data_sectors {}", sb.provided_data_sectors));
  }
  // Smaller is fine (the device grew since; the kernel grows the export on
  // its next resume); larger means the device was cut short.
  if (sb.provided_data_sectors > l->provided_data_sectors) {
    return Status::Error(EUCLEAN,
                         fmt::format("dm-integrity superblock: {} data sectors, but a device of {} "
                                     "sectors holds at most {} (truncated?)",
                                     sb.provided_data_sectors, device_sectors, l->provided_data_sectors));
  }
  return sb;
}

uint64_t commit_id(uint32_t section, uint32_t sector, uint32_t seq) {
  return kCommitIdBase * (seq + 1) ^ (uint64_t{section} << 32 ^ sector);
}

void encode_empty_journal_section(const Layout& l, uint32_t section, uint32_t seq, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  for (uint32_t j = 0; j < l.journal_section_sectors; ++j) {
    store_le(out, size_t{j} * kSector + kJournalSectorData, commit_id(section, j, seq), 8);
  }
  // access_journal_entry(): entry n is in sector n % 8, slot n / 8.
  for (uint32_t n = 0; n < l.journal_section_entries; ++n) {
    const size_t at =
        (n % kJournalBlockSectors) * kSector + (n / kJournalBlockSectors) * l.journal_entry_size;
    store_le(out, at + 4, kEntryUnused, 4);
  }
}

Result<uint32_t> journal_section_entries_in_use(const Layout& l, uint32_t section,
                                                std::span<const std::byte> bytes) {
  for (uint32_t j = 0; j < l.journal_section_sectors; ++j) {
    const uint64_t id = load_le(bytes, size_t{j} * kSector + kJournalSectorData, 8);
    bool known = false;
    for (uint32_t seq = 0; seq < kCommitIds; ++seq) known = known || id == commit_id(section, j, seq);
    if (!known) {
      return Status::Error(EUCLEAN, fmt::format("kernel journal section {} sector {}: commit id {:#018x} "
                                                "belongs to no commit sequence",
                                                section, j, id));
    }
  }
  uint32_t used = 0;
  for (uint32_t n = 0; n < l.journal_section_entries; ++n) {
    const size_t at =
        (n % kJournalBlockSectors) * kSector + (n / kJournalBlockSectors) * l.journal_entry_size;
    if (load_le(bytes, at + 4, 4) != kEntryUnused) ++used;
  }
  return used;
}

uint32_t tag_of(uint64_t l, std::span<const std::byte> data) { return sector_checksum(l, data); }

}  // namespace bowstack::csum::integrity
