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

}  // namespace bowstack
