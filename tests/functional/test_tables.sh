#!/usr/bin/env bash
# Tables (docs/tables.md):
#  - every target and stacked combination round-trips: `bowstack table --json`
#    of a running server, served again with --table, gives the same table;
#  - status --json shows the tree with every node's devices, side stores
#    included, and the jobs of each target node;
#  - every ready table in examples/ serves;
#  - schema errors exit non-zero naming the JSON path, and touch no file;
#  - one file is served by one server: a second refuses, naming the PID, and
#    so do offline tools that write (restore, era restore); read-only ones
#    (inspect, era dump/invalidate) say why not, or read era's snapshot.
. "$(dirname "$0")/lib.sh"
need truncate sha256sum

IMG=$WORK/disk.img
py() { /usr/bin/python3 "$@"; }

roundtrip() {  # serve args...: serve, dump, serve the dump, compare
  rm -f "$IMG".* "$WORK"/t*.json
  start_server "$@"
  "$BOWSTACK" table --json --control "$CTL" >"$WORK/t1.json" || fail "table --json failed for: $*"
  "$BOWSTACK" table --control "$CTL" >"$WORK/t1.txt" || fail "table failed for: $*"
  "$BOWSTACK" status --json --control "$CTL" >"$WORK/status.json"
  stop_server
  start_server --table "$WORK/t1.json"
  "$BOWSTACK" table --json --control "$CTL" >"$WORK/t2.json"
  stop_server
  cmp -s "$WORK/t1.json" "$WORK/t2.json" || {
    diff "$WORK/t1.json" "$WORK/t2.json" >&2
    fail "table of '$*' does not round-trip"
  }
  log "ok: $* -> $(tr -d ' \n' <"$WORK/t1.json" | head -c 200)"
}

truncate -s 64M "$IMG"
roundtrip "$IMG"
roundtrip "$IMG" --target linear:offset=1M,length=32M
roundtrip "$IMG" --target era:block_size=64k
roundtrip "$IMG" --target bow
roundtrip "$IMG" --target bow:meta=none
roundtrip "$IMG" --target era --target bow
roundtrip "$IMG" --target bow --target era
roundtrip "$IMG" --target linear:offset=4M --target era --target linear:length=16M
roundtrip "$IMG" --target era:metadata="$WORK/side.era" --target bow:meta="$WORK/side.bowmeta"

# The tree of bow over era: every node's devices, side stores and jobs.
start_server "$IMG" --target era --target bow
"$BOWSTACK" status --json --control "$CTL" >"$WORK/status.json"
"$BOWSTACK" table --control "$CTL" >"$WORK/table.txt"
stop_server
py - "$WORK/status.json" "$IMG" <<'EOF' || fail "status tree is incomplete"
import json, sys
s = json.load(open(sys.argv[1])); img = sys.argv[2]
t = s["tree"]
assert t["target"] == "bow" and t["path"] == "$", t
assert t["devices"]["metadata"] == {**t["devices"]["metadata"], "file": img + ".bowmeta", "kind": "side file"}
era = t["devices"]["data"]
assert era["target"] == "era" and era["path"] == "$.devices.data"
assert era["devices"]["metadata"]["file"] == img + ".era" and era["devices"]["metadata"]["kind"] == "file"
assert era["devices"]["data"]["file"] == img
assert [j["name"] for j in t["jobs"]] == ["commit", "apply"], t["jobs"]
assert [j["name"] for j in era["jobs"]] == ["commit"] and era["jobs"][0]["state"] == "running"
assert s["table"]["devices"]["data"]["target"] == "era"
EOF
grep -q "^  data: era" "$WORK/table.txt" || fail "table text view: $(cat "$WORK/table.txt")"

# The ready tables in examples/ (paths relative to the server's directory).
for ex in "$BOWSTACK_SRC"/examples/*.json; do
  rm -rf "$WORK/ex" && mkdir -p "$WORK/ex"
  (cd "$WORK/ex" && truncate -s 256M disk.img legs-a.img legs-b.img 2>/dev/null)
  (
    cd "$WORK/ex"
    start_server --table "$ex"
    "$BOWSTACK" table --json --control "$CTL" >"$WORK/ex.json"
    stop_server
  ) || fail "example $(basename "$ex") does not serve"
  log "ok: example $(basename "$ex")"
done

# Schema errors: exit non-zero, name the JSON path, open nothing for writing.
rm -f "$IMG".*
before=$(sha256sum "$IMG")
listing=$(ls "$WORK")
bad() {  # PATTERN TABLE
  printf '%s' "$2" >"$WORK/bad.json"
  local out rc=0
  out=$("$BOWSTACK" serve --table "$WORK/bad.json" --unix "$WORK/b.sock" --control "$WORK/b.ctl" 2>&1) || rc=$?
  [[ $rc -ne 0 ]] || fail "bad table accepted: $2"
  echo "$out" | grep -qE "$1" || fail "bad table: got '$out', expected /$1/"
  [[ $(ls "$WORK") == "$listing" ]] || fail "a bad table created files: $(ls "$WORK")"
  [[ $(sha256sum "$IMG") == "$before" ]] || fail "a bad table changed the image"
  log "ok: $out"
}
cat >"$WORK/bad.json" </dev/null
listing=$(ls "$WORK")
F="\"file\":\"$IMG\""
bad '\$\.target: unknown target .zap. \(valid targets: bow, csum, era, linear, mirror\)' "{\"target\":\"zap\",\"devices\":{\"data\":{$F}}}"
bad '\$\.devices: target .era. needs slot .data.' '{"target":"era"}'
bad '\$\.devices\.data\.params\.block_size: invalid era block_size' \
  "{\"target\":\"bow\",\"devices\":{\"data\":{\"target\":\"era\",\"params\":{\"block_size\":\"huge\"},\"devices\":{\"data\":{$F}}}}}"
bad '\$\.params\.colour: target .linear. has no key .colour.' "{\"target\":\"linear\",\"params\":{\"colour\":1},\"devices\":{\"data\":{$F}}}"
bad '\$\.devices\.legs: target .bow. has no slot .legs.' "{\"target\":\"bow\",\"devices\":{\"data\":{$F},\"legs\":[]}}"
bad "\\\$\\.devices\\.metadata: file '$IMG' is already used at \\\$\\.devices\\.data" \
  "{\"target\":\"era\",\"devices\":{\"data\":{$F},\"metadata\":{$F}}}"
bad '\$: not valid JSON: parse error at line 1' '{"target": '
bad '\$\.devices\.data: cannot be null' '{"target":"bow","devices":{"data":null}}'
bad '\$\.devices\.metadata: cannot be null' "{\"target\":\"era\",\"devices\":{\"data\":{$F},\"metadata\":null}}"
# Errors found while opening also create nothing and name the node.
bad "\\\$\\.devices\\.data: '$WORK/nope.img' does not exist" \
  "{\"target\":\"linear\",\"devices\":{\"data\":{\"file\":\"$WORK/nope.img\"}}}"
bad '\$: linear: offset 1073741824 is beyond the end' "{\"target\":\"linear\",\"params\":{\"offset\":\"1G\"},\"devices\":{\"data\":{$F}}}"
bad "mirror: parallel_writes must be auto, on or off, not 'sometimes'" \
  "{\"target\":\"mirror\",\"params\":{\"parallel_writes\":\"sometimes\"},\"devices\":{\"legs\":[{$F}]}}"
bad 'max_read_errors' "{\"target\":\"mirror\",\"params\":{\"max_read_errors\":\"many\"},\"devices\":{\"legs\":[{$F}]}}"
out=$("$BOWSTACK" serve "$IMG" --table "$WORK/bad.json" --control "$WORK/b.ctl" 2>&1) && fail "IMAGE with --table accepted"
echo "$out" | grep -q "give either --table or IMAGE" || fail "IMAGE with --table: $out"
out=$("$BOWSTACK" serve --table "$WORK/none.json" --control "$WORK/b.ctl" 2>&1) && fail "a missing table file was accepted"
echo "$out" | grep -q "cannot read table '$WORK/none.json'" || fail "missing table file: $out"
# A table from stdin.
echo "{$F}" >"$WORK/stdin.json"
"$BOWSTACK" serve --table - --unix "$WORK/s.sock" --control "$WORK/s.ctl" <"$WORK/stdin.json" >"$WORK/stdin.log" 2>&1 &
stdin_pid=$!
for _ in $(seq 100); do "$BOWSTACK" status --control "$WORK/s.ctl" >/dev/null 2>&1 && break; sleep 0.05; done
"$BOWSTACK" table --json --control "$WORK/s.ctl" | grep -q "\"file\": \"$IMG\"" || fail "table from stdin not served"
kill -TERM "$stdin_pid"
wait "$stdin_pid" || fail "server (table from stdin) did not stop cleanly"

# One image, one server: the second refuses at once, naming the first.
start_server "$IMG" --target bow
out=$("$BOWSTACK" serve "$IMG" --target bow --unix "$WORK/o.sock" --control "$WORK/o.ctl" 2>&1) &&
  fail "a second server on the same image came up"
echo "$out" | grep -q "'$IMG' is in use by process $SERVER_PID (bowstack)" || fail "second server: $out"
log "ok: $out"
# Offline tools that write refuse a served image; read-only ones say why not.
out=$("$BOWSTACK" restore "$IMG" 2>&1) && fail "restore of a served image ran"
echo "$out" | grep -q "'$IMG' is in use by process $SERVER_PID (bowstack)" || fail "restore on a served image: $out"
out=$("$BOWSTACK" restore --dry-run "$IMG" 2>&1) && fail "restore --dry-run of a served image ran"
echo "$out" | grep -q "in use by process $SERVER_PID" || fail "restore --dry-run on a served image: $out"
out=$("$BOWSTACK" inspect "$IMG" 2>&1) && fail "inspect of a served image ran"
echo "$out" | grep -q "bowstack status" || fail "inspect on a served image: $out"
log "ok: $out"
# Side stores are held too: era metadata served by another table.
stop_server
start_server "$IMG" --target era
truncate -s 64M "$WORK/other.img"
out=$("$BOWSTACK" serve "$WORK/other.img" --target era:metadata="$IMG.era" --unix "$WORK/o.sock" \
  --control "$WORK/o.ctl" 2>&1) && fail "a second server on the same era metadata came up"
echo "$out" | grep -q "'$IMG.era' is in use by process $SERVER_PID" || fail "shared metadata: $out"
"$BOWSTACK" era dump "$IMG.era" >"$WORK/era.xml" 2>"$WORK/err" && fail "era dump of live metadata ran"
grep -q "in use by process $SERVER_PID.*--metadata-snapshot" "$WORK/err" || fail "era dump of live metadata: $(cat "$WORK/err")"
out=$("$BOWSTACK" era invalidate "$IMG.era" --written-since 1 2>&1) && fail "era invalidate of live metadata ran"
echo "$out" | grep -q "in use by process $SERVER_PID" || fail "era invalidate of live metadata: $out"
"$BOWSTACK" era take-metadata-snap --control "$CTL" >/dev/null || fail "take-metadata-snap failed"
"$BOWSTACK" era invalidate "$IMG.era" --written-since 1 --metadata-snapshot >/dev/null ||
  fail "era invalidate --metadata-snapshot of a live target failed"
"$BOWSTACK" era dump "$IMG.era" --metadata-snapshot >"$WORK/era.xml" || fail "era dump --metadata-snapshot failed"
"$BOWSTACK" era drop-metadata-snap --control "$CTL" >/dev/null
stop_server
"$BOWSTACK" era dump "$IMG.era" >"$WORK/era.xml" || fail "era dump after the server stopped failed"
start_server "$IMG" --target era
size_before=$(stat -c %s "$IMG.era")
out=$("$BOWSTACK" era restore --input "$WORK/era.xml" "$IMG.era" 2>&1) && fail "era restore onto live metadata ran"
echo "$out" | grep -q "era metadata '$IMG.era' is in use by process $SERVER_PID" || fail "era restore on live metadata: $out"
[[ $(stat -c %s "$IMG.era") == "$size_before" ]] || fail "a refused era restore changed the metadata file"
stop_server
pass
