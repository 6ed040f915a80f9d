// Offline bow tools: `bowstack restore` and `bowstack inspect`.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/offline_table.h"
#include "cli/report.h"
#include "cli/verbs.h"
#include "core/file_device.h"
#include "core/parse.h"
#include "core/rbd_env.h"
#include "targets/bow/bow_cli.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/bow_restore.h"
#include "targets/bow/resume_journal.h"

namespace bowstack::cli {

namespace {

// A one-line progress bar on stderr, only when it is a terminal.
class ProgressBar {
 public:
  ProgressBar() : tty_(::isatty(2) == 1) {}
  void update(uint64_t done, uint64_t total) {
    if (!tty_ || total == 0) return;
    int pct = static_cast<int>(done * 100 / total);
    if (pct == last_) return;
    last_ = pct;
    int filled = pct / 4;
    std::fprintf(stderr, "\r[%.*s%*s] %3d%% %llu/%llu entries", filled, "#########################",
                 25 - filled, "", pct, static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total));
    std::fflush(stderr);
  }
  ~ProgressBar() {
    if (tty_ && last_ >= 0) std::fprintf(stderr, "\n");
  }

 private:
  bool tty_;
  int last_ = -1;
};

std::string journal_path(const std::string& image) { return image + ".bowmeta"; }

bow::JournalRef journal_of(const std::string& image) {
  return bow::JournalRef{.env = Env::posix(), .path = journal_path(image)};
}

}  // namespace

namespace {

// What restore works on: the data device, its name for messages, and the
// resume journal consulted (and removed once the checkpoint is over).
struct RestoreTarget {
  std::shared_ptr<BlockDevice> dev;
  std::string name;
  bow::JournalRef journal;
};

// The bow node of a table (cli/offline_table.h): its data leaf, opened
// (`read_only` for a dry run or inspect), and the journal the table names.
Result<RestoreTarget> restore_target_of_table(const std::string& file, bool read_only,
                                              std::string_view tool) {
  auto t = load_table_target(file, TableTargetQuery{.target = "bow", .need_data_leaf = true, .tool = tool});
  if (!t.ok()) return t.status();
  auto dev = open_table_leaf(*t->data, LeafOpen{.read_only = read_only});
  if (!dev.ok()) return dev.status();
  RestoreTarget r{.dev = std::move(dev.value()), .name = t->data->leaf_name()};
  if (t->side) {
    r.journal = bow::JournalRef{.env = t->side->kind == TableNode::Kind::kRbd ? rbd_env() : Env::posix(),
                                .path = t->side->side_path()};
  }
  return r;
}

Result<RestoreTarget> restore_target(const RestoreCliOptions& opts) {
  if (!opts.table.empty()) return restore_target_of_table(opts.table, opts.dry_run, "restore");
  if (opts.image.empty()) return Status::Error(EINVAL, "restore needs IMAGE or --table FILE");
  // Locked: exclusive to roll back, shared for a dry run; a served image is refused.
  auto dev = FileDevice::open(opts.image, FileDeviceOptions{.read_only = opts.dry_run, .lock = true});
  if (!dev.ok()) return dev.status();
  return RestoreTarget{dev.value(), opts.image, journal_of(opts.image)};
}

void remove_journal(const bow::JournalRef& journal, bool warn) {
  if (journal.path.empty()) return;
  if (Status s = bow::ResumeJournal::remove(journal.env, journal.path); !s.ok() && warn) {
    std::fprintf(stderr, "bowstack: warning: cannot remove %s: %s\n", journal.path.c_str(),
                 s.message().c_str());
  }
}

}  // namespace

int run_restore(const RestoreCliOptions& opts) {
  auto target = restore_target(opts);
  if (!target.ok()) {
    const Status& s = target.status();
    return fail(s.code() == EBUSY || s.code() == EINVAL ? s.context() : s.message());
  }
  const std::string& name = target->name;
  BlockDevice& dev = *target->dev;
  bow::RestoreOptions ro;
  ro.dry_run = opts.dry_run;
  ro.roll_forward = opts.roll_forward;
  ro.stop_after_writes = opts.stop_after_writes;
  ro.journal = target->journal;
  ProgressBar bar;
  ro.progress = [&](uint64_t done, uint64_t total) { bar.update(done, total); };
  auto r = bow::restore(dev, ro);
  if (!r.ok()) {
    if (r.status().code() == ECANCELED) return fail(r.status().context());
    return fail(fmt::format("restore of '{}' failed: {}", name,
                            r.status().context().empty() ? r.status().message() : r.status().context()));
  }
  using O = bow::RestoreReport::Outcome;
  switch (r->outcome) {
    case O::kNoCheckpoint:
      if (r->stale_journal && !opts.dry_run) remove_journal(target->journal, false);
      std::printf("no checkpoint on %s; nothing to do\n", name.c_str());
      return 0;
    case O::kValidated:
      if (r->continued_interrupted) {
        std::printf(
            "%s holds an interrupted restore (block size %u, %llu log blocks, %llu entries left, "
            "checksums verified); running restore will finish it\n",
            name.c_str(), r->block_size, static_cast<unsigned long long>(r->log_blocks),
            static_cast<unsigned long long>(r->entries));
      } else {
        std::printf(
            "checkpoint log on %s is valid: block size %u, %llu log blocks, %llu entries, %s saved; "
            "nothing written\n",
            name.c_str(), r->block_size, static_cast<unsigned long long>(r->log_blocks),
            static_cast<unsigned long long>(r->entries), format_size(r->bytes).c_str());
      }
      return 0;
    case O::kRestored:
      // The checkpoint is over: its resume journal would only mislead.
      remove_journal(target->journal, true);
      std::printf("%s: restored to the checkpoint (%llu log blocks, %llu entries, %s copied back%s)\n",
                  name.c_str(), static_cast<unsigned long long>(r->log_blocks),
                  static_cast<unsigned long long>(r->entries), format_size(r->bytes).c_str(),
                  r->continued_interrupted ? ", finishing an interrupted restore" : "");
      return 0;
    case O::kRolledForward:
      remove_journal(target->journal, false);
      std::printf(
          "%s: the checkpoint log is invalid (%s); rolled forward: all changes kept, block 0 put back\n",
          name.c_str(), r->validation_error.c_str());
      return 0;
  }
  return 1;
}

int run_inspect(const InspectCliOptions& opts) {
  if (opts.table.empty() && opts.image.empty()) return fail("inspect needs IMAGE or --table FILE");
  // A live bow rewrites block 0 and its log while serving: reading them
  // then could show a log that never existed. Refuse, and say where the
  // live state is.
  auto target = opts.table.empty() ? restore_target(RestoreCliOptions{.image = opts.image, .dry_run = true})
                                   : restore_target_of_table(opts.table, true, "inspect");
  if (!target.ok() && target.status().code() == EBUSY) {
    return fail(target.status().context() +
                " (a running server shows its checkpoint with 'bowstack status')");
  }
  if (!target.ok()) {
    const Status& s = target.status();
    return fail(s.code() == EINVAL ? s.context() : s.message());
  }
  const std::string& image = target->name;
  const bool json = opts.json;
  // How to run restore on the same thing.
  const std::string restore_args = opts.table.empty() ? image : "--table " + opts.table;
  // restore's own check decides, so that inspect never calls restorable
  // what restore would refuse, or the other way round.
  auto checked = bow::check_restore(*target->dev, target->journal);
  if (!checked.ok()) return fail(fmt::format("{}: {}", image, checked.status().message()));
  const bow::RestoreCheck& c = checked.value();
  const bool wob = c.state == bow::ProbeResult::kInterruptedRestore;
  nlohmann::json j;
  j["image"] = image;
  j["state"] = c.state == bow::ProbeResult::kNoCheckpoint ? "none"
               : wob                                      ? "interrupted-restore"
                                                          : "checkpoint";
  if (!c.problem.ok()) {
    j["valid"] = false;
    j["error"] = c.problem.context();
    if (json) std::printf("%s\n", j.dump(2).c_str());
    switch (c.state) {
      case bow::ProbeResult::kNoCheckpoint:
        return fail(fmt::format("{}: {}", image, c.problem.context()));
      case bow::ProbeResult::kInterruptedRestore:
        return fail(fmt::format("{}: an interrupted restore (magic WOB) that restore cannot finish: {}",
                                image, c.problem.context()));
      case bow::ProbeResult::kCheckpoint:
        return fail(fmt::format("{}: invalid checkpoint log: {}", image, c.problem.context()));
    }
  }
  if (c.state == bow::ProbeResult::kNoCheckpoint) {
    if (json) {
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s: no checkpoint log\n", image.c_str());
    }
    return 0;
  }
  const bow::LogChain& chain = c.chain;
  j["valid"] = true;
  j["block_size"] = chain.block_size;
  j["sector0"] = chain.sector0;
  auto& blocks = j["log_blocks"];
  blocks = nlohmann::json::array();
  for (const auto& b : chain.blocks) {
    nlohmann::json jb{{"sequence", b.header.sequence},
                      {"count", b.header.count},
                      {"sector0", b.header.sector0},
                      {"header_size", b.header.header_size}};
    auto& je = jb["entries"];
    je = nlohmann::json::array();
    for (const auto& e : b.entries) {
      je.push_back({{"source", e.source}, {"dest", e.dest}, {"size", e.size}, {"checksum", e.checksum}});
    }
    blocks.push_back(std::move(jb));
  }
  j["entries"] = c.entries();
  j["bytes"] = c.bytes();
  if (wob) j["entries_left"] = c.entries();
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (wob) {
    std::printf(
        "%s: an interrupted restore (magic WOB), block size %u, %zu log blocks, %llu entries left, "
        "checksums verified; run 'bowstack restore %s' to finish it\n",
        image.c_str(), chain.block_size, chain.blocks.size(), static_cast<unsigned long long>(c.entries()),
        restore_args.c_str());
  } else {
    std::printf("%s: checkpoint log, block size %u, live block 0 at sector %llu\n", image.c_str(),
                chain.block_size, static_cast<unsigned long long>(chain.sector0));
    std::printf("%zu log blocks, %llu entries, %s saved; checksums verified\n", chain.blocks.size(),
                static_cast<unsigned long long>(c.entries()), format_size(c.bytes()).c_str());
  }
  for (auto it = chain.blocks.rbegin(); it != chain.blocks.rend(); ++it) {
    std::printf("log block %u: %u entries%s, sector0 %llu\n", it->header.sequence, it->header.count,
                wob && it == chain.blocks.rbegin() ? " left" : "",
                static_cast<unsigned long long>(it->header.sector0));
    for (size_t i = 0; i < it->entries.size(); ++i) {
      const auto& e = it->entries[i];
      std::printf("  %4zu  source %12llu  dest %12llu  size %8u  checksum %08x%s\n", i,
                  static_cast<unsigned long long>(e.source), static_cast<unsigned long long>(e.dest), e.size,
                  e.checksum,
                  i == 0 ? (it->header.sequence == 0 ? "  (block 0)" : "  (previous log block)") : "");
    }
  }
  return 0;
}

}  // namespace bowstack::cli
