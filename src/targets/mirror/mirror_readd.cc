#include "targets/mirror/mirror_readd.h"

#include <fmt/format.h>

namespace bowstack::mirror {

std::string readd_refusal(const md::Superblock& leg, const md::Superblock& top, const BitmapView& bitmap,
                          bool keeps_slot) {
  if (!bitmap.current) return "the in-sync legs' bitmap is missing or out of date";
  if (leg.data_offset != top.data_offset || leg.size != top.size) {
    return fmt::format("its data area (offset {}, {} sectors) is not the array's (offset {}, {} sectors)",
                       leg.data_offset, leg.size, top.data_offset, top.size);
  }
  if (leg.role() >= md::kRoleMax) return "its own superblock does not give it an active role";
  if (leg.recovering() && (leg.feature_map & md::kFeatureRecoveryBitmap) == 0) {
    // A full rebuild under way: above its recovery_offset it lacks more
    // than any bit records.
    return fmt::format("it was being rebuilt from sector 0 ({} sectors copied) when it left",
                       leg.recovery_offset);
  }
  if (leg.events < bitmap.events_cleared) {
    return fmt::format(
        "its events {} are below the bitmap's events_cleared {}: bits were cleared after it left", leg.events,
        bitmap.events_cleared);
  }
  if (!keeps_slot) return fmt::format("another leg holds its slot {}", leg.dev_number);
  return {};
}

}  // namespace bowstack::mirror
