#!/usr/bin/env bash
# csum's layout=integrity against the reference tools: a volume made by
# `bowstack csum format --layout integrity` is one integritysetup reads with
# the fields expected (docs/format/csum.md section 11); `csum verify --layout
# integrity` passes it, and names the block whose byte dd flipped.
# Where the kernel's dm-integrity is available (not on machines without the
# device-mapper module), a volume integritysetup formats must equal ours in
# its superblock and journal, byte for byte.
. "$(dirname "$0")/lib.sh"
need truncate dd cmp integritysetup

IMG=$WORK/int.img
truncate -s 16M "$IMG"
"$BOWSTACK" csum format --layout integrity --block-size 4096 --journal-sections 4 "$IMG" >"$WORK/f.out" ||
  fail "format: $(cat "$WORK/f.out")"
dump=$(integritysetup dump "$IMG" 2>&1) || fail "integritysetup dump refused our volume: $dump"
expect() { grep -qE "$1" <<<"$dump" || fail "integritysetup dump lacks /$1/: $dump"; }
# The reference's worked example: 16 MiB, 4096-byte blocks, 4 sections.
# (cryptsetup 2.6 prints "superblock_version 4", later ones "version: 4".)
expect '^(superblock_version|version:) *4$'
expect '^(integrity_tag_size|tag size:) *4( |$)'
expect '^(sector_size|sector size:) *4096( |$)'
expect '^(provided_data_sectors|data size:) *31160( |$)'
expect '^(journal_sections|journal sections:) *4$'
expect '^(log2_interleave_sectors|log2 interleave sectors:) *15$'
expect '^(log2_blocks_per_bitmap|log2 blocks per bitmap:) *12$'
expect '^flags:? *fix_padding *$'
log "ok: integritysetup dump reads version 4, tag size 4, 4096-byte sectors, 31160 data sectors, 4 sections"

out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || fail "verify of a fresh volume: $out"
grep -q "3895 blocks of 4096 bytes verified, 0 mismatches" <<<"$out" || fail "verify: $out"

# Block 100's data: area 0 starts at sector 1576 (superblock and journal),
# its 32 tag sectors first, then logical sector 800.
off=$(((1576 + 32 + 800) * 512 + 17))
printf '\xff' | dd of="$IMG" bs=1 seek="$off" conv=notrunc status=none
rc=0
out=$("$BOWSTACK" csum verify --layout integrity "$IMG") || rc=$?
[[ $rc -eq 1 ]] || fail "verify exited $rc on a damaged volume: $out"
grep -q "^mismatch: block 100 (byte offset 409600)$" <<<"$out" || fail "verify did not name block 100: $out"
out=$("$BOWSTACK" csum verify --layout integrity --json "$IMG") || true
grep -q '"block": 100' <<<"$out" || fail "verify --json: $out"
log "ok: a byte flipped by dd is block 100, exit 1"

rc=0
out=$("$BOWSTACK" csum verify "$IMG" 2>&1) || rc=$?
[[ $rc -eq 2 ]] || fail "layout=csum verify of an integrity volume exited $rc: $out"
printf 'x' | dd of="$IMG" bs=1 seek=0 conv=notrunc status=none
rc=0
out=$("$BOWSTACK" csum verify --layout integrity "$IMG" 2>&1) || rc=$?
[[ $rc -eq 2 ]] && grep -q "not a dm-integrity volume" <<<"$out" || fail "damaged magic (rc $rc): $out"

# 512-byte blocks and the kernel's default journal for 64 MiB: 1024 sectors,
# 5 sections of 176; tag runs of 256 sectors; the fourth area is partial.
IMG2=$WORK/int512.img
truncate -s 64M "$IMG2"
"$BOWSTACK" csum format --layout integrity --block-size 512 "$IMG2" >/dev/null || fail "format 512"
dump=$(integritysetup dump "$IMG2" 2>&1) || fail "integritysetup dump: $dump"
expect '^(sector_size|sector size:) *512( |$)'
expect '^(journal_sections|journal sections:) *5$'
expect "^(provided_data_sectors|data size:) *$((3 * 32768 + 131072 - (8 + 5 * 176 + 3 * (32768 + 256) + 256)))( |\$)"
out=$("$BOWSTACK" csum verify --layout integrity "$IMG2") || fail "verify 512: $out"
log "ok: 512-byte blocks: $out"

# --table: a csum node with layout=integrity decides the layout; formatting
# it again (its data lost) must be asked for, the layout=csum tools refuse it.
cat >"$WORK/it.json" <<EOF
{"target": "csum", "params": {"layout": "integrity"}, "devices": {"data": {"file": "$IMG2"}, "metadata": null}}
EOF
out=$("$BOWSTACK" csum verify --table "$WORK/it.json") || fail "verify --table of layout=integrity: $out"
[[ $out == "$("$BOWSTACK" csum verify --layout integrity "$IMG2")" ]] || fail "verify --table differs: $out"
for verb in format rebuild; do
  rc=0
  "$BOWSTACK" csum $verb --table "$WORK/it.json" >"$WORK/t.out" 2>&1 || rc=$?
  [[ $rc -eq 2 ]] && grep -q "the table's csum node has layout=integrity" "$WORK/t.out" ||
    fail "csum $verb --table of layout=integrity (rc $rc): $(cat "$WORK/t.out")"
done
log "ok: --table follows the csum node's layout=integrity"

# The kernel as the oracle, where it can run (it writes the superblock and
# journal itself when integritysetup formats).
KIMG=$WORK/kernel.img
truncate -s 64M "$KIMG"
if integritysetup format --batch-mode --no-wipe --sector-size 512 "$KIMG" >"$WORK/k.out" 2>&1; then
  initial=$(((8 + 5 * 176) * 512))
  cmp -n "$initial" "$KIMG" "$IMG2" || fail "the kernel's superblock and journal differ from ours"
  log "ok: integritysetup format wrote the same superblock and journal as csum format"
else
  log "SKIP (kernel part): integritysetup format failed here: $(tr '\n' ' ' <"$WORK/k.out")"
fi
pass
