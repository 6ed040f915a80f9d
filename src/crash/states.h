// Crash states of a recording (CrashMonkey-style), deterministic from a seed.
//
// A crash at record index c (records [0, c] happened) leaves, for every
// stream, everything logged before the start of its last barrier that
// completed by c (durable), plus any subset of its later operations up to
// c, except FUA writes, which are durable once logged. Kinds:
//  * prefix: every operation up to c applied (dm-log-writes replay); one at
//    each barrier completion and FUA write, and at the end;
//  * subset: a random subset of the not-yet-durable operations, kept in
//    their logged order;
//  * torn: a subset where one multi-sector write still in the cache (not
//    FUA) lands only partly: a random subset of its 512-byte sectors or of
//    its 4 KiB pages.
// Files: content operations (write, truncate, create's emptying) are
// settled by the file's sync, existence (create, remove) by a directory
// sync.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/env.h"
#include "crash/cow_device.h"
#include "crash/recording.h"

namespace bowstack::crash {

enum class StateKind : uint8_t { kPrefix, kSubset, kTorn };
const char* state_kind_name(StateKind k);

struct StateSpec {
  uint64_t index = 0;  // position in generate_states()' result: names the state in reproducers
  StateKind kind = StateKind::kPrefix;
  size_t crash_point = 0;  // records [0, crash_point] happened
  uint64_t rng = 0;        // seed of this state's choices
};

struct StateOptions {
  uint64_t random_states = 1000;       // subset and torn states, besides the prefixes
  double torn_fraction = 0.25;         // of the random states
  bool prefix_at_every_write = false;  // also a prefix after every write, not only at barriers
};

// REQUIRES: !rec.records.empty().
std::vector<StateSpec> generate_states(const Recording& rec, uint64_t seed, const StateOptions& opts);

// One materialized state: private overlays the caller may write to.
struct CrashState {
  StateSpec spec;
  std::vector<std::shared_ptr<CowDevice>> devices;  // by device stream
  std::shared_ptr<MemEnv> env;                      // the files that exist in this state
  std::string description;                          // what was applied, for reports
};

// Thread-safety: advance() is exclusive; build() may run concurrently with
// other build() calls between advances. Lifetime: `rec` must outlive it.
class Materializer {
 public:
  explicit Materializer(const Recording& rec);

  // Moves the durable images forward to crash point c. REQUIRES: c is not
  // below the crash point of an earlier call.
  void advance(size_t c);
  // Builds a state whose crash point is the one last advanced to.
  CrashState build(const StateSpec& spec) const;

 private:
  struct Frontier {
    std::vector<size_t> device;  // per device stream: ops below this index are durable
    std::vector<size_t> file;    // per file stream: content ops below are durable
    size_t dir = 0;              // existence ops below are durable
  };
  Frontier frontier_at(size_t c) const;
  bool durable(const Frontier& f, size_t j) const;
  bool candidate(const Frontier& f, size_t j) const;

  const Recording& rec_;
  size_t at_ = 0;
  Frontier frontier_;
  // Durable images; replaced (not modified) when they change, so states
  // built earlier keep a stable base.
  std::vector<std::shared_ptr<const std::vector<std::byte>>> devices_;
  std::map<uint32_t, std::vector<std::byte>> contents_;  // file stream -> durable contents
  std::map<uint32_t, bool> exists_;                      // file stream -> durably exists
  std::vector<size_t> barrier_start_;                    // barrier id -> index of its start record
};

}  // namespace bowstack::crash
