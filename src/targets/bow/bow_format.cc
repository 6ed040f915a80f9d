#include "targets/bow/bow_format.h"

#include <algorithm>

#include "core/crc32.h"
#include "core/endian.h"

namespace bowstack::bow {

void pack_header(const LogHeader& h, std::span<std::byte> out) {
  store_le(out, 0, h.magic, 4);
  store_le(out, 4, h.header_version, 2);
  store_le(out, 6, h.header_size, 2);
  store_le(out, 8, h.block_size, 4);
  store_le(out, 12, h.count, 4);
  store_le(out, 16, h.sequence, 4);
  store_le(out, 20, h.sector0, 8);
}

LogHeader unpack_header(std::span<const std::byte> in) {
  LogHeader h;
  h.magic = static_cast<uint32_t>(load_le(in, 0, 4));
  h.header_version = static_cast<uint16_t>(load_le(in, 4, 2));
  h.header_size = static_cast<uint16_t>(load_le(in, 6, 2));
  h.block_size = static_cast<uint32_t>(load_le(in, 8, 4));
  h.count = static_cast<uint32_t>(load_le(in, 12, 4));
  h.sequence = static_cast<uint32_t>(load_le(in, 16, 4));
  h.sector0 = load_le(in, 20, 8);
  return h;
}

void pack_entry(const LogEntry& e, std::span<std::byte> out) {
  store_le(out, 0, e.source, 8);
  store_le(out, 8, e.dest, 8);
  store_le(out, 16, e.size, 4);
  store_le(out, 20, e.checksum, 4);
}

LogEntry unpack_entry(std::span<const std::byte> in) {
  return LogEntry{load_le(in, 0, 8), load_le(in, 8, 8), static_cast<uint32_t>(load_le(in, 16, 4)),
                  static_cast<uint32_t>(load_le(in, 20, 4))};
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
