#!/usr/bin/env bash
# Interoperability with thin-provisioning-tools (Debian's era_restore,
# era_dump, era_invalidate, era_check): our dump restores into real dm-era
# metadata, their dump of it is identical to ours (but for the uuid), their
# invalidate agrees with ours for every era, and their dump restores into ours.
. "$(dirname "$0")/lib.sh"
need qemu-io truncate era_restore era_dump era_invalidate era_check

IMG=$WORK/img
truncate -s 32M "$IMG"
start_server "$IMG" --target era:block_size=32K
q() { qemu-io -f raw "$(URI)" "$@" >/dev/null 2>&1 || fail "qemu-io $* failed"; }
q -c "write -P 1 0 1M" -c "write -P 2 7M 100k"
"$BOWSTACK" era checkpoint --control "$CTL" >/dev/null
q -c "write -P 3 512k 1M" -c "write -P 4 20M 32k"
"$BOWSTACK" era checkpoint --control "$CTL" >/dev/null
q -c "write -P 5 300k 64k" -c "write -P 6 31M 1M" -c "flush"
stop_server

"$BOWSTACK" era dump "$IMG.era" >"$WORK/ours.xml" || fail "era dump failed"
truncate -s 16M "$WORK/dm-era.md"
era_restore -i "$WORK/ours.xml" -o "$WORK/dm-era.md" || fail "thin-provisioning-tools' era_restore rejected our dump"
era_check "$WORK/dm-era.md" >/dev/null || fail "era_check finds the restored dm-era metadata damaged"
era_dump "$WORK/dm-era.md" >"$WORK/theirs.xml" || fail "era_dump failed"
diff <(sed 1d "$WORK/ours.xml") <(sed 1d "$WORK/theirs.xml") >&2 || fail "era_dump of our metadata differs from ours"
head -1 "$WORK/theirs.xml" | sed 's/uuid="[^"]*"/uuid=""/' | cmp -s - <(head -1 "$WORK/ours.xml" | sed 's/uuid="[^"]*"/uuid=""/') ||
  fail "superblock lines differ: $(head -1 "$WORK/theirs.xml") vs $(head -1 "$WORK/ours.xml")"
diff <("$BOWSTACK" era dump --logical "$IMG.era" | sed 1d) <(era_dump --logical "$WORK/dm-era.md" | sed 1d) >&2 ||
  fail "logical dumps differ"
for n in 0 1 2 3 4; do
  diff <("$BOWSTACK" era invalidate "$IMG.era" --written-since $n) \
    <(era_invalidate --written-since $n "$WORK/dm-era.md" | sed 's/end = "/end="/') >&2 ||
    fail "era_invalidate --written-since $n disagrees"
done
"$BOWSTACK" era restore -i "$WORK/theirs.xml" "$WORK/back.era" >/dev/null || fail "restore of era_dump's XML failed"
diff <("$BOWSTACK" era dump "$WORK/back.era" | sed 1d) <(sed 1d "$WORK/ours.xml") >&2 ||
  fail "their XML did not restore to the same metadata"
pass
