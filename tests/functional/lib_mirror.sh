# shellcheck shell=bash
# Helpers for the mirror target's functional tests. Source after lib.sh.
# Provides: mirror_field EXPR (a Python expression over the mirror node's
# status JSON `m`), wait_mirror EXPR SECONDS WHAT, data_offset LEG (bytes,
# from mdadm --examine), legs_equal A B (their data areas are equal),
# examine LEG (mdadm --examine output), examine_field LEG FIELD, and
# mdadm_dirty_bits LEG (mdadm -X through a read-only loop device; empty when
# losetup cannot be used and CI is not true).
need mdadm cmp /usr/bin/python3

# The first node of kind "mirror" in the status tree, as JSON `m`; prints
# the value of EXPR.
mirror_field() {
  "$BOWSTACK" status --control "$CTL" --json | /usr/bin/python3 -c "
import json, sys
def find(n):
    if isinstance(n, dict):
        if n.get('kind') == 'mirror':
            return n
        for c in n.get('devices', {}).values():
            for x in (c if isinstance(c, list) else [c]):
                r = find(x)
                if r is not None:
                    return r
    return None
m = find(json.load(sys.stdin)['tree'])
assert m is not None, 'no mirror node in the status tree'
v = eval(sys.argv[1])
print(json.dumps(v) if isinstance(v, (dict, list)) else v)" "$1"
}

# wait_mirror EXPR SECONDS WHAT: polls until EXPR over `m` is True.
wait_mirror() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ $(mirror_field "$1") == True ]] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server died while waiting for $3"
    sleep 0.1
  done
  log "mirror status: $(mirror_field m)"
  fail "timed out after $2 s waiting for $3 ($1)"
}

examine() { mdadm --examine "$1" 2>&1; }
# examine_field LEG FIELD: the value after "FIELD : " in mdadm --examine.
examine_field() {
  examine "$1" | sed -n "s/^ *$2 : //p" | head -n 1
}
data_offset() {
  local s
  s=$(examine_field "$1" "Data Offset" | awk '{print $1}')
  [[ $s =~ ^[0-9]+$ ]] || fail "no Data Offset in mdadm --examine $1: $(examine "$1")"
  echo $((s * 512))
}
# legs_equal A B [SIZE]: the data areas (from each leg's data offset, SIZE
# bytes: default the array's size from mdadm) hold the same bytes.
legs_equal() {
  local oa ob n
  oa=$(data_offset "$1")
  ob=$(data_offset "$2")
  n=${3:-$(($(examine_field "$1" "Array Size" | awk '{print $1}') * 1024))}
  cmp -n "$n" -i "$oa:$ob" "$1" "$2" >/dev/null
}

# examine_ok LEG ROLE STATE ARRAY_STATE: mdadm reads LEG as a raid1 member
# in role ROLE with a correct checksum.
examine_ok() {
  local out
  out=$(examine "$1")
  grep -q "Raid Level : raid1" <<<"$out" || fail "$1: not a raid1 member: $out"
  grep -q "Checksum : [0-9a-f]* - correct" <<<"$out" || fail "$1: bad checksum: $out"
  grep -q "Device Role : Active device $2\$" <<<"$out" || fail "$1: not active device $2: $out"
  grep -q "State : $3\$" <<<"$out" || fail "$1: state is not $3: $out"
  grep -q "Array State : $4 " <<<"$out" || fail "$1: array state is not $4: $out"
}

# mdadm_dirty_bits LEG: the dirty bit count of LEG's internal bitmap from
# mdadm -X on a read-only loop device; empty if losetup is unusable here.
mdadm_dirty_bits() {
  local loop out
  if ! loop=$(losetup --find --show --read-only "$1" 2>/dev/null); then
    [[ ${CI:-} == true ]] && fail "losetup failed on $1"
    return 0
  fi
  out=$(mdadm -X "$loop" 2>&1) || true
  losetup -d "$loop" || true
  sed -n 's/.*Bitmap : [0-9]* bits (chunks), \([0-9]*\) dirty.*/\1/p' <<<"$out" | grep . ||
    fail "mdadm -X $1: no bitmap line: $out"
}

# flip_byte FILE OFFSET: inverts the byte at OFFSET in place.
flip_byte() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf '%b' "\\$(printf '%03o' $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# msg TEXT: a message to the mirror node; prints the reply.
msg() { "$BOWSTACK" message --target mirror --control "$CTL" "$1"; }
