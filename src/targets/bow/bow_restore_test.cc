// Restore under crashes with a volatile write cache: writes not yet flushed
// may be lost in any combination, which stopping after the N-th write (the
// functional test) never shows. And check_restore, the one judgement behind
// restore, its dry run and inspect: interrupted restores and a damaged
// block 0 beside a resume journal.
#include "targets/bow/bow_restore.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/env.h"
#include "core/memory_device.h"
#include "crash/recording.h"
#include "targets/bow/bow_target.h"
#include "targets/bow/resume_journal.h"

namespace bowstack::bow {
namespace {

using Bytes = std::vector<std::byte>;

struct Checkpointed {
  Bytes image;               // the device with a multi-block checkpoint log
  Bytes at_checkpoint;       // what the client saw at checkpoint
  std::vector<bool> in_use;  // per block, at checkpoint
  uint32_t bs = 512;
};

Checkpointed make_checkpointed(uint64_t seed, uint32_t bs = 512) {
  Checkpointed c;
  c.bs = bs;
  const uint64_t size = bs == 512 ? 1 << 20 : 8 << 20, blocks = size / c.bs;
  std::mt19937_64 rng(seed);
  Bytes initial(size);
  for (auto& b : initial) b = std::byte(static_cast<unsigned char>(rng()));
  auto mem = std::make_shared<MemoryDevice>(size);
  EXPECT_TRUE(mem->write(0, initial, 0).ok());
  auto bow = BowTarget::open(mem, BowOptions{.block_size = c.bs}).value();
  EXPECT_TRUE(bow->trim(size / 2, size / 2, 0).ok());
  EXPECT_TRUE(bow->checkpoint().ok());
  c.at_checkpoint.resize(size);
  EXPECT_TRUE(bow->read(0, c.at_checkpoint).ok());
  for (uint64_t b = 0; b < blocks; ++b) {
    const BlockType t = bow->block_type(b);
    c.in_use.push_back(t == BlockType::kUnchanged || t == BlockType::kSector0);
  }
  // Enough first overwrites (including block 0) for several log blocks.
  for (int i = 0; i < (bs == 512 ? 120 : 420); ++i) {
    uint64_t off = (rng() % (blocks / 2)) * c.bs;
    Bytes d(c.bs * (1 + rng() % 2), std::byte(static_cast<unsigned char>(i)));
    if (off + d.size() > size / 2) off = 0;
    EXPECT_TRUE(bow->write(off, d, 0).ok());
  }
  EXPECT_TRUE(bow->flush().ok());
  bow.reset();
  c.image = mem->contents();
  return c;
}

void expect_checkpoint(const Checkpointed& c, const Bytes& got, const std::string& what) {
  for (size_t b = 0; b < c.in_use.size(); ++b) {
    if (!c.in_use[b]) continue;
    ASSERT_EQ(std::memcmp(got.data() + b * c.bs, c.at_checkpoint.data() + b * c.bs, c.bs), 0)
        << what << ": block " << b << " is not as at checkpoint";
  }
}

// Restores a copy of c.image through a recording device and checks it.
crash::Recording record_restore(const Checkpointed& c) {
  crash::Recorder rec("restore", 0);
  rec.add_device("image", c.image);
  auto mem = std::make_shared<MemoryDevice>(c.image.size());
  EXPECT_TRUE(mem->write(0, c.image, 0).ok());
  crash::RecordingDevice dev(mem, &rec, 0);
  auto full = restore(dev, RestoreOptions{});
  EXPECT_TRUE(full.ok()) << full.status().message();
  EXPECT_GT(full->log_blocks, 2u);
  expect_checkpoint(c, mem->contents(), "uninterrupted restore");
  return rec.snapshot();
}

// The device after a crash at record w: everything before the last flush
// that started before w, then `pieces` of write w (offset, length within it).
Bytes crashed_at(const Checkpointed& c, const crash::Recording& r, size_t w,
                 const std::vector<std::pair<uint64_t, uint64_t>>& pieces) {
  size_t flushed = 0;
  for (size_t j = 0; j < w; ++j) {
    if (r.records[j].op == crash::Op::kFlushStart) flushed = j;
  }
  Bytes state = c.image;
  for (size_t j = 0; j < flushed; ++j) {
    const crash::Record& y = r.records[j];
    if (y.op == crash::Op::kWrite) std::memcpy(state.data() + y.offset, r.data(y).data(), y.length);
  }
  const crash::Record& x = r.records[w];
  for (const auto& [at, n] : pieces) std::memcpy(state.data() + x.offset + at, r.data(x).data() + at, n);
  return state;
}

void expect_rerun_restores(const Checkpointed& c, const Bytes& state, const std::string& what) {
  auto dev = std::make_shared<MemoryDevice>(state.size());
  ASSERT_TRUE(dev->write(0, state, 0).ok());
  auto again = restore(*dev, RestoreOptions{});
  ASSERT_TRUE(again.ok()) << what << ": " << again.status().message();
  expect_checkpoint(c, dev->contents(), what);
}

// Regression (found by the crash-state explorer): restore rewrote block 0
// (the previous log block, or finally the original block 0) without first
// flushing the entries it had just restored. A crash could keep the new
// block 0 and lose those writes; run again, restore then started from the
// new block 0 and never redid them.
TEST(BowRestore, ReRunAfterLosingUnflushedWritesBeforeBlock0Moves) {
  const Checkpointed c = make_checkpointed(5);
  const crash::Recording r = record_restore(c);
  int checked = 0;
  for (size_t w = 0; w < r.records.size(); ++w) {
    const crash::Record& x = r.records[w];
    if (x.op != crash::Op::kWrite || x.offset != 0) continue;
    expect_rerun_restores(c, crashed_at(c, r, w, {{0, x.length}}),
                          "crash at block-0 write " + std::to_string(w));
    if (HasFatalFailure()) return;
    ++checked;
  }
  EXPECT_GT(checked, 2);
}

// Regression (found by the crash-state explorer): with 4 KiB log blocks on
// a device of 512-byte sectors, restore wrote a whole new block 0 in one
// write; torn, it left one log block's header over another's entries, or
// original data behind a log header. Every block-0 write of a restore is
// now torn every way that matters, and a re-run must still restore.
TEST(BowRestore, ReRunAfterTornBlock0Writes) {
  const Checkpointed c = make_checkpointed(6, 4096);
  const crash::Recording r = record_restore(c);
  int checked = 0;
  for (size_t w = 0; w < r.records.size(); ++w) {
    const crash::Record& x = r.records[w];
    // Sectors are atomic: only writes of several sectors tear, at sector
    // boundaries.
    if (x.op != crash::Op::kWrite || x.offset >= 4096 || x.length <= 512) continue;
    const uint64_t half = x.length / 2 / 512 * 512;
    const std::vector<std::vector<std::pair<uint64_t, uint64_t>>> tears = {
        {{0, 512}}, {{512, x.length - 512}}, {{0, half}}, {{half, x.length - half}}};
    for (size_t k = 0; k < tears.size(); ++k) {
      expect_rerun_restores(c, crashed_at(c, r, w, tears[k]),
                            "block-0 write " + std::to_string(w) + " torn (" + std::to_string(k) + ")");
      if (HasFatalFailure()) return;
    }
    ++checked;
  }
  EXPECT_GT(checked, 2);
}

// Found by fuzz_bow_log: where block 0's write can tear (log blocks larger
// than a sector), restore shortens the log to entry 0, writes block 0's
// other sectors, then its first. The shortened log kept its header_size,
// and with a header larger than 488 bytes (the format lets readers honour
// any up to B - 24) entry 0 lies beyond the first sector: the second write
// replaced it, and a restore stopped there could not be resumed.
TEST(BowRestore, StoppedAnywhereWithALargeHeaderSize) {
  for (uint32_t bs : {1024u, 4096u}) {
    SCOPED_TRACE(bs);
    const uint64_t spb = bs / 512;
    Bytes image(16 * bs);
    for (size_t i = 0; i < image.size(); ++i)
      image[i] = std::byte(static_cast<unsigned char>(i * 7 + i / 512));
    // Entry 0 saves block 0 to block 8; entry 1 block 2 to block 9; entry 2
    // blocks 3-4 to blocks 10-11. The live block 0 is block 12.
    const LogEntry entries[] = {
        {0, 8 * spb, bs, 0}, {2 * spb, 9 * spb, bs, 0}, {3 * spb, 10 * spb, 2 * bs, 0}};
    LogHeader h;
    h.block_size = bs;
    h.header_size = static_cast<uint16_t>(bs - 3 * kEntrySize);  // entry 0 in the last sector
    h.count = 3;
    h.sector0 = 12 * spb;
    pack_header(h, image);
    for (uint32_t i = 0; i < 3; ++i) {
      LogEntry e = entries[i];
      e.checksum = entry_checksum(e.source, bs, std::span(image).subspan(e.dest * 512, e.size));
      pack_entry(e, std::span(image).subspan(h.header_size + kEntrySize * i, kEntrySize));
    }
    Bytes expected = image;
    for (const LogEntry& e : entries) {
      std::memcpy(expected.data() + e.source * 512, image.data() + e.dest * 512, e.size);
    }

    auto full_dev = std::make_shared<MemoryDevice>(image.size());
    ASSERT_TRUE(full_dev->write(0, image, 0).ok());
    auto full = restore(*full_dev, RestoreOptions{});
    ASSERT_TRUE(full.ok()) << full.status().message();
    ASSERT_TRUE(full_dev->contents() == expected) << "an uninterrupted restore";
    int stops = 0;
    for (int64_t k = 0;; ++k) {
      auto dev = std::make_shared<MemoryDevice>(image.size());
      ASSERT_TRUE(dev->write(0, image, 0).ok());
      auto stopped = restore(*dev, RestoreOptions{.stop_after_writes = k});
      if (stopped.ok()) break;
      ASSERT_EQ(stopped.status().code(), ECANCELED) << stopped.status().message();
      auto resumed = restore(*dev, RestoreOptions{});
      ASSERT_TRUE(resumed.ok()) << "stopped after " << k << " writes: " << resumed.status().message();
      EXPECT_TRUE(dev->contents() == expected) << "stopped after " << k << " writes, then resumed";
      ++stops;
    }
    EXPECT_EQ(stops, 5);  // entries 2 and 1; the log shortened, block 0's other sectors, its first
  }
}

// An interrupted restore (block 0 marked WOB) used to be judged by its
// header alone: inspect and restore --dry-run called it restorable, then
// restore wrote the entries after a damaged saved copy and stopped at it,
// half done. Now check_restore validates what is left of the chain, every
// checksum included, and restore, its dry run and inspect all use it:
// refused before anything is written.
TEST(BowRestore, InterruptedRestoreIsValidatedWholeBeforeAnyWrite) {
  const Checkpointed c = make_checkpointed(7);
  // Stop a restore where block 0 holds a WOB log block of several entries.
  std::shared_ptr<MemoryDevice> wob;
  RestoreCheck check;
  for (int64_t n = 1; n < 200 && !wob; ++n) {
    auto dev = std::make_shared<MemoryDevice>(c.image.size());
    ASSERT_TRUE(dev->write(0, c.image, 0).ok());
    auto r = restore(*dev, RestoreOptions{.stop_after_writes = n});
    ASSERT_FALSE(r.ok());
    ASSERT_EQ(r.status().code(), ECANCELED) << r.status().message();
    auto ch = check_restore(*dev);
    ASSERT_TRUE(ch.ok());
    if (ch->state != ProbeResult::kInterruptedRestore || ch->chain.blocks.back().entries.size() < 3) continue;
    ASSERT_TRUE(ch->problem.ok()) << "a WOB state a restore left does not validate: "
                                  << ch->problem.message();
    wob = dev;
    check = std::move(ch.value());
  }
  ASSERT_TRUE(wob) << "no interrupted restore with a WOB log block of 3 entries or more";
  EXPECT_GT(check.chain.blocks.size(), 1u);
  // A dry run reports exactly what is left, and the real run finishes it.
  auto dry = restore(*wob, RestoreOptions{.dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status().message();
  EXPECT_EQ(dry->outcome, RestoreReport::Outcome::kValidated);
  EXPECT_TRUE(dry->continued_interrupted);
  EXPECT_EQ(dry->entries, check.entries());
  {
    auto copy = std::make_shared<MemoryDevice>(wob->contents().size());
    ASSERT_TRUE(copy->write(0, wob->contents(), 0).ok());
    auto done = restore(*copy, RestoreOptions{});
    ASSERT_TRUE(done.ok()) << done.status().message();
    EXPECT_TRUE(done->continued_interrupted);
    expect_checkpoint(c, copy->contents(), "finished interrupted restore");
  }
  // Damage the saved copy of entry 1 of the WOB log block: a restore would
  // write entries 2.. first. Then the same for a saved copy in the oldest
  // log block, which the old check never looked at.
  const LogBlock& newest = check.chain.blocks.back();
  const LogBlock& oldest = check.chain.blocks.front();
  for (const auto& [e, what] : {std::pair{newest.entries[1], "entry 1 of the WOB log block"},
                                std::pair{oldest.entries.back(), "the oldest log block"}}) {
    SCOPED_TRACE(what);
    auto dev = std::make_shared<MemoryDevice>(wob->contents().size());
    ASSERT_TRUE(dev->write(0, wob->contents(), 0).ok());
    Bytes flip(512);
    ASSERT_TRUE(dev->read(e.dest * 512, flip).ok());
    flip[100] ^= std::byte{0xff};
    ASSERT_TRUE(dev->write(e.dest * 512, flip, 0).ok());
    const Bytes before = dev->contents();
    auto ch = check_restore(*dev);
    ASSERT_TRUE(ch.ok());
    EXPECT_EQ(ch->state, ProbeResult::kInterruptedRestore);
    ASSERT_FALSE(ch->problem.ok());
    EXPECT_EQ(ch->problem.code(), EINVAL);
    EXPECT_NE(ch->problem.context().find("checksum mismatch"), std::string::npos) << ch->problem.context();
    for (bool dry_run : {true, false}) {
      auto r = restore(*dev, RestoreOptions{.dry_run = dry_run, .roll_forward = true});
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().context(),
                "the interrupted restore (magic WOB) cannot be finished, nothing written: " +
                    ch->problem.context());
    }
    EXPECT_TRUE(dev->contents() == before) << "a refused restore wrote to the device";
  }
}

// Block 0 without a log, but the resume journal beside it records a
// checkpoint (block 0's magic damaged): not "nothing to do" but an error
// naming the journal, and nothing written. A journal left beside a
// finished restore (block 0 holds what the checkpoint saved of it) is
// recognised as a leftover.
TEST(BowRestore, NoLogButAJournalIsAnError) {
  const Checkpointed c = make_checkpointed(8);
  const std::string path = "img.bowmeta";
  MemEnv env;
  const uint32_t crc0 = entry_checksum(0, c.bs, std::span(c.at_checkpoint.data(), c.bs));
  JournalHeader h{.block_size = c.bs,
                  .blocks = c.image.size() / c.bs,
                  .s0c_initial = 5,
                  .log0_dest = 2000,
                  .log0_crc = crc0};
  ASSERT_TRUE(ResumeJournal::create(&env, path, h, {{JournalRecord::kFree, 1024, 1024}}).ok());
  const JournalRef journal{.env = &env, .path = path};

  Bytes damaged = c.image;
  std::memset(damaged.data(), 0, 4);  // the magic
  auto dev = std::make_shared<MemoryDevice>(damaged.size());
  ASSERT_TRUE(dev->write(0, damaged, 0).ok());
  auto ch = check_restore(*dev, journal);
  ASSERT_TRUE(ch.ok());
  EXPECT_EQ(ch->state, ProbeResult::kNoCheckpoint);
  ASSERT_FALSE(ch->problem.ok());
  EXPECT_EQ(ch->problem.code(), EUCLEAN);
  const std::string& why = ch->problem.context();
  EXPECT_NE(why.find("block 0 holds no bow log, but the resume journal 'img.bowmeta' records a checkpoint"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find(fmt::format("first log CRC {:08x}", crc0)), std::string::npos) << why;
  for (bool dry_run : {true, false}) {
    auto r = restore(*dev, RestoreOptions{.dry_run = dry_run, .roll_forward = true, .journal = journal});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), EUCLEAN);
  }
  EXPECT_TRUE(dev->contents() == damaged) << "a refused restore wrote to the device";
  // Without a journal the same device has no checkpoint.
  auto plain = check_restore(*dev);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->problem.ok());

  // After a finished restore block 0 is what the checkpoint saved: a leftover.
  auto done = std::make_shared<MemoryDevice>(c.image.size());
  ASSERT_TRUE(done->write(0, c.image, 0).ok());
  ASSERT_TRUE(restore(*done, RestoreOptions{}).ok());
  auto r = restore(*done, RestoreOptions{.journal = journal});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->outcome, RestoreReport::Outcome::kNoCheckpoint);
  EXPECT_TRUE(r->stale_journal);
}

}  // namespace
}  // namespace bowstack::bow
