#!/usr/bin/env bash
# scripts/xfstests.sh XFSTESTS_DIR [TARGET...] [-- CHECK_ARGS...]
#
# Runs xfstests (ext4) over every target as a new user would: each export
# served by bowstack, reached through nbdfuse and a loop device, once for
# TEST_DEV and once for SCRATCH_DEV; then a plain loop file as the baseline.
# Not part of the CI suite (it takes hours for the quick group). Needs root,
# /dev/fuse, nbdfuse and a built xfstests checkout (Debian 12 has no
# xfstests package: clone it, install its build dependencies, `make`).
#
#   TARGET   plain (the baseline: loop on a file), passthrough, bow, era,
#            csum, linear; default: all of them
#   CHECK_ARGS  what ./check gets; default: -g quick
#
# Examples:
#   scripts/xfstests.sh ~/xfstests-dev
#   scripts/xfstests.sh ~/xfstests-dev bow -- generic/091 generic/223 ext4/035
#
# Every loop device is made rotational (queue/rotational=1): a loop device
# over a FUSE file is non-rotational, one over a file on a disk inherits the
# disk's flag, and ext4 allocates differently on the two (generic/223
# "start block not multiple of sunit" fails on any non-rotational device,
# a plain loop file too; docs/architecture.md, "Alignment"). Comparing
# targets needs the same flag everywhere.
#
# Output: results/xfstests-<target>/ (xfstests' own results) and a table of
# failures per target in results/xfstests-summary.txt under the work
# directory (XFSTESTS_WORK, default /var/tmp/bowstack-xfstests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,28p' "$0" >&2; exit 2; }
xfs=$(cd "$1" && pwd)
shift
[[ -x $xfs/check ]] || { echo "$xfs/check not found: build xfstests there first" >&2; exit 2; }
targets=()
while [[ $# -gt 0 && $1 != -- ]]; do targets+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
check_args=("$@")
[[ ${#check_args[@]} -gt 0 ]] || check_args=(-g quick)
[[ ${#targets[@]} -gt 0 ]] || targets=(plain passthrough bow era csum linear)
[[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 2; }
bowstack=${BOWSTACK:-$root/build/release/bowstack}
[[ -x $bowstack ]] || { echo "$bowstack not built (scripts/build.sh release)" >&2; exit 2; }
size=${XFSTESTS_SIZE:-8G}
work=${XFSTESTS_WORK:-/var/tmp/bowstack-xfstests}
mkdir -p "$work/results" "$work/test" "$work/scratch"

pids=()
loops=()
fuses=()
cleanup() {
  umount "$work/test" "$work/scratch" 2>/dev/null || true
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  for f in "${fuses[@]}"; do fusermount3 -u "$f" 2>/dev/null || umount -l "$f" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=() loops=() fuses=()
}
trap cleanup EXIT

# target_args TARGET: the serve arguments for one target.
target_args() {
  case $1 in
    passthrough) echo "" ;;
    bow | era | csum) echo "--target $1" ;;
    linear) echo "--target linear:offset=1M" ;;
    *) echo "unknown target $1" >&2; exit 2 ;;
  esac
}

# attach TARGET NAME: sets $attached to the loop device that serves NAME's
# image (not in a subshell: cleanup needs what it started).
attach() {
  local t=$1 name=$2 img=$work/$2.img loop
  rm -f "$img" "$img".*
  truncate -s "$size" "$img"
  if [[ $t == plain ]]; then
    loop=$(losetup --find --show "$img")
  else
    local sock=$work/$name.sock ctl=$work/$name.ctl fuse=$work/$name.fuse
    rm -f "$sock" "$ctl"
    mkdir -p "$fuse"
    # shellcheck disable=SC2046
    "$bowstack" serve "$img" $(target_args "$t") --unix "$sock" --control "$ctl" \
      >>"$work/$name.server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
    nbdfuse "$fuse" "nbd+unix:///?socket=$sock" >>"$work/$name.fuse.log" 2>&1 &
    pids+=($!)
    fuses+=("$fuse")
    for _ in $(seq 100); do [[ -e $fuse/nbd ]] && break; sleep 0.1; done
    loop=$(losetup --find --show "$fuse/nbd")
  fi
  loops+=("$loop")
  echo 1 >"/sys/block/$(basename "$loop")/queue/rotational"
  attached=$loop
}

summary=$work/results/xfstests-summary.txt
for t in "${targets[@]}"; do
  echo "== $t: ${check_args[*]}" >&2
  attach "$t" test
  test_dev=$attached
  attach "$t" scratch
  scratch_dev=$attached
  mkfs.ext4 -q -F "$test_dev"
  res=$work/results/xfstests-$t
  rm -rf "$res"
  mkdir -p "$res"
  cat >"$xfs/local.config" <<EOF
export FSTYP=ext4
export TEST_DEV=$test_dev
export TEST_DIR=$work/test
export SCRATCH_DEV=$scratch_dev
export SCRATCH_MNT=$work/scratch
export RESULT_BASE=$res
EOF
  (cd "$xfs" && ./check "${check_args[@]}") >"$res/check.log" 2>&1 || true
  failed=$(grep -h '^Failures:' "$res/check.log" | sed 's/^Failures: *//' | tr '\n' ' ')
  ran=$(grep -h '^Ran:' "$res/check.log" | sed 's/^Ran: *//' | wc -w)
  printf '%-12s ran %4s  failed: %s\n' "$t" "$ran" "${failed:-none}" | tee -a "$summary" >&2
  cleanup
done
echo "summary: $summary" >&2
