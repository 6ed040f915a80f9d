// Little-endian integer fields in byte buffers, for on-disk formats (all
// little-endian, whatever the host). `bytes` is the field's width, 1..8.
// REQUIRES: the buffer holds [at, at + bytes); the span forms do not check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace bowstack {

inline void store_le(std::byte* out, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out[at + i] = std::byte(static_cast<unsigned char>(v >> (8 * i)));
}
inline uint64_t load_le(const std::byte* in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(in[at + i]);
  return v;
}
inline void store_le(std::span<std::byte> out, size_t at, uint64_t v, int bytes) {
  store_le(out.data(), at, v, bytes);
}
inline uint64_t load_le(std::span<const std::byte> in, size_t at, int bytes) {
  return load_le(in.data(), at, bytes);
}

}  // namespace bowstack
