#include "core/rbd_env.h"

#include <fmt/format.h>

#include <mutex>

#include "core/rbd_cluster.h"
#include "core/table.h"

namespace bowstack {

namespace {

struct Parsed {
  RbdClusterOptions cluster;
  std::string image;
  std::string name;  // "rbd:POOL/IMAGE" for messages
};

Result<Parsed> parse_path(const std::string& path) {
  auto bad = [&] {
    return Status::Error(EINVAL,
                         fmt::format("'{}' is not an RBD side file (rbd:POOL/IMAGE:conf=PATH:id=ID)", path));
  };
  if (!path.starts_with("rbd:")) return bad();
  const size_t conf = path.find(":conf=");
  const size_t id = path.rfind(":id=");
  if (conf == std::string::npos || id == std::string::npos || id < conf) return bad();
  const std::string where = path.substr(4, conf - 4);
  const size_t slash = where.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == where.size()) return bad();
  Parsed p;
  p.cluster.pool = where.substr(0, slash);
  p.image = where.substr(slash + 1);
  p.cluster.conf = path.substr(conf + 6, id - conf - 6);
  p.cluster.id = path.substr(id + 4);
  if (p.cluster.conf.empty() || p.cluster.id.empty()) return bad();
  p.name = "rbd:" + where;
  return p;
}

class RbdFile final : public File {
 public:
  RbdFile(std::unique_ptr<RbdCluster> cluster, rbd_image_t image, std::string name)
      : cluster_(std::move(cluster)), image_(image), name_(std::move(name)) {}
  ~RbdFile() override { rbd_close(image_); }

  Result<size_t> read(uint64_t offset, std::span<std::byte> out) override {
    std::lock_guard lock(mu_);
    uint64_t size = 0;
    if (int r = rbd_get_size(image_, &size); r < 0) return rbd_error(r, name_ + ": size");
    if (offset >= size) return size_t{0};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size - offset));
    const ssize_t r = rbd_read(image_, offset, n, reinterpret_cast<char*>(out.data()));
    if (r < 0)
      return rbd_error(static_cast<int>(r), fmt::format("{}: read of {} bytes at {}", name_, n, offset));
    return static_cast<size_t>(r);
  }

  Status write(uint64_t offset, std::span<const std::byte> data) override {
    std::lock_guard lock(mu_);
    uint64_t size = 0;
    if (int r = rbd_get_size(image_, &size); r < 0) return rbd_error(r, name_ + ": size");
    if (offset + data.size() > size) {
      if (int r = rbd_resize(image_, offset + data.size()); r < 0)
        return rbd_error(r, fmt::format("{}: growing the image to {} bytes", name_, offset + data.size()));
    }
    const ssize_t r = rbd_write(image_, offset, data.size(), reinterpret_cast<const char*>(data.data()));
    if (r < 0) {
      return rbd_error(static_cast<int>(r),
                       fmt::format("{}: write of {} bytes at {}", name_, data.size(), offset));
    }
    if (static_cast<size_t>(r) != data.size())
      return Status::Error(EIO,
                           fmt::format("{}: short write at {} ({} of {})", name_, offset, r, data.size()));
    return Status::Ok();
  }

  Status sync() override {
    if (int r = rbd_flush(image_); r < 0) return rbd_error(r, name_ + ": flush");
    return Status::Ok();
  }

  Status truncate(uint64_t size) override {
    std::lock_guard lock(mu_);
    if (int r = rbd_resize(image_, size); r < 0)
      return rbd_error(r, fmt::format("{}: resizing the image to {} bytes", name_, size));
    return Status::Ok();
  }

  Result<uint64_t> size() override {
    uint64_t size = 0;
    if (int r = rbd_get_size(image_, &size); r < 0) return rbd_error(r, name_ + ": size");
    return size;
  }

 private:
  const std::unique_ptr<RbdCluster> cluster_;
  const rbd_image_t image_;
  const std::string name_;
  std::mutex mu_;  // orders a size check with the resize and write after it
};

class RbdEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override {
    auto p = parse_path(path);
    if (!p.ok()) return p.status();
    auto cluster = RbdCluster::connect(p->cluster, p->name);
    if (!cluster.ok()) return cluster.status();
    rbd_image_t img = nullptr;
    const bool create = mode == OpenMode::kCreateTruncate;
    if (Status s =
            cluster.value()->open_image(p->image, nullptr, mode == OpenMode::kRead,
                                        create ? std::optional<uint64_t>(0) : std::nullopt, p->name, &img);
        !s.ok())
      return s;
    auto f = std::make_unique<RbdFile>(std::move(cluster.value()), img, p->name);
    if (mode == OpenMode::kCreateTruncate) {
      if (Status s = f->truncate(0); !s.ok()) return s;
    }
    return std::unique_ptr<File>(std::move(f));
  }

  Status remove(const std::string& path) override {
    auto p = parse_path(path);
    if (!p.ok()) return p.status();
    auto cluster = RbdCluster::connect(p->cluster, p->name);
    if (!cluster.ok()) return cluster.status();
    if (int r = rbd_remove(cluster.value()->ioctx(), p->image.c_str()); r < 0)
      return rbd_error(r, p->name + ": cannot remove the image");
    return Status::Ok();
  }

  Status sync_dir(const std::string& /*path*/) override { return Status::Ok(); }
};

}  // namespace

Env* rbd_env() {
  static RbdEnv env;
  return &env;
}

std::string rbd_file_path(const RbdLeaf& leaf) {
  return fmt::format("rbd:{}/{}:conf={}:id={}", leaf.pool, leaf.image, leaf.conf, leaf.id);
}

}  // namespace bowstack
