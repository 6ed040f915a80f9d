// The crash-state explorer: runs a workload under recording, generates its
// crash states (states.h) and checks each with the workload's checker, in
// parallel. Workloads register themselves (one per target, in the target's
// folder, `<target>_crash.cc`), so this code knows no target.
//
// Reproducibility: a workload's own threads may order internal writes
// differently from run to run, so a reproducer names a saved recording (the
// exact I/O of the run) and a state index, and replaying it regenerates the
// same state bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "crash/recording.h"
#include "crash/states.h"

namespace bowstack::crash {

struct CheckResult {
  std::string error;        // empty: the state is good
  uint64_t sub_states = 0;  // further crash states the check explored (e.g. crashing a recovery tool)
};

// Checks states of one recording. Thread-safety: check() is called
// concurrently on different states.
class Checker {
 public:
  virtual ~Checker() = default;
  virtual CheckResult check(CrashState& state) const = 0;
};

class Workload {
 public:
  virtual ~Workload() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  // Runs the workload once against recording devices and returns the
  // recording. Variants (block size, commit or not, ...) follow from `seed`.
  virtual Result<Recording> record(uint64_t seed) const = 0;
  // Prepares the checks for a recording (its oracle comes from the marks).
  virtual Result<std::unique_ptr<Checker>> checker(const Recording& rec) const = 0;
};

// Registry (static registration from each workload's file).
void register_workload(std::unique_ptr<Workload> w);

// What every target's workload is: a recording function and a checker
// factory. Registers one; returns true, for a namespace-scope initializer:
//   const bool registered = crash::register_workload("csum", "...", &record_csum,
//                                                    crash::checker_of<CsumChecker>());
using RecordFn = std::function<Result<Recording>(uint64_t seed)>;
using CheckerFn = std::function<Result<std::unique_ptr<Checker>>(const Recording&)>;
bool register_workload(std::string name, std::string description, RecordFn record, CheckerFn checker);
// A CheckerFn for a checker type with `static Result<std::unique_ptr<C>> make(const Recording&)`.
template <typename C>
CheckerFn checker_of() {
  return [](const Recording& rec) -> Result<std::unique_ptr<Checker>> {
    auto c = C::make(rec);
    if (!c.ok()) return c.status();
    return std::unique_ptr<Checker>(std::move(c.value()));
  };
}
const Workload* find_workload(const std::string& name);
std::vector<const Workload*> all_workloads();

struct ExploreOptions {
  uint64_t seed = 1;              // first recording's seed; each further recording uses the next
  uint64_t states = 10000;        // stop once this many states are explored
  uint64_t min_states = 0;        // fewer than this when time runs out: the run fails
  uint64_t per_recording = 2000;  // random (subset and torn) states per recording
  int threads = 2;
  double time_limit = 0;  // seconds; 0 = none. No new recording starts after it
  std::string artifacts;  // where recordings of bad states go
  std::string self;       // this program, for reproducer commands
};

struct BadState {
  uint64_t seed = 0;
  uint64_t index = 0;
  std::string description;
  std::string error;
  std::string recording;  // saved recording path ("" if it could not be saved)
};

struct ExploreReport {
  uint64_t explored = 0;    // states checked, sub-states included
  uint64_t sub_states = 0;  // of which states of a recovery tool crashed mid-run
  uint64_t recordings = 0;
  std::vector<BadState> bad;
  bool too_few = false;  // time ran out below min_states
};

// The states of a recording, as explore() generates them (for replay).
std::vector<StateSpec> states_of(const Recording& rec, const ExploreOptions& opts);

ExploreReport explore(const Workload& w, const ExploreOptions& opts, std::ostream& log);

// Rebuilds state `index` of a saved recording and checks it. With
// `dump_dir`, also writes the state's devices (device-N.img) and files.
Result<CheckResult> replay(const std::string& recording_path, uint64_t index, const ExploreOptions& opts,
                           const std::string& dump_dir, std::ostream& log);

}  // namespace bowstack::crash
