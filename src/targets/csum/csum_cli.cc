// csum's verbs on the `bowstack` command: `bowstack csum verify IMAGE` here,
// the other tools in csum_tools_cli.cc, layout=integrity's halves in
// integrity_cli.cc; logic in csum_verify.cc, csum_tools.cc and
// integrity_volume.cc.
#include "targets/csum/csum_cli.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "cli/verb_registry.h"
#include "control/control_server.h"
#include "targets/csum/csum_report.h"
#include "targets/csum/csum_target.h"
#include "targets/csum/csum_verify.h"
#include "targets/csum/csum_volume_cli.h"

namespace bowstack::cli {
namespace {

using namespace bowstack::csum;

// Exit status: 0 every block verified, 1 mismatches or unverifiable blocks,
// 2 the volume cannot be verified at all.
int unusable(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 2;
}

int run_csum_verify(const CsumCliOptions& o) {
  auto places = csum_places(o, "csum verify");
  if (!places.ok()) return unusable(places.status().context());
  const CsumPlaces& p = places.value();
  const std::string image = p.data_name(), meta = p.md_name();
  // Shared locks: refused while a server holds either file (it may be
  // changing both), fine beside other readers.
  auto data = open_csum_leaf(p, p.data, LeafOpen{.read_only = true});
  if (!data.ok()) return unusable(data.status().context());
  if (p.layout == "integrity") return run_integrity_verify_on(data.value(), image, o.json);
  auto md = open_csum_leaf(p, *p.md, LeafOpen{.read_only = true});
  if (!md.ok()) return unusable(fmt::format("checksums: {}", md.status().context()));
  auto progress = progress_line("verifying", image, o.json);
  auto r = verify_volume(data.value(), md.value(), progress);
  if (!r.ok()) {
    const Status& s = r.status();
    if (s.code() == EMEDIUMTYPE)
      return unusable(fmt::format("'{}' is not csum metadata: {}", meta, s.context()));
    return unusable(fmt::format("'{}': {}", meta, why(s)));
  }
  const VerifyReport& v = r.value();
  if (o.json) {
    nlohmann::json j;
    j["image"] = image;
    j["metadata"] = meta;
    j["block_size"] = v.sb.layout.block_size;
    j["blocks"] = v.blocks;
    j["clean_shutdown"] = v.sb.clean();
    j["journalled"] = v.journalled;
    add_findings(&j, v.mismatches, v.unverifiable);
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_findings(v.mismatches, v.unverifiable);
    std::string unclean;
    if (!v.sb.clean()) {
      unclean =
          v.sb.mode == Mode::kJournal
              ? fmt::format(" (not closed cleanly: {} blocks in the journal are replayed at the next open)",
                            v.journalled)
          : v.sb.mode == Mode::kRebuild
              ? " (not closed cleanly: dirty regions are recomputed at the next open)"
              : " (not closed cleanly: either checksum of a block is accepted)";
    }
    std::printf("%s: %llu blocks of %u bytes verified, %zu mismatches, %zu unverifiable ranges%s\n",
                image.c_str(), static_cast<unsigned long long>(v.blocks), v.sb.layout.block_size,
                v.mismatches.size(), v.unverifiable.size(), unclean.c_str());
  }
  return v.clean() ? 0 : 1;
}

// True when the running server's csum node has a scrub running or paused.
bool scrub_in_progress(const ClientOptions& client) {
  auto reply = control_request(client.control, {{"cmd", "status"}});
  if (!reply.ok() || !reply->contains("layers")) return false;
  for (const auto& layer : (*reply)["layers"]) {
    if (layer.value("kind", std::string()) != "csum" || !layer.contains("scrub")) continue;
    const std::string state = layer["scrub"].value("state", std::string());
    return state == "running" || state == "paused";
  }
  return false;
}

// --layout on a verb; integrity needs no --metadata (its tags are in IMAGE).
void add_layout_option(CLI::App* verb, CsumCliOptions* o) {
  verb->add_option("--layout", o->layout,
                   "csum (checksums in a metadata file) or integrity (dm-integrity's format); with --table, "
                   "the csum node's")
      ->check(CLI::IsMember({"csum", "integrity"}))
      ->capture_default_str()
      ->each([o](const std::string&) { o->layout_given = true; });
}

// IMAGE and --metadata, or --table FILE: the table's one csum node, its
// data image and checksums files or RBD images (csum_volume_cli.h).
void add_volume_options(CLI::App* verb, CsumCliOptions* o, const char* metadata_help,
                        const char* image_help = "the data image") {
  CLI::Option* image = verb->add_option("IMAGE", o->image, image_help);
  CLI::Option* metadata = verb->add_option("--metadata", o->metadata, metadata_help);
  verb->add_option("--table", o->table,
                   "the table the image is served with: its csum node's data image and checksums (files or "
                   "RBD images)")
      ->excludes(image)
      ->excludes(metadata);
}

int run_integrity(const CsumCliOptions& o, bool format) {
  if (o.image.empty())
    return unusable(fmt::format("csum {} needs IMAGE or --table FILE", format ? "format" : "verify"));
  if (!o.metadata.empty())
    return unusable("--metadata does not apply to --layout integrity: its tags are in IMAGE");
  if (!format) return run_integrity_verify(o.image, o.json);
  IntegrityFormatOptions f;
  f.image = o.image;
  f.block_size = o.block_size;
  f.journal_sections = o.journal_sections;
  return run_integrity_format(f);
}

VerbRunner add_csum_verbs(CLI::App& app) {
  auto o = std::make_shared<CsumCliOptions>();
  CLI::App* cmd = app.add_subcommand("csum", "csum: offline tools for checksummed volumes");
  cmd->require_subcommand(1);
  CLI::App* verify = cmd->add_subcommand(
      "verify", "check every block of IMAGE against its checksum (exit 0 clean, 1 mismatches, 2 unusable)");
  add_volume_options(verify, o.get(), "the checksums (default: IMAGE.csum, as serve finds them)");
  verify->add_flag("--json", o->json, "print the report as JSON");
  add_layout_option(verify, o.get());
  verify->footer(
      "Examples:\n  bowstack csum verify disk.img\n  bowstack csum verify --json disk.img\n"
      "  bowstack csum verify --layout integrity disk.img\n"
      "  bowstack csum verify --table t.json            # e.g. csum over an RBD image");

  CLI::App* format = cmd->add_subcommand(
      "format", "make checksums for the data IMAGE holds now, accepting it as correct (server stopped)");
  add_volume_options(format, o.get(), "where the checksums go (default: IMAGE.csum)");
  format->add_option("--block-size", o->block_size, "bytes per checksummed block: 512, 1024, 2048 or 4096")
      ->check(CLI::IsMember({512, 1024, 2048, 4096}));
  format->add_flag("--force", o->force, "replace metadata that is already there (csum or not)");
  format->add_flag("--json", o->json, "print the report as JSON");
  format->add_option(
      "--journal-size", o->journal_size,
      "give the volume a journal of this size (e.g. 32M, at least 2M) and record mode journal");
  add_layout_option(format, o.get());
  format->add_option("--journal-sections", o->journal_sections,
                     "layout integrity: dm-integrity journal sections (default: the kernel's for the size)");
  format->footer(
      "layout csum keeps the data and accepts it; layout integrity makes IMAGE a new dm-integrity volume "
      "(its data is lost). With --table the table says where (an RBD image's checksums are created to "
      "fit);\nthe options still come from this command line.\nExamples:\n  bowstack csum format disk.img && "
      "bowstack serve disk.img --target csum\n  truncate -s 1G new.img && bowstack csum format --layout "
      "integrity new.img\n  bowstack csum format --table t.json && bowstack serve --table t.json");

  CLI::App* rebuild = cmd->add_subcommand(
      "rebuild", "recompute every checksum from the current data, accepting it (server stopped)");
  add_volume_options(rebuild, o.get(), "the checksums (default: IMAGE.csum)");
  rebuild->add_flag("--json", o->json, "print the report as JSON");
  rebuild->footer(
      "Every block's current data becomes correct, mismatching or not: run 'csum verify' first to see what "
      "this accepts.\nExamples:\n  bowstack csum rebuild disk.img\n  bowstack csum rebuild --table t.json");

  CLI::App* rewrite = cmd->add_subcommand(
      "rewrite",
      "accept one block's current data as correct (offline with IMAGE, else on the running server)");
  add_volume_options(rewrite, o.get(), "the checksums (default: IMAGE.csum)",
                     "the data image (server stopped); omit (and --table) to ask the running server");
  rewrite->add_option("--block", o->block, "the block number (as 'csum verify' names it)")->required();
  add_client_options(rewrite, &o->client);
  rewrite->footer(
      "Examples:\n  bowstack csum rewrite --block 300 disk.img\n  bowstack csum rewrite --block 300 --table "
      "t.json\n  bowstack csum rewrite --block 300            # the running server");

  CLI::App* dump = cmd->add_subcommand("dump", "print what the checksum metadata says (writes nothing)");
  add_volume_options(dump, o.get(), "the checksums (default: IMAGE.csum)");
  dump->add_option("--block", o->block, "show this block's checksums and whether its data matches")
      ->each([o](const std::string&) { o->block_given = true; });
  dump->add_flag("--json", o->json, "print JSON");
  dump->footer(
      "Examples:\n  bowstack csum dump disk.img\n  bowstack csum dump --block 300 disk.img\n"
      "  bowstack csum dump --table t.json");

  CLI::App* mismatches = cmd->add_subcommand(
      "mismatches", "running server: the blocks reads and scrub found bad (exit 1 if any)");
  add_client_options(mismatches, &o->client);

  CLI::App* scrub =
      cmd->add_subcommand("scrub", "running server: start, stop, pause or resume a scrub, or set its rate");
  auto action = std::make_shared<std::string>("start");
  auto rate = std::make_shared<std::string>();
  scrub->add_option("ACTION", *action, "start (default), stop, pause or resume")
      ->check(CLI::IsMember({"start", "stop", "pause", "resume"}));
  scrub->add_option("--rate", *rate, "bytes per second, e.g. 100M (0: unlimited)");
  add_client_options(scrub, &o->client);
  scrub->footer("Examples:\n  bowstack csum scrub\n  bowstack csum scrub --rate 200M\n  bowstack status");
  return [=]() -> int {
    if (!*cmd) return -1;
    // With --table, the table's csum node decides the layout (csum_volume_cli.h).
    const bool integrity = o->table.empty() && o->layout == "integrity";
    if (*verify) return integrity ? run_integrity(*o, false) : run_csum_verify(*o);
    if (*format) return integrity ? run_integrity(*o, true) : run_csum_format(*o);
    if (*rebuild) return run_csum_rebuild(*o);
    if (*rewrite) return run_csum_rewrite(*o);
    if (*dump) return run_csum_dump(*o);
    if (*mismatches) return run_csum_mismatches(*o);
    if (*scrub) {
      if (!rate->empty()) {
        if (int rc = run_message(o->client, "scrub_rate=" + *rate, "csum"); rc != 0) return rc;
        // "--rate" alone changes a pass in progress, or starts one.
        if (scrub->count("ACTION") == 0 && scrub_in_progress(o->client)) return 0;
      }
      return run_message(o->client, "scrub " + *action, "csum");
    }
    return 1;
  };
}

const VerbRegistration kCsumVerbs("csum", &add_csum_verbs);

}  // namespace
}  // namespace bowstack::cli
