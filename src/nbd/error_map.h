// Mapping of bowstack Status codes (errno values) onto the error values the
// NBD protocol allows on the wire.
#pragma once

#include <cstdint>

namespace bowstack::nbd {

// Returns the NBD error for errno `err`: EPERM, EIO, ENOMEM, EINVAL, ENOSPC,
// EOVERFLOW, ENOTSUP and ESHUTDOWN map to themselves, EDQUOT and EFBIG to
// ENOSPC, EROFS to EPERM, everything else to EIO.
// REQUIRES: err != 0.
uint32_t to_nbd_error(int err);

}  // namespace bowstack::nbd
