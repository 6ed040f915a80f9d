#include "targets/bow/resume_journal.h"

#include <cstring>

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

}  // namespace

void encode_record(JournalRecord type, const JournalHeader* header, const JournalExtent* extent,
                   unsigned char out[64]) {
  std::memset(out, 0, kRecord);
  std::memcpy(out, kMagic, 8);
  put32(out + 8, static_cast<uint32_t>(type));
  if (type == JournalRecord::kHeader) {
    put32(out + 12, header->version);
    put32(out + 16, header->block_size);
    put64(out + 24, header->blocks);
    put64(out + 32, header->s0c_initial);
    put64(out + 40, header->log0_dest);
    put32(out + 48, header->log0_crc);
    if (header->version >= 2) put64(out + 52, header->durable_records);
  } else {
    put64(out + 16, extent->start);
    put64(out + 24, extent->count);
  }
  seal_record(out);
}

void seal_record(unsigned char record[64]) { put32(record + 60, record_crc(record)); }

ResumeJournal::ResumeJournal(std::string path, std::unique_ptr<File> file, uint64_t records)
    : path_(std::move(path)), file_(std::move(file)), records_(records), room_(records), sync_([this] {
        return write_pending();
      }) {}

ResumeJournal::~ResumeJournal() = default;

Result<std::unique_ptr<ResumeJournal>> ResumeJournal::create(Env* env, const std::string& path,
                                                             const JournalHeader& header,
                                                             const std::vector<JournalExtent>& free_extents) {
  auto f = env->open(path, OpenMode::kCreateTruncate);
  if (!f.ok()) return Status::Error(f.status().code(), "resume journal: " + f.status().context());
  std::vector<unsigned char> buf((1 + free_extents.size()) * kRecord);
  // Written with its records in one sync: until block 0 says "checkpoint"
  // (after this returns) nothing resumes from it, torn or not.
  JournalHeader h = header;
  h.version = 2;
  h.durable_records = 1 + free_extents.size();
  encode_record(JournalRecord::kHeader, &h, nullptr, buf.data());
  for (size_t i = 0; i < free_extents.size(); ++i) {
    encode_record(JournalRecord::kFree, nullptr, &free_extents[i], buf.data() + (i + 1) * kRecord);
  }
  Status s = (*f)->write(0, std::as_bytes(std::span(buf)));
  if (s.ok()) s = (*f)->sync();
  if (s.ok()) s = env->sync_dir(path);
  if (!s.ok()) return Status::Error(s.code(), "resume journal: " + s.context());
  auto j =
      std::unique_ptr<ResumeJournal>(new ResumeJournal(path, std::move(f.value()), 1 + free_extents.size()));
  std::memcpy(j->header_record_, buf.data(), kRecord);
  return j;
}

Result<std::unique_ptr<ResumeJournal>> ResumeJournal::reopen(Env* env, const std::string& path,
                                                             uint64_t valid_records) {
  auto f = env->open(path, OpenMode::kReadWrite);
  if (!f.ok()) return Status::Error(f.status().code(), "resume journal: " + f.status().context());
  // Drop a torn tail so new records follow the last valid one.
  Status s = (*f)->truncate(valid_records * kRecord);
  if (s.ok()) s = (*f)->sync();
  if (!s.ok()) return Status::Error(s.code(), "resume journal: " + s.context());
  auto j = std::unique_ptr<ResumeJournal>(new ResumeJournal(path, std::move(f.value()), valid_records));
  auto n = j->file_->read(0, std::as_writable_bytes(std::span(j->header_record_)));
  if (!n.ok() || *n != kRecord) {
    return Status::Error(n.ok() ? EINVAL : n.status().code(), "resume journal: cannot read its header again");
  }
  return j;
}

Result<JournalContents> ResumeJournal::load(Env* env, const std::string& path) {
  auto f = env->open(path, OpenMode::kRead);
  if (!f.ok()) return Status::Error(f.status().code(), "resume journal: " + f.status().context());
  JournalContents c;
  unsigned char r[kRecord];
  uint64_t index = 0;
  for (;; ++index) {
    auto n = (*f)->read(index * kRecord, std::as_writable_bytes(std::span(r)));
    if (!n.ok()) return Status::Error(n.status().code(), "resume journal: " + n.status().context());
    if (*n < kRecord) {
      // An empty or cut first record is no journal; later ones are a torn tail.
      if (index == 0) return Status::Error(EINVAL, "resume journal '" + path + "' has no valid header");
      c.torn_tail = *n > 0;
      break;
    }
    bool valid = std::memcmp(r, kMagic, 8) == 0 && get32(r + 60) == record_crc(r);
    uint32_t type = get32(r + 8);
    if (index == 0) {
      const uint32_t version = get32(r + 12);
      if (!valid || type != static_cast<uint32_t>(JournalRecord::kHeader) || version < 1 || version > 2) {
        return Status::Error(EINVAL, "resume journal '" + path + "' has no valid header");
      }
      c.header.version = version;
      c.header.durable_records = version >= 2 ? get64(r + 52) : 0;
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
  c.valid_records = index;
  return c;
}

Status ResumeJournal::remove(Env* env, const std::string& path) {
  if (Status s = env->remove(path); !s.ok()) {
    if (s.code() == ENOENT) return Status::Ok();
    return Status::Error(s.code(), "resume journal: " + s.context());
  }
  return env->sync_dir(path);
}

Status ResumeJournal::reserve(uint64_t n) {
  // Space for a chunk of records at a time: one fallocate per 1024 records.
  // It runs under mu_ (appenders wait for it), which is rare enough.
  constexpr uint64_t kChunkRecords = 1024;
  std::lock_guard lock(mu_);
  if (!failed_.ok()) return failed_;
  const uint64_t need = records_ + pending_.size() + promised_ + n;
  if (need > room_) {
    const uint64_t from = std::max(room_, records_);
    const uint64_t to = std::max(need, from + kChunkRecords);
    if (Status s = file_->reserve(from * kRecord, (to - from) * kRecord); !s.ok()) {
      return Status::Error(s.code(), "resume journal: " + why(s));
    }
    room_ = to;
  }
  promised_ += n;
  return Status::Ok();
}

void ResumeJournal::append(JournalRecord type, uint64_t start, uint64_t count) {
  std::lock_guard lock(mu_);
  pending_.push_back({type, start, count});
  if (promised_ > 0) --promised_;
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
    s = file_->write(at * kRecord, std::as_bytes(std::span(buf)));
  }
  if (s.ok()) s = file_->sync();
  // Only once the records are durable may the header say so.
  if (s.ok() && !batch.empty()) s = write_header(at + batch.size());
  if (!s.ok()) {
    s = Status::Error(s.code(), "resume journal: " + s.context());
    std::lock_guard lock(mu_);
    failed_ = s;
  }
  return s;
}

Status ResumeJournal::write_header(uint64_t durable) {
  // An older (version 1) header becomes version 2 here: same fields, the
  // count in bytes that were reserved (zero).
  put32(header_record_ + 12, 2);
  put64(header_record_ + 52, durable);
  seal_record(header_record_);
  Status s = file_->write(0, std::as_bytes(std::span(header_record_)));
  if (s.ok()) s = file_->sync();
  return s;
}

Status ResumeJournal::sync() { return sync_.sync(); }

}  // namespace bowstack::bow
