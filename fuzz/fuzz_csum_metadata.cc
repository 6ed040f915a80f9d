// fuzz_csum_metadata: csum's metadata decoders (docs/format/csum.md) on
// untrusted sectors:
//
//   byte 0      flags: bit 0 re-seals every sector (rewrites its crc32c for
//               its bytes and location), so that mutated fields reach the
//               field checks instead of failing the checksum
//   bytes 1..8  little-endian size of the metadata device in sectors
//   then        four 512-byte sectors (zero-padded): superblock copies 0
//               and 8, a pair sector at 16, a dirty-region sector at 24
//
// Contracts checked: no decoder crashes, reads out of bounds or aborts;
// whatever decodes, encodes to something that decodes to the same value.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/crc32.h"
#include "core/endian.h"
#include "targets/csum/csum_format.h"

using namespace bowstack;
using namespace bowstack::csum;

namespace {

using Sector = std::array<std::byte, kSector>;

void reseal(Sector& s, uint64_t location, const Uuid* uuid) {
  store_le(std::span<std::byte>(s), 8, location, 8);
  uint32_t c = 0;
  if (uuid) c = crc32c(c, uuid->data(), uuid->size());
  c = crc32c(c, std::span<const std::byte>(s).subspan(4));
  store_le(std::span<std::byte>(s), 0, c, 4);
}

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const bool seal = (data[0] & 1) != 0;
  uint64_t device_sectors = 0;
  std::memcpy(&device_sectors, data + 1, 8);
  data += 9;
  size -= 9;
  std::array<Sector, 4> s{};
  for (size_t i = 0; i < 4 && i * kSector < size; ++i) {
    std::memcpy(s[i].data(), data + i * kSector, std::min<size_t>(kSector, size - i * kSector));
  }
  if (seal) {
    reseal(s[0], 0, nullptr);
    reseal(s[1], 8, nullptr);
  }
  auto chosen = choose_superblock(s[0], s[1], device_sectors);
  Uuid uuid{};
  if (chosen.ok()) {
    uuid = chosen->sb.uuid;
    Sector again;
    encode_superblock(chosen->sb, chosen->location, again);
    auto back = decode_superblock(again, chosen->location, device_sectors);
    require(back.ok() && back->generation == chosen->sb.generation &&
            back->layout.total_sectors == chosen->sb.layout.total_sectors && back->mode == chosen->sb.mode &&
            back->flags == chosen->sb.flags);
  }
  if (seal) {
    reseal(s[2], 16, &uuid);
    reseal(s[3], 24, &uuid);
  }
  if (auto p = decode_pairs(s[2], uuid, 16); p.ok()) {
    Sector again;
    encode_pairs(*p, uuid, 16, again);
    auto back = decode_pairs(again, uuid, 16);
    require(back.ok() && *back == *p);
  }
  if (auto d = decode_dirty(s[3], uuid, 24); d.ok()) {
    Sector again;
    encode_dirty(*d, uuid, 24, again);
    auto back = decode_dirty(again, uuid, 24);
    require(back.ok() && *back == *d);
  }
  return 0;
}
