#include "core/rbd_cluster.h"

#include <fmt/format.h>

namespace bowstack {

Status rbd_error(int r, const std::string& what) {
  if (r == -ESHUTDOWN) {
    return Status::Error(EIO, what +
                                  ": this client was blocklisted by the cluster (another client took "
                                  "the image's lock?)");
  }
  return Status::Error(-r, what);
}

Result<std::unique_ptr<RbdCluster>> RbdCluster::connect(const RbdClusterOptions& opts,
                                                        const std::string& name) {
  std::unique_ptr<RbdCluster> c(new RbdCluster);
  int r = rados_create2(&c->cluster_, "ceph", ("client." + opts.id).c_str(), 0);
  if (r < 0) {
    c->cluster_ = nullptr;
    return rbd_error(r, fmt::format("{}: cannot create a Ceph client 'client.{}'", name, opts.id));
  }
  r = rados_conf_read_file(c->cluster_, opts.conf.c_str());
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot read the Ceph config '{}'", name, opts.conf));
  const std::string timeout = std::to_string(opts.connect_timeout);
  r = rados_conf_set(c->cluster_, "client_mount_timeout", timeout.c_str());
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot set client_mount_timeout", name));
  // librbd starts its cache in write-through mode until the first flush,
  // for guests that never flush. Our clients' flushes are honoured
  // (flush() is rbd_aio_flush), and unflushed NBD writes promise nothing,
  // as on a file leaf, whose writes sit in the page cache until a flush:
  // write-through would only make every write wait for the OSDs
  // (measured: random 4k writes 1.2-2.5x faster without it).
  r = rados_conf_set(c->cluster_, "rbd_cache_writethrough_until_flush", "false");
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot set rbd_cache_writethrough_until_flush", name));
  r = rados_connect(c->cluster_);
  if (r < 0) {
    return rbd_error(r, fmt::format("{}: cannot connect to the Ceph cluster of '{}' as client.{}", name,
                                    opts.conf, opts.id));
  }
  r = rados_ioctx_create(c->cluster_, opts.pool.c_str(), &c->ioctx_);
  if (r < 0) {
    c->ioctx_ = nullptr;
    return rbd_error(r, fmt::format("{}: cannot open pool '{}'", name, opts.pool));
  }
  return c;
}

RbdCluster::~RbdCluster() {
  if (ioctx_) rados_ioctx_destroy(ioctx_);
  if (cluster_) rados_shutdown(cluster_);
}

Status RbdCluster::create_image(const std::string& image, uint64_t size, const std::string& name) {
  int order = 0;  // the cluster's default object size
  const int r = rbd_create(ioctx_, image.c_str(), size, &order);
  if (r < 0) return rbd_error(r, fmt::format("{}: cannot create the image ({} bytes)", name, size));
  return Status::Ok();
}

Status RbdCluster::open_image(const std::string& image, const char* snap, bool read_only,
                              std::optional<uint64_t> create, const std::string& name, rbd_image_t* out) {
  int r = read_only ? rbd_open_read_only(ioctx_, image.c_str(), out, snap)
                    : rbd_open(ioctx_, image.c_str(), out, nullptr);
  if (r == -ENOENT && create && !read_only && !snap) {
    Status s = create_image(image, *create, name);
    if (!s.ok() && s.code() != EEXIST) return s;
    r = rbd_open(ioctx_, image.c_str(), out, nullptr);
  }
  if (r < 0) {
    *out = nullptr;
    return rbd_error(
        r, fmt::format("{}: cannot open the image{}", name,
                       r == -ENOENT ? (snap ? " (no such image or snapshot)" : " (no such image)") : ""));
  }
  return Status::Ok();
}

}  // namespace bowstack
