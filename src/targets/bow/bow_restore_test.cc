// Restore under crashes with a volatile write cache: writes not yet flushed
// may be lost in any combination, which stopping after the N-th write (the
// functional test) never shows.
#include "targets/bow/bow_restore.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "core/memory_device.h"
#include "crash/recording.h"
#include "targets/bow/bow_target.h"

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

}  // namespace
}  // namespace bowstack::bow
