#include "core/file_paths.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/file_device.h"
#include "core/file_lock.h"

namespace bowstack {

Result<PathInfo> inspect_path(const std::string& path) {
  PathInfo info;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return info;
    return Status::Error(errno, fmt::format("cannot look at '{}'", path));
  }
  info.exists = true;
  info.regular = S_ISREG(st.st_mode);
  info.block_device = S_ISBLK(st.st_mode);
  if (info.regular) info.size = static_cast<uint64_t>(st.st_size);
  return info;
}

Result<uint64_t> path_capacity(const std::string& path) {
  auto info = inspect_path(path);
  if (!info.ok()) return info.status();
  if (info->block_device) {
    auto dev = FileDevice::open(path, FileDeviceOptions{.read_only = true});
    if (!dev.ok()) return dev.status();
    return dev.value()->geometry().size;
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) {
    return Status::Error(errno, fmt::format("cannot look at the filesystem of '{}'", path));
  }
  return info->size + static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

Status prepare_file(const std::string& path, uint64_t size, const std::string& what) {
  auto info = inspect_path(path);
  if (!info.ok()) return info.status();
  if (!info->exists) return FileDevice::create(path, size);
  if (!info->regular) return Status::Ok();
  // Check the lock before touching it; the tool's own open locks it again.
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, fmt::format("cannot open {}", what));
  Status s = lock_file(fd, what, true);
  if (s.ok() && info->size < size && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    s = Status::Error(errno, fmt::format("cannot grow {} to {} bytes", what, size));
  }
  ::close(fd);
  return s;
}

}  // namespace bowstack
