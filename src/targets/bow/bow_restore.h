// Offline rollback of a dm-bow checkpoint (docs/format/bow.md section 1).
//
// Validates the whole chain first and writes nothing if it is invalid; then
// restores every entry in reverse order with the resumable "WOB" protocol, so
// that a restore stopped after any write and run again reaches the same
// result. Every read, write and flush is checked; the device is flushed at
// every ordering point.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/block_device.h"
#include "core/env.h"
#include "targets/bow/bow_log.h"

namespace bowstack::bow {

// The resume journal beside the image (IMAGE.bowmeta), read when block 0
// holds no log: it tells a device without a checkpoint from one whose block
// 0 was damaged. No env: not consulted.
struct JournalRef {
  Env* env = nullptr;
  std::string path;
};

// What a restore would do with the device, decided without writing: the one
// judgement behind `bowstack restore` (which writes only if it passes),
// `restore --dry-run` and `bowstack inspect`, so that they cannot disagree.
struct RestoreCheck {
  ProbeResult state = ProbeResult::kNoCheckpoint;
  // Why a restore would refuse (EINVAL: the log or what is left of the
  // interrupted restore does not validate, the context says where and why;
  // EUCLEAN: no log in block 0 but the journal records a checkpoint, the
  // context says what the journal shows). OK: it would not.
  Status problem;
  // With state != kNoCheckpoint and no problem: the chain still to roll
  // back, every header, entry and checksum verified (for an interrupted
  // restore, what is left of it: block 0 holds a WOB log block).
  LogChain chain;
  // No log, and the journal beside the image is the leftover of a finished
  // restore (block 0 holds the data the checkpoint saved from it).
  bool stale_journal = false;

  uint64_t entries() const;
  uint64_t bytes() const;
};

// Errors are I/O errors only; what is wrong with the device is `problem`.
Result<RestoreCheck> check_restore(BlockDevice& dev, const JournalRef& journal = {});

struct RestoreOptions {
  bool dry_run = false;       // validate only; never write
  bool roll_forward = false;  // if validation fails: keep all changes, put block 0 back (Android's fallback)
  // Test hook: stop (returning ECANCELED) after this many restore writes, as
  // if the process were killed there. Negative: never.
  int64_t stop_after_writes = -1;
  // Called after each restored entry with (entries done, entries in total).
  std::function<void(uint64_t, uint64_t)> progress;
  // The journal check_restore consults (nothing is written to it here).
  JournalRef journal;
};

struct RestoreReport {
  enum class Outcome { kNoCheckpoint, kValidated, kRestored, kRolledForward };
  Outcome outcome = Outcome::kNoCheckpoint;
  bool continued_interrupted = false;  // the device held a WOB (interrupted) restore
  uint32_t block_size = 0;
  uint64_t log_blocks = 0;
  uint64_t entries = 0;
  uint64_t bytes = 0;
  std::string validation_error;  // with kRolledForward: why
  bool stale_journal = false;    // with kNoCheckpoint: see RestoreCheck
};

// check_restore, then (unless a dry run) the rollback. A problem it finds is
// returned as the error (nothing written), except that an invalid
// checkpoint log is rolled forward if `roll_forward`.
Result<RestoreReport> restore(BlockDevice& dev, const RestoreOptions& opts);

}  // namespace bowstack::bow
