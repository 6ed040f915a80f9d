#include "targets/bow/bow_format.h"

#include <algorithm>

#include "core/crc32.h"

namespace bowstack::bow {

namespace {
void put(std::span<std::byte> out, size_t at, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out[at + i] = std::byte(static_cast<unsigned char>(v >> (8 * i)));
}
uint64_t get(std::span<const std::byte> in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | std::to_integer<uint64_t>(in[at + i]);
  return v;
}
}  // namespace

void pack_header(const LogHeader& h, std::span<std::byte> out) {
  put(out, 0, h.magic, 4);
  put(out, 4, h.header_version, 2);
  put(out, 6, h.header_size, 2);
  put(out, 8, h.block_size, 4);
  put(out, 12, h.count, 4);
  put(out, 16, h.sequence, 4);
  put(out, 20, h.sector0, 8);
}

LogHeader unpack_header(std::span<const std::byte> in) {
  LogHeader h;
  h.magic = static_cast<uint32_t>(get(in, 0, 4));
  h.header_version = static_cast<uint16_t>(get(in, 4, 2));
  h.header_size = static_cast<uint16_t>(get(in, 6, 2));
  h.block_size = static_cast<uint32_t>(get(in, 8, 4));
  h.count = static_cast<uint32_t>(get(in, 12, 4));
  h.sequence = static_cast<uint32_t>(get(in, 16, 4));
  h.sector0 = get(in, 20, 8);
  return h;
}

void pack_entry(const LogEntry& e, std::span<std::byte> out) {
  put(out, 0, e.source, 8);
  put(out, 8, e.dest, 8);
  put(out, 16, e.size, 4);
  put(out, 20, e.checksum, 4);
}

LogEntry unpack_entry(std::span<const std::byte> in) {
  return LogEntry{get(in, 0, 8), get(in, 8, 8), static_cast<uint32_t>(get(in, 16, 4)),
                  static_cast<uint32_t>(get(in, 20, 4))};
}

uint32_t log_capacity(uint32_t block_size, uint32_t header_size) {
  if (header_size > block_size) return 0;
  return (block_size - header_size) / kEntrySize;
}

uint32_t bow_crc(uint32_t seed, std::span<const std::byte> data) {
  // The zlib-style crc32 inverts on the way in and out; pre- and
  // post-inverting cancels both: raw(seed, buf) = ~crc32(~seed, buf).
  return ~crc32(~seed, data);
}

uint32_t entry_checksum(uint64_t source_sector, uint32_t block_size, std::span<const std::byte> data) {
  // Running over consecutive blocks is the same as one run over all of them.
  return bow_crc(static_cast<uint32_t>(source_sector / (block_size / 512)), data);
}

}  // namespace bowstack::bow
