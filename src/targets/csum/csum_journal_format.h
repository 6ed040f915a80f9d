// csum mode `journal`'s record (docs/format/csum.md section 6): a 4096-byte
// descriptor page naming up to 252 entries, then the data of the entries
// that carry data, padded to a page. A record is committed when its
// descriptor is valid and every data block matches its entry's checksum;
// no commit block and no second ordered write are needed.
//
// Decoding takes untrusted bytes: any pattern yields a value or an error
// Status, never a crash. Thread-safety: pure functions and value types.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/uuid.h"
#include "targets/csum/csum_format.h"

namespace bowstack::csum {

inline constexpr uint32_t kJournalPage = 4096;
inline constexpr uint32_t kJournalMaxEntries = 252;
inline constexpr uint32_t kMagicJournal = magic_of("CSJD");
inline constexpr uint32_t kEntryZero = 1;  // no data: blocks become zeroes

struct JournalEntry {
  uint64_t block = 0;
  // A data entry: the block's checksum c(b, D). A ZERO entry: the number of
  // blocks of the run starting at `block` (>= 1), each getting z(b).
  uint32_t value = 0;
  uint32_t flags = 0;
  bool zero() const { return (flags & kEntryZero) != 0; }
};

struct JournalDescriptor {
  uint64_t location = 0;  // the descriptor's own first sector on the metadata device
  uint64_t sequence = 0;
  std::vector<JournalEntry> entries;
  uint64_t data_sectors = 0;  // entries with data x block_size / 512

  // Sectors the whole record occupies: the descriptor page and the data,
  // padded to a page.
  uint64_t record_sectors() const { return kJournalPage / 512 + (data_sectors + 7) / 8 * 8; }
};

// Sectors a record of `data_blocks` data blocks of `block_size` takes.
uint64_t journal_record_sectors(uint64_t data_blocks, uint32_t block_size);

// REQUIRES: 1..252 entries; data_sectors consistent; out.size() == 4096.
void encode_journal_descriptor(const JournalDescriptor& d, const Uuid& uuid, std::span<std::byte> out);

// The descriptor at `location` if it is the one replay expects there: valid
// crc (seeded with the volume's uuid), magic, location, `sequence`, entry
// count, blocks below `nr_blocks`, flags known, data_sectors consistent with
// `block_size`, and the record ending within `sectors_left` sectors of the
// journal. EUCLEAN otherwise (with what failed).
Result<JournalDescriptor> decode_journal_descriptor(std::span<const std::byte> page, const Uuid& uuid,
                                                    uint64_t location, uint64_t sequence, uint64_t nr_blocks,
                                                    uint32_t block_size, uint64_t sectors_left);

}  // namespace bowstack::csum
