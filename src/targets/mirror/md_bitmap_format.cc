#include "targets/mirror/md_bitmap_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

#include "core/bytes.h"
#include "core/endian.h"

namespace bowstack::mirror::md {

namespace {

// Byte offsets of bitmap_super_t's fields (md-bitmap.h).
constexpr size_t kOffMagic = 0;
constexpr size_t kOffVersion = 4;
constexpr size_t kOffUuid = 8;
constexpr size_t kOffEvents = 24;
constexpr size_t kOffEventsCleared = 32;
constexpr size_t kOffSyncSize = 40;
constexpr size_t kOffState = 48;
constexpr size_t kOffChunksize = 52;
constexpr size_t kOffDaemonSleep = 56;
constexpr size_t kOffWriteBehind = 60;
constexpr size_t kOffSectorsReserved = 64;
constexpr size_t kOffNodes = 68;
constexpr size_t kOffClusterName = 72;
constexpr size_t kClusterNameBytes = 64;

// Sizes whose byte count (sectors * 512) fits 64 bits with room for rounding.
constexpr uint64_t kMaxSyncSize = (uint64_t{1} << 55) - 1;

Status damaged(const std::string& what) { return Status::Error(EUCLEAN, "md bitmap: " + what); }

}  // namespace

uint64_t bitmap_bits(uint64_t sync_size, uint32_t chunk) { return (sync_size * kSector + chunk - 1) / chunk; }

uint64_t bitmap_area_bytes(uint64_t bits) {
  return (kBitmapSbBytes + (bits + 7) / 8 + kBitmapAlign - 1) / kBitmapAlign * kBitmapAlign;
}

uint32_t mdadm_default_bitmap_chunk(uint64_t size) {
  // add_internal_bitmap1(): the room mdadm leaves (capped at 128 KiB), less
  // the bitmap superblock, in bits; the chunk doubles until the bits fit.
  const uint64_t room = std::min<uint64_t>(mdadm_bitmap_space(size), 256);
  if (room <= 1 || size > kMaxSyncSize) return 0;
  const uint64_t max_bits = (room * kSector - kBitmapSbBytes) * 8;
  uint64_t chunk = kMinBitmapChunk;
  uint64_t bits = size * kSector / chunk + 1;
  while (bits > max_bits) {
    chunk *= 2;
    bits = (bits + 1) / 2;
  }
  chunk = std::max<uint64_t>(chunk, kMdadmDefaultMinChunk);
  return chunk > (uint64_t{1} << 31) ? 0 : static_cast<uint32_t>(chunk);
}

BitmapSuperblock new_bitmap_superblock(const Superblock& sb, uint32_t chunk) {
  BitmapSuperblock bm;
  bm.uuid = sb.set_uuid;
  bm.events = sb.events;
  bm.events_cleared = sb.events;
  bm.sync_size = sb.size;
  bm.chunksize = chunk;
  return bm;
}

void encode_bitmap_superblock(const BitmapSuperblock& bm, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  store_le(out, kOffMagic, kBitmapMagic, 4);
  store_le(out, kOffVersion, bm.version, 4);
  for (size_t i = 0; i < bm.uuid.size(); ++i) out[kOffUuid + i] = std::byte{bm.uuid[i]};
  store_le(out, kOffEvents, bm.events, 8);
  store_le(out, kOffEventsCleared, bm.events_cleared, 8);
  store_le(out, kOffSyncSize, bm.sync_size, 8);
  store_le(out, kOffState, bm.state, 4);
  store_le(out, kOffChunksize, bm.chunksize, 4);
  store_le(out, kOffDaemonSleep, bm.daemon_sleep, 4);
  store_le(out, kOffWriteBehind, bm.write_behind, 4);
  store_le(out, kOffSectorsReserved, bm.sectors_reserved, 4);
}

Result<BitmapSuperblock> decode_bitmap_superblock(std::span<const std::byte> b) {
  if (b.size() < 4 || load_le(b, kOffMagic, 4) != kBitmapMagic) {
    return Status::Error(EMEDIUMTYPE, all_zero(b) ? "blank: no md bitmap (all zero)"
                                                  : "no md bitmap (magic \"bitm\" missing)");
  }
  if (b.size() < kBitmapSbBytes) return damaged("short read");
  BitmapSuperblock bm;
  bm.version = static_cast<uint32_t>(load_le(b, kOffVersion, 4));
  for (size_t i = 0; i < bm.uuid.size(); ++i) bm.uuid[i] = std::to_integer<uint8_t>(b[kOffUuid + i]);
  bm.events = load_le(b, kOffEvents, 8);
  bm.events_cleared = load_le(b, kOffEventsCleared, 8);
  bm.sync_size = load_le(b, kOffSyncSize, 8);
  bm.state = static_cast<uint32_t>(load_le(b, kOffState, 4));
  bm.chunksize = static_cast<uint32_t>(load_le(b, kOffChunksize, 4));
  bm.daemon_sleep = static_cast<uint32_t>(load_le(b, kOffDaemonSleep, 4));
  bm.write_behind = static_cast<uint32_t>(load_le(b, kOffWriteBehind, 4));
  bm.sectors_reserved = static_cast<uint32_t>(load_le(b, kOffSectorsReserved, 4));

  switch (bm.version) {
    case kBitmapVersion:
      break;
    case kBitmapVersionHostEndian:
      return Status::Error(ENOTSUP,
                           "md bitmap version 3 (host-endian bits); the mirror target reads version 4");
    case kBitmapVersionClustered:
      return Status::Error(ENOTSUP, "md bitmap version 5 (clustered md)");
    case kBitmapVersionLockless:
      return Status::Error(ENOTSUP, "md bitmap version 6 (lockless bitmap)");
    default:
      return damaged(fmt::format("unknown version {}", bm.version));
  }
  if (load_le(b, kOffNodes, 4) != 0 || !all_zero(b.subspan(kOffClusterName, kClusterNameBytes)))
    return Status::Error(ENOTSUP, "md bitmap names cluster nodes (clustered md)");
  if (bm.chunksize < kMinKernelBitmapChunk || !std::has_single_bit(bm.chunksize))
    return damaged(fmt::format("chunksize {} is not a power of two of at least 512", bm.chunksize));
  if (bm.daemon_sleep < 1) return damaged("daemon_sleep 0");
  if (bm.write_behind > kMaxWriteBehind)
    return damaged(fmt::format("write_behind {} (at most {})", bm.write_behind, kMaxWriteBehind));
  if (bm.sync_size > kMaxSyncSize) return damaged(fmt::format("sync_size {}", bm.sync_size));
  return bm;
}

Status check_bitmap(const Superblock& sb, const BitmapSuperblock& bm) {
  if (!sb.has_bitmap()) return Status::Error(ENOTSUP, "md leg has no internal bitmap");
  if (bm.uuid != sb.set_uuid) {
    return damaged(fmt::format("uuid {} is not the array's {}", mdadm_uuid_string(bm.uuid),
                               mdadm_uuid_string(sb.set_uuid)));
  }
  // The kernel sizes the bitmap from the array, not from sync_size (which it
  // rewrites).
  if (sb.size > kMaxSyncSize) return damaged(fmt::format("array of {} sectors", sb.size));
  const uint64_t bits = bitmap_bits(sb.size, bm.chunksize);
  const uint64_t start =
      kSuperOffset + static_cast<uint64_t>(int64_t{sb.bitmap_offset});  // decode checked > 8
  const uint64_t end = start + bitmap_area_bytes(bits) / kSector;
  uint64_t limit = sb.data_offset;
  if (sb.bblog_size != 0) {
    const uint64_t bblog = kSuperOffset + static_cast<uint64_t>(int64_t{sb.bblog_offset});
    if (bblog >= start) {
      limit = std::min(limit, bblog);
    } else if (bblog + sb.bblog_size > start) {
      return damaged(fmt::format("the bad-block log at sector {} runs into the bitmap at {}", bblog, start));
    }
  }
  if (end > limit) {
    return damaged(fmt::format("{} bits of {} bytes end at sector {}, past the bad-block log or data at {}",
                               bits, bm.chunksize, end, limit));
  }
  return Status::Ok();
}

bool test_bit(std::span<const std::byte> area, uint64_t bit) {
  return (area[bit_byte(bit)] & bit_mask(bit)) != std::byte{0};
}

void set_bit(std::span<std::byte> area, uint64_t bit, bool value) {
  if (value) {
    area[bit_byte(bit)] |= bit_mask(bit);
  } else {
    area[bit_byte(bit)] &= ~bit_mask(bit);
  }
}

uint64_t count_set_bits(std::span<const std::byte> area, uint64_t bits) {
  uint64_t n = 0;
  for (uint64_t i = 0; i < bits / 8; ++i)
    n += std::popcount(std::to_integer<unsigned>(area[kBitmapSbBytes + i]));
  for (uint64_t bit = bits / 8 * 8; bit < bits; ++bit) n += test_bit(area, bit) ? 1 : 0;
  return n;
}

}  // namespace bowstack::mirror::md
