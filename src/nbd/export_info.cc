#include "nbd/export_info.h"

#include <algorithm>
#include <bit>

#include "nbd/protocol.h"

namespace bowstack::nbd {

uint16_t ExportInfo::transmission_flags(bool structured_replies) const {
  return static_cast<uint16_t>(base_flags | (structured_replies ? kFlagSendDf : 0));
}

ExportInfo make_export_info(const Geometry& geometry, const Capabilities& caps, std::string name,
                            std::string description, bool read_only) {
  ExportInfo e;
  e.name = std::move(name);
  e.description = std::move(description);
  e.size = geometry.size;
  e.read_only = read_only || caps.read_only;
  e.caps = caps;

  uint16_t f = kFlagHasFlags | kFlagSendCache;
  if (e.read_only) f |= kFlagReadOnly;
  if (caps.flush) f |= kFlagSendFlush;
  if (caps.fua) f |= kFlagSendFua;
  if (caps.trim) f |= kFlagSendTrim;
  if (caps.write_zeroes) f |= kFlagSendWriteZeroes;
  if (caps.write_zeroes && caps.fast_zero) f |= kFlagSendFastZero;
  if (caps.multi_conn) f |= kFlagCanMultiConn;
  if (caps.rotational) f |= kFlagRotational;
  e.base_flags = f;

  // The spec wants powers of two for min and preferred (preferred >= 512 and
  // >= min), and max a multiple of min. A volume that accepts unaligned I/O
  // still advertises its logical block size, so compliant clients send none
  // smaller (as a dm device advertises its logical block size); requests
  // that ignore the hint are served rather than refused.
  uint32_t min = std::max<uint32_t>(1, geometry.logical_block_size);
  e.min_block = min;
  e.align_required = !geometry.accepts_unaligned;
  e.preferred_block = std::bit_ceil(std::max({geometry.preferred_block_size, min, 512u}));
  uint32_t max = geometry.max_io_size / min * min;
  e.max_block = std::max(max, min);
  return e;
}

}  // namespace bowstack::nbd
