// md's re-add: which legs that are not in sync may be recovered only where
// the write-intent bitmap has bits set, instead of from sector 0
// (docs/targets/mirror.md, "Re-adding a leg").
//
// The rule is md's (super_1_validate with a bitmap: a leg whose events are
// at least the bitmap's events_cleared gets Bitmap_sync; super_1_sync and
// feature bit 128, RECOVERY_BITMAP, for one whose guided copy is under way),
// with what makes it safe here spelled out:
//  * bits are never cleared while a table leg is missing (faulty, stale or
//    recovering), and events_cleared then stays put;
//  * a bit is cleared only after an events_cleared above the events of every
//    leg outside the running array is durable (mirror_meta.cc), so a leg
//    whose events are >= events_cleared left after the last bit was cleared:
//    every write it lacks has its bit set on the in-sync legs;
//  * writes go to a leg from the moment it is re-added, so it lacks exactly
//    the regions whose bits were set at assembly.
//
// Pure: no I/O. Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "targets/mirror/md_format.h"

namespace bowstack::mirror {

// What the in-sync legs' bitmaps say, as assembly found them.
struct BitmapView {
  // Every in-sync leg has a bitmap of the array's chunk that is not out of
  // date (md::bitmap_out_of_date): their bits (ORed) record what a missing
  // leg lacks.
  bool current = false;
  // The largest events_cleared among them.
  uint64_t events_cleared = 0;
};

// Empty when `leg`, a leg of this array that assembly does not trust, may
// be re-added with a bitmap-guided recovery; otherwise the reason it needs
// a full rebuild, as a sentence fragment for the log ("its events 4 are
// below ..."). `top` is the freshest superblock; `keeps_slot` is false when
// another leg holds the leg's dev_number.
std::string readd_refusal(const md::Superblock& leg, const md::Superblock& top, const BitmapView& bitmap,
                          bool keeps_slot);

}  // namespace bowstack::mirror
