// fuzz_integrity_superblock: csum's layout=integrity decoders
// (docs/format/csum.md section 11) on untrusted bytes:
//
//   bytes 0..7  little-endian size of the device in sectors
//   bytes 8..71 the superblock's 64 used bytes (zero-padded)
//   then        up to 4096 bytes laid over an empty journal section (its
//               8 sectors of entries; the data sectors keep valid ids)
//
// Contracts checked: decode_superblock() and the journal check never crash,
// read out of bounds or abort; a superblock that decodes re-encodes to
// itself, describes a geometry that fits the device, and its last exported
// block's data and tag lie on the device.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "targets/csum/integrity_format.h"

using namespace bowstack;
using namespace bowstack::csum::integrity;

namespace {

void require(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t device_sectors = 0;
  std::memcpy(&device_sectors, data, 8);
  data += 8;
  size -= 8;
  std::vector<std::byte> sb_bytes(kSbBytes);
  std::memcpy(sb_bytes.data(), data, std::min<size_t>(kSbUsedBytes, size));
  const size_t used = std::min<size_t>(kSbUsedBytes, size);
  data += used;
  size -= used;

  auto sb = decode_superblock(sb_bytes, device_sectors);
  if (!sb.ok()) return 0;
  std::vector<std::byte> again(kSbBytes);
  encode_superblock(*sb, again);
  auto back = decode_superblock(again, device_sectors);
  require(back.ok() && *back == *sb);
  auto l = Layout::of(*sb, device_sectors);
  require(l.ok());
  const uint64_t last = sb->provided_data_sectors - (uint64_t{1} << sb->log2_sectors_per_block);
  require(l->data_sector(last) + (uint64_t{1} << sb->log2_sectors_per_block) <= device_sectors);
  require(l->tag_offset(last) + kTagSize <= l->data_sector(last) * kSector);

  // The last journal section, its entry sectors from the input.
  std::vector<std::byte> section(size_t{l->journal_section_sectors} * kSector);
  const uint32_t index = sb->journal_sections - 1;
  encode_empty_journal_section(*l, index, 0, section);
  std::memcpy(section.data(), data, std::min<size_t>(size, kJournalBlockSectors * kSector));
  auto n = journal_section_entries_in_use(*l, index, section);
  require(!n.ok() || *n <= l->journal_section_entries);
  encode_empty_journal_section(*l, index, index % kCommitIds, section);
  auto empty = journal_section_entries_in_use(*l, index, section);
  require(empty.ok() && *empty == 0);
  return 0;
}
