// fuzz_md_superblock: the mirror's md v1.2 leg decoders
// (docs/format/mirror.md) on untrusted bytes:
//
//   byte 0      flags: bit 0 re-seals sb_csum, so mutated fields reach the
//               field checks instead of stopping at the checksum
//   bytes 1..8  little-endian size of the leg in sectors
//   then        up to 4096 bytes read at sector 8 (zero-padded)
//   then        up to 256 bytes of bitmap superblock (zero-padded)
//
// Contracts checked: decode_superblock() and decode_bitmap_superblock()
// never crash, read out of bounds or abort; what decodes re-encodes to bytes
// that decode to the same value; a decoded leg's data lies on the leg, its
// size fits its data area and its role table its raid disks; a bitmap that
// check_bitmap() accepts ends before the data, and the bits of the array's
// last sector lie inside it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/endian.h"
#include "fuzz_util.h"
#include "targets/mirror/md_bitmap_format.h"
#include "targets/mirror/md_format.h"

using namespace bowstack;
using namespace bowstack::mirror::md;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const uint8_t flags = data[0];
  uint64_t device_sectors = 0;
  std::memcpy(&device_sectors, data + 1, 8);  // fuzz inputs are little-endian; so are the hosts we run on
  data += 9;
  size -= 9;
  std::vector<std::byte> sb_bytes(4096);
  const size_t sb_len = std::min<size_t>(size, sb_bytes.size());
  std::memcpy(sb_bytes.data(), data, sb_len);
  data += sb_len;
  size -= sb_len;
  std::vector<std::byte> bm_bytes(kBitmapSbBytes);
  std::memcpy(bm_bytes.data(), data, std::min<size_t>(size, bm_bytes.size()));

  const uint32_t max_dev = static_cast<uint32_t>(load_le(sb_bytes.data(), 220, 4));
  if ((flags & 1) != 0 && max_dev <= kMaxDevLimit)
    store_le(sb_bytes.data(), 216, superblock_csum(sb_bytes, max_dev), 4);

  auto bm = decode_bitmap_superblock(bm_bytes);
  if (bm.ok()) {
    std::vector<std::byte> again(kBitmapSbBytes);
    encode_bitmap_superblock(*bm, again);
    auto back = decode_bitmap_superblock(again);
    FUZZ_CHECK(back.ok() && *back == *bm);
  }

  auto sb = decode_superblock(sb_bytes, device_sectors);
  if (!sb.ok()) return 0;
  FUZZ_CHECK(sb->max_dev() <= kMaxDevLimit);
  FUZZ_CHECK(sb->data_offset >= kSuperOffset + 1 && sb->data_offset <= device_sectors);
  FUZZ_CHECK(sb->data_size <= device_sectors - sb->data_offset);
  FUZZ_CHECK(sb->size > 0 && sb->size <= sb->data_size);
  FUZZ_CHECK(sb->role() == kRoleSpare || sb->role() == kRoleFaulty || sb->role() < sb->raid_disks);
  std::vector<std::byte> again(superblock_bytes(sb->max_dev()));
  encode_superblock(*sb, again);
  auto back = decode_superblock(again, device_sectors);
  FUZZ_CHECK_MSG(back.ok(), back.ok() ? "" : back.status().message());
  FUZZ_CHECK(*back == *sb);

  if (!bm.ok() || !check_bitmap(*sb, *bm).ok()) return 0;
  const uint64_t bits = bitmap_bits(sb->size, bm->chunksize);
  const uint64_t area = bitmap_area_bytes(bits);
  const uint64_t start = kSuperOffset + static_cast<uint64_t>(int64_t{sb->bitmap_offset});
  FUZZ_CHECK(start + area / kSector <= sb->data_offset);
  const BitRange last = bits_of_range(sb->size - 1, 1, bm->chunksize);
  FUZZ_CHECK(last.end == bits && bit_byte(last.first) < area);
  return 0;
}
