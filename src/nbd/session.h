// What one client negotiated during the handshake. Written only by the
// handshake; read-only (and so freely shared between workers) afterwards.
#pragma once

#include <cstdint>

namespace bowstack::nbd {

// The metadata context id bowstack gives base:allocation.
inline constexpr uint32_t kBaseAllocationId = 1;

struct Session {
  bool structured_replies = false;
  bool base_allocation = false;  // base:allocation selected by NBD_OPT_SET_META_CONTEXT
  uint16_t transmission_flags = 0;
};

}  // namespace bowstack::nbd
