// A base device over a regular file or a block device.
//
// I/O is positional (pread/pwrite), so any number of threads run in
// parallel with no lock on the data path. Flushes go through one GroupSync,
// so concurrent flushes share an fdatasync. A FUA write is written with
// RWF_DSYNC: durable on return without forcing out the rest of the file's
// dirty pages. A FUA batch (write_batch) starts writeback of just its own
// ranges with sync_file_range, waits for it, and writes its last range with
// RWF_DSYNC: that write's device cache flush covers the whole batch, one
// barrier instead of one per range. A failed fdatasync or synchronous write is sticky and fails
// every later write and flush with EIO.
//
// Regular files: trim punches holes, write_zeroes punches holes (or zeroes
// the range when NO_HOLE is asked), block_status reports holes via
// SEEK_HOLE/SEEK_DATA. Block devices: BLKDISCARD / BLKZEROOUT.
// With `direct`, the file is opened O_DIRECT: callers' buffers must be
// aligned to 4096 and I/O aligned to the advertised logical block size.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/group_sync.h"

namespace bowstack {

struct FileDeviceOptions {
  bool read_only = false;
  bool direct = false;
  // Hold an OFD lock on the file while it is open (core/file_lock.h): a
  // write lock, or a read lock when read_only. Opening fails with EBUSY,
  // naming the holder, when another open holds a conflicting one.
  bool lock = false;
};

class FileDevice final : public BlockDevice {
 public:
  // Opens an existing file or block device. Errors name the path.
  static Result<std::shared_ptr<FileDevice>> open(const std::string& path, FileDeviceOptions opts = {});
  // Creates a sparse regular file of `size` bytes. Fails with EEXIST if the
  // path exists (never truncates anything).
  static Status create(const std::string& path, uint64_t size);

  ~FileDevice() override;

  std::string_view kind() const override { return "file"; }
  Geometry geometry() const override { return geometry_; }
  Capabilities capabilities() const override { return caps_; }
  Status read(uint64_t offset, std::span<std::byte> buf) override;
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  Status write_batch(std::span<const WriteRef> writes, uint32_t flags) override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) override;
  Status cache(uint64_t offset, uint64_t length) override;
  // fallocate(2) without flags on a regular file; nothing on a block device
  // or where the filesystem cannot allocate ahead (then a full filesystem
  // still shows as ENOSPC at the write).
  Status reserve(uint64_t offset, uint64_t length) override;
  void describe(nlohmann::json* out) const override;
  std::string status_line() const override;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

 private:
  FileDevice(std::string path, int fd, bool block_device, FileDeviceOptions opts, Geometry g);
  Status write_zero_buffer(uint64_t offset, uint64_t length);
  // Writes the iovecs at `offset`, retrying partial writes; `rwf` as for
  // pwritev2. A failed RWF_DSYNC write poisons the sync state.
  Status write_vector(uint64_t offset, std::vector<iovec> iov, int rwf);
  Status fdatasync_barrier();

  const std::string path_;
  const int fd_;
  const bool block_device_;
  std::atomic<bool> reserve_supported_{true};  // cleared when fallocate says EOPNOTSUPP
  const FileDeviceOptions opts_;
  Geometry geometry_;
  Capabilities caps_;
  GroupSync sync_;
  std::atomic<bool> dsync_writes_{true};  // pwritev2(RWF_DSYNC) works here
};

}  // namespace bowstack
