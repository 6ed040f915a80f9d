// What the server tells clients about its one export, computed once from
// the Volume's geometry and capabilities and the server options.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/block_device.h"

namespace bowstack::nbd {

struct ExportInfo {
  std::string name;
  std::string description;  // empty: NBD_INFO_DESCRIPTION is not sent
  uint64_t size = 0;
  bool read_only = false;
  // Capabilities of the volume, as the request validator needs them.
  Capabilities caps;
  // Transmission flags except NBD_FLAG_SEND_DF, which depends on whether the
  // client negotiated structured replies.
  uint16_t base_flags = 0;
  // NBD_INFO_BLOCK_SIZE; also the limits the server enforces, except that
  // alignment to min_block is not enforced when align_required is false
  // (the volume accepts unaligned I/O, doing read-modify-write itself).
  uint32_t min_block = 1;
  bool align_required = true;
  uint32_t preferred_block = 4096;
  uint32_t max_block = 0;

  uint16_t transmission_flags(bool structured_replies) const;
  // "" selects the default (only) export.
  bool matches(std::string_view requested) const { return requested.empty() || requested == name; }
};

ExportInfo make_export_info(const Geometry& geometry, const Capabilities& caps, std::string name,
                            std::string description, bool read_only);

}  // namespace bowstack::nbd
