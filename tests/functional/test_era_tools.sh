#!/usr/bin/env bash
# era through a real client (qemu-io), then the offline tools: check, dump
# (XML, JSON, logical, snapshot), restore round trip, invalidate, incremental
# backup (full copy at a checkpoint, churn, export since that era, apply, the
# copy equals the device), recovery after kill -9, and bad input everywhere:
# one clear line and a non-zero exit.
. "$(dirname "$0")/lib.sh"
need qemu-io truncate cmp

IMG=$WORK/img
MD=$WORK/img.era
q() { qemu-io -f raw "$(URI)" "$@" >/dev/null 2>&1 || fail "qemu-io $* failed"; }
era_field() { status_field ".layers.0.$1"; }
expect_error() {  # PATTERN CMD...: CMD must fail with PATTERN on one line of stderr
  local pattern=$1
  shift
  local out rc=0
  out=$("$@" 2>&1 >/dev/null) || rc=$?
  [[ $rc -ne 0 ]] || fail "'$*' succeeded; expected failure matching '$pattern'"
  echo "$out" | grep -qE -- "$pattern" || fail "'$*' said '$out'; expected '$pattern'"
  [[ $(echo "$out" | wc -l) -le 2 ]] || fail "'$*' printed more than a line or two: $out"
  log "ok: $(echo "$out" | head -n 1)"
}
kill9_server() {
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  rm -f "$SOCK" "$CTL"
}

truncate -s 64M "$IMG"
start_server "$IMG" --target era:block_size=64K
[[ -f $MD ]] || fail "metadata file $MD was not created"
[[ $(era_field current_era) -eq 1 ]] || fail "a new era target does not start in era 1"
q -c "write -P 0x11 0 256k" -c "write -P 0x22 8M 64k" -c "flush"
[[ $(era_field written_blocks) -eq 5 ]] || fail "expected 5 blocks written in era 1, got $(era_field written_blocks)"
out=$("$BOWSTACK" era checkpoint --control "$CTL") || fail "era checkpoint failed"
[[ $out == "current era 2" ]] || fail "checkpoint replied '$out'"
dm=$(era_field dm_status)
[[ $dm =~ ^8\ [0-9]+/[0-9]+\ 2\ -$ ]] || fail "dm-era status line looks wrong: '$dm'"

# Full copy at the checkpoint, taken through the export.
nbdcopy "$(URI)" "$WORK/copy" 2>/dev/null || qemu-img convert -f raw -O raw "$(URI)" "$WORK/copy" ||
  fail "full copy failed"
# Churn: overwrite, new data, zeroes, discard, a FUA write, unaligned to the era blocks.
q -c "write -P 0x33 60k 8k" -c "write -P 0x44 20M 1M" -c "write -z 8M 64k" -c "discard 30M 128k" \
  -c "write -P 0x55 -f 63M 4k" -c "flush"
"$BOWSTACK" era take-metadata-snap --control "$CTL" >/dev/null || fail "take-metadata-snap failed"
[[ $(era_field metadata_snap.era) -eq 2 ]] || fail "snapshot era not shown in status"
q -c "write -P 0x66 40M 64k"  # after the snapshot: not in it
"$BOWSTACK" era invalidate "$MD" --written-since 2 --metadata-snapshot >"$WORK/inv-snap" ||
  fail "invalidate on the snapshot of a live target failed"
grep -q 'block="640"' "$WORK/inv-snap" && fail "a write after the snapshot shows in the snapshot"
grep -q '<range begin="320" end="336"/>' "$WORK/inv-snap" || fail "snapshot lacks the 1M write: $(cat "$WORK/inv-snap")"
expect_error "metadata snapshot is already held" "$BOWSTACK" era take-metadata-snap --control "$CTL"
"$BOWSTACK" era drop-metadata-snap --control "$CTL" >/dev/null || fail "drop-metadata-snap failed"
stop_server

# check, dump, restore round trip.
"$BOWSTACK" era check "$MD" >"$WORK/check" || fail "era check failed on good metadata: $(cat "$WORK/check")"
grep -q "no damage found" "$WORK/check" || fail "check output: $(cat "$WORK/check")"
"$BOWSTACK" era check --json "$MD" | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["ok"] and j["superblock"]["current_era"] == 2' ||
  fail "check --json"
"$BOWSTACK" era dump "$MD" >"$WORK/dump.xml" || fail "era dump failed"
grep -q '<superblock uuid="[0-9a-f-]*" block_size="128" nr_blocks="1024" current_era="2">' "$WORK/dump.xml" ||
  fail "dump header: $(head -1 "$WORK/dump.xml")"
grep -q '<bit block="5" value="false"/>' "$WORK/dump.xml" || fail "dump lacks per-block bits"
grep -q '<era block="0" era="1"/>' "$WORK/dump.xml" || fail "dump lacks era 1 of block 0"
"$BOWSTACK" era dump --logical --json "$MD" | /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)
a = j["era_array"]
assert len(a) == 1024 and a[0] == 2 and a[1] == 2 and a[2] == 1 and a[128] == 2 and a[320] == 2 and a[640] == 2, a[:4]
assert a[5] == 0 and j["writesets"] == []' || fail "logical JSON dump is wrong"
"$BOWSTACK" era restore --input "$WORK/dump.xml" "$WORK/restored.era" >/dev/null || fail "era restore failed"
"$BOWSTACK" era dump "$WORK/restored.era" | cmp -s - "$WORK/dump.xml" || fail "dump of the restored metadata differs"
"$BOWSTACK" era dump --compact "$MD" >"$WORK/compact.xml"
"$BOWSTACK" era restore -i "$WORK/compact.xml" "$WORK/restored2.era" >/dev/null || fail "restore of a compact dump"
"$BOWSTACK" era dump "$WORK/restored2.era" | cmp -s - "$WORK/dump.xml" || fail "compact round trip differs"
"$BOWSTACK" era invalidate "$MD" --written-since 2 >"$WORK/inv" || fail "era invalidate failed"
head -1 "$WORK/inv" | grep -qx "<blocks>" || fail "invalidate output: $(cat "$WORK/inv")"
grep -q '<block block="640"/>' "$WORK/inv" || fail "invalidate misses the current writeset: $(cat "$WORK/inv")"
grep -q '<block block="2"/>' "$WORK/inv" && fail "invalidate lists a block only written in era 1"

# Incremental backup: export since era 2, apply to the copy, compare.
"$BOWSTACK" era export "$MD" "$IMG" --since 2 --output "$WORK/changes" || fail "era export failed"
cmp -s "$WORK/copy" "$IMG" && fail "the copy already equals the device: churn did nothing?"
"$BOWSTACK" era apply --dry-run --input "$WORK/changes" "$WORK/copy" >/dev/null || fail "apply --dry-run failed"
cmp -s "$WORK/copy" "$IMG" && fail "apply --dry-run wrote"
cp "$WORK/copy" "$WORK/copy-before-apply"
"$BOWSTACK" era apply --input "$WORK/changes" "$WORK/copy" || fail "era apply failed"
cmp "$WORK/copy" "$IMG" || fail "after apply the copy differs from the device"

# --table: the same tools find the metadata (and export the image) through
# the table; a tool that reads only the metadata takes era anywhere.
cat >"$WORK/t.json" <<EOF
{"target": "era", "params": {"block_size": "64K"}, "devices": {"data": {"file": "$IMG"}}}
EOF
"$BOWSTACK" era dump --table "$WORK/t.json" | cmp -s - "$WORK/dump.xml" || fail "era dump --table differs"
"$BOWSTACK" era invalidate --table "$WORK/t.json" --written-since 2 | cmp -s - "$WORK/inv" ||
  fail "era invalidate --table differs"
"$BOWSTACK" era check --table "$WORK/t.json" | grep -q "no damage found" || fail "era check --table"
"$BOWSTACK" era export --table "$WORK/t.json" --since 2 --output "$WORK/changes2" >/dev/null ||
  fail "era export --table failed"
cp "$WORK/copy-before-apply" "$WORK/copy2"
"$BOWSTACK" era apply --input "$WORK/changes2" "$WORK/copy2" >/dev/null || fail "era apply of the --table export"
cmp "$WORK/copy2" "$IMG" || fail "after applying the --table export the copy differs from the device"
cat >"$WORK/linear.json" <<EOF
{"target": "era", "devices": {"data": {"target": "linear", "devices": {"data": {"file": "$IMG"}}}}}
EOF
"$BOWSTACK" era check --table "$WORK/linear.json" >/dev/null || fail "era check --table of era over linear"
expect_error "era export --table needs era directly over a file or an RBD image" \
  "$BOWSTACK" era export --table "$WORK/linear.json" --since 2 -o "$WORK/x"
echo "{\"file\": \"$IMG\"}" >"$WORK/plain.json"
expect_error "the table has 0 era nodes; era dump --table needs exactly one" \
  "$BOWSTACK" era dump --table "$WORK/plain.json"
expect_error "era dump needs METADATA or --table FILE" "$BOWSTACK" era dump
expect_error "excludes" "$BOWSTACK" era dump "$MD" --table "$WORK/t.json"

# Bad input everywhere.
expect_error "cannot open metadata '$WORK/none'.*No such file" "$BOWSTACK" era dump "$WORK/none"
expect_error "cannot open metadata" "$BOWSTACK" era check "$WORK/none"
expect_error "written-since" "$BOWSTACK" era invalidate "$MD"
expect_error "no metadata snapshot is held" "$BOWSTACK" era dump --metadata-snapshot "$MD"
echo '<superblock uuid="" block_size="8" nr_blocks="4" current_era="2"><era_array><era block="9" era="1"/>' \
  '</era_array></superblock>' >"$WORK/bad.xml"
expect_error "XML line 1: block=\"9\" is too large" "$BOWSTACK" era restore -i "$WORK/bad.xml" "$WORK/x.era"
echo '<superblock' >"$WORK/bad2.xml"
expect_error "XML line 1" "$BOWSTACK" era restore -i "$WORK/bad2.xml" "$WORK/x.era"
expect_error "cannot read '$WORK/nope.xml'" "$BOWSTACK" era restore -i "$WORK/nope.xml" "$WORK/x.era"
# Claims are checked before anything is allocated or written: a 4G-block
# claim fails at once (capacity or memory), and creates no metadata file.
printf '<superblock uuid="" block_size="8" nr_blocks="4294967295" current_era="3"><writeset era="2" nr_bits="4294967295"/></superblock>' >"$WORK/huge.xml"
expect_error 'nr_blocks="4294967295" (is more than|needs [0-9]+ bytes of memory)' \
  timeout 20 "$BOWSTACK" era restore -i "$WORK/huge.xml" "$WORK/huge.era"
[[ ! -e $WORK/huge.era ]] || fail "a refused era restore created the metadata file"
# Empty or short metadata: say what it is, not "Invalid argument".
: >"$WORK/empty.era"
expect_error "era metadata '$WORK/empty.era' is empty \(0 bytes\)" "$BOWSTACK" era dump "$WORK/empty.era"
expect_error "era metadata '$WORK/empty.era' is empty" "$BOWSTACK" era check "$WORK/empty.era"
head -c 100 /dev/zero >"$WORK/short.era"
expect_error "has 100 bytes, too few for era metadata" "$BOWSTACK" era invalidate "$WORK/short.era" --written-since 1
# Zeroes or another format: not era metadata (not "damaged"), for every tool.
truncate -s 1M "$WORK/zero.era"
expect_error "'$WORK/zero.era' is not era metadata: both superblock slots .* are all zeroes" "$BOWSTACK" era dump "$WORK/zero.era"
expect_error "'$WORK/zero.era' is not era metadata" "$BOWSTACK" era check "$WORK/zero.era"
head -c 1M /dev/urandom >"$WORK/other.era"
expect_error "'$WORK/other.era' is not era metadata: neither superblock slot .* holds era's superblock magic" \
  "$BOWSTACK" era export "$WORK/other.era" "$IMG" --since 1 -o "$WORK/x"
# A writeset repeating the whole device in <marked> runs is merged, not replayed.
{
  printf '<superblock uuid="" block_size="8" nr_blocks="4000000" current_era="3"><writeset era="2" nr_bits="4000000">'
  for _ in $(seq 2000); do printf '<marked block_begin="0" len="4000000"/>'; done
  printf '</writeset></superblock>'
} >"$WORK/marked.xml"
timeout 30 "$BOWSTACK" era restore -i "$WORK/marked.xml" "$WORK/marked.era" >/dev/null || fail "restore of repeated <marked> runs"
"$BOWSTACK" era invalidate "$WORK/marked.era" --written-since 2 | grep -q '<range begin="0" end="4000000"/>' ||
  fail "repeated <marked> runs restored wrongly"
truncate -s 32M "$WORK/small"
expect_error "size mismatch" "$BOWSTACK" era apply -i "$WORK/changes" "$WORK/small"
expect_error "wrong image" "$BOWSTACK" era export "$MD" "$WORK/small" --since 2 -o "$WORK/x"
cp "$WORK/changes" "$WORK/bad-changes"
printf 'Z' | dd of="$WORK/bad-changes" bs=1 seek=5000 conv=notrunc status=none
cp "$WORK/copy" "$WORK/copy-before"
expect_error "not a valid era export: record 0.*checksum" "$BOWSTACK" era apply -i "$WORK/bad-changes" "$WORK/copy"
head -c 1000 "$WORK/changes" >"$WORK/short-changes"
expect_error "not a valid era export: .*truncated" "$BOWSTACK" era apply -i "$WORK/short-changes" "$WORK/copy"
expect_error "bad magic" "$BOWSTACK" era apply -i "$WORK/dump.xml" "$WORK/copy"
cmp -s "$WORK/copy" "$WORK/copy-before" || fail "a refused apply wrote to the copy"
# Damaged metadata: both copies of the era array's first block.
cp "$MD" "$WORK/damaged.era"
# Layout for 1024 blocks: 2 superblocks, 4 writeset blocks, then the era array's two slots of 2 blocks.
arr=6
dd if=/dev/urandom of="$WORK/damaged.era" bs=4096 seek="$arr" count=1 conv=notrunc status=none
dd if=/dev/urandom of="$WORK/damaged.era" bs=4096 seek="$((arr + 2))" count=1 conv=notrunc status=none
out=$("$BOWSTACK" era check "$WORK/damaged.era" 2>&1) && fail "check passed damaged metadata"
echo "$out" | grep -q "era array block 0: both copies damaged" || fail "check output: $out"
expect_error "is damaged: .*era array block 0" "$BOWSTACK" era dump "$WORK/damaged.era"
expect_error "is damaged" "$BOWSTACK" era invalidate "$WORK/damaged.era" --written-since 1
cp "$IMG" "$WORK/img2"
expect_error "cannot use the metadata.*era array block 0" \
  "$BOWSTACK" serve "$WORK/img2" --unix "$WORK/x.sock" --control "$WORK/x.ctl" --target "era:metadata=$WORK/damaged.era"
truncate -s 32M "$WORK/other"
expect_error "belongs to a device of 1024 blocks" \
  "$BOWSTACK" serve "$WORK/other" --unix "$WORK/x.sock" --control "$WORK/x.ctl" --target "era:metadata=$MD"
expect_error "block_size=4096 given, but the metadata tracks blocks of 65536" \
  "$BOWSTACK" serve "$IMG" --unix "$WORK/x.sock" --control "$WORK/x.ctl" --target "era:block_size=4096"

# Crash: kill -9 with writes in the current era; serving again archives them.
start_server "$IMG" --target era
era_before=$(era_field current_era)
q -c "write -P 0x77 50M 64k" -c "flush"
kill9_server
start_server "$IMG" --target era
[[ $(era_field current_era) -eq $((era_before + 1)) ]] || fail "the writeset left by kill -9 was not archived"
grep -q "recovered the writeset of era $era_before" "$WORK/server.log" || fail "recovery not logged"
stop_server
"$BOWSTACK" era invalidate "$MD" --written-since "$era_before" | grep -q '<block block="800"/>' ||
  fail "the block written before kill -9 is not marked"
"$BOWSTACK" era check "$MD" >/dev/null || fail "metadata not clean after recovery"
pass
