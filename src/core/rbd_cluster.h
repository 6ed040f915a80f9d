// One client connection to a Ceph cluster with an I/O context on one pool,
// shared by what talks to RBD: the RBD leaf (rbd_device.h) and RBD side
// files (rbd_env.h).
//
// Thread-safety: librados' handles are thread-safe; the object is not
// copied. Lifetime: every image opened through `ioctx` must be closed
// before the connection is destroyed.
#pragma once

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/status.h"

namespace bowstack {

struct RbdClusterOptions {
  std::string pool = "rbd";
  std::string conf = "/etc/ceph/ceph.conf";
  std::string id = "admin";  // the client id: client.<id>
  // Seconds rados_connect may take before it fails (a monitor that is down
  // would otherwise hold the caller for librados' 300 s default).
  unsigned connect_timeout = 30;
};

class RbdCluster {
 public:
  // Connects and opens the pool. Errors start with `name` (the image the
  // caller wants, for messages) and say which step failed.
  static Result<std::unique_ptr<RbdCluster>> connect(const RbdClusterOptions& opts, const std::string& name);
  ~RbdCluster();
  RbdCluster(const RbdCluster&) = delete;
  RbdCluster& operator=(const RbdCluster&) = delete;

  rados_ioctx_t ioctx() const { return ioctx_; }

  // Creates image `image` of `size` bytes with the cluster's default
  // features and object size. EEXIST when it exists.
  Status create_image(const std::string& image, uint64_t size, const std::string& name);

  // Opens image `image` (at snapshot `snap`, read-only, when given) into
  // *out. With `create`, an image that does not exist is created with that
  // many bytes first (one created by another client meanwhile is opened;
  // who writes it is the lock's business). Never with a snapshot or
  // read-only. Errors start with `name`; a missing image is ENOENT.
  Status open_image(const std::string& image, const char* snap, bool read_only,
                    std::optional<uint64_t> create, const std::string& name, rbd_image_t* out);

 private:
  RbdCluster() = default;
  rados_t cluster_ = nullptr;
  rados_ioctx_t ioctx_ = nullptr;
};

// librados' result `r` (negative errno) as a Status with `what`. ESHUTDOWN
// (EBLOCKLISTED: the cluster fenced this client, which happens when
// another client broke its lock) becomes EIO with a sentence saying so.
Status rbd_error(int r, const std::string& what);

}  // namespace bowstack
