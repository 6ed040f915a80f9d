#!/usr/bin/env bash
# An RBD leaf against a real one-node Ceph cluster (scripts/ceph-cluster.sh):
# what is written over NBD is what `rbd export` reads; a second server on
# the image refuses; kill -9 under writes loses nothing that was flushed;
# era over an RBD image (its metadata a local file given in the table)
# tracks the changed blocks, and its incremental export updates a copy;
# bow over RBD rolls back with restore --table; live reload keeps the image;
# side stores left out of a table become RBD images beside the data image
# (era's metadata, read by the era tools with --table; bow's resume journal,
# which survives kill -9 and resumes, inspected and restored with --table).
. "$(dirname "$0")/lib.sh"
need nbdcopy nbdsh cmp
. "$(dirname "$0")/lib_rbd.sh"
# overwrite_blocks SEED COUNT: COUNT random 4 KiB writes over the export's
# first 8 MiB (blocks chosen by SEED), then a flush.
overwrite_blocks() {
  nbdsh -u "$(URI)" -c "
import os, random
rnd = random.Random($1)
for _ in range($2):
    h.pwrite(os.urandom(4096), rnd.randrange(2048) * 4096)
h.flush()"
}

rbd_cli create --size 64M rbd/disk || fail "rbd create failed"
cat >"$WORK/table.json" <<EOF
{"rbd": {"pool": "rbd", "image": "disk", "conf": "$CONF", "id": "admin", "snapshot": null}}
EOF

# 1. Written over NBD, read back by rbd export after a clean stop.
head -c 64M /dev/urandom >"$WORK/src"
start_server --table "$WORK/table.json"
[[ $(status_field .tree.kind) == rbd ]] || fail "the leaf is not an rbd device"
[[ $(status_field .tree.lock) == exclusive-lock ]] || fail "the image's exclusive lock is not held"
timeout 60 nbdcopy --connections=4 --requests=16 "$WORK/src" "$(URI)" || fail "nbdcopy into the export failed"
timeout 60 nbdcopy "$(URI)" "$WORK/back" || fail "nbdcopy out of the export failed"
cmp "$WORK/src" "$WORK/back" || fail "read back over NBD differs"

# 2. A second server on the same image refuses, saying why.
rc=0
timeout 60 "$BOWSTACK" serve --table "$WORK/table.json" --unix "$WORK/second.sock" --control "$WORK/second.ctl" \
  >"$WORK/second.log" 2>&1 || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] || fail "a second server on the image did not refuse (status $rc)"
grep -q "the image is in use" "$WORK/second.log" || fail "unclear refusal: $(cat "$WORK/second.log")"
stop_server
rbd_cli export rbd/disk "$WORK/export1" >/dev/null 2>&1 || fail "rbd export failed"
cmp "$WORK/src" "$WORK/export1" || fail "rbd export differs from what was written over NBD"
log "round trip and refusal: ok"

# 3. kill -9 under writes: what was flushed survives. The client writes
# random 4 KiB blocks over the first half, flushes, saves what it wrote,
# then keeps writing the second half unflushed until the server dies.
start_server --table "$WORK/table.json"
cat >"$WORK/writer.py" <<'EOF'
import os, random, sys
rnd = random.Random(20)
half = 32 << 20
expected = bytearray(open(sys.argv[2], "rb").read(half))
for _ in range(3000):
    off = rnd.randrange(half // 4096) * 4096
    data = os.urandom(4096)
    h.pwrite(data, off)
    expected[off:off + 4096] = data
h.flush()
with open(sys.argv[1], "wb") as f:
    f.write(expected)
open(sys.argv[3], "w").close()
while True:
    h.pwrite(os.urandom(65536), half + rnd.randrange((half - 65536) // 4096) * 4096)
EOF
rm -f "$WORK/flushed.mark"
timeout 80 nbdsh -u "$(URI)" -c "import sys; sys.argv = ['w', '$WORK/expected', '$WORK/src', '$WORK/flushed.mark']" \
  -c "exec(open('$WORK/writer.py').read())" >"$WORK/writer.log" 2>&1 &
WRITER=$!
for ((i = 0; i < 600; i++)); do
  [[ -f $WORK/flushed.mark ]] && break
  kill -0 "$WRITER" 2>/dev/null || fail "the writer stopped early: $(tail -5 "$WORK/writer.log")"
  sleep 0.1
done
[[ -f $WORK/flushed.mark ]] || fail "the writer did not flush in time"
sleep 1  # unflushed writes in flight
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
wait "$WRITER" 2>/dev/null || true
rbd_cli export rbd/disk "$WORK/export2" >/dev/null 2>&1 || fail "rbd export after kill -9 failed"
cmp -n $((32 << 20)) "$WORK/expected" "$WORK/export2" || fail "flushed writes were lost by kill -9"
log "kill -9 after flush: nothing flushed lost"

# 4. era over RBD, its metadata a local file given in the table.
rbd_cli create --size 16M rbd/era-disk || fail "rbd create failed"
cat >"$WORK/era.json" <<EOF
{"target": "era", "params": {"block_size": "64k"},
 "devices": {"data": {"rbd": {"image": "era-disk", "conf": "$CONF"}}, "metadata": {"file": "$WORK/disk.era"}}}
EOF
KB64=65536
start_server --table "$WORK/era.json"
[[ $(status_field .layers.0.kind) == era && $(status_field .layers.1.kind) == rbd ]] || fail "stack is not era over rbd"
nbdsh -u "$(URI)" -c "
import os
for b in (1, 2, 3, 100):
    h.pwrite(os.urandom($KB64), b * $KB64)
h.flush()" || fail "writes before the checkpoint failed"
since=$("$BOWSTACK" era checkpoint --control "$CTL" | awk '{print $3}')
[[ $since =~ ^[0-9]+$ ]] || fail "era checkpoint gave '$since'"
rbd_cli export rbd/era-disk "$WORK/era-copy" >/dev/null 2>&1 || fail "rbd export of the base copy failed"
nbdsh -u "$(URI)" -c "
import os
h.pwrite(os.urandom(4096), 2 * $KB64 + 8192)
h.pwrite(os.urandom(2 * $KB64), 200 * $KB64)
h.flush()" || fail "writes after the checkpoint failed"
stop_server
"$BOWSTACK" era check "$WORK/disk.era" >/dev/null || fail "era metadata not clean"
"$BOWSTACK" era invalidate "$WORK/disk.era" --written-since "$since" >"$WORK/inv" || fail "era invalidate failed"
printf '<blocks>\n  <block block="2"/>\n  <range begin="200" end="202"/>\n</blocks>\n' >"$WORK/inv-expected"
diff "$WORK/inv-expected" "$WORK/inv" >&2 || fail "era did not track blocks 2, 200 and 201 since era $since"
rbd_cli export rbd/era-disk "$WORK/era-now" >/dev/null 2>&1 || fail "rbd export failed"
"$BOWSTACK" era export "$WORK/disk.era" "$WORK/era-now" --since "$since" --output "$WORK/changes" >/dev/null ||
  fail "era export failed"
cmp -s "$WORK/era-copy" "$WORK/era-now" && fail "the base copy already equals the image"
"$BOWSTACK" era apply --input "$WORK/changes" "$WORK/era-copy" >/dev/null || fail "era apply failed"
cmp "$WORK/era-copy" "$WORK/era-now" || fail "the copy differs from the RBD image after the incremental apply"
log "era over rbd: changed blocks tracked, incremental backup applied"

# 5. bow over RBD: checkpoint, overwrite, stop, restore --table rolls the
# image back. Its resume journal is a local file given in the table.
rbd_cli create --size 16M rbd/bow-disk || fail "rbd create failed"
cat >"$WORK/bow.json" <<EOF
{"target": "bow",
 "devices": {"data": {"rbd": {"image": "bow-disk", "conf": "$CONF"}}, "metadata": {"file": "$WORK/bow.journal"}}}
EOF
head -c 8M /dev/urandom >"$WORK/bow-a"
start_server --table "$WORK/bow.json"
[[ $(status_field .layers.0.kind) == bow && $(status_field .layers.1.kind) == rbd ]] || fail "stack is not bow over rbd"
nbdsh -u "$(URI)" -c "
h.pwrite(open('$WORK/bow-a', 'rb').read(), 0)
h.trim(8 << 20, 8 << 20)  # free space for bow's saved copies
h.flush()" || fail "writes before the checkpoint failed"
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "bow checkpoint failed"
overwrite_blocks 5 200 || fail "overwrites after the checkpoint failed"
stop_server
rbd_cli export rbd/bow-disk "$WORK/bow-changed" >/dev/null 2>&1 || fail "rbd export failed"
cmp -s -n $((8 << 20)) "$WORK/bow-a" "$WORK/bow-changed" && fail "the overwrites did not reach the image"
"$BOWSTACK" restore --dry-run --table "$WORK/bow.json" >"$WORK/restore.out" 2>&1 ||
  fail "restore --dry-run --table failed: $(cat "$WORK/restore.out")"
"$BOWSTACK" restore --table "$WORK/bow.json" >"$WORK/restore.out" 2>&1 ||
  fail "restore --table failed: $(cat "$WORK/restore.out")"
grep -q "rbd:rbd/bow-disk: restored to the checkpoint" "$WORK/restore.out" || fail "restore said: $(cat "$WORK/restore.out")"
rbd_cli export rbd/bow-disk "$WORK/bow-restored" >/dev/null 2>&1 || fail "rbd export after restore failed"
cmp -n $((8 << 20)) "$WORK/bow-a" "$WORK/bow-restored" || fail "restore --table did not roll the RBD image back"
log "bow over rbd: restore --table rolled the image back"

# 6. Live reload keeps the open image (and its lock): plain -> era over it
# -> plain, with I/O in between.
rbd_cli create --size 16M rbd/reload-disk || fail "rbd create failed"
cat >"$WORK/plain.json" <<EOF
{"rbd": {"image": "reload-disk", "conf": "$CONF"}}
EOF
cat >"$WORK/era2.json" <<EOF
{"target": "era", "devices": {"data": {"rbd": {"image": "reload-disk", "conf": "$CONF"}},
                              "metadata": {"file": "$WORK/reload.era"}}}
EOF
start_server --table "$WORK/plain.json"
nbdsh -u "$(URI)" -c "h.pwrite(b'x' * 4096, 0); h.flush()" || fail "write before reload failed"
timeout 60 "$BOWSTACK" reload "$WORK/era2.json" --control "$CTL" >/dev/null || fail "reload to era over rbd failed"
[[ $(status_field .layers.0.kind) == era ]] || fail "reload did not put era on top"
nbdsh -u "$(URI)" -c "assert h.pread(4096, 0) == b'x' * 4096; h.pwrite(b'y' * 4096, 65536); h.flush()" ||
  fail "I/O after reload failed"
timeout 60 "$BOWSTACK" reload "$WORK/plain.json" --control "$CTL" >/dev/null || fail "reload back failed"
stop_server
rbd_cli export rbd/reload-disk "$WORK/reload-out" >/dev/null 2>&1 || fail "rbd export failed"
/usr/bin/python3 -c "
d = open('$WORK/reload-out', 'rb').read()
assert d[:4096] == b'x' * 4096 and d[65536:69632] == b'y' * 4096" || fail "writes across reloads are not on the image"
log "live reload over rbd: the image stays open"

# 7. Trim and write-zeroes of more than 2 GiB in one request (librbd counts
# the bytes in its result, past INT_MAX; that is not an error).
rbd_cli create --size 5G rbd/big || fail "rbd create failed"
cat >"$WORK/big.json" <<EOF
{"rbd": {"image": "big", "conf": "$CONF"}}
EOF
start_server --table "$WORK/big.json"
nbdsh -u "$(URI)" -c "
h.pwrite(b'z' * 4096, 1 << 30)
h.trim(0xfffff000, 0)
h.pwrite(b'z' * 4096, 1 << 30)
h.zero(3 << 30, 0)
assert h.pread(4096, 1 << 30) == bytes(4096)
h.flush()" || fail "large trim or write-zeroes failed"
stop_server
log "trim and write-zeroes over 2 GiB: ok"

# 8. Side stores left out of the table: images beside the data image.
# era: its metadata is created as rbd/auto.era, sized by the target.
rbd_cli create --size 16M rbd/auto || fail "rbd create failed"
cat >"$WORK/auto-era.json" <<EOF
{"target": "era", "params": {"block_size": "64k"}, "devices": {"data": {"rbd": {"image": "auto", "conf": "$CONF"}}}}
EOF
start_server --table "$WORK/auto-era.json"
"$BOWSTACK" table --control "$CTL" --json >"$WORK/auto-era.resolved" || fail "bowstack table failed"
grep -q '"image": *"auto.era"' "$WORK/auto-era.resolved" || fail "the resolved table has no auto.era: $(cat "$WORK/auto-era.resolved")"
rbd_cli ls rbd | grep -qx auto.era || fail "era's metadata image auto.era was not created: $(rbd_cli ls rbd)"
nbdsh -u "$(URI)" -c "h.pwrite(b'e' * $KB64, 5 * $KB64); h.flush()" || fail "write over era failed"
since=$("$BOWSTACK" era checkpoint --control "$CTL" | awk '{print $3}')
[[ $since =~ ^[0-9]+$ ]] || fail "era checkpoint gave '$since'"
nbdsh -u "$(URI)" -c "h.pwrite(b'f' * 4096, 9 * $KB64 + 4096); h.pwrite(b'g' * $KB64, 10 * $KB64); h.flush()" ||
  fail "writes after the checkpoint failed"
stop_server
# The offline tools find the metadata image (and the data image) through
# the table, with the server stopped.
timeout 60 "$BOWSTACK" era check --table "$WORK/auto-era.json" >"$WORK/auto-check" 2>&1 ||
  fail "era check --table: $(cat "$WORK/auto-check")"
grep -q "^rbd:rbd/auto.era: era metadata .* 256 blocks of 64.0 KiB, current era $since," "$WORK/auto-check" &&
  grep -q "^no damage found" "$WORK/auto-check" || fail "era check --table said: $(cat "$WORK/auto-check")"
timeout 60 "$BOWSTACK" era invalidate --table "$WORK/auto-era.json" --written-since 1 >"$WORK/auto-inv" ||
  fail "era invalidate --table failed"
printf '<blocks>\n  <block block="5"/>\n  <range begin="9" end="11"/>\n</blocks>\n' >"$WORK/auto-inv-expected"
diff "$WORK/auto-inv-expected" "$WORK/auto-inv" >&2 || fail "era metadata on RBD did not track blocks 5, 9 and 10"
timeout 60 "$BOWSTACK" era invalidate --table "$WORK/auto-era.json" --written-since "$since" >"$WORK/auto-inv2" ||
  fail "era invalidate --table failed"
printf '<blocks>\n  <range begin="9" end="11"/>\n</blocks>\n' >"$WORK/auto-inv2-expected"
diff "$WORK/auto-inv2-expected" "$WORK/auto-inv2" >&2 || fail "era metadata on RBD: not blocks 9 and 10 since era $since"
timeout 60 "$BOWSTACK" era dump --table "$WORK/auto-era.json" --logical >"$WORK/auto-dump" ||
  fail "era dump --table failed"
grep -q '<era_array>' "$WORK/auto-dump" && grep -q "<era block=\"10\" era=\"$since\"/>" "$WORK/auto-dump" ||
  fail "era dump --table --logical: $(head -c 2000 "$WORK/auto-dump")"
# An incremental export read through the table (metadata and data images)
# brings a blank copy up to the image: it was blank before era 1.
truncate -s 16M "$WORK/auto-copy"
timeout 60 "$BOWSTACK" era export --table "$WORK/auto-era.json" --since 1 --output "$WORK/auto-changes" >/dev/null ||
  fail "era export --table failed"
"$BOWSTACK" era apply --input "$WORK/auto-changes" "$WORK/auto-copy" >/dev/null || fail "era apply failed"
rbd_cli export rbd/auto "$WORK/auto-now" >/dev/null 2>&1 || fail "rbd export of auto failed"
cmp "$WORK/auto-copy" "$WORK/auto-now" || fail "era export --table: the copy differs from the RBD image"
# era restore --table writes metadata from XML into an image it creates
# beside another data image; it dumps back the same.
rbd_cli create --size 16M rbd/auto2 || fail "rbd create failed"
sed 's/"auto"/"auto2"/' "$WORK/auto-era.json" >"$WORK/auto2-era.json"
timeout 60 "$BOWSTACK" era dump --table "$WORK/auto-era.json" >"$WORK/auto.xml" || fail "era dump --table failed"
timeout 60 "$BOWSTACK" era restore --input "$WORK/auto.xml" --table "$WORK/auto2-era.json" >/dev/null ||
  fail "era restore --table failed"
rbd_cli ls rbd | grep -qx auto2.era || fail "era restore --table did not create auto2.era: $(rbd_cli ls rbd)"
timeout 60 "$BOWSTACK" era dump --table "$WORK/auto2-era.json" | cmp -s - "$WORK/auto.xml" ||
  fail "the metadata restored into auto2.era dumps differently"
log "era over rbd: metadata image auto.era created beside the data image; check, invalidate, dump, export, restore --table"

# bow: the resume journal is rbd/bdisk.bowmeta while a checkpoint is on;
# kill -9, a restart resumes the checkpoint from it, restore --table rolls
# back and removes it.
rbd_cli create --size 16M rbd/bdisk || fail "rbd create failed"
cat >"$WORK/auto-bow.json" <<EOF
{"target": "bow", "devices": {"data": {"rbd": {"image": "bdisk", "conf": "$CONF"}}}}
EOF
start_server --table "$WORK/auto-bow.json"
nbdsh -u "$(URI)" -c "
h.pwrite(open('$WORK/bow-a', 'rb').read(), 0)
h.trim(8 << 20, 8 << 20)
h.flush()" || fail "writes before the checkpoint failed"
"$BOWSTACK" checkpoint --control "$CTL" >/dev/null || fail "bow checkpoint failed"
rbd_cli ls rbd | grep -qx bdisk.bowmeta || fail "no resume journal image bdisk.bowmeta: $(rbd_cli ls rbd)"
overwrite_blocks 6 100 || fail "overwrites after the checkpoint failed"
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
# The crashed server's exclusive locks (the data image's and the journal's)
# would be broken once the cluster notices it is gone (about 30 s); break
# them at once, as an operator would (docs/rbd.md).
break_locks() {
  rbd_cli lock ls --format json "$1" | /usr/bin/python3 -c "
import json, sys
for l in json.load(sys.stdin): print(l['locker'], l['id'])" | while read -r locker id; do
    rbd_cli lock rm "$1" "$id" "$locker" || fail "rbd lock rm $1 failed"
  done
}
break_locks bdisk
break_locks bdisk.bowmeta
start_server --table "$WORK/auto-bow.json"
[[ $(status_field .layers.0.state) == CHECKPOINT ]] || fail "the checkpoint was not resumed: $(status_field .layers.0)"
overwrite_blocks 7 100 || fail "overwrites after the resume failed"
stop_server
timeout 60 "$BOWSTACK" inspect --table "$WORK/auto-bow.json" >"$WORK/inspect.out" 2>&1 ||
  fail "inspect --table failed: $(cat "$WORK/inspect.out")"
grep -q "^rbd:rbd/bdisk: checkpoint log" "$WORK/inspect.out" || fail "inspect --table said: $(cat "$WORK/inspect.out")"
"$BOWSTACK" restore --table "$WORK/auto-bow.json" >"$WORK/restore2.out" 2>&1 ||
  fail "restore --table failed: $(cat "$WORK/restore2.out")"
rbd_cli export rbd/bdisk "$WORK/bdisk-restored" >/dev/null 2>&1 || fail "rbd export after restore failed"
cmp -n $((8 << 20)) "$WORK/bow-a" "$WORK/bdisk-restored" || fail "restore did not roll bdisk back"
rbd_cli ls rbd | grep -qx bdisk.bowmeta && fail "restore left the resume journal image bdisk.bowmeta"
log "bow over rbd: resume journal image beside the data image, resumed after kill -9, removed by restore"
pass
