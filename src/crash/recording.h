// Recording I/O for crash-state exploration (like dm-log-writes): every
// write, trim and barrier reaching a device, and every file operation
// reaching an Env, is logged in completion order together with its data,
// plus marks the harness inserts ("checkpoint done", "flush acknowledged").
//
// Streams: each recorded device is a stream, each file path is a stream,
// and file creation/removal form one directory stream. A barrier is logged
// twice, when it starts and when it completes: it covers exactly the
// stream's operations logged before its start, once its completion is
// logged. A write with kFua is durable when it is logged (at completion).
//
// A Recording is self-contained (the starting contents of every device and
// file, all records and their data, the marks), so a saved recording
// replays a crash state exactly, whatever threads did during the run.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/block_device.h"
#include "core/env.h"

namespace bowstack::crash {

enum class Op : uint8_t {
  kWrite = 1,       // device write (flags may hold kFua); data = the bytes
  kTrim = 2,        // device trim or write-zeroes: contents become unspecified (modelled as zeroes)
  kFlushStart = 3,  // device barrier
  kFlushEnd = 4,
  kFileWrite = 5,     // stream = file; data = the bytes
  kFileTruncate = 6,  // stream = file; offset = new size
  kSyncStart = 7,     // file barrier (fdatasync)
  kSyncEnd = 8,
  kCreate = 9,         // stream = file: created (or emptied if it existed)
  kRemove = 10,        // stream = file
  kDirSyncStart = 11,  // directory barrier: settles creations and removals
  kDirSyncEnd = 12,
  kMark = 13,  // harness mark: text, optional data
};

struct Record {
  Op op = Op::kMark;
  uint32_t stream = 0;   // device index (device ops) or file index (file ops)
  uint32_t flags = 0;    // kFua on writes
  uint64_t barrier = 0;  // barrier id, pairing a start with its end
  uint64_t offset = 0;   // bytes; new size for truncate
  uint64_t length = 0;   // bytes (writes, trims)
  uint64_t data = 0;     // offset of the data in Recording::arena
  uint64_t data_len = 0;
  std::string text;  // marks
};

struct DeviceInfo {
  std::string name;
  std::vector<std::byte> base;  // contents when recording started
};

struct Recording {
  std::string workload;  // which workload made it
  uint64_t seed = 0;
  std::vector<DeviceInfo> devices;
  std::vector<std::string> files;                            // file streams by index: paths
  std::map<std::string, std::vector<std::byte>> base_files;  // files present when recording started
  std::vector<Record> records;
  std::vector<std::byte> arena;

  std::span<const std::byte> data(const Record& r) const { return {arena.data() + r.data, r.data_len}; }
  // Index of a file stream by path, or -1.
  int file_index(const std::string& path) const;

  // A compact binary form (little-endian, versioned, CRC-checked) for
  // reproducers. Load errors say what is wrong; nothing is trusted.
  Status save(const std::string& path) const;
  static Result<Recording> load(const std::string& path);
};

// Collects records from any number of threads. Lifetime: must outlive the
// recording devices and envs that feed it.
class Recorder {
 public:
  Recorder(std::string workload, uint64_t seed);

  // Registers a device stream with its starting contents; returns its index.
  uint32_t add_device(std::string name, std::vector<std::byte> base);
  // Records the files present now (call before recording starts).
  void set_base_files(std::map<std::string, std::vector<std::byte>> files);
  void mark(std::string text, std::span<const std::byte> data = {});
  // Thread-safe append; returns the barrier id for starts (else 0).
  void append(Record r, std::span<const std::byte> data = {});
  uint64_t next_barrier();
  uint32_t file_stream(const std::string& path);

  // The recording so far (a copy; recording may go on).
  Recording snapshot() const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  Recording rec_;          // guarded by mu_
  uint64_t barriers_ = 0;  // guarded by mu_
};

// A layer that passes everything down and records what completed.
// write_batch is not overridden: it becomes writes and a flush, each
// recorded, which is what a batch amounts to on a real device.
class RecordingDevice final : public StackedDevice {
 public:
  RecordingDevice(std::shared_ptr<BlockDevice> lower, Recorder* rec, uint32_t stream)
      : StackedDevice(std::move(lower)), rec_(rec), stream_(stream) {}
  std::string_view kind() const override { return "recording"; }
  Status write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) override;
  Status flush() override;
  Status trim(uint64_t offset, uint64_t length, uint32_t flags) override;
  Status write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) override;

 private:
  Recorder* const rec_;
  const uint32_t stream_;
};

// An Env over a MemEnv that records every file operation.
class RecordingEnv final : public Env {
 public:
  RecordingEnv(std::shared_ptr<MemEnv> store, Recorder* rec) : store_(std::move(store)), rec_(rec) {}
  Result<std::unique_ptr<File>> open(const std::string& path, OpenMode mode) override;
  Status remove(const std::string& path) override;
  Status sync_dir(const std::string& path) override;

 private:
  class RecordingFile;
  std::shared_ptr<MemEnv> store_;
  Recorder* const rec_;
};

}  // namespace bowstack::crash
