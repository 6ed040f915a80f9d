#!/usr/bin/env bash
# The main job: install what is missing, build, and serve the default table
# (examples/default.json: era over bow over ./bowstack.img, 1 GiB, created
# if absent) on 127.0.0.1:10809 until Ctrl-C. With arguments, they go to
# `bowstack serve` instead (e.g. ./scripts/run.sh disk.img --target bow).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh" release
bin=$root/build/release/bowstack
if [[ $# -gt 0 ]]; then exec "$bin" serve "$@"; fi
cat <<EOT
Serving $root/examples/default.json: era over bow over ./bowstack.img on nbd://127.0.0.1:10809
Try, in another terminal (as root):
  $bin status                          # the tree: era -> bow -> bowstack.img, side stores, jobs
  $bin table                           # the live table (--json: what serve --table reads)
  nbdinfo nbd://127.0.0.1:10809        # the export as a client sees it
  mkdir -p /mnt/nbd && nbdfuse /mnt/nbd nbd://127.0.0.1:10809 &
  losetup --find --show /mnt/nbd/nbd   # -> /dev/loopN: mkfs.ext4, mount it, then fstrim the mount
  $bin checkpoint                      # bow: overwritten data is saved from now on
  $bin era checkpoint                  # era: start a new era
  $bin commit                          # bow: keep the changes (or stop and: $bin restore bowstack.img)
  $bin reload $root/examples/bow.json  # live: drop era, keep bow and its state
EOT
exec "$bin" serve --table "$root/examples/default.json"
