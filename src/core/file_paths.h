// What offline tools need to know of, and do to, a path before they open it
// as a device: the core owns files, so a target's tools ask here rather
// than call stat, statvfs, truncate or open themselves.
//
// Thread-safety: plain functions; no shared state.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace bowstack {

struct PathInfo {
  bool exists = false;
  bool regular = false;
  bool block_device = false;
  uint64_t size = 0;  // a regular file's size (0 otherwise)
};

// ENOENT is not an error: exists is false then.
Result<PathInfo> inspect_path(const std::string& path);

// Bytes a file at `path` can hold: a block device's size; for a regular
// file (or an absent one) its size plus the free space of its filesystem.
Result<uint64_t> path_capacity(const std::string& path);

// Makes `path` a regular file of at least `size` bytes for a tool that is
// about to write it: created sparse when absent, grown when smaller, never
// shrunk. A file someone holds (core/file_lock.h) is refused, untouched,
// with EBUSY naming `what` and the holder. A block device is left alone.
Status prepare_file(const std::string& path, uint64_t size, const std::string& what);

}  // namespace bowstack
