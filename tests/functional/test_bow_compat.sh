#!/usr/bin/env bash
# Compatibility with Android's dm-bow, both directions, proven with an
# independent implementation (tests/bow/android_bow.py):
#  - logs written as Android's kernel writes them restore with `bowstack restore`;
#  - logs written by bowstack restore with Android's (vold's) algorithm.
# Plus: dry-run writes nothing, corrupt logs are refused untouched (and
# --roll-forward works), no-checkpoint is exit 0, and restore is resumable
# after being stopped at every write.
. "$(dirname "$0")/lib.sh"
need truncate sha256sum cmp
AB="/usr/bin/python3 $BOWSTACK_SRC/tests/bow/android_bow.py"
cd "$WORK"

expect_fail() {  # PATTERN CMD...: non-zero exit, PATTERN in output
  local pattern=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  [[ $rc -ne 0 ]] || fail "'$*' succeeded"
  echo "$out" | grep -qE -- "$pattern" || fail "'$*' said '$out', expected '$pattern'"
}

# 1. Android-written logs -> bowstack restore.
for bs in 512 4096; do
  for seed in 1 2; do
    $AB make-image --output img --expected exp --meta meta.json --block-size $bs --blocks 1024 --writes 300 \
      --seed $seed >/dev/null
    cp img img.vold
    "$BOWSTACK" inspect img >inspect.txt || fail "inspect failed"
    grep -q "checksums verified" inspect.txt || fail "inspect did not verify"
    "$BOWSTACK" inspect --json img | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); assert j["valid"] and j["entries"] > 0' ||
      fail "inspect --json"
    before=$(sha256sum <img)
    "$BOWSTACK" restore --dry-run img | grep -q "is valid" || fail "dry run did not validate"
    [[ $(sha256sum <img) == "$before" ]] || fail "dry run wrote to the image"
    "$BOWSTACK" restore img | grep -q "restored to the checkpoint" || fail "restore (bs $bs seed $seed)"
    $AB compare img exp --meta meta.json >/dev/null || fail "bowstack restore of an Android log is wrong (bs $bs seed $seed)"
    # The independent restorer agrees (checks the test tool itself).
    $AB restore img.vold >/dev/null || fail "android_bow.py restore failed"
    $AB compare img.vold exp --meta meta.json >/dev/null || fail "android_bow.py restore is wrong"
    cmp -s img img.vold || fail "bowstack and the reference restorer produced different images"
    "$BOWSTACK" restore img | grep -q "no checkpoint" || fail "second restore did not say 'no checkpoint'"
  done
done
log "Android-written logs restore correctly"

# 2. Resumable: stopped after every single write, then run again.
$AB make-image --output base --expected exp --meta meta.json --block-size 512 --blocks 256 --writes 60 --seed 9 >/dev/null
cp base full && "$BOWSTACK" restore full >/dev/null
k=0
while :; do
  cp base img
  rc=0
  "$BOWSTACK" restore --stop-after-writes $k img >/dev/null 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then break; fi  # k exceeded the writes a restore makes
  "$BOWSTACK" restore img >/dev/null || fail "re-run after stopping at write $k failed"
  cmp -s img full || fail "stopped at write $k and re-run: result differs"
  k=$((k + 1))
done
((k > 20)) || fail "resumability loop too short ($k)"
log "restore stopped after each of $k writes and re-run: identical results"
# ... and stopped by the reference restorer (a WOB image), finished by bowstack.
cp base img
$AB restore --stop-after 30 img >/dev/null || true
"$BOWSTACK" inspect img | grep -q "interrupted restore" || fail "no WOB after an interrupted reference restore"
cp img img.wob
"$BOWSTACK" restore img | grep -q "interrupted" || fail "bowstack did not finish the interrupted restore"
cmp -s img full || fail "finishing an interrupted restore gave a different result"
# inspect and restore agree on a WOB (one check decides for both, and
# nothing is written unless it passes): one whose log block is unusable
# (block size 3000), and one whose oldest saved copy is damaged (inspect
# used to call that restorable; restore wrote the entries before it and
# stopped there, half done).
python3_poke() { /usr/bin/python3 -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(struct.pack("<I", int(sys.argv[3])))' "$@"; }
cp img.wob img.wob2
python3_poke img.wob 8 3000
cp img.wob img.wob.orig
expect_fail "interrupted restore \(magic WOB\) cannot be finished, nothing written: .*block size 3000" "$BOWSTACK" restore img.wob
expect_fail "interrupted restore \(magic WOB\) that restore cannot finish: .*block size 3000" "$BOWSTACK" inspect img.wob
cmp -s img.wob img.wob.orig || fail "a refused restore of a WOB image changed it"
# A saved copy restore will read as it lies: no entry restored before it writes over it.
dest=$("$BOWSTACK" inspect --json img.wob2 | /usr/bin/python3 -c '
import json, sys
order = [e for b in reversed(json.load(sys.stdin)["log_blocks"]) for e in reversed(b["entries"])]
for i, e in enumerate(order):
    d = (e["dest"], e["dest"] + e["size"] // 512)
    if all(x["source"] + x["size"] // 512 <= d[0] or x["source"] >= d[1] for x in order[:i]):
        print(e["dest"]); break')
[[ -n $dest ]] || fail "no saved copy of the WOB image to damage"
python3_poke img.wob2 $((dest * 512 + 100)) 12345
cp img.wob2 img.wob2.orig
expect_fail "interrupted restore \(magic WOB\) cannot be finished, nothing written: log block [0-9]+ entry [0-9]+: checksum mismatch" "$BOWSTACK" restore img.wob2
expect_fail "interrupted restore \(magic WOB\) that restore cannot finish: .*checksum mismatch" "$BOWSTACK" inspect img.wob2
expect_fail "checksum mismatch" "$BOWSTACK" restore --dry-run img.wob2
cmp -s img.wob2 img.wob2.orig || fail "a refused restore of a damaged WOB image changed it"

# 3. Corrupt logs: refused, untouched; --roll-forward keeps the changes.
$AB make-image --output good --expected exp --meta meta.json --block-size 4096 --blocks 512 --writes 100 --seed 4 >/dev/null
poke() {  # FILE OFFSET VALUE(u32)
  /usr/bin/python3 -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(struct.pack("<I", int(sys.argv[3])))' "$@"
}
count=$(/usr/bin/python3 -c 'import struct; print(struct.unpack("<I", open("good","rb").read()[12:16])[0])')
last=$((28 + 24 * (count - 1)))
for case in crc dest size seq count magicver; do
  cp good bad
  case $case in
    crc) poke bad $((last + 20)) 12345; want="checksum mismatch" ;;
    dest) poke bad $((last + 8)) 4000000000; want="outside the device" ;;
    size) poke bad $((last + 16)) 4097; want="multiple of the block size" ;;
    seq) poke bad 16 7; want="sequence|bad magic|entry 0|checksum" ;;
    count) poke bad 12 100000; want="entry count" ;;
    magicver) poke bad 4 512; want="version" ;;
  esac
  before=$(sha256sum <bad)
  expect_fail "$want" "$BOWSTACK" restore bad
  [[ $(sha256sum <bad) == "$before" ]] || fail "a failed validation ($case) wrote to the image"
done
cp good bad
poke bad $((last + 20)) 12345
live=$(/usr/bin/python3 -c '
import struct
d = open("bad","rb").read()
s0 = struct.unpack("<Q", d[20:28])[0]
print(s0 * 512)')
"$BOWSTACK" restore --roll-forward bad | grep -q "rolled forward" || fail "--roll-forward"
cmp -s -n 4096 bad <(tail -c +$((live + 1)) bad) || fail "roll-forward did not put the live block 0 back"
"$BOWSTACK" restore bad | grep -q "no checkpoint" || fail "after roll-forward the image still has a checkpoint"

# 4. No checkpoint: exit 0, untouched.
head -c 1M /dev/urandom >plain
before=$(sha256sum <plain)
"$BOWSTACK" restore plain | grep -q "no checkpoint" || fail "no-checkpoint image"
[[ $(sha256sum <plain) == "$before" ]] || fail "no-checkpoint image modified"

# 5. bowstack-written logs -> Android's algorithm.
/usr/bin/python3 -c "import nbd" 2>/dev/null || need python3-libnbd-module
for bs in 512 4096; do
  rm -f img img.bowmeta
  head -c 16M /dev/urandom >img
  cp img expected
  start_server "$WORK/img" --target bow:block_size=$bs
  /usr/bin/python3 - "$(URI)" "$CTL" "$BOWSTACK" $bs <<'PY' || fail "writing through bow (bs $bs)"
import json, random, subprocess, sys, nbd
uri, ctl, exe, bs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
size = 16 << 20
h = nbd.NBD(); h.connect_uri(uri)
h.set_strict_mode(0)           # let unaligned writes through: bow must handle them
h.trim(size // 2, size // 2)   # upper half is free space
subprocess.check_call([exe, "checkpoint", "--control", ctl])
rnd = random.Random(bs)
# A burst of concurrent first overwrites: batches that overflow the log
# block, so bow saves log blocks partly filled (checked below at 4096).
cookies = []
for b in rnd.sample(range(1, (size // 2) // bs), 1200 if bs == 4096 else 600):
    while h.aio_in_flight() >= 128:
        h.poll(-1)
    cookies.append(h.aio_pwrite(bytes([rnd.randrange(256)]) * bs, b * bs))
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
for i in range(600):
    off = rnd.randrange(0, size - 70000)
    ln = rnd.choice([bs, 2 * bs, 8 * bs, 1000, 5000, 65536])
    if rnd.random() < 0.5:
        off -= off % bs
    if rnd.random() < 0.03:
        off = 0                      # block 0 (its live copy)
    try:
        h.pwrite(bytes([rnd.randrange(256)]) * ln, off)
    except nbd.Error as e:  # out of backup space: refused, nothing changed
        assert "ENOSPC" in str(e) or "No space" in str(e), e
h.flush()
st = json.loads(subprocess.check_output([exe, "status", "--control", ctl, "--json"]))
bow = st["layers"][0]
assert bow["state"] == "CHECKPOINT" and bow["log_entries"] > 10, bow
print("log blocks", bow["log_blocks"], "entries", bow["log_entries"])
json.dump({"block_size": bs, "in_use": list(range((size // 2) // bs))}, open("meta5.json", "w"))
PY
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
  if [[ $bs == 4096 ]]; then
    "$BOWSTACK" inspect --json img | /usr/bin/python3 -c '
import json, sys
blocks = json.load(sys.stdin)["log_blocks"]
cap = (4096 - 28) // 24
assert any(b["count"] < cap for b in blocks[:-1]), [b["count"] for b in blocks]' ||
      fail "no partly filled log block was saved: the burst did not exercise that path"
  fi
  $AB restore img >/dev/null || fail "Android's algorithm failed on a bowstack log (bs $bs)"
  $AB compare img expected --meta meta5.json >/dev/null || fail "Android's algorithm restored a bowstack log wrongly (bs $bs)"
done
log "bowstack-written logs restore correctly with Android's algorithm"
pass
