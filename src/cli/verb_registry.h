// A target's verbs on the `bowstack` command live in the target's own
// folder (src/targets/<name>/<name>_cli.cc) and register themselves
// statically, so main.cc lists no target and a new target touches no
// central list (like the crash explorer's workloads).
//
// Thread-safety: registration runs during static initialisation, use
// after main() starts; single-threaded.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

#include "cli/verbs.h"

namespace bowstack::cli {

// Runs whichever of a target's verbs the command line chose: returns its
// exit code, or -1 when none of them was chosen.
using VerbRunner = std::function<int()>;
// Adds a target's subcommands to the app (their options bound to storage
// the returned runner owns) and returns the runner.
using AddVerbs = std::function<VerbRunner(CLI::App& app)>;

struct TargetVerbs {
  std::string target;
  AddVerbs add;
};

// Every registered target's verbs, in registration order.
const std::vector<TargetVerbs>& target_verbs();

// Declare one at namespace scope in a target's *_cli.cc:
//   static const VerbRegistration kVerbs("bow", &add_bow_verbs);
class VerbRegistration {
 public:
  VerbRegistration(std::string target, AddVerbs add);
};

// --control and --json on a verb that talks to a running server.
void add_client_options(CLI::App* verb, ClientOptions* opts);

}  // namespace bowstack::cli
