#include "targets/mirror/md_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "core/bytes.h"
#include "core/endian.h"
#include "targets/mirror/md_bitmap_format.h"

namespace bowstack::mirror::md {

namespace {

// Byte offsets of mdp_superblock_1's fields (md_p.h).
constexpr size_t kOffMagic = 0;
constexpr size_t kOffMajor = 4;
constexpr size_t kOffFeatureMap = 8;
constexpr size_t kOffPad0 = 12;
constexpr size_t kOffSetUuid = 16;
constexpr size_t kOffSetName = 32;
constexpr size_t kOffCtime = 64;
constexpr size_t kOffLevel = 72;
constexpr size_t kOffLayout = 76;
constexpr size_t kOffSize = 80;
constexpr size_t kOffChunksize = 88;
constexpr size_t kOffRaidDisks = 92;
constexpr size_t kOffBitmapOffset = 96;
constexpr size_t kOffReshape = 100;
constexpr size_t kOffDataOffset = 128;
constexpr size_t kOffDataSize = 136;
constexpr size_t kOffSuperOffset = 144;
constexpr size_t kOffRecoveryOffset = 152;
constexpr size_t kOffDevNumber = 160;
constexpr size_t kOffCorrectedRead = 164;
constexpr size_t kOffDeviceUuid = 168;
constexpr size_t kOffDevflags = 184;
constexpr size_t kOffBblogShift = 185;
constexpr size_t kOffBblogSize = 186;
constexpr size_t kOffBblogOffset = 188;
constexpr size_t kOffUtime = 192;
constexpr size_t kOffEvents = 200;
constexpr size_t kOffResyncOffset = 208;
constexpr size_t kOffCsum = 216;
constexpr size_t kOffMaxDev = 220;
constexpr size_t kOffPad3 = 224;
constexpr size_t kPad3Bytes = 32;

constexpr uint64_t kHeadroomMax = 262144;    // 128 MiB
constexpr uint64_t kDataOffsetAlign = 2048;  // 1 MiB
constexpr uint64_t kMetadataBase = 24;       // superblock area and bad-block log before the bitmap space

void store_uuid(std::span<std::byte> out, size_t at, const Uuid& u) {
  for (size_t i = 0; i < u.size(); ++i) out[at + i] = std::byte{u[i]};
}
Uuid load_uuid(std::span<const std::byte> in, size_t at) {
  Uuid u;
  for (size_t i = 0; i < u.size(); ++i) u[i] = std::to_integer<uint8_t>(in[at + i]);
  return u;
}

// Sectors the superblock occupies (the kernel rounds to its logical block
// size; 512 here, so the checks below are the loosest a 512e leg allows).
uint64_t sb_sectors(uint32_t max_dev) { return superblock_bytes(max_dev) / kSector; }

std::string feature_names(uint32_t bits) {
  static constexpr std::pair<uint32_t, const char*> kNames[] = {
      {kFeatureReshapeActive, "a reshape in progress"},
      {kFeatureBadBlocks, "a non-empty bad-block log"},
      {kFeatureReplacement, "a replacement device"},
      {kFeatureReshapeBackwards, "a backwards reshape"},
      {kFeatureNewOffset, "a data offset change"},
      {kFeatureClustered, "clustered md"},
      {kFeatureJournal, "a write journal"},
      {kFeaturePpl, "a partial parity log"},
      {kFeatureMultiplePpls, "multiple partial parity logs"},
      {kFeatureRaid0Layout, "a RAID0 layout"},
  };
  std::string s;
  for (const auto& [bit, name] : kNames) {
    if ((bits & bit) == 0) continue;
    if (!s.empty()) s += ", ";
    s += name;
  }
  return s;
}

Status damaged(const std::string& what) { return Status::Error(EUCLEAN, "md superblock: " + what); }

}  // namespace

size_t superblock_bytes(uint32_t max_dev) {
  return (kSbFixedBytes + 2 * size_t{max_dev} + kSector - 1) / kSector * kSector;
}

uint32_t superblock_csum(std::span<const std::byte> bytes, uint32_t max_dev) {
  const size_t len = kSbFixedBytes + 2 * size_t{max_dev};
  uint64_t sum = 0;
  size_t at = 0;
  for (; at + 4 <= len; at += 4) {
    if (at != kOffCsum) sum += load_le(bytes, at, 4);
  }
  if (at < len) sum += load_le(bytes, at, 2);  // max_dev odd: one u16 left
  return static_cast<uint32_t>((sum & 0xffffffff) + (sum >> 32));
}

void encode_superblock(const Superblock& sb, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  store_le(out, kOffMagic, kMagic, 4);
  store_le(out, kOffMajor, kMajorVersion, 4);
  store_le(out, kOffFeatureMap, sb.feature_map, 4);
  store_uuid(out, kOffSetUuid, sb.set_uuid);
  std::memcpy(out.data() + kOffSetName, sb.set_name.data(), std::min<size_t>(sb.set_name.size(), kNameBytes));
  store_le(out, kOffCtime, sb.ctime, 8);
  store_le(out, kOffLevel, static_cast<uint32_t>(sb.level), 4);
  store_le(out, kOffLayout, sb.layout, 4);
  store_le(out, kOffSize, sb.size, 8);
  store_le(out, kOffChunksize, sb.chunksize, 4);
  store_le(out, kOffRaidDisks, sb.raid_disks, 4);
  store_le(out, kOffBitmapOffset, static_cast<uint32_t>(sb.bitmap_offset), 4);
  for (size_t i = 0; i < sb.reshape_fields.size(); ++i)
    out[kOffReshape + i] = std::byte{sb.reshape_fields[i]};
  store_le(out, kOffDataOffset, sb.data_offset, 8);
  store_le(out, kOffDataSize, sb.data_size, 8);
  store_le(out, kOffSuperOffset, sb.super_offset, 8);
  store_le(out, kOffRecoveryOffset, sb.recovery_offset, 8);
  store_le(out, kOffDevNumber, sb.dev_number, 4);
  store_le(out, kOffCorrectedRead, sb.cnt_corrected_read, 4);
  store_uuid(out, kOffDeviceUuid, sb.device_uuid);
  store_le(out, kOffDevflags, sb.devflags, 1);
  store_le(out, kOffBblogShift, sb.bblog_shift, 1);
  store_le(out, kOffBblogSize, sb.bblog_size, 2);
  store_le(out, kOffBblogOffset, static_cast<uint32_t>(sb.bblog_offset), 4);
  store_le(out, kOffUtime, sb.utime, 8);
  store_le(out, kOffEvents, sb.events, 8);
  store_le(out, kOffResyncOffset, sb.resync_offset, 8);
  store_le(out, kOffMaxDev, sb.max_dev(), 4);
  for (size_t i = 0; i < sb.dev_roles.size(); ++i) store_le(out, kSbFixedBytes + 2 * i, sb.dev_roles[i], 2);
  store_le(out, kOffCsum, superblock_csum(out, sb.max_dev()), 4);
}

Result<Superblock> decode_superblock(std::span<const std::byte> b, uint64_t device_sectors) {
  if (b.size() < 4 || load_le(b, kOffMagic, 4) != kMagic) {
    return Status::Error(EMEDIUMTYPE, all_zero(b) ? "blank: no md superblock at sector 8 (all zero)"
                                                  : "no md superblock at sector 8 (magic a92b4efc missing)");
  }
  if (b.size() < kSbFixedBytes) return damaged("short read");
  const uint32_t major = static_cast<uint32_t>(load_le(b, kOffMajor, 4));
  if (major != kMajorVersion) {
    return Status::Error(ENOTSUP, fmt::format("md superblock major version {} (a mirror leg is 1.2)", major));
  }
  const uint32_t max_dev = static_cast<uint32_t>(load_le(b, kOffMaxDev, 4));
  if (max_dev > kMaxDevLimit) return damaged(fmt::format("max_dev {} (at most {})", max_dev, kMaxDevLimit));
  if (b.size() < kSbFixedBytes + 2 * size_t{max_dev}) return damaged("short read");
  const uint32_t stored = static_cast<uint32_t>(load_le(b, kOffCsum, 4));
  const uint32_t expected = superblock_csum(b, max_dev);
  if (stored != expected) return damaged(fmt::format("checksum {:08x}, expected {:08x}", stored, expected));

  Superblock sb;
  sb.feature_map = static_cast<uint32_t>(load_le(b, kOffFeatureMap, 4));
  sb.set_uuid = load_uuid(b, kOffSetUuid);
  const char* name = reinterpret_cast<const char*>(b.data() + kOffSetName);
  sb.set_name.assign(name, strnlen(name, kNameBytes));
  sb.ctime = load_le(b, kOffCtime, 8);
  sb.level = static_cast<int32_t>(load_le(b, kOffLevel, 4));
  sb.layout = static_cast<uint32_t>(load_le(b, kOffLayout, 4));
  sb.size = load_le(b, kOffSize, 8);
  sb.chunksize = static_cast<uint32_t>(load_le(b, kOffChunksize, 4));
  sb.raid_disks = static_cast<uint32_t>(load_le(b, kOffRaidDisks, 4));
  sb.bitmap_offset = static_cast<int32_t>(load_le(b, kOffBitmapOffset, 4));
  for (size_t i = 0; i < sb.reshape_fields.size(); ++i)
    sb.reshape_fields[i] = std::to_integer<uint8_t>(b[kOffReshape + i]);
  sb.data_offset = load_le(b, kOffDataOffset, 8);
  sb.data_size = load_le(b, kOffDataSize, 8);
  sb.super_offset = load_le(b, kOffSuperOffset, 8);
  sb.recovery_offset = load_le(b, kOffRecoveryOffset, 8);
  sb.dev_number = static_cast<uint32_t>(load_le(b, kOffDevNumber, 4));
  sb.cnt_corrected_read = static_cast<uint32_t>(load_le(b, kOffCorrectedRead, 4));
  sb.device_uuid = load_uuid(b, kOffDeviceUuid);
  sb.devflags = static_cast<uint8_t>(load_le(b, kOffDevflags, 1));
  sb.bblog_shift = static_cast<uint8_t>(load_le(b, kOffBblogShift, 1));
  sb.bblog_size = static_cast<uint16_t>(load_le(b, kOffBblogSize, 2));
  sb.bblog_offset = static_cast<int32_t>(load_le(b, kOffBblogOffset, 4));
  sb.utime = load_le(b, kOffUtime, 8);
  sb.events = load_le(b, kOffEvents, 8);
  sb.resync_offset = load_le(b, kOffResyncOffset, 8);
  sb.dev_roles.resize(max_dev);
  for (uint32_t i = 0; i < max_dev; ++i)
    sb.dev_roles[i] = static_cast<uint16_t>(load_le(b, kSbFixedBytes + 2 * size_t{i}, 2));

  // What md itself refuses.
  if (sb.super_offset != kSuperOffset)
    return damaged(fmt::format("super_offset {} read at sector {} (not a v1.2 superblock)", sb.super_offset,
                               kSuperOffset));
  if (sb.feature_map & ~kFeatureAll) {
    return Status::Error(
        ENOTSUP, fmt::format("md superblock has unknown features {:#x}", sb.feature_map & ~kFeatureAll));
  }
  if (load_le(b, kOffPad0, 4) != 0 || !all_zero(b.subspan(kOffPad3, kPad3Bytes))) {
    return Status::Error(ENOTSUP, "md superblock padding is not zero (a newer md feature?)");
  }
  if (sb.feature_map & ~kFeatureHandled) {
    return Status::Error(ENOTSUP, "md leg uses " + feature_names(sb.feature_map & ~kFeatureHandled) +
                                      ", which the mirror target does not handle");
  }
  if (sb.level != kLevelRaid1)
    return Status::Error(ENOTSUP, fmt::format("md array level {} (a mirror leg is raid1)", sb.level));
  if (sb.raid_disks == 0 || sb.raid_disks > kMaxDevLimit)
    return damaged(fmt::format("raid_disks {}", sb.raid_disks));
  if (sb.data_size < kMinDataSize) return damaged(fmt::format("data_size {} (at least 10)", sb.data_size));
  const uint64_t meta_start = kSuperOffset + sb_sectors(max_dev);  // first sector after the superblock
  if (sb.data_offset < meta_start)
    return damaged(fmt::format("data_offset {} overlaps the superblock", sb.data_offset));
  if (sb.data_offset > device_sectors || sb.data_size > device_sectors - sb.data_offset) {
    return damaged(fmt::format("data ends at sector {} + {}, but the leg has {} sectors (truncated?)",
                               sb.data_offset, sb.data_size, device_sectors));
  }
  if (sb.size == 0 || sb.size > sb.data_size)
    return damaged(fmt::format("component size {} with data_size {}", sb.size, sb.data_size));

  // Metadata between the superblock and the data (v1.2 puts it there).
  if (sb.has_bitmap()) {
    const int64_t at = int64_t{sb.bitmap_offset} + int64_t{kSuperOffset};
    if (at < static_cast<int64_t>(meta_start) || static_cast<uint64_t>(at) >= sb.data_offset)
      return damaged(
          fmt::format("bitmap_offset {} is not between the superblock and the data", sb.bitmap_offset));
  }
  if (sb.bblog_size != 0) {
    const int64_t at = int64_t{sb.bblog_offset} + int64_t{kSuperOffset};
    if (at < static_cast<int64_t>(meta_start) || static_cast<uint64_t>(at) + sb.bblog_size > sb.data_offset) {
      return damaged(
          fmt::format("bad-block log at {} ({} sectors) is not between the superblock and the data",
                      sb.bblog_offset, sb.bblog_size));
    }
  }

  // Offsets within the array; roles within raid_disks.
  if (sb.recovering() && sb.recovery_offset > sb.size)
    return damaged(fmt::format("recovery_offset {} past the size {}", sb.recovery_offset, sb.size));
  if (!sb.clean() && sb.resync_offset > sb.size)
    return damaged(fmt::format("resync_offset {} past the size {}", sb.resync_offset, sb.size));
  for (uint32_t i = 0; i < max_dev; ++i) {
    const uint16_t r = sb.dev_roles[i];
    if (r < kRoleMax ? r >= sb.raid_disks : (r != kRoleSpare && r != kRoleFaulty))
      return damaged(fmt::format("dev_roles[{}] = {:#06x} with {} raid disks", i, r, sb.raid_disks));
  }
  return sb;
}

uint64_t encode_time(uint64_t seconds, uint32_t microseconds) {
  return time_seconds(seconds) | uint64_t{microseconds & 0xffffff} << 40;
}

std::string mdadm_uuid_string(const Uuid& u) {
  std::string s;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i != 0 && i % 4 == 0) s += ':';
    s += fmt::format("{:02x}", u[i]);
  }
  return s;
}

uint64_t mdadm_bitmap_space(uint64_t dev) {
  if (dev < 128) return 0;
  if (dev - 128 >= uint64_t{200} << 21) return 256;  // 200 GiB
  if (dev - 8 > uint64_t{8} << 21) return 128;       // 8 GiB
  return 8;
}

uint64_t mdadm_data_offset(uint64_t dev) {
  uint64_t headroom = kHeadroomMax;
  while (headroom != 0 && (headroom << 10) > dev) headroom >>= 1;
  const uint64_t raw = kMetadataBase + mdadm_bitmap_space(dev) + headroom;
  return (raw + kDataOffsetAlign - 1) / kDataOffsetAlign * kDataOffsetAlign;
}

Result<LegGeometry> plan_leg(uint64_t device_sectors, uint64_t smallest_sectors, uint32_t bitmap_chunk) {
  if (smallest_sectors > device_sectors) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: the smallest leg ({} sectors) is larger than this one ({})",
                                     smallest_sectors, device_sectors));
  }
  // Byte counts of the array (size * 512) must not wrap.
  if (device_sectors > UINT64_MAX / kSector / 2)
    return Status::Error(EINVAL, fmt::format("mirror: a leg of {} sectors is too large", device_sectors));
  LegGeometry g;
  g.device_sectors = device_sectors;
  g.data_offset = mdadm_data_offset(smallest_sectors);
  if (smallest_sectors <= g.data_offset ||
      mdadm_component_size(smallest_sectors - g.data_offset) < kMinDataSize) {
    return Status::Error(EINVAL, fmt::format("mirror: a leg of {} sectors is too small for md metadata "
                                             "(data starts at sector {})",
                                             smallest_sectors, g.data_offset));
  }
  g.data_size = device_sectors - g.data_offset;
  g.size = mdadm_component_size(smallest_sectors - g.data_offset);
  g.bitmap_chunk = bitmap_chunk != 0 ? bitmap_chunk : mdadm_default_bitmap_chunk(g.size);
  if (g.bitmap_chunk < kMinBitmapChunk || !std::has_single_bit(g.bitmap_chunk)) {
    return Status::Error(EINVAL, fmt::format("mirror: region size {} is not a power of two of at least {}",
                                             g.bitmap_chunk, kMinBitmapChunk));
  }
  g.bitmap_bits = bitmap_bits(g.size, g.bitmap_chunk);
  g.bitmap_sectors = bitmap_area_bytes(g.bitmap_bits) / kSector;
  g.bitmap_offset = kBitmapOffset;
  const uint64_t bblog = g.bitmap_offset + g.bitmap_sectors;
  if (kSuperOffset + bblog + kBblogSectors > g.data_offset) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: a bitmap of {} bits ({} sectors) does not fit before the "
                                     "data at sector {}; choose a larger region size",
                                     g.bitmap_bits, g.bitmap_sectors, g.data_offset));
  }
  g.bblog_offset = static_cast<int32_t>(bblog);
  g.bblog_size = kBblogSectors;
  return g;
}

Superblock new_leg_superblock(const LegGeometry& g, const Uuid& set_uuid, const std::string& name,
                              const Uuid& device_uuid, uint32_t role, uint32_t raid_disks, uint64_t now) {
  Superblock sb;
  sb.feature_map = kFeatureBitmapOffset;
  sb.set_uuid = set_uuid;
  sb.set_name = name.substr(0, kNameBytes);
  sb.ctime = now;
  sb.level = kLevelRaid1;
  sb.size = g.size;
  sb.raid_disks = raid_disks;
  sb.bitmap_offset = g.bitmap_offset;
  sb.data_offset = g.data_offset;
  sb.data_size = g.data_size;
  sb.super_offset = kSuperOffset;
  sb.dev_number = role;
  sb.device_uuid = device_uuid;
  sb.bblog_size = g.bblog_size;
  sb.bblog_offset = g.bblog_offset;
  sb.utime = now;
  sb.events = 0;  // as mdadm --create writes it; the first start makes it 1
  sb.resync_offset = kMaxSector;
  sb.dev_roles.assign(std::max(kDefaultMaxDev, raid_disks), kRoleSpare);
  for (uint32_t r = 0; r < raid_disks; ++r) sb.dev_roles[r] = static_cast<uint16_t>(r);
  return sb;
}

}  // namespace bowstack::mirror::md
