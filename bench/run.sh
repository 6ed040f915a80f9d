#!/usr/bin/env bash
# NBD server benchmark: bowstack passthrough vs nbdkit's file plugin vs
# qemu-nbd, all serving the same backing file in the same run, driven by fio
# with ioengine=nbd over Unix sockets. Prints IOPS/bandwidth and ratios.
# Usage: bench/run.sh [--runtime S] [--rounds N] [--size SIZE] [--dir DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh" release
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
exec /usr/bin/python3 "$root/bench/nbd_bench.py" --bowstack "$root/build/release/bowstack" "$@"
