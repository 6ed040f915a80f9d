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

namespace bowstack::bow {

struct RestoreOptions {
  bool dry_run = false;       // validate only; never write
  bool roll_forward = false;  // if validation fails: keep all changes, put block 0 back (Android's fallback)
  // Test hook: stop (returning ECANCELED) after this many restore writes, as
  // if the process were killed there. Negative: never.
  int64_t stop_after_writes = -1;
  // Called after each restored entry with (entries done, entries in total).
  std::function<void(uint64_t, uint64_t)> progress;
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
};

Result<RestoreReport> restore(BlockDevice& dev, const RestoreOptions& opts);

}  // namespace bowstack::bow
