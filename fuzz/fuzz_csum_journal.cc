// fuzz_csum_journal: csum's journal descriptor decoder (mode journal,
// docs/format/csum.md section 6) on untrusted pages:
//
//   byte 0      flags: bit 0 re-seals the page (its crc32c with the zero
//               uuid), so that mutated fields reach the field checks
//   bytes 1..8  little-endian nr_blocks of the volume
//   byte 9      log2(block size / 512), taken mod 4
//   then        a 4096-byte descriptor page (zero-padded); its own location
//               and sequence fields are what the decoder is told to expect
//
// Contracts checked: no crash, no out-of-bounds read, no abort; whatever
// decodes re-encodes to a page that decodes to the same value (reserved
// bytes are ignored by readers, so the pages themselves may differ).
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "core/crc32.h"
#include "core/endian.h"
#include "targets/csum/csum_journal_format.h"

using namespace bowstack;
using namespace bowstack::csum;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 10) return 0;
  const bool seal = (data[0] & 1) != 0;
  uint64_t nr_blocks = 0;
  std::memcpy(&nr_blocks, data + 1, 8);
  const uint32_t block_size = 512u << (data[9] % 4);
  data += 10;
  size -= 10;
  std::array<std::byte, kJournalPage> page{};
  std::memcpy(page.data(), data, std::min(size, page.size()));
  const Uuid uuid{};
  std::span<std::byte> p(page);
  if (seal) store_le(p, 0, crc32c(crc32c(0, uuid.data(), uuid.size()), p.subspan(4)), 4);
  const uint64_t location = load_le(p, 8, 8), sequence = load_le(p, 16, 8);
  auto d = decode_journal_descriptor(p, uuid, location, sequence, nr_blocks, block_size, 1u << 20);
  if (!d.ok()) return 0;
  std::array<std::byte, kJournalPage> again{};
  encode_journal_descriptor(*d, uuid, again);
  auto e = decode_journal_descriptor(again, uuid, location, sequence, nr_blocks, block_size, 1u << 20);
  if (!e.ok() || e->entries.size() != d->entries.size() || e->data_sectors != d->data_sectors) std::abort();
  for (size_t i = 0; i < d->entries.size(); ++i) {
    const JournalEntry &x = d->entries[i], &y = e->entries[i];
    if (x.block != y.block || x.value != y.value || x.flags != y.flags) std::abort();
  }
  return 0;
}
