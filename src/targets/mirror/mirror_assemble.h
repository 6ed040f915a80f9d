// Assembly: from what the legs of a mirror table hold (md v1.2 superblocks
// and bitmaps, or nothing) to the array the mirror serves: which legs are in
// sync, which must be rebuilt and from where, which regions need a resync,
// and the superblocks to write at start (docs/targets/mirror.md, "Start").
//
// The rules follow md's (super_1_validate, the kernel's bitmap load):
//  * all legs blank: a new array (new uuids, roles in table order);
//  * otherwise the freshest leg (highest events) holds the truth: a leg is
//    trusted when its events are at most one behind (one update may have
//    been cut by a crash), the freshest role table gives its dev_number an
//    active role, and no fresher leg claims the same dev_number. A trusted
//    leg that was being rebuilt goes on from its recovery_offset. Every
//    other present leg (blank, stale, marked faulty or removed) is rebuilt:
//    only where the in-sync legs' bitmap has bits set when md's re-add rule
//    allows it (mirror_readd.h), else from sector 0;
//  * the in-sync legs' bits are kept: they record what a missing leg lacks;
//  * a dirty array (resync_offset not MaxSector) is resynced where the
//    bitmaps of its in-sync legs have bits set, or everywhere when a bitmap
//    is missing or out of date;
//  * the table is the membership: raid_disks is its number of legs; legs
//    the freshest table names but the new table lacks are dropped (their
//    roles become spare).
//
// Pure: no I/O; the target reads the probes and writes the result.
// Thread-safety: pure functions and value types.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "targets/mirror/md_bitmap_format.h"
#include "targets/mirror/md_format.h"

namespace bowstack::mirror {

enum class LegState {
  kInSync,      // holds every block of the array
  kRecovering,  // holds blocks below its sync mark; a job copies the rest
  kStale,       // to be rebuilt from sector 0; nothing trusted yet
  kFaulty,      // failed while serving; no I/O goes to it
};
const char* leg_state_name(LegState s);

// What one leg holds at start, read by the target.
struct LegProbe {
  uint64_t device_sectors = 0;
  // The 4 KiB at sector 8: nullopt when the leg is blank (all zero there).
  std::optional<md::Superblock> sb;
  // The bitmap superblock and area (superblock + bits) when the leg has a
  // superblock with a readable, matching bitmap; nullopt otherwise.
  std::optional<md::BitmapSuperblock> bitmap;
  std::vector<std::byte> bitmap_area;
};

struct AssembleParams {
  // Bytes per bitmap bit for a new array; 0 picks the default. For an
  // existing one it must be 0 or what the array uses.
  uint32_t region_size = 0;
  std::string name;                    // set_name of a new array ("bowstack:NAME")
  std::vector<bool> write_mostly;      // per table leg (may be shorter: false)
  uint64_t now = 0;                    // md::encode_time()
  Uuid new_set_uuid{};                 // for a new array
  std::vector<Uuid> new_device_uuids;  // one per table leg, used for legs that get a new superblock
};

struct PlannedLeg {
  md::Superblock sb;  // to write at start (events set by the target)
  LegState state = LegState::kInSync;
  uint64_t mark_sectors = 0;  // kRecovering: array sectors already copied
  bool new_metadata = false;  // the whole bitmap area and bad-block log must be written
  // kStale or kRecovering: recovered only in the regions of
  // Assembly::dirty_bits (md's bitmap-guided re-add); else every region from
  // its mark is copied.
  bool guided = false;
  std::string why;  // for the log: why the leg is not in sync, and how it is rebuilt
};

struct Assembly {
  bool created = false;  // a new array
  uint64_t events = 0;   // the freshest leg's events (0 for a new array)
  // What the bitmap written at start says; raised to events + 1 when the
  // in-sync legs' bitmaps are missing or out of date (the bits a missing
  // leg would need are lost: no leg outside this start may be re-added).
  uint64_t events_cleared = 0;
  uint64_t size_sectors = 0;  // the array's size
  uint32_t chunk = 0;         // region size, bytes per bit
  uint64_t bits = 0;
  bool dirty = false;  // stopped uncleanly: regions in `resync` differ
  // Bits whose regions must be resynced (in-sync legs may differ there).
  std::vector<uint64_t> resync;
  // Bits set in the in-sync legs' current bitmaps (ORed): kept set, since
  // they record what a missing leg lacks, and the regions a guided leg is
  // copied.
  std::vector<uint64_t> dirty_bits;
  std::vector<PlannedLeg> legs;  // in table order
};

// The default region size: the smallest power of two >= 64 KiB whose bitmap
// fits between the superblock and the data of a leg of `device_sectors`.
uint32_t default_region_size(uint64_t device_sectors);

// EINVAL (a sentence naming the leg by table index) for legs that cannot
// serve: a foreign or damaged superblock, two arrays, no leg with a
// complete copy, a leg too small, a region size that differs.
Result<Assembly> assemble(std::span<const LegProbe> legs, const AssembleParams& params);

}  // namespace bowstack::mirror
