#!/usr/bin/env bash
# smoke.sh FUZZER SRC_DIR WORK_DIR SECONDS
# Runs one fuzzer for SECONDS from its committed corpus (SRC_DIR/corpus/NAME,
# every input of which is executed first) with its dictionary, if any. New
# inputs go to a scratch directory under WORK_DIR, never into the source
# tree; a crash leaves its input in WORK_DIR/artifacts/.
set -euo pipefail
fuzzer=$1 src=$2 work=$3 seconds=$4
name=$(basename "$fuzzer")
scratch=$work/$name
rm -rf "$scratch"
mkdir -p "$scratch" "$work/artifacts"
args=(-max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
      -artifact_prefix="$work/artifacts/$name-")
[[ -f $src/dict/$name.dict ]] && args+=(-dict="$src/dict/$name.dict")
exec "$fuzzer" "${args[@]}" "$scratch" "$src/corpus/$name"
