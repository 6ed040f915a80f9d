// `bowstack`: serve a stack of block-device targets over NBD, and talk to a
// running server through its control socket.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/verbs.h"

namespace {

void add_client_options(CLI::App* verb, bowstack::cli::ClientOptions* opts) {
  verb->add_option("--control", opts->control, "control socket of the running server")->capture_default_str();
  verb->add_flag("--json", opts->json, "print the reply as JSON");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bowstack::cli;
  CLI::App app{"bowstack: a userspace device mapper served over NBD"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  bowstack serve                               # serve ./bowstack.img (created, 1 GiB) on "
      "127.0.0.1:10809\n"
      "  bowstack serve disk.img --unix /tmp/nbd.sock --target linear:offset=1M\n"
      "  bowstack status\n"
      "Run 'bowstack VERB --help' for a verb's options.");

  ServeOptions serve;
  CLI::App* serve_cmd = app.add_subcommand("serve", "serve an image (file or block device) over NBD");
  serve_cmd->add_option("IMAGE", serve.image,
                        "image file or block device (default: ./bowstack.img, created with 1 GiB if absent)");
  serve_cmd->add_option("--create", serve.create_size,
                        "create IMAGE with SIZE bytes (K/M/G/T suffixes) if it does not exist");
  serve_cmd->add_option("--listen", serve.listen,
                        "TCP HOST:PORT to listen on (default 127.0.0.1:10809 "
                        "unless --unix is given; repeatable)");
  serve_cmd->add_option("--unix", serve.unix_path, "Unix socket path to listen on");
  serve_cmd->add_option("--control", serve.control, "control socket path")->capture_default_str();
  serve_cmd->add_option("--target", serve.targets,
                        "stack a target: NAME[:KEY=VALUE,...]; the first sits on the image (repeatable)");
  serve_cmd->add_option("--table", serve.table,
                        "serve the stack a table file describes (JSON, docs/tables.md; '-' reads stdin) "
                        "instead of IMAGE/--target");
  serve_cmd->add_option("--export-name", serve.export_name, "NBD export name")->capture_default_str();
  serve_cmd->add_flag("--read-only", serve.read_only, "export read-only; open the image read-only");
  serve_cmd->add_flag("--direct", serve.direct, "open the image with O_DIRECT (bypass the page cache)");
  serve_cmd->add_option("--threads", serve.threads, "worker threads per NBD connection")
      ->capture_default_str();
  serve_cmd->add_option("--log-level", serve.log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  serve_cmd->footer(
      "Examples:\n"
      "  bowstack serve                                    # ./bowstack.img, created if absent\n"
      "  bowstack serve disk.img --create 10G --listen 127.0.0.1:10809\n"
      "  bowstack serve /dev/sdb --unix /run/sdb.sock --control /run/sdb.ctl --read-only\n"
      "  bowstack serve disk.img --target linear:offset=1M,length=512M\n"
      "  bowstack serve --table examples/era-over-bow.json\n"
      "Attach: nbdfuse DIR nbd://127.0.0.1:10809 & losetup -f --show DIR/nbd; or qemu-system ... "
      "-drive file=nbd://127.0.0.1:10809,format=raw\n"
      "Stop with SIGTERM or Ctrl-C: in-flight requests drain and the image is flushed.\n"
      "Targets: run 'bowstack targets'.");

  ClientOptions client;
  CLI::App* status_cmd = app.add_subcommand("status", "show a running server's state and counters");
  add_client_options(status_cmd, &client);
  status_cmd->footer(
      "Examples:\n"
      "  bowstack status\n"
      "  bowstack status --control /run/sdb.ctl --json");

  std::string message_text, message_target;
  CLI::App* message_cmd =
      app.add_subcommand("message", "send a target-specific message (like dmsetup message)");
  message_cmd->add_option("TEXT", message_text, "the message")->required();
  message_cmd->add_option("--target", message_target, "deliver to the topmost layer of this kind");
  add_client_options(message_cmd, &client);
  message_cmd->footer(
      "Examples:\n"
      "  bowstack message checkpoint --target bow\n"
      "  bowstack message 'commit' --control /run/sdb.ctl");

  CLI::App* suspend_cmd = app.add_subcommand("suspend", "stop new I/O and wait until in-flight I/O drains");
  add_client_options(suspend_cmd, &client);
  suspend_cmd->footer(
      "Example:\n  bowstack suspend && cp --sparse=always disk.img backup.img && bowstack resume");
  CLI::App* resume_cmd = app.add_subcommand("resume", "let I/O flow again after suspend");
  add_client_options(resume_cmd, &client);
  resume_cmd->footer("Example:\n  bowstack resume --control /run/sdb.ctl");

  CLI::App* checkpoint_cmd =
      app.add_subcommand("checkpoint", "bow: take the checkpoint (TRIM -> CHECKPOINT) on a running server");
  add_client_options(checkpoint_cmd, &client);
  checkpoint_cmd->footer(
      "Example (after fstrim of the mounted filesystem has told bow where the free space is):\n"
      "  bowstack checkpoint --control /run/disk.ctl");
  CLI::App* commit_cmd =
      app.add_subcommand("commit", "bow: keep the changes (CHECKPOINT -> COMMITTED) on a running server");
  add_client_options(commit_cmd, &client);
  commit_cmd->footer("Example:\n  bowstack commit --control /run/disk.ctl");

  RestoreCliOptions restore;
  CLI::App* restore_cmd =
      app.add_subcommand("restore", "bow: roll an image back to its checkpoint, offline (server stopped)");
  restore_cmd->add_option("IMAGE", restore.image, "image file or block device")->required();
  restore_cmd->add_flag("--dry-run", restore.dry_run, "validate the checkpoint log only; write nothing");
  restore_cmd->add_flag("--roll-forward", restore.roll_forward,
                        "if the log is invalid, keep all changes and put block 0 back (Android's fallback)");
  restore_cmd->add_option("--stop-after-writes", restore.stop_after_writes)->group("");  // test hook
  restore_cmd->footer(
      "Validates everything first (bounds, sizes, sequence numbers, counts, checksums); if anything is wrong "
      "it\n"
      "writes nothing and says what. Safe to re-run after an interruption: it continues where it stopped.\n"
      "Examples:\n"
      "  bowstack restore --dry-run disk.img\n"
      "  bowstack restore disk.img\n"
      "  bowstack restore --roll-forward disk.img    # log damaged: keep the changes instead");
  std::string inspect_image;
  bool inspect_json = false;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "bow: print an image's checkpoint log chain");
  inspect_cmd->add_option("IMAGE", inspect_image, "image file or block device")->required();
  inspect_cmd->add_flag("--json", inspect_json, "print JSON");
  inspect_cmd->footer(
      "Examples:\n  bowstack inspect disk.img\n  bowstack inspect --json disk.img | jq .entries");

  EraCliOptions era;
  CLI::App* era_cmd =
      app.add_subcommand("era", "era: offline metadata tools and messages to a running era target");
  era_cmd->require_subcommand(1);
  era_cmd->footer(
      "Examples:\n"
      "  bowstack serve disk.img --target era:metadata=disk.era   # then, on the running server:\n"
      "  bowstack era checkpoint                                  # start a new era (prints it)\n"
      "  bowstack era invalidate disk.era --written-since 3       # blocks written since era 3\n"
      "  bowstack era export disk.era disk.img --since 3 --output changes.bin   # server stopped\n"
      "  bowstack era apply --input changes.bin copy.img");
  auto era_uint = CLI::Range(int64_t{0}, int64_t{UINT32_MAX});
  CLI::App* era_dump =
      era_cmd->add_subcommand("dump", "print era metadata as XML (thin-provisioning-tools' era_dump)");
  era_dump->add_option("METADATA", era.metadata, "metadata file or device")->required();
  era_dump->add_flag("--json", era.json, "print JSON instead of XML");
  era_dump->add_flag("--logical", era.logical,
                     "fold the writesets into the era array (the era each block was "
                     "last written in)");
  era_dump->add_flag("--compact", era.compact, "writesets as <marked> runs instead of one <bit> per block");
  era_dump->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot (for a live target)");
  era_dump->add_option("-o,--output", era.output, "write to FILE instead of stdout");
  era_dump->footer(
      "Examples:\n  bowstack era dump disk.era > era.xml\n  bowstack era dump --logical --json disk.era");
  CLI::App* era_inval =
      era_cmd->add_subcommand("invalidate", "list the blocks written since an era (era_invalidate)");
  era_inval->add_option("METADATA", era.metadata, "metadata file or device")->required();
  era_inval->add_option("--written-since", era.since, "era N: blocks written in era N or later")
      ->required()
      ->check(era_uint);
  era_inval->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot (for a live target)");
  era_inval->add_option("-o,--output", era.output, "write to FILE instead of stdout");
  era_inval->footer("Example:\n  bowstack era invalidate disk.era --written-since 4");
  CLI::App* era_check =
      era_cmd->add_subcommand("check", "verify era metadata; exit 1 on any damage (era_check)");
  era_check->add_option("METADATA", era.metadata, "metadata file or device")->required();
  era_check->add_flag("--json", era.json, "print JSON");
  era_check->footer("Example:\n  bowstack era check disk.era");
  CLI::App* era_restore = era_cmd->add_subcommand("restore", "write era metadata from XML (era_restore)");
  era_restore->add_option("-i,--input", era.input, "XML as written by 'era dump'")->required();
  era_restore->add_option("METADATA", era.metadata, "metadata file (created or grown) or device")->required();
  era_restore->footer("Example:\n  bowstack era restore --input era.xml disk.era");
  CLI::App* era_export = era_cmd->add_subcommand(
      "export", "write the blocks changed since an era to a file (incremental backup)");
  era_export->add_option("METADATA", era.metadata, "metadata file or device")->required();
  era_export->add_option("IMAGE", era.image, "the device the metadata tracks (file or block device)")
      ->required();
  era_export->add_option("--since", era.since, "era N: blocks written in era N or later")
      ->required()
      ->check(era_uint);
  era_export->add_option("-o,--output", era.output, "the export file")->required();
  era_export->add_flag("--metadata-snapshot", era.snapshot, "read the metadata snapshot");
  era_export->footer(
      "Run it with the server stopped (or the device otherwise quiet): it reads IMAGE directly.\n"
      "Example:\n  bowstack era export disk.era disk.img --since 4 --output changes.bin");
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

  bool targets_json = false;
  CLI::App* targets_cmd = app.add_subcommand("targets", "list the targets, their params and device slots");
  targets_cmd->add_flag("--json", targets_json, "print JSON");
  targets_cmd->footer("Examples:\n  bowstack targets\n  bowstack targets --json | jq '.[].slots'");

  CLI::App* table_cmd =
      app.add_subcommand("table", "print the running server's table (with --json, what serve --table reads)");
  add_client_options(table_cmd, &client);
  table_cmd->footer(
      "Examples:\n"
      "  bowstack table\n"
      "  bowstack table --json > live.json   # bowstack serve --table live.json rebuilds the same stack");

  std::string reload_file;
  bool reload_noflush = false;
  CLI::App* reload_cmd = app.add_subcommand(
      "reload", "replace the running server's table while clients stay connected (dmsetup load + resume)");
  reload_cmd->add_option("FILE", reload_file, "the new table (JSON; '-' reads stdin)")->required();
  reload_cmd->add_flag("--noflush", reload_noflush,
                       "hold new I/O while in-flight I/O drains, without flushing the nodes that stay");
  add_client_options(reload_cmd, &client);
  reload_cmd->footer(
      "Nodes whose target, params and children are unchanged keep their state (a bow checkpoint, era's\n"
      "current era). The size must not change. On any error the old table serves on.\n"
      "Relative paths in FILE are relative to the server's working directory.\n"
      "Examples:\n"
      "  bowstack table --json > t.json; edit t.json; bowstack reload t.json\n"
      "  bowstack reload examples/era.json --noflush");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (*serve_cmd) return run_serve(serve);
  if (*status_cmd) return run_status(client);
  if (*message_cmd) return run_message(client, message_text, message_target);
  if (*suspend_cmd) return run_suspend(client, true);
  if (*resume_cmd) return run_suspend(client, false);
  if (*targets_cmd) return run_targets(targets_json);
  if (*table_cmd) return run_table(client);
  if (*reload_cmd) return run_reload(client, reload_file, reload_noflush);
  if (*checkpoint_cmd) return run_message(client, "checkpoint", "bow");
  if (*restore_cmd) return run_restore(restore);
  if (*inspect_cmd) return run_inspect(inspect_image, inspect_json);
  if (*commit_cmd) return run_message(client, "commit", "bow");
  if (*era_cmd) {
    if (*era_dump) return run_era_dump(era);
    if (*era_inval) return run_era_invalidate(era);
    if (*era_check) return run_era_check(era);
    if (*era_restore) return run_era_restore(era);
    if (*era_export) return run_era_export(era);
    if (*era_apply) return run_era_apply(era);
    if (*era_checkpoint) return run_message(client, "checkpoint", "era");
    if (*era_take) return run_message(client, "take_metadata_snap", "era");
    if (*era_drop) return run_message(client, "drop_metadata_snap", "era");
  }
  return 1;
}
