#include "crash/explorer.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <ostream>
#include <thread>

namespace bowstack::crash {

namespace {

std::map<std::string, std::unique_ptr<Workload>>& registry() {
  static std::map<std::string, std::unique_ptr<Workload>> r;
  return r;
}

// The generator's seed for a recording: distinct from the workload's use of
// the same seed.
uint64_t state_seed(uint64_t seed) { return seed * 0x9e3779b97f4a7c15ull + 0x5eed; }

std::string reproducer(const ExploreOptions& opts, const std::string& recording, uint64_t index) {
  return fmt::format("{} --replay {} --state {} --per-recording {}",
                     opts.self.empty() ? "bowstack_crash" : opts.self, recording, index, opts.per_recording);
}

}  // namespace

void register_workload(std::unique_ptr<Workload> w) {
  auto name = w->name();
  registry()[name] = std::move(w);
}

namespace {

class FnWorkload final : public Workload {
 public:
  FnWorkload(std::string name, std::string description, RecordFn record, CheckerFn checker)
      : name_(std::move(name)),
        description_(std::move(description)),
        record_(std::move(record)),
        checker_(std::move(checker)) {}
  std::string name() const override { return name_; }
  std::string description() const override { return description_; }
  Result<Recording> record(uint64_t seed) const override { return record_(seed); }
  Result<std::unique_ptr<Checker>> checker(const Recording& rec) const override { return checker_(rec); }

 private:
  const std::string name_, description_;
  const RecordFn record_;
  const CheckerFn checker_;
};

}  // namespace

bool register_workload(std::string name, std::string description, RecordFn record, CheckerFn checker) {
  register_workload(std::make_unique<FnWorkload>(std::move(name), std::move(description), std::move(record),
                                                 std::move(checker)));
  return true;
}

const Workload* find_workload(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second.get();
}

std::vector<const Workload*> all_workloads() {
  std::vector<const Workload*> v;
  for (const auto& [n, w] : registry()) v.push_back(w.get());
  return v;
}

std::vector<StateSpec> states_of(const Recording& rec, const ExploreOptions& opts) {
  StateOptions so;
  so.random_states = opts.per_recording;
  return generate_states(rec, state_seed(rec.seed), so);
}

ExploreReport explore(const Workload& w, const ExploreOptions& opts, std::ostream& log) {
  ExploreReport report;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  for (uint64_t seed = opts.seed; report.explored < opts.states; ++seed) {
    if (opts.time_limit > 0 && elapsed() > opts.time_limit) break;
    auto rec = w.record(seed);
    if (!rec.ok()) {
      report.bad.push_back({seed, 0, "recording the workload", rec.status().message(), ""});
      log << fmt::format("seed {}: the workload itself failed: {}\n", seed, rec.status().message());
      break;
    }
    auto checker = w.checker(*rec);
    if (!checker.ok()) {
      report.bad.push_back({seed, 0, "preparing the checks", checker.status().message(), ""});
      log << fmt::format("seed {}: cannot check this recording: {}\n", seed, checker.status().message());
      break;
    }
    std::vector<StateSpec> specs = states_of(*rec, opts);
    std::stable_sort(specs.begin(), specs.end(),
                     [](const StateSpec& a, const StateSpec& b) { return a.crash_point < b.crash_point; });

    // The main thread materializes in crash-point order; workers check.
    std::mutex mu;
    std::condition_variable cv;
    std::deque<CrashState> queue;
    bool done = false;
    std::atomic<uint64_t> explored{0}, sub_states{0};
    std::vector<BadState> bad;
    auto worker = [&] {
      for (;;) {
        CrashState st;
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return done || !queue.empty(); });
          if (queue.empty()) return;
          st = std::move(queue.front());
          queue.pop_front();
        }
        cv.notify_all();
        CheckResult r = (*checker)->check(st);
        explored += 1 + r.sub_states;
        sub_states += r.sub_states;
        if (!r.error.empty()) {
          std::lock_guard lock(mu);
          bad.push_back({seed, st.spec.index, st.description, r.error, ""});
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 0; t < std::max(1, opts.threads); ++t) pool.emplace_back(worker);
    Materializer m(*rec);
    for (const StateSpec& spec : specs) {
      m.advance(spec.crash_point);
      CrashState st = m.build(spec);
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return queue.size() < 64; });
      queue.push_back(std::move(st));
      cv.notify_all();
    }
    {
      std::lock_guard lock(mu);
      done = true;
    }
    cv.notify_all();
    for (auto& t : pool) t.join();

    ++report.recordings;
    report.explored += explored.load();
    report.sub_states += sub_states.load();
    if (!bad.empty()) {
      std::string path;
      if (!opts.artifacts.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(opts.artifacts, ec);
        path = fmt::format("{}/{}-seed{}.rec", opts.artifacts, w.name(), seed);
        if (Status s = rec->save(path); !s.ok()) {
          log << "cannot save the recording: " << s.message() << "\n";
          path.clear();
        }
      }
      std::sort(bad.begin(), bad.end(),
                [](const BadState& a, const BadState& b) { return a.index < b.index; });
      for (auto& b : bad) b.recording = path;
      report.bad.insert(report.bad.end(), bad.begin(), bad.end());
    }
    log << fmt::format("{} seed {}: {} records, {} states explored, {} bad ({:.1f} s so far)\n", w.name(),
                       seed, rec->records.size(), explored.load(), bad.size(), elapsed());
  }
  report.too_few = report.explored < opts.min_states;
  log << fmt::format("{} recordings; {} states of the workload, {} of its recovery tool crashed mid-run\n",
                     report.recordings, report.explored - report.sub_states, report.sub_states);
  log << fmt::format("crash states explored: {}, bad: {}\n", report.explored, report.bad.size());
  for (const BadState& b : report.bad) {
    log << fmt::format("BAD: {} seed {} state {}: {}\n  state: {}\n", w.name(), b.seed, b.index, b.error,
                       b.description);
    if (!b.recording.empty()) log << "  replay: " << reproducer(opts, b.recording, b.index) << "\n";
  }
  if (report.too_few) {
    log << fmt::format("FAILED: only {} states explored before the time limit, {} required\n",
                       report.explored, opts.min_states);
  }
  return report;
}

Result<CheckResult> replay(const std::string& recording_path, uint64_t index, const ExploreOptions& opts,
                           const std::string& dump_dir, std::ostream& log) {
  auto rec = Recording::load(recording_path);
  if (!rec.ok()) return rec.status();
  const Workload* w = find_workload(rec->workload);
  if (w == nullptr) return Status::Error(EINVAL, "recording of unknown workload '" + rec->workload + "'");
  auto checker = w->checker(*rec);
  if (!checker.ok()) return checker.status();
  std::vector<StateSpec> specs = states_of(*rec, opts);
  if (index >= specs.size()) {
    return Status::Error(EINVAL, fmt::format("state {} does not exist: this recording has {} states with "
                                             "--per-recording {}",
                                             index, specs.size(), opts.per_recording));
  }
  const StateSpec spec = specs[index];
  Materializer m(*rec);
  m.advance(spec.crash_point);
  CrashState st = m.build(spec);
  log << fmt::format("{} seed {} state {}: {}\n", rec->workload, rec->seed, index, st.description);
  if (!dump_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(dump_dir, ec);
    for (size_t d = 0; d < st.devices.size(); ++d) {
      auto bytes = st.devices[d]->contents();
      std::ofstream f(fmt::format("{}/device-{}.img", dump_dir, d), std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    for (const auto& [path, bytes] : st.env->snapshot()) {
      std::string name = std::filesystem::path(path).filename().string();
      std::ofstream f(dump_dir + "/" + name, std::ios::binary | std::ios::trunc);
      f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    }
    log << "state written to " << dump_dir << "\n";
  }
  return (*checker)->check(st);
}

}  // namespace bowstack::crash
