// A mirror leg's Linux md v1.2 metadata (docs/format/mirror.md; facts from
// mdadm's super1.c and the kernel's md_p.h and md.c): the superblock at
// sector 8, its checksum, ctime/utime, and the geometry mdadm --create would
// choose for a RAID1 leg (data offset, component size, where the internal
// bitmap and the bad-block log go). The bitmap itself is md_bitmap_format.h.
//
// Units: a "sector" is 512 bytes, always. Every field is little-endian.
//
// decode_superblock() takes untrusted bytes: any pattern yields a value or an
// error Status (EMEDIUMTYPE not an md superblock, EUCLEAN damaged or
// inconsistent, ENOTSUP an md feature or level a bowstack mirror does not
// handle), never a crash.
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

namespace bowstack::mirror::md {

inline constexpr uint32_t kSector = 512;
inline constexpr uint32_t kMagic = 0xa92b4efc;
inline constexpr uint32_t kMajorVersion = 1;
// v1.2: the superblock sits 4 KiB from the leg's start.
inline constexpr uint64_t kSuperOffset = 8;
inline constexpr uint32_t kSbFixedBytes = 256;  // then dev_roles[max_dev]
// The kernel reads 4 KiB at the superblock: at most (4096 - 256) / 2 roles.
inline constexpr uint32_t kMaxDevLimit = 1920;
inline constexpr uint32_t kDefaultMaxDev = 128;  // what mdadm --create writes
inline constexpr uint32_t kNameBytes = 32;
inline constexpr uint64_t kMaxSector = UINT64_MAX;  // resync_offset of a clean array
inline constexpr int32_t kLevelRaid1 = 1;
inline constexpr uint64_t kMinDataSize = 10;  // the kernel refuses less

// feature_map bits (md_p.h). The kernel refuses any bit outside kFeatureAll.
inline constexpr uint32_t kFeatureBitmapOffset = 1;
inline constexpr uint32_t kFeatureRecoveryOffset = 2;
inline constexpr uint32_t kFeatureReshapeActive = 4;
inline constexpr uint32_t kFeatureBadBlocks = 8;
inline constexpr uint32_t kFeatureReplacement = 16;
inline constexpr uint32_t kFeatureReshapeBackwards = 32;
inline constexpr uint32_t kFeatureNewOffset = 64;
inline constexpr uint32_t kFeatureRecoveryBitmap = 128;
inline constexpr uint32_t kFeatureClustered = 256;
inline constexpr uint32_t kFeatureJournal = 512;
inline constexpr uint32_t kFeaturePpl = 1024;
inline constexpr uint32_t kFeatureMultiplePpls = 2048;
inline constexpr uint32_t kFeatureRaid0Layout = 4096;
inline constexpr uint32_t kFeatureAll = 0x1fff;
// What a bowstack mirror leg may carry; the rest decodes to ENOTSUP.
inline constexpr uint32_t kFeatureHandled =
    kFeatureBitmapOffset | kFeatureRecoveryOffset | kFeatureRecoveryBitmap;

// dev_roles[] values: 0..kRoleMax-1 an active slot, else one of these.
inline constexpr uint16_t kRoleSpare = 0xffff;
inline constexpr uint16_t kRoleFaulty = 0xfffe;
inline constexpr uint16_t kRoleJournal = 0xfffd;
inline constexpr uint16_t kRoleMax = 0xff00;

inline constexpr uint8_t kDevflagWriteMostly = 1;
inline constexpr uint8_t kDevflagFailFast = 2;

// The bad-block log mdadm reserves (8 sectors) and its empty content.
inline constexpr uint16_t kBblogSectors = 8;
// mdadm puts the internal bitmap 4 KiB after a v1.2 superblock (room for
// every role table up to kMaxDevLimit).
inline constexpr int32_t kBitmapOffset = 8;
inline constexpr uint8_t kBblogEmptyByte = 0xff;

// One leg's superblock, field for field (mdp_superblock_1). sb_csum is not
// kept: encode computes it, decode checks it.
struct Superblock {
  uint32_t feature_map = 0;
  Uuid set_uuid{};       // the array's uuid, the same on every leg
  std::string set_name;  // up to 32 bytes, NUL-padded on disk ("host:name")
  uint64_t ctime = 0;    // encode_time()
  int32_t level = kLevelRaid1;
  uint32_t layout = 0;
  uint64_t size = 0;  // component size in sectors = the array's size
  uint32_t chunksize = 0;
  uint32_t raid_disks = 0;
  int32_t bitmap_offset = 0;  // sectors from the superblock, with kFeatureBitmapOffset
  // Bytes 100..127 (new_level .. new_offset), meaningful only during a
  // reshape; a kernel may leave values there after one ends. Kept as read.
  std::array<uint8_t, 28> reshape_fields{};
  uint64_t data_offset = 0;  // sectors from the leg's start
  uint64_t data_size = 0;    // sectors usable for data on this leg
  uint64_t super_offset = kSuperOffset;
  uint64_t recovery_offset = 0;  // with kFeatureRecoveryOffset: sectors rebuilt so far
  uint32_t dev_number = 0;       // index into dev_roles
  uint32_t cnt_corrected_read = 0;
  Uuid device_uuid{};
  uint8_t devflags = 0;
  uint8_t bblog_shift = 0;
  uint16_t bblog_size = 0;   // sectors
  int32_t bblog_offset = 0;  // sectors from the superblock
  uint64_t utime = 0;
  uint64_t events = 0;
  uint64_t resync_offset = kMaxSector;
  std::vector<uint16_t> dev_roles;  // max_dev entries

  uint32_t max_dev() const { return static_cast<uint32_t>(dev_roles.size()); }
  // This leg's role: its dev_roles entry, kRoleSpare when dev_number is past
  // the table (as the kernel and mdadm read it).
  uint16_t role() const { return dev_number < dev_roles.size() ? dev_roles[dev_number] : kRoleSpare; }
  bool clean() const { return resync_offset == kMaxSector; }
  bool recovering() const { return (feature_map & kFeatureRecoveryOffset) != 0; }
  bool has_bitmap() const { return (feature_map & kFeatureBitmapOffset) != 0; }
  bool write_mostly() const { return (devflags & kDevflagWriteMostly) != 0; }
  friend bool operator==(const Superblock&, const Superblock&) = default;
};

// Bytes md writes for a superblock with `max_dev` roles: 256 + 2 * max_dev,
// rounded up to a sector.
size_t superblock_bytes(uint32_t max_dev);

// md's sb_csum over the first 256 + 2 * max_dev bytes, the checksum field
// counted as zero: little-endian u32 words (a trailing u16 when max_dev is
// odd) summed in 64 bits, then the high half added to the low once.
// REQUIRES: bytes.size() >= 256 + 2 * max_dev.
uint32_t superblock_csum(std::span<const std::byte> bytes, uint32_t max_dev);

// Writes the superblock with its checksum and zeroes the rest of `out`.
// REQUIRES: sb.max_dev() <= kMaxDevLimit, out.size() >= superblock_bytes(sb.max_dev()).
void encode_superblock(const Superblock& sb, std::span<std::byte> out);

// Decodes the bytes read at sector 8 of a leg of `device_sectors` sectors
// (any length; 4096 holds every valid superblock) and checks what md checks,
// plus what a bowstack mirror relies on: level 1, a role table that fits,
// data inside the leg, metadata (bitmap, bad-block log) between the
// superblock and the data, size <= data_size, offsets within size.
Result<Superblock> decode_superblock(std::span<const std::byte> bytes, uint64_t device_sectors);

// ctime/utime: the low 40 bits seconds since the epoch, the high 24 bits
// microseconds (mdadm and the kernel write 0 there).
uint64_t encode_time(uint64_t seconds, uint32_t microseconds = 0);
inline uint64_t time_seconds(uint64_t t) { return t & ((uint64_t{1} << 40) - 1); }
inline uint32_t time_microseconds(uint64_t t) { return static_cast<uint32_t>(t >> 40); }

// A uuid as mdadm prints it: four groups of 8 hex digits in byte order,
// "01234567:89abcdef:01234567:89abcdef".
std::string mdadm_uuid_string(const Uuid& u);

// mdadm --create's choices for a v1.2 RAID1 leg (super1.c).
//
// Space kept for a bitmap: 8 sectors on legs up to 8 GiB, 128 above, 256 from
// 200 GiB (0 below 64 KiB).
uint64_t mdadm_bitmap_space(uint64_t device_sectors);
// The data offset: 24 sectors + the bitmap space + a reshape headroom of
// 128 MiB halved while it exceeds 1/1024 of the leg, rounded up to 1 MiB.
uint64_t mdadm_data_offset(uint64_t device_sectors);
// The array's component size from the smallest leg's data_size: rounded
// down to 64 KiB (128 sectors) for RAID1.
inline uint64_t mdadm_component_size(uint64_t data_size) { return data_size & ~uint64_t{127}; }

// Where a new leg's metadata and data go, all in sectors.
struct LegGeometry {
  uint64_t device_sectors = 0;
  uint64_t data_offset = 0;
  uint64_t data_size = 0;                 // device_sectors - data_offset
  uint64_t size = 0;                      // the component size (of the smallest leg)
  int32_t bitmap_offset = kBitmapOffset;  // from the superblock
  uint32_t bitmap_chunk = 0;              // bytes per bit
  uint64_t bitmap_bits = 0;
  uint64_t bitmap_sectors = 0;  // superblock + bits, a multiple of 8
  int32_t bblog_offset = 0;     // from the superblock, right after the bitmap
  uint16_t bblog_size = kBblogSectors;
};

// The geometry of a leg of `device_sectors` in an array whose smallest leg
// has `smallest_sectors` (REQUIRES: smallest_sectors <= device_sectors for
// the result to serve that array). The data offset is mdadm's for the
// smallest leg, so every leg has the same one. `bitmap_chunk` 0 picks
// mdadm's default (mdadm_default_bitmap_chunk). EINVAL with a sentence for a
// leg too small or a chunk that is not a power of two >= 4096 or whose bits
// do not fit between sector 16 and the data.
Result<LegGeometry> plan_leg(uint64_t device_sectors, uint64_t smallest_sectors, uint32_t bitmap_chunk);

// A superblock for a new, in-sync, clean member in slot `role` of an array of
// `raid_disks` legs (roles 0..raid_disks-1 active, the rest spare), with an
// internal bitmap and the bad-block log as mdadm places them. `now` is the
// ctime and utime (encode_time()). Events 0 as mdadm --create writes them;
// the caller sets resync_offset = 0 when the legs still need a first resync.
// REQUIRES: role < raid_disks <= kMaxDevLimit.
Superblock new_leg_superblock(const LegGeometry& g, const Uuid& set_uuid, const std::string& name,
                              const Uuid& device_uuid, uint32_t role, uint32_t raid_disks, uint64_t now);

}  // namespace bowstack::mirror::md
