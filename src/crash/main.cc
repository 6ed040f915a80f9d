// bowstack_crash: the crash-state explorer's command line.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "crash/explorer.h"

using namespace bowstack::crash;

int main(int argc, char** argv) {
  CLI::App app{
      "Explore the crash states of a workload run against a target and check every one.\n"
      "Each run ends with 'crash states explored: N, bad: M' and, for every bad state, a\n"
      "command that replays it from its saved recording."};
  app.footer(
      "Examples:\n"
      "  bowstack_crash --workload bow                       # 10,000 states, seed 1\n"
      "  bowstack_crash --workload bow --states 1000000 --seed 7 --threads 2\n"
      "  bowstack_crash --replay /tmp/bowstack-crash/bow-seed3.rec --state 812 --dump /tmp/state812\n"
      "  bowstack_crash --list");
  ExploreOptions opts;
  std::string workload = "bow", replay_path, dump;
  uint64_t state = 0;
  bool list = false;
  app.add_option("--workload", workload, "workload to explore (see --list)")->capture_default_str();
  app.add_option("--states", opts.states, "stop after this many states")->capture_default_str();
  app.add_option("--min-states", opts.min_states, "fail if the time limit stops the run below this many");
  app.add_option("--seed", opts.seed, "seed of the first recording (each further one uses the next)")
      ->capture_default_str();
  app.add_option("--per-recording", opts.per_recording, "random (subset and torn) states per recording")
      ->capture_default_str();
  app.add_option("--threads", opts.threads, "checker threads")->capture_default_str();
  app.add_option("--time-limit", opts.time_limit, "seconds after which no new recording starts (0: none)");
  opts.artifacts = "/tmp/bowstack-crash";
  app.add_option("--artifacts", opts.artifacts, "directory for recordings of bad states")
      ->capture_default_str();
  app.add_option("--replay", replay_path, "replay one state of a saved recording");
  app.add_option("--state", state, "with --replay: the state index");
  app.add_option("--dump", dump, "with --replay: write the state's devices and files to this directory");
  app.add_flag("--list", list, "list the workloads");
  CLI11_PARSE(app, argc, argv);
  opts.self = argv[0];
  spdlog::set_level(spdlog::level::err);  // the targets' own info lines would drown the report

  if (list) {
    for (const Workload* w : all_workloads()) std::cout << w->name() << ": " << w->description() << "\n";
    return 0;
  }
  if (!replay_path.empty()) {
    auto r = replay(replay_path, state, opts, dump, std::cout);
    if (!r.ok()) {
      std::cerr << "bowstack_crash: " << r.status().message() << "\n";
      return 2;
    }
    if (r->error.empty()) {
      std::cout << "state is good"
                << (r->sub_states ? " (" + std::to_string(r->sub_states) + " sub-states)" : "") << "\n";
      return 0;
    }
    std::cout << "BAD: " << r->error << "\n";
    return 1;
  }
  const Workload* w = find_workload(workload);
  if (w == nullptr) {
    std::cerr << "bowstack_crash: unknown workload '" << workload << "'; known:";
    for (const Workload* k : all_workloads()) std::cerr << " " << k->name();
    std::cerr << "\n";
    return 2;
  }
  ExploreReport rep = explore(*w, opts, std::cout);
  return rep.bad.empty() && !rep.too_few ? 0 : 1;
}
