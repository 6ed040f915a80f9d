#include "targets/csum/csum_journal_format.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/crc32.h"
#include "core/endian.h"

namespace bowstack::csum {

namespace {

constexpr size_t kEntriesAt = 64;
constexpr size_t kEntrySize = 16;

uint32_t seal(std::span<const std::byte> page, const Uuid& uuid) {
  return crc32c(crc32c(0, uuid.data(), uuid.size()), page.subspan(4));
}

}  // namespace

uint64_t journal_record_sectors(uint64_t data_blocks, uint32_t block_size) {
  const uint64_t data = data_blocks * (block_size / 512);
  return kJournalPage / 512 + (data + 7) / 8 * 8;
}

void encode_journal_descriptor(const JournalDescriptor& d, const Uuid& uuid, std::span<std::byte> out) {
  std::fill(out.begin(), out.end(), std::byte{0});
  store_le(out, 4, kMagicJournal, 4);
  store_le(out, 8, d.location, 8);
  store_le(out, 16, d.sequence, 8);
  store_le(out, 24, d.entries.size(), 4);
  store_le(out, 32, d.data_sectors, 8);
  for (size_t i = 0; i < d.entries.size(); ++i) {
    const size_t at = kEntriesAt + i * kEntrySize;
    store_le(out, at, d.entries[i].block, 8);
    store_le(out, at + 8, d.entries[i].value, 4);
    store_le(out, at + 12, d.entries[i].flags, 4);
  }
  store_le(out, 0, seal(out, uuid), 4);
}

Result<JournalDescriptor> decode_journal_descriptor(std::span<const std::byte> p, const Uuid& uuid,
                                                    uint64_t location, uint64_t sequence, uint64_t nr_blocks,
                                                    uint32_t block_size, uint64_t sectors_left) {
  auto bad = [&](const std::string& what) {
    return Status::Error(EUCLEAN, fmt::format("journal record at sector {}: {}", location, what));
  };
  if (p.size() != kJournalPage) return bad("short read");
  if (load_le(p, 4, 4) != kMagicJournal) return bad("no descriptor");
  if (load_le(p, 0, 4) != seal(p, uuid)) return bad("checksum mismatch");
  if (load_le(p, 8, 8) != location) return bad("written for another place");
  JournalDescriptor d;
  d.location = location;
  d.sequence = load_le(p, 16, 8);
  if (d.sequence != sequence) return bad(fmt::format("sequence {}, expected {}", d.sequence, sequence));
  const uint64_t count = load_le(p, 24, 4);
  if (count == 0 || count > kJournalMaxEntries) return bad(fmt::format("{} entries", count));
  if (load_le(p, 28, 4) != 0) return bad("unknown record flags");
  d.data_sectors = load_le(p, 32, 8);
  uint64_t with_data = 0;
  d.entries.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const size_t at = kEntriesAt + i * kEntrySize;
    JournalEntry e{load_le(p, at, 8), static_cast<uint32_t>(load_le(p, at + 8, 4)),
                   static_cast<uint32_t>(load_le(p, at + 12, 4))};
    if ((e.flags & ~kEntryZero) != 0) return bad(fmt::format("entry {}: unknown flags", i));
    if (e.block >= nr_blocks) return bad(fmt::format("entry {}: block {} past the end", i, e.block));
    if (e.zero() && (e.value == 0 || e.value > nr_blocks - e.block)) {
      return bad(fmt::format("entry {}: a run of {} blocks from {}", i, e.value, e.block));
    }
    if (!e.zero()) ++with_data;
    d.entries.push_back(e);
  }
  if (d.data_sectors != with_data * (block_size / 512)) return bad("data size does not match its entries");
  if (d.record_sectors() > sectors_left) return bad("runs past the end of the journal");
  return d;
}

}  // namespace bowstack::csum
