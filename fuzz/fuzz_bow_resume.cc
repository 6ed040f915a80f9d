// fuzz_bow_resume: resuming a checkpoint from a device image and its resume
// journal (docs/format/bow.md section 3), both taken from the input:
//
//   byte 0      flags: bit 0 rewrites the CRC of every journal record, so
//               that mutated fields reach the resume logic instead of
//               ending the journal as a torn tail; bit 1 commits at the
//               end instead of restoring
//   bytes 1..4  little-endian length of the image (cut to what follows
//               and to a multiple of 512 bytes, at most 256 KiB)
//   then        the image, then the journal (at most 64 KiB)
//
// Contracts checked:
//  * opening never accesses the device out of bounds or unaligned
//    (CheckedDevice), and an open that fails writes nothing to the device;
//  * a resumed target serves writes, trims and flushes without a broken
//    contract, whatever the journal said;
//  * whatever the journal said, the log the resumed target keeps stays one
//    that restore accepts: if the image's log validated (with checksums)
//    before the open and the target did not fail, a restore afterwards
//    succeeds (the journal only describes free space; the log's own
//    blocks and saved copies are never given out), and a commit leaves no
//    checkpoint behind.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/endian.h"
#include "core/env.h"
#include "core/memory_device.h"
#include "fuzz_util.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/resume_journal.h"

namespace bowstack::fuzz {
namespace {

using Bytes = std::vector<std::byte>;
constexpr size_t kMaxImage = 256 << 10;
constexpr size_t kMaxJournal = 64 << 10;
constexpr size_t kRecord = 64;
constexpr const char* kJournal = "image.bowmeta";

// Rewrites the CRC of every whole record.
void seal_records(Bytes* journal) {
  for (size_t at = 0; at + kRecord <= journal->size(); at += kRecord) {
    bow::seal_record(reinterpret_cast<unsigned char*>(journal->data() + at));
  }
}

void run(const uint8_t* data, size_t size) {
  if (size < 5) return;
  const uint8_t flags = data[0];
  const uint64_t image_len = load_le(reinterpret_cast<const std::byte*>(data), 1, 4);
  const size_t avail = size - 5;
  size_t n = std::min<size_t>({image_len, avail, kMaxImage}) / 512 * 512;
  if (n == 0) return;
  Bytes image(n);
  std::memcpy(image.data(), data + 5, n);
  Bytes journal(std::min(avail - n, kMaxJournal));
  if (!journal.empty()) std::memcpy(journal.data(), data + 5 + n, journal.size());
  if (flags & 1) seal_records(&journal);

  auto mem = std::make_shared<MemoryDevice>(image.size());
  FUZZ_CHECK(mem->write(0, image, 0).ok());
  auto dev = std::make_shared<CheckedDevice>(mem);
  MemEnv env;
  {
    auto f = env.open(kJournal, OpenMode::kCreateTruncate);
    FUZZ_CHECK(f.ok());
    FUZZ_CHECK((*f)->write(0, journal).ok());
  }
  // Whether restore would have accepted the image before the resume.
  const bool valid_before = bow::read_and_validate(*dev).ok();

  auto opened = bow::BowTarget::open(dev, bow::BowOptions{.meta_path = kJournal, .env = &env});
  if (!opened.ok()) {
    FUZZ_CHECK_MSG(dev->writes == 0, "a failed open wrote to the device: " + opened.status().message());
    FUZZ_CHECK(mem->contents() == image);
    return;
  }
  auto t = opened.value();
  const bool resumed = t->state() == bow::State::kCheckpoint;
  const uint32_t bs = t->geometry().logical_block_size;
  const uint64_t blocks = t->geometry().size / bs;

  // A few operations anywhere on the device, some unaligned, as a client
  // would send them after the restart. Their results may be errors (a full
  // device); they must not break a contract.
  std::mt19937_64 rng(fnv1a(data, size));
  auto below = [&](uint64_t n) { return rng() % n; };
  Bytes buf(4 * bs);
  for (int op = 0; op < 12; ++op) {
    const uint64_t len_blocks = 1 + below(3);
    const uint64_t first = below(blocks - len_blocks + 1);
    switch (below(6)) {
      case 0:
      case 1:
      case 2:
        std::memset(buf.data(), static_cast<int>(rng() & 0xff), buf.size());
        (void)t->write(first * bs, std::span(buf.data(), len_blocks * bs), 0);
        break;
      case 3: {
        const uint64_t off = first * bs + below(bs);
        const uint64_t len = std::min<uint64_t>(1 + below(2 * bs), t->geometry().size - off);
        (void)t->write(off, std::span(buf.data(), len), 0);
        break;
      }
      case 4:
        (void)t->trim(first * bs, len_blocks * bs, 0);
        break;
      default:
        (void)t->read(first * bs, std::span(buf.data(), len_blocks * bs));
        break;
    }
  }
  (void)t->flush();
  const bool failed = t->stats().failed;

  if (flags & 2) {
    Status c = resumed ? t->commit() : Status::Ok();
    t.reset();
    if (resumed && c.ok()) {
      auto p = bow::probe(*dev);
      FUZZ_CHECK(p.ok() && *p == bow::ProbeResult::kNoCheckpoint);
    }
    return;
  }
  t.reset();
  if (!resumed) return;
  auto restored = bow::restore(*dev, bow::RestoreOptions{});
  if (valid_before && !failed) {
    FUZZ_CHECK_MSG(restored.ok(),
                   "the log of a resumed checkpoint no longer restores: " + restored.status().message());
  }
}

}  // namespace
}  // namespace bowstack::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bowstack::fuzz::run(data, size);
  return 0;
}
