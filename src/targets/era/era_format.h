// era metadata: constants, layout and little-endian codecs. The format is
// specified in docs/format/era.md; this header only names it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/bufio.h"
#include "core/bytes.h"
#include "core/status.h"
#include "core/uuid.h"

namespace bowstack::era {

inline constexpr uint32_t kMetaBlockSize = 4096;
inline constexpr uint32_t kHeaderSize = 64;
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kPayloadBytes = kMetaBlockSize - kHeaderSize;         // 4032
inline constexpr uint32_t kWordsPerWritesetBlock = kPayloadBytes / 8;           // 504
inline constexpr uint32_t kBitsPerWritesetBlock = kWordsPerWritesetBlock * 64;  // 32256
inline constexpr uint32_t kEntriesPerArrayBlock = kPayloadBytes / 4;            // 1008
inline constexpr uint64_t kMaxDataBlocks = 0xffffffffull;  // eras and block numbers are u32 in tools' XML
inline constexpr uint32_t kFirstEra = 1;

// Block kinds, by magic (4 ASCII bytes read as a little-endian u32).
enum class Kind : uint32_t {
  kSuperblock = 0x42535245,    // "ERSB"
  kWriteset = 0x53575245,      // "ERWS"
  kEraArray = 0x41415245,      // "ERAA"
  kSnapWriteset = 0x57535245,  // "ERSW"
  kSnapEraArray = 0x41535245,  // "ERSA"
};
const char* kind_name(Kind k);

using bowstack::random_uuid;
using bowstack::Uuid;
using bowstack::uuid_string;

// The header every metadata block starts with.
struct BlockHeader {
  uint32_t crc = 0;
  uint32_t magic = 0;
  uint64_t location = 0;
  uint64_t generation = 0;
  uint32_t era = 0;
  uint32_t version = kFormatVersion;
  Uuid uuid{};
  uint64_t index = 0;  // logical index within its kind
};
void pack_header(const BlockHeader& h, std::span<std::byte> block);
BlockHeader unpack_header(std::span<const std::byte> block);

// Where everything lives, derived from the number of data blocks only.
struct Layout {
  uint64_t nr_blocks = 0;     // data blocks tracked
  uint64_t ws_blocks = 0;     // W: writeset blocks per region and slot
  uint64_t array_blocks = 0;  // A: era array blocks per slot
  uint64_t total = 0;         // metadata blocks needed: 2 + 5W + 3A

  static Layout for_blocks(uint64_t nr_blocks);
  static uint64_t superblock(int slot) { return static_cast<uint64_t>(slot); }
  uint64_t writeset(int region, int slot, uint64_t i) const {
    return 2 + (2 * region + slot) * ws_blocks + i;
  }
  uint64_t era_array(int slot, uint64_t i) const { return 2 + 4 * ws_blocks + slot * array_blocks + i; }
  uint64_t snap_writeset(uint64_t i) const { return 2 + 4 * ws_blocks + 2 * array_blocks + i; }
  uint64_t snap_era_array(uint64_t i) const { return 2 + 5 * ws_blocks + 2 * array_blocks + i; }
  // Metadata blocks in use: without and with a held snapshot.
  uint64_t used(bool snapshot) const {
    return 2 + 4 * ws_blocks + 2 * array_blocks + (snapshot ? ws_blocks + array_blocks : 0);
  }
};

struct Superblock {
  uint64_t generation = 0;
  Uuid uuid{};
  uint32_t data_block_size = 0;  // bytes
  uint64_t nr_blocks = 0;
  uint64_t origin_size = 0;  // bytes, as created (informational)
  uint32_t current_era = kFirstEra;
  uint32_t fold_era = 0;      // 0, or an era whose writeset must still be folded
  uint64_t total_blocks = 0;  // layout
  uint64_t ws_blocks = 0;
  uint64_t array_blocks = 0;
  bool snap_held = false;
  uint32_t snap_era = 0;
  uint64_t snap_id = 0;  // generation stamped on the snapshot's blocks
  uint64_t created = 0;  // unix seconds
};
// Fills a whole superblock (header included, crc and location left to the validator).
void pack_superblock(const Superblock& sb, std::span<std::byte> block);
Superblock unpack_superblock(std::span<const std::byte> block);
// Semantic checks beyond the checksum; `device_blocks` is the metadata
// device's size in metadata blocks. Errors are EUCLEAN with a sentence.
Status validate_superblock(const Superblock& sb, uint64_t device_blocks);

// Payload accessors (little-endian on disk).
uint64_t get_word(std::span<const std::byte> block, uint32_t w);
void put_word(std::span<std::byte> block, uint32_t w, uint64_t v);
uint32_t get_entry(std::span<const std::byte> block, uint32_t e);
void put_entry(std::span<std::byte> block, uint32_t e, uint32_t v);

// Stamps magic, version, uuid, location and the checksum; checks all of
// them on read. The superblock's validator takes any uuid (it is where the
// uuid is learnt); the others must match theirs.
class EraValidator final : public BlockValidator {
 public:
  EraValidator(Kind kind, const Uuid* uuid) : kind_(kind), uuid_(uuid ? *uuid : Uuid{}), check_uuid_(uuid) {}
  const char* name() const override { return kind_name(kind_); }
  void prepare_for_write(std::span<std::byte> data, uint64_t block) const override;
  Status check(std::span<const std::byte> data, uint64_t block) const override;

 private:
  const Kind kind_;
  const Uuid uuid_;
  const bool check_uuid_;
};

uint32_t block_crc(std::span<const std::byte> block);

}  // namespace bowstack::era
