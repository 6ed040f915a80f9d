// era's verbs on the `bowstack` command: `bowstack era ...`, the offline
// metadata tools and the messages to a running era target (registered, see
// cli/verb_registry.h).
#include "targets/era/era_cli.h"

#include <cstdint>
#include <memory>

#include "cli/verb_registry.h"

namespace bowstack::cli {
namespace {

VerbRunner add_era_verbs(CLI::App& app) {
  struct Options {
    ClientOptions client;
    EraCliOptions era;
  };
  auto o = std::make_shared<Options>();
  ClientOptions& client = o->client;
  EraCliOptions& era = o->era;
  CLI::App* era_cmd =
      app.add_subcommand("era", "era: offline metadata tools and messages to a running era target");
  era_cmd->require_subcommand(1);
  era_cmd->footer(
      "Examples:\n"
      "  bowstack serve disk.img --target era:metadata=disk.era   # then, on the running server:\n"
      "  bowstack era checkpoint                                  # start a new era (prints it)\n"
      "  bowstack era invalidate disk.era --written-since 3       # blocks written since era 3\n"
      "  bowstack era export disk.era disk.img --since 3 --output changes.bin   # server stopped\n"
      "  bowstack era apply --input changes.bin copy.img\n"
      "  bowstack era invalidate --table t.json --written-since 3   # e.g. era over an RBD image");
  auto era_uint = CLI::Range(int64_t{0}, int64_t{UINT32_MAX});
  // METADATA, or --table FILE: the metadata (and the data image) of the
  // table's one era node, files or RBD images.
  auto add_metadata = [&era](CLI::App* verb, const char* help) {
    CLI::Option* path = verb->add_option("METADATA", era.metadata, help);
    verb->add_option("--table", era.table,
                     "the table the image is served with: its era node's metadata (a file or an RBD image)")
        ->excludes(path);
    return path;
  };
  CLI::App* era_dump =
      era_cmd->add_subcommand("dump", "print era metadata as XML (thin-provisioning-tools' era_dump)");
  add_metadata(era_dump, "metadata file or device");
  era_dump->add_flag("--json", era.json, "print JSON instead of XML");
  era_dump->add_flag("--logical", era.logical,
                     "fold the writesets into the era array (the era each block was "
                     "last written in)");
  era_dump->add_flag("--compact", era.compact, "writesets as <marked> runs instead of one <bit> per block");
  era_dump->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot (for a live target)");
  era_dump->add_option("-o,--output", era.output, "write to FILE instead of stdout");
  era_dump->footer(
      "Examples:\n  bowstack era dump disk.era > era.xml\n  bowstack era dump --logical --json disk.era\n"
      "  bowstack era dump --table t.json > era.xml");
  CLI::App* era_inval =
      era_cmd->add_subcommand("invalidate", "list the blocks written since an era (era_invalidate)");
  add_metadata(era_inval, "metadata file or device");
  era_inval->add_option("--written-since", era.since, "era N: blocks written in era N or later")
      ->required()
      ->check(era_uint);
  era_inval->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot (for a live target)");
  era_inval->add_option("-o,--output", era.output, "write to FILE instead of stdout");
  era_inval->footer(
      "Examples:\n  bowstack era invalidate disk.era --written-since 4\n"
      "  bowstack era invalidate --table t.json --written-since 4");
  CLI::App* era_check =
      era_cmd->add_subcommand("check", "verify era metadata; exit 1 on any damage (era_check)");
  add_metadata(era_check, "metadata file or device");
  era_check->add_flag("--json", era.json, "print JSON");
  era_check->footer("Examples:\n  bowstack era check disk.era\n  bowstack era check --table t.json");
  CLI::App* era_restore = era_cmd->add_subcommand("restore", "write era metadata from XML (era_restore)");
  era_restore->add_option("-i,--input", era.input, "XML as written by 'era dump'")->required();
  add_metadata(era_restore, "metadata file (created or grown) or device");
  era_restore->footer(
      "Examples:\n  bowstack era restore --input era.xml disk.era\n"
      "  bowstack era restore --input era.xml --table t.json   # an RBD image is created to fit");
  CLI::App* era_export = era_cmd->add_subcommand(
      "export", "write the blocks changed since an era to a file (incremental backup)");
  CLI::Option* export_metadata = era_export->add_option("METADATA", era.metadata, "metadata file or device");
  CLI::Option* export_image =
      era_export->add_option("IMAGE", era.image, "the device the metadata tracks (file or block device)");
  era_export
      ->add_option("--table", era.table,
                   "the table the image is served with: its era node's metadata and data image (era directly "
                   "over a file or an RBD image)")
      ->excludes(export_metadata)
      ->excludes(export_image);
  era_export->add_option("--since", era.since, "era N: blocks written in era N or later")
      ->required()
      ->check(era_uint);
  era_export->add_option("-o,--output", era.output, "the export file")->required();
  era_export->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot");
  era_export->footer(
      "Run it with the server stopped (or the device otherwise quiet): it reads IMAGE directly.\n"
      "Examples:\n  bowstack era export disk.era disk.img --since 4 --output changes.bin\n"
      "  bowstack era export --table t.json --since 4 --output changes.bin");
  CLI::App* era_apply = era_cmd->add_subcommand("apply", "replay an export onto a copy of the device");
  era_apply->add_option("-i,--input", era.input, "the export file")->required();
  era_apply->add_option("IMAGE", era.image, "the copy to update (same size as the exported device)")
      ->required();
  era_apply->add_flag("--dry-run", era.dry_run, "validate the export against IMAGE; write nothing");
  era_apply->footer(
      "Validates the whole file (checksums, order, sizes) before writing anything.\n"
      "Example:\n  bowstack era apply --input changes.bin backup.img");
  CLI::App* era_checkpoint = era_cmd->add_subcommand("checkpoint", "running server: start a new era");
  add_client_options(era_checkpoint, &client);
  CLI::App* era_take =
      era_cmd->add_subcommand("take-metadata-snap", "running server: hold a metadata snapshot");
  add_client_options(era_take, &client);
  CLI::App* era_drop =
      era_cmd->add_subcommand("drop-metadata-snap", "running server: drop the metadata snapshot");
  add_client_options(era_drop, &client);

  return [=]() -> int {
    if (!*era_cmd) return -1;
    if (*era_dump) return run_era_dump(o->era);
    if (*era_inval) return run_era_invalidate(o->era);
    if (*era_check) return run_era_check(o->era);
    if (*era_restore) return run_era_restore(o->era);
    if (*era_export) return run_era_export(o->era);
    if (*era_apply) return run_era_apply(o->era);
    if (*era_checkpoint) return run_message(o->client, "checkpoint", "era");
    if (*era_take) return run_message(o->client, "take_metadata_snap", "era");
    if (*era_drop) return run_message(o->client, "drop_metadata_snap", "era");
    return 1;
  };
}

const VerbRegistration kEraVerbs("era", &add_era_verbs);

}  // namespace
}  // namespace bowstack::cli
