#include "core/file_device.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/file_lock.h"

namespace bowstack {

namespace {

constexpr uint64_t kZeroChunk = 1u << 20;

// A shared, 4 KiB-aligned buffer of zeroes (safe for O_DIRECT writes).
std::span<const std::byte> zero_chunk() {
  static const std::byte* const zeroes = [] {
    void* p = std::aligned_alloc(4096, kZeroChunk);
    std::memset(p, 0, kZeroChunk);
    return static_cast<const std::byte*>(p);
  }();
  return {zeroes, kZeroChunk};
}

Status errno_status(const std::string& what) { return Status::Error(errno, what); }

}  // namespace

Result<std::shared_ptr<FileDevice>> FileDevice::open(const std::string& path, FileDeviceOptions opts) {
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (opts.direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return errno_status("cannot open '" + path + "'");
  if (opts.lock) {
    if (Status s = lock_file(fd, "'" + path + "'", !opts.read_only); !s.ok()) {
      ::close(fd);
      return s;
    }
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = errno_status("cannot stat '" + path + "'");
    ::close(fd);
    return s;
  }
  Geometry g;
  bool block_device = S_ISBLK(st.st_mode);
  if (block_device) {
    uint64_t bytes = 0;
    int sector = 512;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0 || ::ioctl(fd, BLKSSZGET, &sector) != 0) {
      Status s = errno_status("cannot read the geometry of block device '" + path + "'");
      ::close(fd);
      return s;
    }
    g.size = bytes;
    g.logical_block_size = static_cast<uint32_t>(sector);
  } else if (S_ISREG(st.st_mode)) {
    g.size = static_cast<uint64_t>(st.st_size);
    // O_DIRECT on a file needs the filesystem's alignment; 4096 is safe everywhere.
    g.logical_block_size = opts.direct ? 4096 : 512;
  } else {
    ::close(fd);
    return Status::Error(EINVAL, "'" + path + "' is neither a regular file nor a block device");
  }
  // A tail smaller than one block cannot be addressed; expose whole blocks only.
  g.size -= g.size % g.logical_block_size;
  if (g.size == 0) {
    ::close(fd);
    return Status::Error(
        EINVAL, "'" + path + "' is smaller than one " + std::to_string(g.logical_block_size) + "-byte block");
  }
  g.preferred_block_size = std::max<uint32_t>(4096, g.logical_block_size);
  if (!opts.direct) {
    // Through the page cache any byte range works (the kernel does the
    // read-modify-write), so clients may send any (as nbdkit's file plugin
    // allows). A block device keeps its sector size as the unit it
    // advertises, which layers above also take as the unit a crash
    // cannot tear; a regular file advertises 1, like nbdkit. The size
    // stays a multiple of 512 either way.
    g.accepts_unaligned = true;
    if (!block_device) g.logical_block_size = 1;
  }
  return std::shared_ptr<FileDevice>(new FileDevice(path, fd, block_device, opts, g));
}

Status FileDevice::create(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return errno_status("cannot create '" + path + "'");
  Status s;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) s = errno_status("cannot size '" + path + "'");
  if (s.ok() && ::fsync(fd) != 0) s = errno_status("cannot sync '" + path + "'");
  ::close(fd);
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

FileDevice::FileDevice(std::string path, int fd, bool block_device, FileDeviceOptions opts, Geometry g)
    : path_(std::move(path)),
      fd_(fd),
      block_device_(block_device),
      opts_(opts),
      geometry_(g),
      sync_([this] { return fdatasync_barrier(); },
            [this](const Status& s) {
              // Once: from here on every flush and write of this device fails.
              spdlog::error(
                  "{}: {} (errno {}); the device can no longer promise that writes are stable: every "
                  "later flush and write to it fails",
                  path_, why(s), s.code());
            }) {
  caps_.read_only = opts.read_only;
  caps_.flush = caps_.fua = !opts.read_only;
  caps_.trim = caps_.write_zeroes = !opts.read_only;
  caps_.fast_zero = !opts.read_only && !block_device;
  caps_.multi_conn = true;  // fdatasync covers writes made through any thread
  caps_.block_status = !block_device;
}

FileDevice::~FileDevice() { ::close(fd_); }

Status FileDevice::fdatasync_barrier() {
  if (::fdatasync(fd_) != 0) return errno_status("fdatasync '" + path_ + "'");
  // A file cut below its size lost what was past the cut, and writes there
  // since would only fill a hole: no flush can promise that data.
  struct stat st {};
  if (!block_device_ && ::fstat(fd_, &st) == 0 && static_cast<uint64_t>(st.st_size) < geometry_.size) {
    return Status::Error(EIO, fmt::format("'{}' shrank to {} bytes below its size {} (truncated?)", path_,
                                          st.st_size, geometry_.size));
  }
  return Status::Ok();
}

Status FileDevice::read(uint64_t offset, std::span<std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("read '" + path_ + "'");
    }
    if (n == 0) {
      // The file shrank under us: what was past its new end is gone. Every
      // later write and flush fails (sticky), so that a layer above (a
      // mirror) fails this device rather than writing into the hole and
      // serving zeroes from it later without an error.
      Status s = Status::Error(EIO, "unexpected end of '" + path_ + "' (was it truncated?)");
      sync_.poison(s);
      return s;
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FileDevice::write_vector(uint64_t offset, std::vector<iovec> iov, int rwf) {
  size_t first = 0;
  bool progress = false;
  while (first < iov.size()) {
    const int count = static_cast<int>(std::min<size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = rwf != 0 ? ::pwritev2(fd_, &iov[first], count, static_cast<off_t>(offset), rwf)
                         : ::pwritev(fd_, &iov[first], count, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      const bool unsupported = (errno == EOPNOTSUPP || errno == ENOSYS) && !progress;
      Status s = errno_status("write '" + path_ + "'");
      // A failed synchronous write is a failed flush: later ones cannot
      // promise this data any more. (Unsupported: the caller falls back.)
      if ((rwf & RWF_DSYNC) && !unsupported) sync_.poison(s);
      return s;
    }
    if (n == 0) return Status::Error(EIO, "write to '" + path_ + "' made no progress");
    progress = true;
    offset += static_cast<uint64_t>(n);
    // Drop what was written: whole iovecs, then the front of a partial one.
    auto left = static_cast<size_t>(n);
    while (left > 0 && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return Status::Ok();
}

Status FileDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  if (Status f = sync_.failure(); !f.ok()) return Status::Error(EIO, "earlier flush failed");
  // FUA: RWF_DSYNC makes this write (and the metadata needed to read it
  // back) durable without writing back every other dirty page of the file,
  // which an fdatasync would. Where the kernel lacks it, write then sync.
  const bool dsync = (flags & kFua) && dsync_writes_.load(std::memory_order_relaxed);
  std::vector<iovec> iov{{const_cast<std::byte*>(buf.data()), buf.size()}};
  Status s = write_vector(offset, iov, dsync ? RWF_DSYNC : 0);
  if (!s.ok() && dsync && (s.code() == EOPNOTSUPP || s.code() == ENOSYS)) {
    dsync_writes_.store(false);
    return write(offset, buf, flags);
  }
  if (!s.ok()) return s;
  if ((flags & kFua) && !dsync) return sync_.sync();
  return Status::Ok();
}

Status FileDevice::write_batch(std::span<const WriteRef> writes, uint32_t flags) {
  if (Status f = sync_.failure(); !f.ok()) return Status::Error(EIO, "earlier flush failed");
  if (!(flags & kFua) || !dsync_writes_.load(std::memory_order_relaxed)) {
    return BlockDevice::write_batch(writes, flags);
  }
  if (writes.empty()) return Status::Ok();
  // Adjacent entries become one vectored write.
  std::vector<const WriteRef*> order;
  order.reserve(writes.size());
  for (const WriteRef& w : writes) order.push_back(&w);
  std::sort(order.begin(), order.end(),
            [](const WriteRef* a, const WriteRef* b) { return a->offset < b->offset; });
  struct Range {
    uint64_t offset = 0, length = 0;
    std::vector<iovec> iov;
  };
  std::vector<Range> ranges;
  for (const WriteRef* w : order) {
    if (ranges.empty() || ranges.back().offset + ranges.back().length != w->offset) {
      ranges.push_back(Range{w->offset, 0, {}});
    }
    ranges.back().iov.push_back({const_cast<std::byte*>(w->data.data()), w->data.size()});
    ranges.back().length += w->data.size();
  }
  // All but the last range: written, then their writeback started together
  // and waited for, so they are on the device (perhaps in its volatile cache).
  const size_t last = ranges.size() - 1;
  for (size_t i = 0; i < last; ++i) {
    if (Status s = write_vector(ranges[i].offset, std::move(ranges[i].iov), 0); !s.ok()) return s;
  }
  for (unsigned pass = 0; pass < 2; ++pass) {
    const unsigned mode =
        pass == 0 ? SYNC_FILE_RANGE_WRITE
                  : SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
    for (size_t i = 0; i < last; ++i) {
      int rc;
      do {
        rc = ::sync_file_range(fd_, static_cast<off_t>(ranges[i].offset),
                               static_cast<off_t>(ranges[i].length), mode);
      } while (rc != 0 && errno == EINTR);
      if (rc == 0) continue;
      Status s = errno_status("write back '" + path_ + "'");
      if (errno == EIO || errno == ENOSPC) {
        sync_.poison(s);
        return s;
      }
      // Not supported here: the last range goes out plainly and one
      // fdatasync covers everything.
      if (Status w = write_vector(ranges[last].offset, std::move(ranges[last].iov), 0); !w.ok()) return w;
      return sync_.sync();
    }
  }
  // The last range with RWF_DSYNC: its own writeback, any metadata the
  // batch allocated (tracked per file), then a device cache flush covering
  // every range above.
  Status s = write_vector(ranges[last].offset, ranges[last].iov, RWF_DSYNC);
  if (!s.ok() && (s.code() == EOPNOTSUPP || s.code() == ENOSYS)) {
    dsync_writes_.store(false);
    if (Status w = write_vector(ranges[last].offset, std::move(ranges[last].iov), 0); !w.ok()) return w;
    return sync_.sync();
  }
  return s;
}

Status FileDevice::flush() { return sync_.sync(); }

Status FileDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  if (Status f = sync_.failure(); !f.ok()) return Status::Error(EIO, "earlier flush failed");
  int rc;
  if (block_device_) {
    uint64_t range[2] = {offset, length};
    rc = ::ioctl(fd_, BLKDISCARD, &range);
  } else {
    rc = ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length));
  }
  // Trim is advisory: a backing store that cannot deallocate simply keeps the data.
  if (rc != 0 && errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL) {
    return errno_status("trim '" + path_ + "'");
  }
  if (flags & kFua) return sync_.sync();
  return Status::Ok();
}

Status FileDevice::reserve(uint64_t offset, uint64_t length) {
  if (block_device_ || length == 0 || !reserve_supported_.load(std::memory_order_relaxed))
    return Status::Ok();
  int rc;
  do {
    rc = ::fallocate(fd_, 0, static_cast<off_t>(offset), static_cast<off_t>(length));
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Status::Ok();
  if (errno == EOPNOTSUPP || errno == ENOSYS) {
    reserve_supported_.store(false, std::memory_order_relaxed);
    return Status::Ok();
  }
  return errno_status("reserve space in '" + path_ + "'");
}

Status FileDevice::write_zero_buffer(uint64_t offset, uint64_t length) {
  auto zeroes = zero_chunk();
  while (length > 0) {
    uint64_t n = std::min<uint64_t>(length, zeroes.size());
    if (Status s = write(offset, zeroes.first(n), 0); !s.ok()) return s;
    offset += n;
    length -= n;
  }
  return Status::Ok();
}

Status FileDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  if (Status f = sync_.failure(); !f.ok()) return Status::Error(EIO, "earlier flush failed");
  int rc = -1;
  if (block_device_) {
    if (!(flags & kFastZero)) {
      uint64_t range[2] = {offset, length};
      rc = ::ioctl(fd_, BLKZEROOUT, &range);
    }
  } else {
    int mode = (flags & kNoHole) ? FALLOC_FL_ZERO_RANGE : (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
    rc = ::fallocate(fd_, mode, static_cast<off_t>(offset), static_cast<off_t>(length));
  }
  if (rc != 0) {
    if (flags & kFastZero) return Status::Error(ENOTSUP, "fast zeroing not possible on '" + path_ + "'");
    if (Status s = write_zero_buffer(offset, length); !s.ok()) return s;
  }
  if (flags & kFua) return sync_.sync();
  return Status::Ok();
}

Status FileDevice::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  if (block_device_) return BlockDevice::block_status(offset, length, out);
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  // Bounded so a fragmented file cannot make one request produce huge replies.
  for (int i = 0; pos < end && i < 1024; ++i) {
    off_t data = ::lseek(fd_, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 && errno != ENXIO) {
      if (out->empty()) return BlockDevice::block_status(offset, length, out);  // no SEEK_DATA support
      break;
    }
    uint64_t data_start = data < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(data), end);
    if (data_start > pos) {
      out->push_back({data_start - pos, kExtentHole | kExtentZero});
      pos = data_start;
      continue;
    }
    off_t hole = ::lseek(fd_, static_cast<off_t>(pos), SEEK_HOLE);
    uint64_t hole_start = hole < 0 ? end : std::min<uint64_t>(static_cast<uint64_t>(hole), end);
    if (hole_start <= pos) hole_start = end;
    out->push_back({hole_start - pos, 0});
    pos = hole_start;
  }
  return Status::Ok();
}

Status FileDevice::cache(uint64_t offset, uint64_t length) {
  ::posix_fadvise(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), POSIX_FADV_WILLNEED);
  return Status::Ok();
}

void FileDevice::describe(nlohmann::json* out) const {
  (*out)["path"] = path_;
  (*out)["type"] = block_device_ ? "block-device" : "file";
  (*out)["direct"] = opts_.direct;
  (*out)["read_only"] = opts_.read_only;
  (*out)["syncs"] = sync_.barriers_run();
  Status f = sync_.failure();
  (*out)["flush_failed"] = !f.ok();
}

std::string FileDevice::status_line() const {
  std::string s = path_ + (block_device_ ? " (block device)" : " (file)");
  if (opts_.direct) s += " O_DIRECT";
  if (!sync_.failure().ok()) s += " FLUSH FAILED";
  return s;
}

}  // namespace bowstack
