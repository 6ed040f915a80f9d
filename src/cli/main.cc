// `bowstack`: serve a stack of block-device targets over NBD, and talk to a
// running server through its control socket.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/verbs.h"

namespace {

void add_client_options(CLI::App* verb, bowstack::cli::ClientOptions* opts) {
  verb->add_option("--control", opts->control, "control socket of the running server")
      ->capture_default_str();
  verb->add_flag("--json", opts->json, "print the reply as JSON");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bowstack::cli;
  CLI::App app{"bowstack: a userspace device mapper served over NBD"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  bowstack serve                               # serve ./bowstack.img (created, 1 GiB) on 127.0.0.1:10809\n"
      "  bowstack serve disk.img --unix /tmp/nbd.sock --target linear:offset=1M\n"
      "  bowstack status\n"
      "Run 'bowstack VERB --help' for a verb's options.");

  ServeOptions serve;
  CLI::App* serve_cmd = app.add_subcommand("serve", "serve an image (file or block device) over NBD");
  serve_cmd->add_option("IMAGE", serve.image,
                        "image file or block device (default: ./bowstack.img, created with 1 GiB if absent)");
  serve_cmd->add_option("--create", serve.create_size,
                        "create IMAGE with SIZE bytes (K/M/G/T suffixes) if it does not exist");
  serve_cmd->add_option("--listen", serve.listen, "TCP HOST:PORT to listen on (default 127.0.0.1:10809 "
                                                  "unless --unix is given; repeatable)");
  serve_cmd->add_option("--unix", serve.unix_path, "Unix socket path to listen on");
  serve_cmd->add_option("--control", serve.control, "control socket path")->capture_default_str();
  serve_cmd->add_option("--target", serve.targets,
                        "stack a target: NAME[:KEY=VALUE,...]; the first sits on the image (repeatable)");
  serve_cmd->add_option("--export-name", serve.export_name, "NBD export name")->capture_default_str();
  serve_cmd->add_flag("--read-only", serve.read_only, "export read-only; open the image read-only");
  serve_cmd->add_flag("--direct", serve.direct, "open the image with O_DIRECT (bypass the page cache)");
  serve_cmd->add_option("--threads", serve.threads, "worker threads per NBD connection")->capture_default_str();
  serve_cmd->add_option("--log-level", serve.log_level, "trace, debug, info, warn, error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  serve_cmd->footer(
      "Examples:\n"
      "  bowstack serve                                    # ./bowstack.img, created if absent\n"
      "  bowstack serve disk.img --create 10G --listen 127.0.0.1:10809\n"
      "  bowstack serve /dev/sdb --unix /run/sdb.sock --control /run/sdb.ctl --read-only\n"
      "  bowstack serve disk.img --target linear:offset=1M,length=512M\n"
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
  CLI::App* message_cmd = app.add_subcommand("message", "send a target-specific message (like dmsetup message)");
  message_cmd->add_option("TEXT", message_text, "the message")->required();
  message_cmd->add_option("--target", message_target, "deliver to the topmost layer of this kind");
  add_client_options(message_cmd, &client);
  message_cmd->footer(
      "Examples:\n"
      "  bowstack message checkpoint --target bow\n"
      "  bowstack message 'commit' --control /run/sdb.ctl");

  CLI::App* suspend_cmd = app.add_subcommand("suspend", "stop new I/O and wait until in-flight I/O drains");
  add_client_options(suspend_cmd, &client);
  suspend_cmd->footer("Example:\n  bowstack suspend && cp --sparse=always disk.img backup.img && bowstack resume");
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
      "Validates everything first (bounds, sizes, sequence numbers, counts, checksums); if anything is wrong it\n"
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
  inspect_cmd->footer("Examples:\n  bowstack inspect disk.img\n  bowstack inspect --json disk.img | jq .entries");

  CLI::App* targets_cmd = app.add_subcommand("targets", "list the targets and their keys");
  targets_cmd->footer("Example:\n  bowstack targets");

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
  if (*targets_cmd) return run_targets();
  if (*checkpoint_cmd) return run_message(client, "checkpoint", "bow");
  if (*restore_cmd) return run_restore(restore);
  if (*inspect_cmd) return run_inspect(inspect_image, inspect_json);
  if (*commit_cmd) return run_message(client, "commit", "bow");
  return 1;
}
