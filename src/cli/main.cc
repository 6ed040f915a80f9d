// `bowstack`: serve a stack of block-device targets over NBD, and talk to a
// running server through its control socket.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/verb_registry.h"
#include "cli/verbs.h"

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
  serve_cmd
      ->add_option("--control-idle-timeout", serve.control_idle_timeout,
                   "seconds after which an idle control client is disconnected")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  serve_cmd
      ->add_option("--tls", serve.tls, "off, on (plain and TLS clients) or require (TLS only); docs/tls.md")
      ->capture_default_str()
      ->check(CLI::IsMember({"off", "on", "require", "no", "yes", "force"}));
  serve_cmd->add_option("--tls-certificates", serve.tls_certificates,
                        "directory with ca-cert.pem, server-cert.pem, server-key.pem [, ca-crl.pem]");
  serve_cmd->add_option("--tls-psk", serve.tls_psk, "pre-shared keys file (psktool's username:hexkey lines)");
  serve_cmd->add_flag("--tls-verify-peer", serve.tls_verify_peer,
                      "require client certificates signed by ca-cert.pem (X.509 only)");
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
      "  bowstack serve disk.img --tls=require --tls-psk=keys.psk    # nbds://...?tls-psk-file=keys.psk\n"
      "Attach: nbdfuse DIR nbd://127.0.0.1:10809 & losetup -f --show DIR/nbd; or qemu-system ... "
      "-drive file=nbd://127.0.0.1:10809,format=raw\n"
      "Stop with SIGTERM or Ctrl-C: in-flight requests drain and the image is flushed.\n"
      "SIGHUP reloads the TLS certificates or keys; connected clients stay.\n"
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

  // Each target's own verbs (src/targets/<name>/<name>_cli.cc).
  std::vector<VerbRunner> runners;
  for (const TargetVerbs& v : target_verbs()) runners.push_back(v.add(app));

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
  for (const VerbRunner& run : runners) {
    if (int rc = run(); rc >= 0) return rc;
  }
  return 1;
}
