#!/usr/bin/env bash
# csum and mirror over RBD images of a real one-node Ceph cluster
# (scripts/ceph-cluster.sh; issue 20):
#  A. csum over a new RBD image, its checksums the default image beside it
#     (disk.csum, created when the server starts: the image's block status
#     shows it was never written); the export of the plain image reports
#     its unwritten objects as holes; what is written over NBD verifies
#     offline with `csum verify --table`; a byte flipped in the data image
#     behind csum's back (through a plain server of the image) reads as EIO
#     over csum while its neighbours read back; `csum verify --table`
#     refuses while the server holds the images; after the stop it and
#     `csum dump --table --block` name the block, and `csum rewrite --table`
#     accepts it again.
#  B. mirror with a file leg and an RBD leg, written at once
#     (parallel_writes=on): after writes over NBD and a
#     clean stop, the RBD leg's data area (from `rbd export`) equals the file
#     leg's and what was written, and mdadm --examine reads the exported leg
#     as a clean raid1 member.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_mirror.sh"
need nbdcopy nbdsh cmp
. "$(dirname "$0")/lib_rbd.sh"
# tool ARGS...: a bounded offline tool run; output in $WORK/tool.out, the
# exit status in $rc.
tool() {
  rc=0
  timeout 60 "$BOWSTACK" "$@" >"$WORK/tool.out" 2>&1 || rc=$?
}

log "A: csum over rbd, checksums in the image disk.csum"
rbd_cli create --size 16M rbd/disk || fail "rbd create failed"
cat >"$WORK/csum.json" <<EOF
{"target": "csum", "devices": {"data": {"rbd": {"image": "disk", "conf": "$CONF"}}}}
EOF
cat >"$WORK/plain.json" <<EOF
{"rbd": {"image": "disk", "conf": "$CONF"}}
EOF
head -c 16M /dev/urandom >"$WORK/src"
# A new image is all holes to NBD clients (rbd_diff_iterate2), which is
# how csum tells it from one holding data without checksums.
start_server --table "$WORK/plain.json"
nbdinfo --map "$(URI)" >"$WORK/map" || fail "nbdinfo --map failed"
grep -Eq "^ +0 +16777216 +3 +hole,zero" "$WORK/map" || fail "a new image is not one hole: $(cat "$WORK/map")"
nbdsh -u "$(URI)" -c "h.pwrite(bytes(4096), 8 << 20); h.flush()" || fail "write to the plain image failed"
nbdinfo --map "$(URI)" >"$WORK/map" || fail "nbdinfo --map failed"
grep -Eq "^ +8388608 +4194304 +0 +data" "$WORK/map" || fail "the written object is not data: $(cat "$WORK/map")"
nbdsh -u "$(URI)" -c "h.trim(16 << 20, 0); h.flush()" || fail "trim of the plain image failed"
stop_server
start_server --table "$WORK/csum.json"
[[ $(status_field .layers.0.kind) == csum && $(status_field .layers.1.kind) == rbd ]] ||
  fail "the stack is not csum over rbd"
rbd_cli ls rbd | grep -qx disk.csum || fail "csum's checksums image disk.csum was not created: $(rbd_cli ls rbd)"
timeout 60 nbdcopy "$WORK/src" "$(URI)" || fail "nbdcopy into csum over rbd failed"
stop_server
tool csum verify --table "$WORK/csum.json"
[[ $rc -eq 0 ]] || fail "csum verify --table (status $rc): $(cat "$WORK/tool.out")"
grep -q "^rbd:rbd/disk: 4096 blocks of 4096 bytes verified, 0 mismatches" "$WORK/tool.out" ||
  fail "csum verify --table said: $(cat "$WORK/tool.out")"

# One byte of block 7 flipped in the data image, through a plain server of
# it (csum is not in the way).
BLOCK=7
start_server --table "$WORK/plain.json"
nbdsh -u "$(URI)" -c "
off = $BLOCK * 4096  # the export's minimum block is 512 bytes
b = bytearray(h.pread(512, off))
b[100] ^= 0xff
h.pwrite(bytes(b), off)
h.flush()" || fail "flipping a byte of block $BLOCK failed"
stop_server
start_server --table "$WORK/csum.json"
/usr/bin/python3 - "$(URI)" "$WORK/src" $BLOCK <<'EOF' || fail "reads over csum after the flip are wrong"
import errno, sys
import nbd
uri, src, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
for b in (block - 1, block + 1):
    assert h.pread(4096, b * 4096) == data[b * 4096:(b + 1) * 4096], f"block {b} reads wrong"
try:
    h.pread(4096, block * 4096)
    raise SystemExit(f"block {block} read without an error")
except nbd.Error as e:
    # Debian's libnbd names the errno ('EIO'); a number is accepted too.
    assert e.errno in (errno.EIO, "EIO"), f"block {block}: {e} (errno {e.errno!r}), want EIO"
h.shutdown()
EOF
# While the server holds the images, an offline reader refuses them.
tool csum verify --table "$WORK/csum.json"
[[ $rc -eq 2 ]] && grep -q "rbd:rbd/disk: the image is in use: .* holds a lock on it" "$WORK/tool.out" ||
  fail "csum verify --table beside a running server (status $rc): $(cat "$WORK/tool.out")"
stop_server
tool csum verify --table "$WORK/csum.json"
[[ $rc -eq 1 ]] && grep -q "^mismatch: block $BLOCK (byte offset $((BLOCK * 4096)))" "$WORK/tool.out" ||
  fail "csum verify --table after the flip (status $rc): $(cat "$WORK/tool.out")"
grep -q "1 mismatches" "$WORK/tool.out" || fail "csum verify --table found more than block $BLOCK: $(cat "$WORK/tool.out")"
tool csum dump --table "$WORK/csum.json" --block $BLOCK
[[ $rc -eq 1 ]] && grep -q "MISMATCH" "$WORK/tool.out" ||
  fail "csum dump --table --block $BLOCK (status $rc): $(cat "$WORK/tool.out")"
tool csum rewrite --table "$WORK/csum.json" --block $BLOCK
[[ $rc -eq 0 ]] || fail "csum rewrite --table (status $rc): $(cat "$WORK/tool.out")"
tool csum verify --table "$WORK/csum.json"
[[ $rc -eq 0 ]] || fail "csum verify --table after rewrite (status $rc): $(cat "$WORK/tool.out")"
log "csum over rbd: verify --table passes, a flipped byte reads as EIO and is reported, rewrite accepts it"

log "B: mirror with a file leg and an RBD leg"
SIZE=$((63 << 20))  # 64 MiB legs: data from 1 MiB (md's offset), 63 MiB exported
rbd_cli create --size 64M rbd/leg || fail "rbd create failed"
cat >"$WORK/mirror.json" <<EOF
{"target": "mirror", "params": {"region_size": "64K", "parallel_writes": "on"},
 "devices": {"legs": [{"file": "$WORK/leg0.img", "create": "64M"}, {"rbd": {"image": "leg", "conf": "$CONF"}}]}}
EOF
head -c $SIZE /dev/urandom >"$WORK/msrc"
start_server --table "$WORK/mirror.json"
[[ $(mirror_field '[l["state"] for l in m["legs"]] == ["in_sync", "in_sync"]') == True ]] ||
  fail "blank legs are not both in_sync: $(mirror_field m)"
timeout 60 nbdcopy --connections=4 "$WORK/msrc" "$(URI)" || fail "nbdcopy into the mirror failed"
timeout 60 nbdcopy "$(URI)" "$WORK/mback" || fail "nbdcopy out of the mirror failed"
cmp "$WORK/msrc" "$WORK/mback" || fail "read back over the mirror differs"
stop_server
rbd_cli export rbd/leg "$WORK/leg1.img" >/dev/null 2>&1 || fail "rbd export of the RBD leg failed"
[[ $(data_offset "$WORK/leg1.img") == $((1 << 20)) ]] || fail "RBD leg's data offset is $(data_offset "$WORK/leg1.img")"
legs_equal "$WORK/leg0.img" "$WORK/leg1.img" || fail "the legs differ in their data areas"
cmp -n $SIZE -i $((1 << 20)):0 "$WORK/leg1.img" "$WORK/msrc" || fail "the RBD leg's data area is not what was written"
examine_ok "$WORK/leg0.img" 0 clean AA
examine_ok "$WORK/leg1.img" 1 clean AA
[[ $(examine_field "$WORK/leg0.img" Events) == "$(examine_field "$WORK/leg1.img" Events)" ]] ||
  fail "the legs' events differ"
log "mirror over a file and rbd: legs equal, mdadm reads the RBD leg as a clean member"
pass
