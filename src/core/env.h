// Files beside an image (metadata, journals), behind an interface that tests
// and the crash-state explorer replace (like LevelDB's Env): PosixEnv is the
// real filesystem, MemEnv keeps files in memory, and a recording Env
// (src/crash/) logs every operation so crash states of the files can be
// built alongside those of the devices.
//
// Durability model every implementation follows: File::write is volatile
// until File::sync() returns OK (fdatasync); whether a file exists after a
// crash is settled only by Env::sync_dir() on its directory (create and
// remove are volatile until then).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace bowstack {

// An open file. Thread-safety: read/write/sync/truncate may be called
// concurrently; concurrent writes to overlapping ranges have no defined order.
class File {
 public:
  virtual ~File() = default;
  // Reads up to out.size() bytes at `offset`; returns how many (fewer only
  // at the end of the file).
  virtual Result<size_t> read(uint64_t offset, std::span<std::byte> out) = 0;
  // Writes all of `data` at `offset`, extending the file if needed.
  virtual Status write(uint64_t offset, std::span<const std::byte> data) = 0;
  // Makes earlier writes and truncations durable (fdatasync).
  virtual Status sync() = 0;
  virtual Status truncate(uint64_t size) = 0;
  virtual Result<uint64_t> size() = 0;
  // Allocates space for [offset, offset+length) without changing the size
  // or the contents, so that later writes there cannot fail with ENOSPC.
  // ENOSPC when the filesystem is full. The default (memory files, and
  // filesystems that cannot allocate ahead) succeeds.
  virtual Status reserve(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
    return Status::Ok();
  }
};

enum class OpenMode {
  kRead,            // must exist
  kReadWrite,       // must exist
  kCreateTruncate,  // created if absent, emptied if present (mode 0600)
};

// Thread-safety: all methods may be called concurrently.
class Env {
 public:
  virtual ~Env() = default;
  // The process-wide real filesystem. Lifetime: static.
  static Env* posix();

  // Errors name the path; ENOENT when it must exist and does not.
  virtual Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) = 0;
  // Removes a file. ENOENT if there is none.
  virtual Status remove(const std::string& path) = 0;
  // Makes the creation or removal of `path` durable (fsync of its directory).
  virtual Status sync_dir(const std::string& path) = 0;
};

// Files in memory, shared by every File opened on the same path (as on a
// real filesystem). For tests and the crash-state explorer.
class MemEnv final : public Env {
 public:
  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override;
  Status remove(const std::string& path) override;
  Status sync_dir(const std::string& /*path*/) override { return Status::Ok(); }

  // Test hooks: the current contents of a file (absent: nullptr), and
  // replacing the whole set of files (as a crash state does).
  std::shared_ptr<std::vector<std::byte>> contents(const std::string& path) const;
  std::map<std::string, std::vector<std::byte>> snapshot() const;
  void restore(const std::map<std::string, std::vector<std::byte>>& files);

 private:
  struct Data {
    std::mutex mu;
    std::vector<std::byte> bytes;  // guarded by mu
  };
  class MemFile;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Data>> files_;  // guarded by mu_
};

}  // namespace bowstack
