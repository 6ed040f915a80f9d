// bow's verbs on the `bowstack` command: checkpoint and commit on a running
// server, restore and inspect offline (registered, see cli/verb_registry.h).
#include "targets/bow/bow_cli.h"

#include <memory>

#include "cli/verb_registry.h"

namespace bowstack::cli {
namespace {

VerbRunner add_bow_verbs(CLI::App& app) {
  struct Options {
    ClientOptions client;
    RestoreCliOptions restore;
    InspectCliOptions inspect;
  };
  auto o = std::make_shared<Options>();
  ClientOptions& client = o->client;
  RestoreCliOptions& restore = o->restore;
  InspectCliOptions& inspect = o->inspect;
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

  CLI::App* restore_cmd =
      app.add_subcommand("restore", "bow: roll an image back to its checkpoint, offline (server stopped)");
  auto* restore_image = restore_cmd->add_option("IMAGE", restore.image, "image file or block device");
  restore_cmd
      ->add_option("--table", restore.table,
                   "the table the image was served with: restores its bow node's data leaf (a file or an RBD "
                   "image) with the journal the table names")
      ->excludes(restore_image);
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
      "  bowstack restore --roll-forward disk.img    # log damaged: keep the changes instead\n"
      "  bowstack restore --table t.json             # e.g. bow over an RBD image");
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "bow: print an image's checkpoint log chain");
  auto* inspect_image = inspect_cmd->add_option("IMAGE", inspect.image, "image file or block device");
  inspect_cmd
      ->add_option("--table", inspect.table,
                   "the table the image was served with: inspects its bow node's data leaf (a file or an RBD "
                   "image) with the journal the table names")
      ->excludes(inspect_image);
  inspect_cmd->add_flag("--json", inspect.json, "print JSON");
  inspect_cmd->footer(
      "Examples:\n  bowstack inspect disk.img\n  bowstack inspect --json disk.img | jq .entries\n"
      "  bowstack inspect --table t.json             # e.g. bow over an RBD image");

  return [=]() -> int {
    if (*checkpoint_cmd) return run_message(o->client, "checkpoint", "bow");
    if (*commit_cmd) return run_message(o->client, "commit", "bow");
    if (*restore_cmd) return run_restore(o->restore);
    if (*inspect_cmd) return run_inspect(o->inspect);
    return -1;
  };
}

const VerbRegistration kBowVerbs("bow", &add_bow_verbs);

}  // namespace
}  // namespace bowstack::cli
