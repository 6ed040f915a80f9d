#include "core/crc32.h"

#include <isa-l/crc.h>

#include <algorithm>

namespace bowstack {

uint32_t crc32(uint32_t crc, std::span<const std::byte> data) {
  // ISA-L takes a 64-bit length, but keep chunks bounded like zlib's uInt.
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  size_t left = data.size();
  while (left > 0) {
    const size_t n = std::min<size_t>(left, size_t{1} << 30);
    crc = ::crc32_gzip_refl(crc, p, n);
    p += n;
    left -= n;
  }
  return crc;
}

uint32_t crc32c(uint32_t crc, std::span<const std::byte> data) {
  // crc32_iscsi works on the raw register (no inversion in or out) and
  // takes an int length: invert around it, in chunks below 2 GiB.
  auto* p = const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(data.data()));
  size_t left = data.size();
  uint32_t reg = ~crc;
  while (left > 0) {
    const size_t n = std::min<size_t>(left, size_t{1} << 30);
    reg = ::crc32_iscsi(p, static_cast<int>(n), reg);
    p += n;
    left -= n;
  }
  return ~reg;
}

}  // namespace bowstack
