#!/usr/bin/env bash
# csum's tools with a real client and the real command line: an image that
# already holds data is refused until `csum format` accepts it; scrub runs
# to done, finds a flipped byte and lists it (`csum mismatches`), and a
# pass in progress survives a restart; `csum rewrite` (online and offline)
# and `csum rebuild` accept data only when asked; `csum dump` reports.
. "$(dirname "$0")/lib.sh"
need truncate dd /usr/bin/nbdsh

IMG=$WORK/disk.img
truncate -s 32M "$IMG"
dd if=/dev/urandom of="$IMG" bs=1M count=4 conv=notrunc status=none
log "an image with data and no checksums: serve refuses, csum format accepts it"
rc=0
"$BOWSTACK" serve "$IMG" --target csum --unix "$WORK/x.sock" --control "$WORK/x.ctl" >"$WORK/refused.log" 2>&1 || rc=$?
[[ $rc -ne 0 ]] || fail "serve accepted existing data without checksums"
grep -q "csum format" "$WORK/refused.log" || fail "the refusal does not say what to do: $(cat "$WORK/refused.log")"
out=$("$BOWSTACK" csum format "$IMG") || fail "csum format: $out"
echo "$out" | grep -q "the current data of 1024 blocks was accepted as correct" || fail "format report: $out"
rc=0
"$BOWSTACK" csum format "$IMG" >"$WORK/f2.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "not blank" "$WORK/f2.out" || fail "a second format was not refused (rc $rc)"
"$BOWSTACK" csum verify "$IMG" >/dev/null || fail "verify after format"
out=$("$BOWSTACK" csum dump "$IMG") || fail "dump: $out"
echo "$out" | grep -q "1024 settled" || fail "dump does not count the accepted blocks: $out"
cp "$IMG" "$WORK/orig.img"

log "a flipped byte in block 700; scrub finds it and lists it"
/usr/bin/python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(700*4096+9); b=f.read(1); f.seek(700*4096+9); f.write(bytes([b[0]^1]))' "$IMG"
start_server "$IMG" --target csum
"$BOWSTACK" csum scrub --control "$CTL" --rate 0 >/dev/null || fail "csum scrub"
for ((i = 0; i < 200; i++)); do
  [[ $(status_field .layers.0.scrub.state) == done ]] && break
  sleep 0.05
done
[[ $(status_field .layers.0.scrub.state) == done ]] || fail "scrub did not finish: $(status_field .layers.0.scrub)"
[[ $(status_field .layers.0.scrub.found) == 1 ]] || fail "scrub found $(status_field .layers.0.scrub.found)"
rc=0
out=$("$BOWSTACK" csum mismatches --control "$CTL") || rc=$?
[[ $rc -eq 1 ]] || fail "csum mismatches exited $rc: $out"
echo "$out" | grep -q "data mismatch: block 700 (byte offset 2867200), found by scrub" || fail "mismatches: $out"
out=$("$BOWSTACK" csum mismatches --control "$CTL" --json) || true
echo "$out" | grep -q '"block": 700' || fail "mismatches --json: $out"
grep -q "scrub: block 700 (bytes 2867200..2871295) does not match" "$WORK/server.log" || fail "scrub did not log it"
log "ok: scrub found block 700"

log "online rewrite accepts the block; it reads again"
out=$("$BOWSTACK" csum rewrite --block 700 --control "$CTL") || fail "online rewrite: $out"
/usr/bin/nbdsh -u "$(URI)" -c 'h.pread(4096, 700 * 4096)' || fail "block 700 after rewrite"
rc=0
"$BOWSTACK" csum mismatches --control "$CTL" >/dev/null || rc=$?
[[ $rc -eq 0 ]] || fail "block 700 is still listed after rewrite"

log "a slow scrub, stopped with the server, goes on after the restart"
"$BOWSTACK" csum scrub --control "$CTL" --rate 256K >/dev/null || fail "slow scrub"
sleep 0.3
"$BOWSTACK" csum scrub pause --control "$CTL" >/dev/null || fail "scrub pause"
[[ $(status_field .layers.0.scrub.state) == paused ]] || fail "not paused: $(status_field .layers.0.scrub)"
"$BOWSTACK" csum scrub resume --control "$CTL" >/dev/null || fail "scrub resume"
stop_server
out=$("$BOWSTACK" csum dump --json "$IMG")
echo "$out" | grep -q '"state": "running"' || fail "the pass was not recorded as running: $out"
start_server "$IMG" --target csum
grep -q "continuing the scrub at block" "$WORK/server.log" || fail "the pass did not continue"
"$BOWSTACK" csum scrub stop --control "$CTL" >/dev/null || fail "scrub stop"
[[ $(status_field .layers.0.scrub.state) == stopped ]] || fail "not stopped: $(status_field .layers.0.scrub)"
stop_server

log "offline: rewrite one block, rebuild the rest; each only when asked"
/usr/bin/python3 -c '
import sys
f = open(sys.argv[1], "r+b")
for blk in (10, 20):
    f.seek(blk * 4096); b = f.read(1); f.seek(blk * 4096); f.write(bytes([b[0] ^ 2]))' "$IMG"
rc=0
"$BOWSTACK" csum dump --block 10 "$IMG" >"$WORK/d.out" || rc=$?
[[ $rc -eq 1 ]] && grep -q "MISMATCH" "$WORK/d.out" || fail "dump --block 10: $(cat "$WORK/d.out")"
out=$("$BOWSTACK" csum rewrite --block 10 "$IMG") || fail "offline rewrite: $out"
echo "$out" | grep -q "now accepted" || fail "rewrite report: $out"
rc=0
out=$("$BOWSTACK" csum verify "$IMG") || rc=$?
[[ $rc -eq 1 ]] && echo "$out" | grep -q "^mismatch: block 20 " || fail "verify after rewrite (rc $rc): $out"
out=$("$BOWSTACK" csum rebuild "$IMG") || fail "rebuild: $out"
echo "$out" | grep -q "1 blocks did not match before" || fail "rebuild report: $out"
"$BOWSTACK" csum verify "$IMG" >/dev/null || fail "verify after rebuild"
rc=0
"$BOWSTACK" csum rewrite --block 99999 "$IMG" >"$WORK/r.out" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "past the end" "$WORK/r.out" || fail "rewrite past the end (rc $rc)"
rc=0
"$BOWSTACK" csum dump "$WORK/orig.img" --metadata "$WORK/orig.img" >"$WORK/r.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "not csum metadata" "$WORK/r.out" || fail "dump of a data image (rc $rc)"

log "--table: the tools find the image and its checksums through a table"
cat >"$WORK/t.json" <<EOF
{"target": "csum", "devices": {"data": {"file": "$IMG"}}}
EOF
out=$("$BOWSTACK" csum verify --table "$WORK/t.json") || fail "verify --table: $out"
[[ $out == "$("$BOWSTACK" csum verify "$IMG")" ]] || fail "verify --table and verify IMAGE differ: $out"
"$BOWSTACK" csum dump --table "$WORK/t.json" | grep -q "^metadata: *$IMG.csum " || fail "dump --table"
start_server --table "$WORK/t.json"
rc=0
"$BOWSTACK" csum verify --table "$WORK/t.json" >"$WORK/v.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "is in use by" "$WORK/v.out" || fail "verify --table while served (rc $rc): $(cat "$WORK/v.out")"
stop_server
cat >"$WORK/linear.json" <<EOF
{"target": "csum", "devices": {"data": {"target": "linear", "devices": {"data": {"file": "$IMG"}}}}}
EOF
rc=0
"$BOWSTACK" csum verify --table "$WORK/linear.json" >"$WORK/v.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "csum verify --table needs csum directly over a file or an RBD image" "$WORK/v.out" ||
  fail "csum over linear (rc $rc): $(cat "$WORK/v.out")"
echo "{\"file\": \"$IMG\"}" >"$WORK/plain.json"
rc=0
"$BOWSTACK" csum rebuild --table "$WORK/plain.json" >"$WORK/v.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "the table has 0 csum nodes; csum rebuild --table needs exactly one" "$WORK/v.out" ||
  fail "a table without csum (rc $rc): $(cat "$WORK/v.out")"
rc=0
"$BOWSTACK" csum verify >"$WORK/v.out" 2>&1 || rc=$?
[[ $rc -eq 2 ]] && grep -q "csum verify needs IMAGE or --table FILE" "$WORK/v.out" ||
  fail "verify without IMAGE (rc $rc): $(cat "$WORK/v.out")"
pass
