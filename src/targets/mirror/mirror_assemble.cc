#include "targets/mirror/mirror_assemble.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <set>

#include "targets/mirror/mirror_readd.h"

namespace bowstack::mirror {

using md::Superblock;

const char* leg_state_name(LegState s) {
  switch (s) {
    case LegState::kInSync:
      return "in_sync";
    case LegState::kRecovering:
      return "recovering";
    case LegState::kStale:
      return "stale";
    case LegState::kFaulty:
      return "faulty";
  }
  return "?";
}

namespace {

// 4 MiB: a random write stream then mostly finds its region's bit still set
// (64 KiB regions made nearly every 4k random write wait for a bitmap
// commit: 0.06-0.11 of passthrough), and a resync after a crash copies a
// few MiB per dirty bit, not mdadm's 64 MiB.
constexpr uint32_t kDefaultMinRegion = 4u << 20;

// The geometry of a leg joining an array laid out as `like` (same data
// offset and size), with bitmap chunk `chunk`.
Result<md::LegGeometry> join_geometry(size_t index, uint64_t device_sectors, uint64_t data_offset,
                                      uint64_t size, uint32_t chunk) {
  if (device_sectors < data_offset + size) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: leg {} has {} bytes; the array needs {} (data from "
                                     "byte {}, {} bytes of it)",
                                     index, device_sectors * md::kSector, (data_offset + size) * md::kSector,
                                     data_offset * md::kSector, size * md::kSector));
  }
  md::LegGeometry g;
  g.device_sectors = device_sectors;
  g.data_offset = data_offset;
  g.data_size = device_sectors - data_offset;
  g.size = size;
  g.bitmap_chunk = chunk;
  g.bitmap_bits = md::bitmap_bits(size, chunk);
  g.bitmap_sectors = md::bitmap_area_bytes(g.bitmap_bits) / md::kSector;
  g.bitmap_offset = md::kBitmapOffset;
  const uint64_t bblog = g.bitmap_offset + g.bitmap_sectors;
  if (md::kSuperOffset + bblog + md::kBblogSectors > data_offset) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: leg {}: the bitmap does not fit before the data", index));
  }
  g.bblog_offset = static_cast<int32_t>(bblog);
  return g;
}

Result<Assembly> create_array(std::span<const LegProbe> legs, const AssembleParams& p) {
  uint64_t smallest = UINT64_MAX;
  for (const auto& l : legs) smallest = std::min(smallest, l.device_sectors);
  const uint32_t chunk = p.region_size != 0 ? p.region_size : default_region_size(smallest);
  Assembly a;
  a.created = true;
  const auto raid_disks = static_cast<uint32_t>(legs.size());
  for (size_t i = 0; i < legs.size(); ++i) {
    auto g = md::plan_leg(legs[i].device_sectors, smallest, chunk);
    if (!g.ok()) return Status::Error(EINVAL, fmt::format("leg {}: {}", i, why(g.status())));
    PlannedLeg pl;
    pl.sb = md::new_leg_superblock(*g, p.new_set_uuid, p.name, p.new_device_uuids.at(i),
                                   static_cast<uint32_t>(i), raid_disks, p.now);
    pl.new_metadata = true;
    if (i < p.write_mostly.size() && p.write_mostly[i]) pl.sb.devflags |= md::kDevflagWriteMostly;
    a.size_sectors = g->size;
    a.chunk = g->bitmap_chunk;
    a.bits = g->bitmap_bits;
    a.legs.push_back(std::move(pl));
  }
  return a;
}

}  // namespace

uint32_t default_region_size(uint64_t device_sectors) {
  for (uint64_t chunk = kDefaultMinRegion; chunk <= (uint64_t{1} << 31); chunk *= 2) {
    if (md::plan_leg(device_sectors, device_sectors, static_cast<uint32_t>(chunk)).ok()) {
      return static_cast<uint32_t>(chunk);
    }
  }
  return kDefaultMinRegion;  // plan_leg will say why the leg cannot be used
}

Result<Assembly> assemble(std::span<const LegProbe> legs, const AssembleParams& p) {
  if (legs.empty()) return Status::Error(EINVAL, "mirror: no legs");
  if (p.region_size != 0 && (p.region_size < md::kMinBitmapChunk || !std::has_single_bit(p.region_size))) {
    return Status::Error(EINVAL, fmt::format("mirror: region_size {} is not a power of two of at least {}",
                                             p.region_size, md::kMinBitmapChunk));
  }
  // One array only.
  const Superblock* freshest = nullptr;
  size_t freshest_index = 0;
  for (size_t i = 0; i < legs.size(); ++i) {
    const auto& sb = legs[i].sb;
    if (!sb) continue;
    if (freshest && sb->set_uuid != freshest->set_uuid) {
      return Status::Error(EINVAL,
                           fmt::format("mirror: leg {} belongs to array {}, leg {} to array {}; a leg "
                                       "of another array must be wiped before it joins (zero its "
                                       "bytes 4096..8191)",
                                       i, md::mdadm_uuid_string(sb->set_uuid), freshest_index,
                                       md::mdadm_uuid_string(freshest->set_uuid)));
    }
    if (!freshest || sb->events > freshest->events) {
      freshest = &*sb;
      freshest_index = i;
    }
  }
  if (!freshest) return create_array(legs, p);

  const Superblock& top = *freshest;
  Assembly a;
  a.events = top.events;
  a.size_sectors = top.size;
  a.dirty = !top.clean();
  // The region size: from the freshest bitmap that belongs to the array.
  uint32_t chunk = 0;
  for (const auto& l : legs) {
    if (l.sb && l.bitmap && l.sb->events + 1 >= top.events) {
      chunk = l.bitmap->chunksize;
      break;
    }
  }
  if (chunk == 0)
    chunk = p.region_size != 0 ? p.region_size : default_region_size(top.data_offset + top.size);
  if (p.region_size != 0 && p.region_size != chunk) {
    return Status::Error(EINVAL,
                         fmt::format("mirror: region_size={} given, but the array uses {}; the region "
                                     "size is fixed when the array is made",
                                     p.region_size, chunk));
  }
  a.chunk = chunk;
  a.bits = md::bitmap_bits(top.size, chunk);

  // Which legs are trusted.
  const auto raid_disks = static_cast<uint32_t>(legs.size());
  std::vector<bool> trusted(legs.size(), false);
  for (size_t i = 0; i < legs.size(); ++i) {
    const auto& sb = legs[i].sb;
    if (!sb || sb->events + 1 < top.events || sb->dev_number >= top.dev_roles.size()) continue;
    if (top.dev_roles[sb->dev_number] >= md::kRoleMax) continue;
    if (sb->data_offset + top.size > legs[i].device_sectors) continue;
    trusted[i] = true;
    for (size_t j = 0; j < i; ++j) {
      if (!trusted[j] || legs[j].sb->dev_number != sb->dev_number) continue;
      // Two legs claim one slot: the fresher (or the first) keeps it.
      if (sb->events > legs[j].sb->events) {
        trusted[j] = false;
      } else {
        trusted[i] = false;
      }
    }
  }

  // What the in-sync legs' bitmaps record: their bits ORed, and whether
  // every one of them is current (else nothing is known of what a missing
  // leg lacks, nor, after a crash, where the in-sync legs differ).
  BitmapView view;
  view.current = true;
  bool any_in_sync = false;
  std::vector<std::byte> dirty_area(md::bitmap_area_bytes(a.bits), std::byte{0});
  for (size_t i = 0; i < legs.size(); ++i) {
    const LegProbe& l = legs[i];
    if (!trusted[i] || l.sb->recovering()) continue;
    any_in_sync = true;
    if (!l.bitmap || md::bitmap_out_of_date(*l.sb, *l.bitmap) || l.bitmap->chunksize != chunk ||
        l.bitmap_area.size() < dirty_area.size()) {
      view.current = false;
      continue;
    }
    view.events_cleared = std::max(view.events_cleared, l.bitmap->events_cleared);
    for (size_t b = md::kBitmapSbBytes; b < dirty_area.size(); ++b) dirty_area[b] |= l.bitmap_area[b];
  }
  if (view.current && any_in_sync) {
    a.events_cleared = view.events_cleared;
    for (uint64_t b = 0; b < a.bits; ++b) {
      if (md::test_bit(dirty_area, b)) a.dirty_bits.push_back(b);
    }
  } else {
    view.current = false;
    a.events_cleared = top.events + 1;
  }

  // Roles and dev_numbers for the new membership.
  const uint32_t max_dev = std::max<uint32_t>(md::kDefaultMaxDev, raid_disks);
  std::vector<uint16_t> roles(max_dev, md::kRoleSpare);
  std::vector<uint32_t> role_of(legs.size(), UINT32_MAX), dev_of(legs.size(), UINT32_MAX);
  std::set<uint32_t> roles_used;
  for (size_t i = 0; i < legs.size(); ++i) {
    if (!trusted[i]) continue;
    const uint32_t dn = legs[i].sb->dev_number;
    const uint32_t role = top.dev_roles[dn];
    dev_of[i] = dn;
    if (role < raid_disks && !roles_used.count(role)) {
      role_of[i] = role;
      roles_used.insert(role);
    }
  }
  std::set<uint32_t> devs_used;
  for (size_t i = 0; i < legs.size(); ++i) {
    if (dev_of[i] != UINT32_MAX) devs_used.insert(dev_of[i]);
  }
  for (size_t i = 0; i < legs.size(); ++i) {
    if (role_of[i] == UINT32_MAX) {
      // A leg coming back gets its old role when it is free (md's
      // saved_raid_disk), else the first free one.
      uint32_t r = legs[i].sb ? legs[i].sb->role() : md::kRoleSpare;
      if (r >= raid_disks || roles_used.count(r)) {
        r = 0;
        while (roles_used.count(r)) ++r;
      }
      role_of[i] = r;
      roles_used.insert(r);
    }
    if (dev_of[i] == UINT32_MAX) {
      // An untrusted leg keeps its slot number when nobody else holds it.
      uint32_t dn = legs[i].sb && legs[i].sb->dev_number < max_dev ? legs[i].sb->dev_number : 0;
      if (!legs[i].sb || devs_used.count(dn)) {
        dn = 0;
        while (devs_used.count(dn)) ++dn;
      }
      dev_of[i] = dn;
      devs_used.insert(dn);
    }
    if (dev_of[i] >= max_dev) {
      return Status::Error(EINVAL,
                           fmt::format("mirror: leg {} has slot {}, beyond the role table", i, dev_of[i]));
    }
    roles[dev_of[i]] = static_cast<uint16_t>(role_of[i]);
  }

  const std::string guided_how = fmt::format(
      "recovered only where the bitmap has bits set ({} of {} regions)", a.dirty_bits.size(), a.bits);
  for (size_t i = 0; i < legs.size(); ++i) {
    const LegProbe& l = legs[i];
    PlannedLeg pl;
    if (trusted[i]) {
      pl.sb = *l.sb;
      if (l.sb->recovering()) {
        pl.state = LegState::kRecovering;
        pl.mark_sectors = std::min(l.sb->recovery_offset, top.size);
        // A guided copy that a stop or crash cut goes on as one while the
        // bits still say what the leg lacks.
        pl.guided = (l.sb->feature_map & md::kFeatureRecoveryBitmap) != 0 && view.current;
        pl.why = fmt::format("was being rebuilt, {} of {} bytes copied; {}", pl.mark_sectors * md::kSector,
                             top.size * md::kSector,
                             pl.guided ? guided_how
                             : (l.sb->feature_map & md::kFeatureRecoveryBitmap) != 0
                                 ? "the bitmap is out of date: every region past that is copied"
                                 : "every region past that is copied");
      } else {
        pl.state = LegState::kInSync;
      }
      // A bitmap that cannot be used is written anew.
      pl.new_metadata = !l.bitmap || l.bitmap->chunksize != chunk;
    } else {
      auto g = join_geometry(i, l.device_sectors, top.data_offset, top.size, chunk);
      if (!g.ok()) return g.status();
      const Uuid dev_uuid = l.sb ? l.sb->device_uuid : p.new_device_uuids.at(i);
      pl.sb = md::new_leg_superblock(*g, top.set_uuid, top.set_name, dev_uuid, 0, raid_disks, top.ctime);
      pl.sb.ctime = top.ctime;
      pl.state = LegState::kStale;
      pl.new_metadata = true;
      const std::string what =
          !l.sb ? "blank: joins the array"
          : l.sb->events + 1 < top.events
              ? fmt::format("stale: events {}, the array's {}", l.sb->events, top.events)
          : l.sb->dev_number >= top.dev_roles.size() || top.dev_roles[l.sb->dev_number] == md::kRoleFaulty
              ? "marked faulty by the other legs"
              : "not an active member of the array";
      const std::string refused =
          l.sb ? readd_refusal(*l.sb, top, view, dev_of[i] == l.sb->dev_number) : std::string();
      pl.guided = l.sb && refused.empty();
      pl.why = pl.guided ? fmt::format("{}; re-added: {}", what, guided_how)
               : l.sb    ? fmt::format("{}; rebuilt from sector 0: {}", what, refused)
                         : what;
    }
    pl.sb.dev_number = dev_of[i];
    pl.sb.dev_roles = roles;
    pl.sb.raid_disks = raid_disks;
    pl.sb.size = top.size;
    pl.sb.set_name = top.set_name;
    pl.sb.resync_offset = top.resync_offset;
    pl.sb.events = top.events;
    const bool wm = i < p.write_mostly.size() && p.write_mostly[i];
    pl.sb.devflags = static_cast<uint8_t>((pl.sb.devflags & ~md::kDevflagWriteMostly) |
                                          (wm ? md::kDevflagWriteMostly : 0));
    a.legs.push_back(std::move(pl));
  }
  if (!any_in_sync) {
    std::string list;
    for (size_t i = 0; i < a.legs.size(); ++i) {
      list += fmt::format("{}leg {}: {}", i ? "; " : "", i, a.legs[i].why);
    }
    return Status::Error(EINVAL, "mirror: no leg holds a complete copy of the array (" + list +
                                     "); refusing to guess which data is right");
  }
  if (a.dirty) {
    if (!view.current) {
      for (uint64_t b = 0; b < a.bits; ++b) a.resync.push_back(b);
    } else {
      a.resync = a.dirty_bits;
    }
  }
  return a;
}

}  // namespace bowstack::mirror
