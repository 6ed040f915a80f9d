#!/usr/bin/env bash
# The main job: install what is missing, build, and serve the default image
# (./bowstack.img, 1 GiB, created if absent) on 127.0.0.1:10809 until Ctrl-C.
# Extra arguments go to `bowstack serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh" release
exec "$root/build/release/bowstack" serve "$@"
