// fuzz_bow_log: the input is a small device image (padded to a multiple of
// 512 bytes, at most 1 MiB) that may hold a dm-bow checkpoint log. Runs the
// log validator and every restore mode over it and checks their contracts:
//  * no access outside the device or unaligned (CheckedDevice);
//  * validation, probing and a dry run write nothing;
//  * read_and_validate and the dry run agree, and a valid chain is
//    consistent (sequences 0..N, counts, one block size);
//  * a restore whose validation fails writes nothing unless rolling
//    forward, and rolling forward changes block 0 only, to the live copy at
//    sector0;
//  * a restore that succeeds, stopped after any number of writes and run
//    again, reaches the same image (the WOB protocol's promise); a validated
//    chain restores without error.
// When block 0 holds a one-block log, the checks run a second time on a copy
// whose checksums are rewritten to match, so that mutated entries reach the
// restore logic instead of failing validation on a checksum.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "core/memory_device.h"
#include "fuzz_util.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_restore.h"

namespace bowstack::fuzz {
namespace {

using Bytes = std::vector<std::byte>;
constexpr size_t kMaxImage = 1 << 20;

struct Device {
  std::shared_ptr<MemoryDevice> mem;
  std::shared_ptr<CheckedDevice> dev;
};

Device make_device(const Bytes& image) {
  Device d;
  d.mem = std::make_shared<MemoryDevice>(image.size());
  FUZZ_CHECK(d.mem->write(0, image, 0).ok());
  d.dev = std::make_shared<CheckedDevice>(d.mem);
  return d;
}

void check_chain(const bow::LogChain& chain) {
  FUZZ_CHECK(!chain.blocks.empty());
  FUZZ_CHECK(chain.block_size >= 512 && chain.block_size <= 4096);
  for (size_t seq = 0; seq < chain.blocks.size(); ++seq) {
    const bow::LogBlock& b = chain.blocks[seq];
    FUZZ_CHECK(b.header.sequence == seq);
    FUZZ_CHECK(b.header.block_size == chain.block_size);
    FUZZ_CHECK(b.header.count == b.entries.size());
    FUZZ_CHECK(!b.entries.empty());
    FUZZ_CHECK(b.entries[0].source == 0 && b.entries[0].size == chain.block_size);
  }
}

// Runs every check on one image; `seed` picks where a restore is stopped.
void check_image(const Bytes& image, uint64_t seed) {
  // Probing and validation: read-only.
  Device a = make_device(image);
  auto probed = bow::probe(*a.dev);
  FUZZ_CHECK(probed.ok());
  auto valid = bow::read_and_validate(*a.dev);
  auto valid_no_crc = bow::read_and_validate(*a.dev, bow::ValidateOptions{.verify_checksums = false});
  if (*probed == bow::ProbeResult::kNoCheckpoint) FUZZ_CHECK(!valid.ok() && valid.status().code() == ENOENT);
  if (*probed == bow::ProbeResult::kInterruptedRestore)
    FUZZ_CHECK(!valid.ok() && valid.status().code() == EBUSY);
  if (valid.ok()) {
    check_chain(*valid);
    // Checksums can only add reasons to refuse.
    FUZZ_CHECK(valid_no_crc.ok());
    FUZZ_CHECK(valid_no_crc->blocks.size() == valid->blocks.size());
  }
  if (valid_no_crc.ok()) check_chain(*valid_no_crc);

  // A dry run never writes and agrees with the validator.
  auto dry = bow::restore(*a.dev, bow::RestoreOptions{.dry_run = true});
  FUZZ_CHECK(a.dev->writes == 0);
  FUZZ_CHECK(a.mem->contents() == image);
  if (*probed == bow::ProbeResult::kCheckpoint) {
    FUZZ_CHECK(dry.ok() == valid.ok());
    if (dry.ok()) {
      uint64_t entries = 0;
      for (const auto& b : valid->blocks) entries += b.entries.size();
      FUZZ_CHECK(dry->outcome == bow::RestoreReport::Outcome::kValidated);
      FUZZ_CHECK(dry->entries == entries && dry->log_blocks == valid->blocks.size());
    }
  }
  if (*probed == bow::ProbeResult::kNoCheckpoint) {
    FUZZ_CHECK(dry.ok() && dry->outcome == bow::RestoreReport::Outcome::kNoCheckpoint);
  }

  // A real restore.
  Device b = make_device(image);
  auto restored = bow::restore(*b.dev, bow::RestoreOptions{});
  const uint64_t restore_writes = b.dev->writes;
  Bytes result = b.mem->contents();
  switch (*probed) {
    case bow::ProbeResult::kNoCheckpoint:
      FUZZ_CHECK(restored.ok() && restored->outcome == bow::RestoreReport::Outcome::kNoCheckpoint);
      FUZZ_CHECK(restore_writes == 0);
      break;
    case bow::ProbeResult::kCheckpoint:
      if (!valid.ok()) {
        FUZZ_CHECK(!restored.ok());
        FUZZ_CHECK(restore_writes == 0);
        FUZZ_CHECK(result == image);
      } else {
        FUZZ_CHECK_MSG(restored.ok(), "a validated chain failed to restore: " + restored.status().message());
        FUZZ_CHECK(restored->outcome == bow::RestoreReport::Outcome::kRestored);
      }
      break;
    case bow::ProbeResult::kInterruptedRestore:
      break;  // validation is skipped; refusing half-way is allowed
  }

  // The same restore, stopped after k writes (as if killed) and run again,
  // ends with the same image.
  if (restored.ok() && restore_writes > 0) {
    const int64_t k = static_cast<int64_t>(seed % restore_writes);
    Device c = make_device(image);
    auto stopped = bow::restore(*c.dev, bow::RestoreOptions{.stop_after_writes = k});
    FUZZ_CHECK(!stopped.ok() && stopped.status().code() == ECANCELED);
    FUZZ_CHECK(c.dev->writes == static_cast<uint64_t>(k));
    auto resumed = bow::restore(*c.dev, bow::RestoreOptions{});
    FUZZ_CHECK_MSG(resumed.ok(), "restore stopped after " + std::to_string(k) +
                                     " writes could not be resumed: " + resumed.status().message());
    FUZZ_CHECK_MSG(c.mem->contents() == result, "restore stopped after " + std::to_string(k) +
                                                    " writes and resumed differs from an uninterrupted one");
  }

  // Roll-forward: with a valid chain a plain restore; otherwise block 0 gets
  // the live copy from sector0 and nothing else changes.
  Device d = make_device(image);
  auto forward = bow::restore(*d.dev, bow::RestoreOptions{.roll_forward = true});
  if (*probed == bow::ProbeResult::kCheckpoint && !valid.ok()) {
    Bytes after = d.mem->contents();
    if (!forward.ok()) {
      FUZZ_CHECK(d.dev->writes == 0);
      FUZZ_CHECK(after == image);
    } else {
      FUZZ_CHECK(forward->outcome == bow::RestoreReport::Outcome::kRolledForward);
      FUZZ_CHECK(!forward->validation_error.empty());
      const bow::LogHeader h = bow::unpack_header(std::span<const std::byte>(image.data(), bow::kHeaderSize));
      const size_t bs = h.block_size;
      FUZZ_CHECK(forward->block_size == bs);
      FUZZ_CHECK(h.sector0 * 512 + bs <= image.size());
      FUZZ_CHECK(std::memcmp(after.data(), image.data() + h.sector0 * 512, bs) == 0);
      FUZZ_CHECK(std::equal(after.begin() + static_cast<std::ptrdiff_t>(bs), after.end(),
                            image.begin() + static_cast<std::ptrdiff_t>(bs)));
    }
  } else if (*probed == bow::ProbeResult::kCheckpoint) {
    FUZZ_CHECK(forward.ok() && forward->outcome == bow::RestoreReport::Outcome::kRestored);
    FUZZ_CHECK(d.mem->contents() == result);
  }
}

// Makes a one-block log (sequence 0) internally consistent: rewrites each
// recorded checksum to match what validation will read through the
// relocation map. Without this, nearly every mutation of a valid image fails
// on a checksum and the restore logic beyond validation is rarely reached.
// False if block 0 is not such a log.
bool fix_checksums(Bytes& image) {
  const bow::LogHeader h = bow::unpack_header(std::span<const std::byte>(image.data(), bow::kHeaderSize));
  if (h.magic != bow::kMagic || h.sequence != 0) return false;
  if (!bow::check_header(h, image.size(), 0, false).ok()) return false;
  const uint32_t bs = h.block_size;
  bow::RelocationMap rel;
  for (int64_t i = static_cast<int64_t>(h.count) - 1; i >= 0; --i) {
    const std::span<std::byte> at(image.data() + h.header_size + bow::kEntrySize * static_cast<size_t>(i),
                                  bow::kEntrySize);
    bow::LogEntry e = bow::unpack_entry(at);
    if (!bow::check_entry(e, static_cast<uint32_t>(i), bs, image.size()).ok()) return false;
    if (e.checksum != 0) {
      Bytes saved(e.size);
      for (uint32_t done = 0; done < e.size; done += bs) {
        const uint64_t from = rel.lookup(e.dest + done / 512) * 512;
        if (from < bs || from + bs > image.size()) return false;
        std::memcpy(saved.data() + done, image.data() + from, bs);
      }
      e.checksum = bow::entry_checksum(e.source, bs, saved);
      bow::pack_entry(e, at);
    }
    rel.relocate(e.source, e.dest, e.size / 512);
  }
  return true;
}

}  // namespace
}  // namespace bowstack::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace bowstack;
  using namespace bowstack::fuzz;
  if (size > kMaxImage) return 0;
  Bytes image(std::max<size_t>(1024, (size + 511) / 512 * 512));
  if (size > 0) std::memcpy(image.data(), data, size);
  const uint64_t seed = fnv1a(data, size);
  check_image(image, seed);
  // The same image with its checksums made to match, so that mutated
  // entries (overlapping, relocated, moved) get through validation.
  Bytes fixed = image;
  if (fix_checksums(fixed) && fixed != image) check_image(fixed, seed);
  return 0;
}
