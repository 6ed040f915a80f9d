#include "core/env.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

namespace bowstack {

namespace {

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override { ::close(fd_); }

  Result<size_t> read(uint64_t offset, std::span<std::byte> out) override {
    size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Status::Error(errno, "read '" + path_ + "'");
      if (n == 0) break;
      done += static_cast<size_t>(n);
    }
    return done;
  }
  Status write(uint64_t offset, std::span<const std::byte> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status::Error(n < 0 ? errno : EIO, "write '" + path_ + "'");
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }
  Status sync() override {
    if (::fdatasync(fd_) != 0) return Status::Error(errno, "fdatasync '" + path_ + "'");
    return Status::Ok();
  }
  Status truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      return Status::Error(errno, "truncate '" + path_ + "'");
    return Status::Ok();
  }
  Result<uint64_t> size() override {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return Status::Error(errno, "stat '" + path_ + "'");
    return static_cast<uint64_t>(st.st_size);
  }
  Status reserve(uint64_t offset, uint64_t length) override {
    int rc;
    do {
      rc = ::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(length));
    } while (rc != 0 && errno == EINTR);
    if (rc == 0 || errno == EOPNOTSUPP || errno == ENOSYS) return Status::Ok();
    return Status::Error(errno, "reserve space in '" + path_ + "'");
  }

 private:
  const int fd_;
  const std::string path_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override {
    int flags = O_CLOEXEC;
    switch (mode) {
      case OpenMode::kRead:
        flags |= O_RDONLY;
        break;
      case OpenMode::kReadWrite:
        flags |= O_RDWR;
        break;
      case OpenMode::kCreateTruncate:
        flags |= O_RDWR | O_CREAT | O_TRUNC;
        break;
    }
    int fd = ::open(path.c_str(), flags, 0600);
    if (fd < 0) return Status::Error(errno, "open '" + path + "'");
    return std::unique_ptr<File>(new PosixFile(fd, path));
  }
  Status remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::Error(errno, "remove '" + path + "'");
    return Status::Ok();
  }
  Status sync_dir(const std::string& path) override {
    std::string dir = std::filesystem::path(path).parent_path().string();
    if (dir.empty()) dir = ".";
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::Error(errno, "open directory '" + dir + "'");
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return Status::Error(err, "fsync directory '" + dir + "'");
    return Status::Ok();
  }
};

}  // namespace

Env* Env::posix() {
  static PosixEnv env;
  return &env;
}

class MemEnv::MemFile final : public File {
 public:
  MemFile(std::shared_ptr<Data> d, bool writable) : d_(std::move(d)), writable_(writable) {}
  Result<size_t> read(uint64_t offset, std::span<std::byte> out) override {
    std::lock_guard lock(d_->mu);
    if (offset >= d_->bytes.size()) return size_t{0};
    const size_t n = std::min<uint64_t>(out.size(), d_->bytes.size() - offset);
    std::memcpy(out.data(), d_->bytes.data() + offset, n);
    return n;
  }
  Status write(uint64_t offset, std::span<const std::byte> data) override {
    if (!writable_) return Status::Error(EBADF, "file opened read-only");
    if (data.empty()) return Status::Ok();  // and no memcpy from a null pointer
    std::lock_guard lock(d_->mu);
    if (d_->bytes.size() < offset + data.size()) d_->bytes.resize(offset + data.size());
    std::memcpy(d_->bytes.data() + offset, data.data(), data.size());
    return Status::Ok();
  }
  Status sync() override { return Status::Ok(); }
  Status truncate(uint64_t size) override {
    if (!writable_) return Status::Error(EBADF, "file opened read-only");
    std::lock_guard lock(d_->mu);
    d_->bytes.resize(size);
    return Status::Ok();
  }
  Result<uint64_t> size() override {
    std::lock_guard lock(d_->mu);
    return static_cast<uint64_t>(d_->bytes.size());
  }

 private:
  std::shared_ptr<Data> d_;
  const bool writable_;
};

Result<std::unique_ptr<File>> MemEnv::open(const std::string& path, OpenMode mode) {
  std::lock_guard lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) {
    if (mode != OpenMode::kCreateTruncate) return Status::Error(ENOENT, "open '" + path + "'");
    it = files_.emplace(path, std::make_shared<Data>()).first;
  } else if (mode == OpenMode::kCreateTruncate) {
    std::lock_guard dl(it->second->mu);
    it->second->bytes.clear();
  }
  return std::unique_ptr<File>(new MemFile(it->second, mode != OpenMode::kRead));
}

Status MemEnv::remove(const std::string& path) {
  std::lock_guard lock(mu_);
  if (files_.erase(path) == 0) return Status::Error(ENOENT, "remove '" + path + "'");
  return Status::Ok();
}

std::shared_ptr<std::vector<std::byte>> MemEnv::contents(const std::string& path) const {
  std::lock_guard lock(mu_);
  auto it = files_.find(path);
  if (it == files_.end()) return nullptr;
  std::lock_guard dl(it->second->mu);
  return std::make_shared<std::vector<std::byte>>(it->second->bytes);
}

std::map<std::string, std::vector<std::byte>> MemEnv::snapshot() const {
  std::lock_guard lock(mu_);
  std::map<std::string, std::vector<std::byte>> out;
  for (const auto& [path, d] : files_) {
    std::lock_guard dl(d->mu);
    out.emplace(path, d->bytes);
  }
  return out;
}

void MemEnv::restore(const std::map<std::string, std::vector<std::byte>>& files) {
  std::lock_guard lock(mu_);
  files_.clear();
  for (const auto& [path, bytes] : files) {
    auto d = std::make_shared<Data>();
    d->bytes = bytes;
    files_.emplace(path, std::move(d));
  }
}

}  // namespace bowstack
