#!/usr/bin/env bash
# Re-creates the generated seeds in fuzz/corpus/ (same names, same bytes):
# make_fuzz_corpus for every fuzzer, plus dm-bow images written and
# partly restored by the independent Android implementation
# (tests/bow/android_bow.py). Other files in the corpus (inputs kept from
# long runs, regression inputs) are left alone. Needs ./scripts/build.sh fuzz.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
corpus=$root/fuzz/corpus
ninja -C "$root/build/fuzz" make_fuzz_corpus >/dev/null
"$root/build/fuzz/fuzz/make_fuzz_corpus" "$corpus"

py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
android() {  # NAME BLOCK_SIZE BLOCKS WRITES SEED [STOP_AFTER...]
  local name=$1 bs=$2 blocks=$3 writes=$4 seed=$5
  shift 5
  $py "$root/tests/bow/android_bow.py" make-image --output "$tmp/img" --expected "$tmp/exp" --meta "$tmp/meta" \
    --block-size "$bs" --blocks "$blocks" --writes "$writes" --seed "$seed" >/dev/null
  cp "$tmp/img" "$corpus/fuzz_bow_log/$name"
  for k in "$@"; do
    cp "$tmp/img" "$tmp/stopped"
    $py "$root/tests/bow/android_bow.py" restore "$tmp/stopped" --stop-after "$k" >/dev/null || true
    cp "$tmp/stopped" "$corpus/fuzz_bow_log/$name-stopped-$k"
  done
}
android android-512-chain 512 96 60 1 3 17
android android-1024 1024 64 40 2 3
android android-4096 4096 48 30 3 5
