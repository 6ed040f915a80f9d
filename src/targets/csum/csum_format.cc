#include "targets/csum/csum_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/bytes.h"
#include "core/crc32.h"
#include "core/endian.h"

namespace bowstack::csum {

namespace {

uint64_t round_up8(uint64_t v) { return (v + 7) / 8 * 8; }

// crc32c(0, uuid ‖ bytes 4..511): the seal of every sector but the superblock.
uint32_t seal(std::span<const std::byte> sector, const Uuid* uuid) {
  uint32_t c = 0;
  if (uuid) c = crc32c(c, uuid->data(), uuid->size());
  return crc32c(c, sector.subspan(4));
}

void put_header(std::span<std::byte> out, uint32_t magic, uint64_t location) {
  store_le(out, 4, magic, 4);
  store_le(out, 8, location, 8);
}

// Checks a sector's header. Messages name the sector.
Status check_header(std::span<const std::byte> s, uint32_t magic, uint64_t location, const Uuid* uuid,
                    const char* what) {
  if (s.size() != kSector)
    return Status::Error(EUCLEAN, fmt::format("{} sector {}: short read", what, location));
  const auto m = static_cast<uint32_t>(load_le(s, 4, 4));
  if (m != magic) {
    return Status::Error(
        EUCLEAN, fmt::format("{} sector {}: magic {:08x}, expected {:08x}", what, location, m, magic));
  }
  if (load_le(s, 0, 4) != seal(s, uuid)) {
    return Status::Error(EUCLEAN, fmt::format("{} sector {}: checksum mismatch", what, location));
  }
  const uint64_t at = load_le(s, 8, 8);
  if (at != location) {
    return Status::Error(
        EUCLEAN, fmt::format("{} sector {}: written for sector {} (a misdirected or stale write)", what,
                             location, at));
  }
  return Status::Ok();
}

}  // namespace

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kDual:
      return "dual";
    case Mode::kJournal:
      return "journal";
    case Mode::kRebuild:
      return "rebuild";
  }
  return "?";
}

uint32_t Layout::default_log2_region_blocks(uint32_t block_size) {
  return 24 - static_cast<uint32_t>(std::countr_zero(block_size));
}

Result<Layout> Layout::compute(uint32_t block_size, uint64_t data_size, uint32_t log2_region_blocks,
                               uint64_t journal_sectors) {
  if (block_size < 512 || block_size > 4096 || !std::has_single_bit(block_size)) {
    return Status::Error(EINVAL,
                         fmt::format("csum: block_size {} must be 512, 1024, 2048 or 4096", block_size));
  }
  if (data_size == 0 || data_size % block_size != 0) {
    return Status::Error(EINVAL, fmt::format("csum: the data device's size {} is not a positive multiple of "
                                             "the block size {}",
                                             data_size, block_size));
  }
  const uint64_t nr = data_size / block_size;
  if (nr > kMaxBlocks) {
    return Status::Error(EINVAL,
                         fmt::format("csum: {} blocks of {} bytes; at most {} (use a larger block_size)", nr,
                                     block_size, kMaxBlocks));
  }
  if (log2_region_blocks > 40) {
    return Status::Error(EINVAL, fmt::format("csum: region of 2^{} blocks is too large", log2_region_blocks));
  }
  if (journal_sectors % 8 != 0) {
    return Status::Error(EINVAL,
                         fmt::format("csum: journal of {} sectors is not a multiple of 8", journal_sectors));
  }
  Layout l;
  l.block_size = block_size;
  l.data_size = data_size;
  l.nr_blocks = nr;
  l.log2_region_blocks = log2_region_blocks;
  l.pairs_sectors = round_up8((nr + kPairsPerSector - 1) / kPairsPerSector);
  l.bitmap_start = l.pairs_start + l.pairs_sectors;
  l.bitmap_sectors = round_up8((l.nr_regions() + kRegionsPerSector - 1) / kRegionsPerSector);
  l.journal_sectors = journal_sectors;
  l.journal_start = journal_sectors == 0 ? 0 : l.bitmap_start + l.bitmap_sectors;
  l.total_sectors = l.bitmap_start + l.bitmap_sectors + journal_sectors;
  return l;
}

void encode_superblock(const Superblock& sb, uint64_t location, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  put_header(out, kMagicSuperblock, location);
  const Layout& l = sb.layout;
  store_le(out, 16, sb.version, 4);
  store_le(out, 20, sb.incompat, 4);
  store_le(out, 24, sb.ro_compat, 4);
  store_le(out, 28, sb.compat, 4);
  std::memcpy(out.data() + 32, sb.uuid.data(), sb.uuid.size());
  store_le(out, 48, sb.generation, 8);
  store_le(out, 56, l.block_size, 4);
  store_le(out, 60, kPairsPerSector, 4);
  store_le(out, 64, l.data_size, 8);
  store_le(out, 72, l.nr_blocks, 8);
  store_le(out, 80, static_cast<uint32_t>(sb.mode), 4);
  store_le(out, 84, sb.flags, 4);
  store_le(out, 88, l.total_sectors, 8);
  store_le(out, 96, l.pairs_start, 8);
  store_le(out, 104, l.pairs_sectors, 8);
  store_le(out, 112, l.bitmap_start, 8);
  store_le(out, 120, l.bitmap_sectors, 8);
  store_le(out, 128, l.log2_region_blocks, 4);
  store_le(out, 136, l.journal_start, 8);
  store_le(out, 144, l.journal_sectors, 8);
  store_le(out, 152, sb.journal_tail, 8);
  store_le(out, 160, sb.journal_tail_seq, 8);
  store_le(out, 168, sb.scrub_state, 4);
  store_le(out, 176, sb.scrub_cursor, 8);
  store_le(out, 184, sb.scrub_started, 8);
  store_le(out, 192, sb.scrub_finished, 8);
  store_le(out, 200, sb.scrub_mismatches, 8);
  store_le(out, 208, sb.mismatches_total, 8);
  store_le(out, 216, sb.unclean_opens, 8);
  store_le(out, 224, sb.created, 8);
  store_le(out, 0, seal(out, nullptr), 4);
}

Result<Superblock> decode_superblock(std::span<const std::byte> s, uint64_t location,
                                     uint64_t device_sectors) {
  if (Status h = check_header(s, kMagicSuperblock, location, nullptr, "csum superblock"); !h.ok()) return h;
  Superblock sb;
  sb.version = static_cast<uint32_t>(load_le(s, 16, 4));
  if (sb.version != kVersion) {
    return Status::Error(
        ENOTSUP, fmt::format("csum superblock sector {}: version {}{}; this bowstack reads "
                             "version {}",
                             location, sb.version,
                             sb.version > kVersion ? " (written by a newer bowstack)" : "", kVersion));
  }
  sb.incompat = static_cast<uint32_t>(load_le(s, 20, 4));
  sb.ro_compat = static_cast<uint32_t>(load_le(s, 24, 4));
  sb.compat = static_cast<uint32_t>(load_le(s, 28, 4));
  if (sb.incompat != 0) {
    return Status::Error(ENOTSUP, fmt::format("csum superblock sector {}: unknown incompatible features "
                                              "{:#x}",
                                              location, sb.incompat));
  }
  std::memcpy(sb.uuid.data(), s.data() + 32, sb.uuid.size());
  sb.generation = load_le(s, 48, 8);
  const auto bs = static_cast<uint32_t>(load_le(s, 56, 4));
  const uint64_t data_size = load_le(s, 64, 8);
  const auto log2_region = static_cast<uint32_t>(load_le(s, 128, 4));
  const uint64_t journal_sectors = load_le(s, 144, 8);
  auto bad = [&](const std::string& what) {
    return Status::Error(EUCLEAN, fmt::format("csum superblock sector {}: {}", location, what));
  };
  if (load_le(s, 60, 4) != kPairsPerSector) return bad("pairs_per_sector is not 60");
  auto layout = Layout::compute(bs, data_size, log2_region, journal_sectors);
  if (!layout.ok()) return bad(why(layout.status()));
  sb.layout = *layout;
  const Layout& l = sb.layout;
  if (load_le(s, 72, 8) != l.nr_blocks || load_le(s, 88, 8) != l.total_sectors ||
      load_le(s, 96, 8) != l.pairs_start || load_le(s, 104, 8) != l.pairs_sectors ||
      load_le(s, 112, 8) != l.bitmap_start || load_le(s, 120, 8) != l.bitmap_sectors ||
      load_le(s, 136, 8) != l.journal_start) {
    return bad("its area fields disagree with its block size, data size, region size and journal size");
  }
  if (l.total_sectors > device_sectors) {
    return bad(
        fmt::format("the metadata needs {} sectors; the device has {}", l.total_sectors, device_sectors));
  }
  const auto mode = static_cast<uint32_t>(load_le(s, 80, 4));
  if (mode < 1 || mode > 3)
    return bad(fmt::format("mode {} is not 1 (dual), 2 (journal) or 3 (rebuild)", mode));
  sb.mode = static_cast<Mode>(mode);
  if (sb.mode == Mode::kJournal && l.journal_sectors == 0) return bad("journal mode without a journal");
  sb.flags = static_cast<uint32_t>(load_le(s, 84, 4));
  if ((sb.flags & ~kFlagClean) != 0) return bad(fmt::format("unknown flags {:#x}", sb.flags));
  sb.journal_tail = load_le(s, 152, 8);
  sb.journal_tail_seq = load_le(s, 160, 8);
  if (sb.journal_tail % 8 != 0 || (sb.journal_tail != 0 && sb.journal_tail >= l.journal_sectors)) {
    return bad(fmt::format("journal_tail {} is outside the journal of {} sectors", sb.journal_tail,
                           l.journal_sectors));
  }
  sb.scrub_state = static_cast<uint32_t>(load_le(s, 168, 4));
  if (sb.scrub_state > 4) return bad(fmt::format("scrub_state {} is unknown", sb.scrub_state));
  sb.scrub_cursor = load_le(s, 176, 8);
  sb.scrub_started = load_le(s, 184, 8);
  sb.scrub_finished = load_le(s, 192, 8);
  sb.scrub_mismatches = load_le(s, 200, 8);
  sb.mismatches_total = load_le(s, 208, 8);
  sb.unclean_opens = load_le(s, 216, 8);
  sb.created = load_le(s, 224, 8);
  return sb;
}

Result<Chosen> choose_superblock(std::span<const std::byte> copy0, std::span<const std::byte> copy1,
                                 uint64_t device_sectors) {
  auto a = decode_superblock(copy0, kSuperblockSectors[0], device_sectors);
  auto b = decode_superblock(copy1, kSuperblockSectors[1], device_sectors);
  if (a.ok() && (!b.ok() || a->generation >= b->generation)) return Chosen{*a, kSuperblockSectors[0]};
  if (b.ok()) return Chosen{*b, kSuperblockSectors[1]};
  auto has_magic = [](std::span<const std::byte> s) {
    return s.size() >= 8 && load_le(s, 4, 4) == kMagicSuperblock;
  };
  if (!has_magic(copy0) && !has_magic(copy1)) {
    if (all_zero(copy0) && all_zero(copy1)) {
      return Status::Error(EMEDIUMTYPE,
                           "not csum metadata: both superblock copies (sectors 0 and 8) are "
                           "blank (never formatted)");
    }
    return Status::Error(EMEDIUMTYPE,
                         "not csum metadata: neither superblock copy (sectors 0 and 8) holds "
                         "csum's magic");
  }
  // A newer version beats damage as the reason.
  if (a.status().code() == ENOTSUP) return a.status();
  if (b.status().code() == ENOTSUP) return b.status();
  return Status::Error(
      EUCLEAN, fmt::format("csum: no valid superblock: {}; {}", a.status().context(), b.status().context()));
}

void encode_pairs(const PairSector& pairs, const Uuid& uuid, uint64_t location, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  put_header(out, kMagicPairs, location);
  for (uint32_t j = 0; j < kPairsPerSector; ++j) {
    const Pair& p = pairs[j];
    const auto bits = static_cast<unsigned>(p.state) << ((2 * j) % 8);
    out[16 + (2 * j) / 8] |= std::byte(static_cast<unsigned char>(bits));
    if (p.state == PairState::kEmpty) continue;  // both slots 0
    store_le(out, 32 + 8 * j, p.a, 4);
    store_le(out, 36 + 8 * j, p.b, 4);
  }
  store_le(out, 0, seal(out, &uuid), 4);
}

Result<PairSector> decode_pairs(std::span<const std::byte> s, const Uuid& uuid, uint64_t location) {
  PairSector pairs{};
  if (s.size() == kSector && all_zero(s)) return pairs;
  if (Status h = check_header(s, kMagicPairs, location, &uuid, "csum pair"); !h.ok()) return h;
  for (uint32_t j = 0; j < kPairsPerSector; ++j) {
    const auto bits = (std::to_integer<unsigned>(s[16 + (2 * j) / 8]) >> ((2 * j) % 8)) & 3u;
    Pair& p = pairs[j];
    p.a = static_cast<uint32_t>(load_le(s, 32 + 8 * j, 4));
    p.b = static_cast<uint32_t>(load_le(s, 36 + 8 * j, 4));
    if (bits == 3)
      return Status::Error(EUCLEAN, fmt::format("csum pair sector {}: pair {} has state 3", location, j));
    p.state = static_cast<PairState>(bits);
    if (p.state == PairState::kEmpty && (p.a != 0 || p.b != 0)) {
      return Status::Error(
          EUCLEAN, fmt::format("csum pair sector {}: pair {} is empty but holds checksums", location, j));
    }
  }
  return pairs;
}

void encode_dirty(const DirtyBits& bits, const Uuid& uuid, uint64_t location, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  put_header(out, kMagicDirty, location);
  for (size_t w = 0; w < bits.size(); ++w) store_le(out, 32 + 8 * w, bits[w], 8);
  store_le(out, 0, seal(out, &uuid), 4);
}

Result<DirtyBits> decode_dirty(std::span<const std::byte> s, const Uuid& uuid, uint64_t location) {
  DirtyBits bits{};
  if (s.size() == kSector && all_zero(s)) return bits;
  if (Status h = check_header(s, kMagicDirty, location, &uuid, "csum dirty-region"); !h.ok()) return h;
  if (!all_zero(s.subspan(16, 16))) {
    return Status::Error(EUCLEAN,
                         fmt::format("csum dirty-region sector {}: reserved bytes are not zero", location));
  }
  for (size_t w = 0; w < bits.size(); ++w) bits[w] = load_le(s, 32 + 8 * w, 8);
  return bits;
}

uint32_t sector_checksum(uint64_t first_sector, std::span<const std::byte> data) {
  std::byte sector[8];
  store_le(sector, 0, first_sector, 8);
  return crc32c(crc32c(0, std::span<const std::byte>(sector)), data);
}

uint32_t block_checksum(uint64_t block, uint32_t block_size, std::span<const std::byte> data) {
  return sector_checksum(block * (block_size / 512), data);
}

uint32_t zero_checksum(uint64_t block, uint32_t block_size) {
  static const std::array<std::byte, 4096> zeroes{};
  return block_checksum(block, block_size, std::span<const std::byte>(zeroes).first(block_size));
}

}  // namespace bowstack::csum
