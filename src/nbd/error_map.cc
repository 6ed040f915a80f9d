#include "nbd/error_map.h"

#include <cerrno>

#include "nbd/protocol.h"

namespace bowstack::nbd {

uint32_t to_nbd_error(int err) {
  switch (err) {
    case EPERM:
    case EROFS:
      return kEperm;
    case ENOMEM:
      return kEnomem;
    case EINVAL:
      return kEinval;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case EOVERFLOW:
      return kEoverflow;
    case ENOTSUP:  // == EOPNOTSUPP on Linux
      return kEnotsup;
    case ESHUTDOWN:
      return kEshutdown;
    default:
      return kEio;
  }
}

}  // namespace bowstack::nbd
