#include "targets/bow/resume_journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "core/crc32.h"

namespace bowstack::bow {

namespace {

constexpr size_t kRecord = 64;
constexpr char kMagic[8] = {'B', 'O', 'W', 'R', 'E', 'S', 'U', 'M'};

void put32(unsigned char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
void put64(unsigned char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint32_t record_crc(const unsigned char* r) { return crc32(0, r, 60); }

Status write_at(int fd, const unsigned char* data, size_t len, uint64_t offset, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pwrite(fd, data + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Error(n < 0 ? errno : EIO, "write resume journal '" + path + "'");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status sync_directory(const std::string& path) {
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

}  // namespace

void encode_record(JournalRecord type, const JournalHeader* header, const JournalExtent* extent,
                   unsigned char out[64]) {
  std::memset(out, 0, kRecord);
  std::memcpy(out, kMagic, 8);
  put32(out + 8, static_cast<uint32_t>(type));
  if (type == JournalRecord::kHeader) {
    put32(out + 12, 1);  // version
    put32(out + 16, header->block_size);
    put64(out + 24, header->blocks);
    put64(out + 32, header->s0c_initial);
    put64(out + 40, header->log0_dest);
    put32(out + 48, header->log0_crc);
  } else {
    put64(out + 16, extent->start);
    put64(out + 24, extent->count);
  }
  put32(out + 60, record_crc(out));
}

ResumeJournal::ResumeJournal(std::string path, int fd, uint64_t records)
    : path_(std::move(path)), fd_(fd), records_(records), sync_([this] { return write_pending(); }) {}

ResumeJournal::~ResumeJournal() { ::close(fd_); }

Result<std::unique_ptr<ResumeJournal>> ResumeJournal::create(const std::string& path,
                                                             const JournalHeader& header,
                                                             const std::vector<JournalExtent>& free_extents) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::Error(errno, "create resume journal '" + path + "'");
  std::vector<unsigned char> buf((1 + free_extents.size()) * kRecord);
  encode_record(JournalRecord::kHeader, &header, nullptr, buf.data());
  for (size_t i = 0; i < free_extents.size(); ++i) {
    encode_record(JournalRecord::kFree, nullptr, &free_extents[i], buf.data() + (i + 1) * kRecord);
  }
  Status s = write_at(fd, buf.data(), buf.size(), 0, path);
  if (s.ok() && ::fdatasync(fd) != 0) s = Status::Error(errno, "fdatasync resume journal '" + path + "'");
  if (s.ok()) s = sync_directory(path);
  if (!s.ok()) {
    ::close(fd);
    return s;
  }
  return std::unique_ptr<ResumeJournal>(new ResumeJournal(path, fd, 1 + free_extents.size()));
}

Result<std::unique_ptr<ResumeJournal>> ResumeJournal::reopen(const std::string& path,
                                                             uint64_t valid_records) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "open resume journal '" + path + "'");
  // Drop a torn tail so new records follow the last valid one.
  if (::ftruncate(fd, static_cast<off_t>(valid_records * kRecord)) != 0 || ::fdatasync(fd) != 0) {
    Status s = Status::Error(errno, "truncate resume journal '" + path + "'");
    ::close(fd);
    return s;
  }
  return std::unique_ptr<ResumeJournal>(new ResumeJournal(path, fd, valid_records));
}

Result<JournalContents> ResumeJournal::load(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Error(errno, "open resume journal '" + path + "'");
  JournalContents c;
  unsigned char r[kRecord];
  uint64_t index = 0;
  Status error;
  for (;; ++index) {
    ssize_t n = ::pread(fd, r, kRecord, static_cast<off_t>(index * kRecord));
    if (n < 0 && errno == EINTR) {
      --index;
      continue;
    }
    if (n < 0) {
      error = Status::Error(errno, "read resume journal '" + path + "'");
      break;
    }
    if (static_cast<size_t>(n) < kRecord) {
      c.torn_tail = n > 0;
      break;
    }
    bool valid = std::memcmp(r, kMagic, 8) == 0 && get32(r + 60) == record_crc(r);
    uint32_t type = get32(r + 8);
    if (index == 0) {
      if (!valid || type != static_cast<uint32_t>(JournalRecord::kHeader) || get32(r + 12) != 1) {
        error = Status::Error(EINVAL, "resume journal '" + path + "' has no valid header");
        break;
      }
      c.header.block_size = get32(r + 16);
      c.header.blocks = get64(r + 24);
      c.header.s0c_initial = get64(r + 32);
      c.header.log0_dest = get64(r + 40);
      c.header.log0_crc = get32(r + 48);
      continue;
    }
    if (!valid || type < 2 || type > 4) {
      c.torn_tail = true;
      break;
    }
    c.extents.push_back({static_cast<JournalRecord>(type), get64(r + 16), get64(r + 24)});
  }
  ::close(fd);
  if (!error.ok()) return error;
  c.valid_records = index;
  return c;
}

Status ResumeJournal::remove(const std::string& path) {
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Error(errno, "remove resume journal '" + path + "'");
  }
  return sync_directory(path);
}

void ResumeJournal::append(JournalRecord type, uint64_t start, uint64_t count) {
  std::lock_guard lock(mu_);
  pending_.push_back({type, start, count});
}

Status ResumeJournal::write_pending() {
  std::vector<JournalExtent> batch;
  uint64_t at;
  {
    std::lock_guard lock(mu_);
    if (!failed_.ok()) return failed_;
    batch.swap(pending_);
    at = records_;
    records_ += batch.size();
  }
  Status s;
  if (!batch.empty()) {
    std::vector<unsigned char> buf(batch.size() * kRecord);
    for (size_t i = 0; i < batch.size(); ++i)
      encode_record(batch[i].type, nullptr, &batch[i], buf.data() + i * kRecord);
    s = write_at(fd_, buf.data(), buf.size(), at * kRecord, path_);
  }
  if (s.ok() && ::fdatasync(fd_) != 0) s = Status::Error(errno, "fdatasync resume journal '" + path_ + "'");
  if (!s.ok()) {
    std::lock_guard lock(mu_);
    failed_ = s;
  }
  return s;
}

Status ResumeJournal::sync() { return sync_.sync(); }

}  // namespace bowstack::bow
