#!/usr/bin/env bash
# Benchmarks, each reported as ratios against peers measured in the same run.
# Usage: bench/run.sh [nbd|tls|bow|era|csum|mirror|reload|rbd|all] [options for the benchmark]
#   nbd: bowstack passthrough vs nbdkit file plugin vs qemu-nbd, Unix and TCP (bench/nbd_bench.py)
#   tls: bowstack and nbdkit file, plain and --tls=require (bench/nbd_tls_bench.py)
#   bow: bow target vs passthrough, qcow2 overlay and dd (bench/bow_bench.py)
#   era: era target vs passthrough, marked blocks and first writes (bench/era_bench.py)
#   mirror: 2-leg mirror vs passthrough; recovery and resync vs dd (bench/mirror_bench.py)
#   reload: how long a live reload holds I/O under an fio load (bench/reload_bench.py)
#   csum: csum (mode dual) vs passthrough, reads and writes (bench/csum_bench.py)
#   rbd: an rbd leaf vs qemu-nbd's rbd driver on a one-node cluster (bench/rbd_bench.py)
#        (--mirror: a mirror of two RBD images, legs written at once or in turn, vs one image)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh" release
export PATH="/usr/bin:/usr/sbin:/bin:/sbin:$PATH"
which=${1:-all}
[[ $# -gt 0 ]] && shift
rc=0
if [[ $which == nbd || $which == all ]]; then
  /usr/bin/python3 "$root/bench/nbd_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == tls || $which == all ]]; then
  /usr/bin/python3 "$root/bench/nbd_tls_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == bow || $which == all ]]; then
  /usr/bin/python3 "$root/bench/bow_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == era || $which == all ]]; then
  /usr/bin/python3 "$root/bench/era_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == csum || $which == all ]]; then
  /usr/bin/python3 "$root/bench/csum_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == mirror || $which == all ]]; then
  /usr/bin/python3 "$root/bench/mirror_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == reload || $which == all ]]; then
  /usr/bin/python3 "$root/bench/reload_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
if [[ $which == rbd || $which == all ]]; then
  /usr/bin/python3 "$root/bench/rbd_bench.py" --bowstack "$root/build/release/bowstack" "$@" || rc=1
fi
exit $rc
