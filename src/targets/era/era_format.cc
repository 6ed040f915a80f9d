#include "targets/era/era_format.h"

#include <fmt/format.h>
#include <zlib.h>

#include <algorithm>
#include <random>

#include "core/bytes.h"
#include "core/endian.h"

namespace bowstack::era {

namespace {

uint64_t div_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

Status damage(uint64_t block, const char* what, const std::string& detail) {
  return Status::Error(EUCLEAN, fmt::format("metadata block {} ({}): {}", block, what, detail));
}

}  // namespace

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kSuperblock:
      return "superblock";
    case Kind::kWriteset:
      return "writeset";
    case Kind::kEraArray:
      return "era array";
    case Kind::kSnapWriteset:
      return "snapshot writeset";
    case Kind::kSnapEraArray:
      return "snapshot era array";
  }
  return "unknown";
}

void pack_header(const BlockHeader& h, std::span<std::byte> block) {
  store_le(block, 0, h.crc, 4);
  store_le(block, 4, h.magic, 4);
  store_le(block, 8, h.location, 8);
  store_le(block, 16, h.generation, 8);
  store_le(block, 24, h.era, 4);
  store_le(block, 28, h.version, 4);
  for (size_t i = 0; i < 16; ++i) block[32 + i] = std::byte(h.uuid[i]);
  store_le(block, 48, h.index, 8);
  store_le(block, 56, 0, 8);
}

BlockHeader unpack_header(std::span<const std::byte> block) {
  BlockHeader h;
  h.crc = static_cast<uint32_t>(load_le(block, 0, 4));
  h.magic = static_cast<uint32_t>(load_le(block, 4, 4));
  h.location = load_le(block, 8, 8);
  h.generation = load_le(block, 16, 8);
  h.era = static_cast<uint32_t>(load_le(block, 24, 4));
  h.version = static_cast<uint32_t>(load_le(block, 28, 4));
  for (size_t i = 0; i < 16; ++i) h.uuid[i] = std::to_integer<uint8_t>(block[32 + i]);
  h.index = load_le(block, 48, 8);
  return h;
}

Layout Layout::for_blocks(uint64_t nr_blocks) {
  Layout l;
  l.nr_blocks = nr_blocks;
  l.ws_blocks = std::max<uint64_t>(1, div_up(nr_blocks, kBitsPerWritesetBlock));
  l.array_blocks = std::max<uint64_t>(1, div_up(nr_blocks, kEntriesPerArrayBlock));
  l.total = 2 + 5 * l.ws_blocks + 3 * l.array_blocks;
  return l;
}

void pack_superblock(const Superblock& sb, std::span<std::byte> block) {
  std::fill(block.begin(), block.end(), std::byte{0});
  BlockHeader h;
  h.magic = static_cast<uint32_t>(Kind::kSuperblock);
  h.generation = sb.generation;
  h.era = sb.current_era;
  h.uuid = sb.uuid;
  pack_header(h, block);
  store_le(block, 64, kFormatVersion, 4);
  store_le(block, 68, sb.data_block_size, 4);
  store_le(block, 72, sb.nr_blocks, 8);
  store_le(block, 80, sb.origin_size, 8);
  store_le(block, 88, sb.current_era, 4);
  store_le(block, 92, sb.fold_era, 4);
  store_le(block, 96, sb.total_blocks, 8);
  store_le(block, 104, sb.ws_blocks, 8);
  store_le(block, 112, sb.array_blocks, 8);
  store_le(block, 120, sb.snap_held ? 1 : 0, 4);
  store_le(block, 124, sb.snap_era, 4);
  store_le(block, 128, sb.snap_id, 8);
  store_le(block, 136, sb.created, 8);
  store_le(block, 144, kBitsPerWritesetBlock, 4);
  store_le(block, 148, kEntriesPerArrayBlock, 4);
}

Superblock unpack_superblock(std::span<const std::byte> block) {
  const BlockHeader h = unpack_header(block);
  Superblock sb;
  sb.generation = h.generation;
  sb.uuid = h.uuid;
  sb.data_block_size = static_cast<uint32_t>(load_le(block, 68, 4));
  sb.nr_blocks = load_le(block, 72, 8);
  sb.origin_size = load_le(block, 80, 8);
  sb.current_era = static_cast<uint32_t>(load_le(block, 88, 4));
  sb.fold_era = static_cast<uint32_t>(load_le(block, 92, 4));
  sb.total_blocks = load_le(block, 96, 8);
  sb.ws_blocks = load_le(block, 104, 8);
  sb.array_blocks = load_le(block, 112, 8);
  sb.snap_held = load_le(block, 120, 4) != 0;
  sb.snap_era = static_cast<uint32_t>(load_le(block, 124, 4));
  sb.snap_id = load_le(block, 128, 8);
  sb.created = load_le(block, 136, 8);
  return sb;
}

Status validate_superblock(const Superblock& sb, uint64_t device_blocks) {
  auto bad = [](const std::string& what) {
    return Status::Error(EUCLEAN, "era superblock is inconsistent: " + what);
  };
  if (sb.data_block_size < 512 || (sb.data_block_size & (sb.data_block_size - 1)) != 0) {
    return bad(fmt::format("data block size {} is not a power of two >= 512", sb.data_block_size));
  }
  if (sb.nr_blocks == 0 || sb.nr_blocks > kMaxDataBlocks) {
    return bad(fmt::format("{} data blocks (must be 1..{})", sb.nr_blocks, kMaxDataBlocks));
  }
  const Layout l = Layout::for_blocks(sb.nr_blocks);
  if (sb.total_blocks != l.total || sb.ws_blocks != l.ws_blocks || sb.array_blocks != l.array_blocks) {
    return bad(fmt::format("layout {}/{}/{} does not match {} data blocks (expected {}/{}/{})",
                           sb.total_blocks, sb.ws_blocks, sb.array_blocks, sb.nr_blocks, l.total, l.ws_blocks,
                           l.array_blocks));
  }
  if (l.total > device_blocks) {
    return bad(fmt::format("it needs {} metadata blocks but the device holds {} (truncated?)", l.total,
                           device_blocks));
  }
  if (sb.current_era < kFirstEra)
    return bad(fmt::format("current era {} is below {}", sb.current_era, kFirstEra));
  if (sb.fold_era != 0 && sb.fold_era + 1 != sb.current_era) {
    return bad(
        fmt::format("era {} is waiting to be folded but the current era is {}", sb.fold_era, sb.current_era));
  }
  if (sb.snap_held && (sb.snap_era > sb.current_era || sb.snap_id == 0 || sb.snap_id > sb.generation)) {
    return bad(fmt::format("metadata snapshot of era {} (id {}) is impossible at era {} generation {}",
                           sb.snap_era, sb.snap_id, sb.current_era, sb.generation));
  }
  return Status::Ok();
}

uint64_t get_word(std::span<const std::byte> block, uint32_t w) {
  return load_le(block, kHeaderSize + 8 * w, 8);
}
void put_word(std::span<std::byte> block, uint32_t w, uint64_t v) {
  store_le(block, kHeaderSize + 8 * w, v, 8);
}
uint32_t get_entry(std::span<const std::byte> block, uint32_t e) {
  return static_cast<uint32_t>(load_le(block, kHeaderSize + 4 * e, 4));
}
void put_entry(std::span<std::byte> block, uint32_t e, uint32_t v) {
  store_le(block, kHeaderSize + 4 * e, v, 4);
}

uint32_t block_crc(std::span<const std::byte> block) {
  return static_cast<uint32_t>(
      ::crc32(0, reinterpret_cast<const Bytef*>(block.data() + 4), static_cast<uInt>(block.size() - 4)));
}

void EraValidator::prepare_for_write(std::span<std::byte> data, uint64_t block) const {
  store_le(data, 4, static_cast<uint32_t>(kind_), 4);
  store_le(data, 8, block, 8);
  store_le(data, 28, kFormatVersion, 4);
  if (check_uuid_) {
    for (size_t i = 0; i < 16; ++i) data[32 + i] = std::byte(uuid_[i]);
  }
  store_le(data, 0, block_crc(data), 4);
}

Status EraValidator::check(std::span<const std::byte> data, uint64_t block) const {
  const char* what = kind_name(kind_);
  if (data.size() != kMetaBlockSize) return damage(block, what, fmt::format("block size {}", data.size()));
  const BlockHeader h = unpack_header(data);
  if (all_zero(data)) return damage(block, what, "never written (all zeroes)");
  const uint32_t crc = block_crc(data);
  if (h.crc != crc) {
    return damage(block, what, fmt::format("bad checksum (stored {:08x}, computed {:08x})", h.crc, crc));
  }
  if (h.magic != static_cast<uint32_t>(kind_)) {
    return damage(block, what, fmt::format("wrong block type (magic {:08x})", h.magic));
  }
  if (h.location != block) {
    return damage(block, what, fmt::format("holds the contents of block {} (misplaced write)", h.location));
  }
  if (h.version != kFormatVersion) {
    return damage(block, what,
                  fmt::format("format version {} (this program reads {})", h.version, kFormatVersion));
  }
  if (check_uuid_ && h.uuid != uuid_) {
    return damage(block, what, fmt::format("belongs to other metadata (uuid {})", uuid_string(h.uuid)));
  }
  return Status::Ok();
}

}  // namespace bowstack::era
