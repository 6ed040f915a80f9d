// The resume journal: an append-only file of 64-byte records beside the
// image that lets a restarted server continue a checkpoint (format in
// docs/format/bow.md section 3). It records what the dm-bow log does not:
// the free map at checkpoint, and free blocks claimed by new data or
// released by discards since.
//
// Thread-safety: append() and sync() may be called concurrently; sync() is a
// group commit (concurrent callers share one fdatasync). A failed write or
// fdatasync is sticky.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/env.h"
#include "core/group_sync.h"
#include "core/status.h"

namespace bowstack::bow {

enum class JournalRecord : uint32_t { kHeader = 1, kFree = 2, kClaim = 3, kRelease = 4 };

struct JournalHeader {
  uint32_t block_size = 0;
  uint64_t blocks = 0;
  uint64_t s0c_initial = 0;  // block
  uint64_t log0_dest = 0;    // sectors
  uint32_t log0_crc = 0;
  // Version 2: records (header included) known durable when the header was
  // last written; a journal holding fewer lost its tail. 0 in version 1.
  uint64_t durable_records = 0;
  uint32_t version = 2;
};

struct JournalExtent {
  JournalRecord type = JournalRecord::kFree;
  uint64_t start = 0;
  uint64_t count = 0;
};

struct JournalContents {
  JournalHeader header;
  std::vector<JournalExtent> extents;  // in file order
  uint64_t valid_records = 0;          // including the header
  bool torn_tail = false;              // reading stopped at a bad record
  // Fewer valid records than the header says were durable: records that a
  // flush had made durable are gone (the file was cut, or is an older copy).
  bool tail_lost() const { return valid_records < header.durable_records; }
};

// Encodes one record (exposed for tests and the crash explorer).
void encode_record(JournalRecord type, const JournalHeader* header, const JournalExtent* extent,
                   unsigned char out[64]);
// Rewrites a record's CRC to match its other bytes (fuzzers that mutate
// fields and want them read rather than taken for a torn tail).
void seal_record(unsigned char record[64]);

// All file access goes through an Env (the real filesystem in production;
// memory or a recording Env under the crash-state explorer). Lifetime: the
// Env must outlive the journal.
class ResumeJournal {
 public:
  // Creates (replacing any old file) a journal holding the header and the
  // free extents, and makes it durable (file and directory entry) before
  // returning. Called at checkpoint before the log reaches block 0.
  static Result<std::unique_ptr<ResumeJournal>> create(Env* env, const std::string& path,
                                                       const JournalHeader& header,
                                                       const std::vector<JournalExtent>& free_extents);
  // Opens an existing journal for appending after `valid_records` records
  // (what load() found valid; a torn tail is cut off, durably).
  static Result<std::unique_ptr<ResumeJournal>> reopen(Env* env, const std::string& path,
                                                       uint64_t valid_records);
  // Reads a journal. ENOENT if absent; EINVAL if the header is unreadable.
  static Result<JournalContents> load(Env* env, const std::string& path);
  // Deletes the journal and makes the deletion durable. ENOENT is not an error.
  static Status remove(Env* env, const std::string& path);

  ~ResumeJournal();

  // Makes sure the file has space for `n` more records beyond those
  // appended or reserved already (File::reserve, in chunks), so that a full
  // filesystem fails the caller now (ENOSPC, not sticky) rather than a
  // later sync (sticky). Each append() uses up one reserved record.
  Status reserve(uint64_t n);
  // Queues a record; it reaches the file at the next sync().
  void append(JournalRecord type, uint64_t start, uint64_t count);
  // Writes queued records and makes them durable; then, in a second step,
  // records in the header how many are durable (so that a journal cut
  // later at a record boundary is detected: JournalContents::tail_lost()).
  Status sync();
  const std::string& path() const { return path_; }

 private:
  ResumeJournal(std::string path, std::unique_ptr<File> file, uint64_t records);
  Status write_pending();
  // Rewrites the header record (version 2) saying `durable` records are durable.
  Status write_header(uint64_t durable);

  const std::string path_;
  const std::unique_ptr<File> file_;
  std::mutex mu_;
  std::vector<JournalExtent> pending_;  // guarded by mu_
  uint64_t records_;                    // guarded by mu_: records in the file
  uint64_t room_;                       // guarded by mu_: records the file has space for
  uint64_t promised_ = 0;               // guarded by mu_: reserved, not yet appended
  // The header record as in the file; touched only inside sync_'s barrier
  // (one at a time) and by create/reopen.
  unsigned char header_record_[64] = {};
  Status failed_;  // guarded by mu_
  GroupSync sync_;
};

}  // namespace bowstack::bow
