#include "crash/recording.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "core/crc32.h"

namespace bowstack::crash {

namespace {

constexpr char kMagic[8] = {'B', 'O', 'W', 'C', 'R', 'R', 'E', 'C'};
constexpr uint32_t kVersion = 1;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(std::byte(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void bytes(std::span<const std::byte> b) {
    u64(b.size());
    out_.insert(out_.end(), b.begin(), b.end());
  }
  void str(const std::string& s) { bytes(std::as_bytes(std::span(s.data(), s.size()))); }
  std::vector<std::byte>& out() { return out_; }

 private:
  std::vector<std::byte> out_;
};

// Bounds-checked reads; the first failure sticks and names the field.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  uint8_t u8(const char* what) {
    if (!need(1, what)) return 0;
    return static_cast<uint8_t>(in_[at_++]);
  }
  uint32_t u32(const char* what) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(u8(what)) << (8 * i);
    return v;
  }
  uint64_t u64(const char* what) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u8(what)) << (8 * i);
    return v;
  }
  std::vector<std::byte> bytes(const char* what) {
    uint64_t n = u64(what);
    if (!need(n, what)) return {};
    std::vector<std::byte> b(in_.begin() + static_cast<ptrdiff_t>(at_),
                             in_.begin() + static_cast<ptrdiff_t>(at_ + n));
    at_ += n;
    return b;
  }
  std::string str(const char* what) {
    auto b = bytes(what);
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  }
  // A count of items that each take at least `min_size` bytes: refused if
  // the rest of the input cannot hold them (no allocation from a bad count).
  uint64_t count(const char* what, uint64_t min_size) {
    uint64_t n = u64(what);
    if (error_.empty() && n > (in_.size() - at_) / min_size) {
      error_ = fmt::format("{}: count {} larger than the file allows", what, n);
      return 0;
    }
    return n;
  }
  const std::string& error() const { return error_; }
  bool done() const { return at_ == in_.size(); }

 private:
  bool need(uint64_t n, const char* what) {
    if (!error_.empty()) return false;
    if (n > in_.size() - at_) {
      error_ = fmt::format("truncated at {} (offset {})", what, at_);
      return false;
    }
    return true;
  }
  std::span<const std::byte> in_;
  size_t at_ = 0;
  std::string error_;
};

}  // namespace

int Recording::file_index(const std::string& path) const {
  for (size_t i = 0; i < files.size(); ++i) {
    if (files[i] == path) return static_cast<int>(i);
  }
  return -1;
}

Status Recording::save(const std::string& path) const {
  Writer w;
  for (char c : kMagic) w.u8(static_cast<uint8_t>(c));
  w.u32(kVersion);
  w.str(workload);
  w.u64(seed);
  w.u64(devices.size());
  for (const auto& d : devices) {
    w.str(d.name);
    w.bytes(d.base);
  }
  w.u64(files.size());
  for (const auto& f : files) w.str(f);
  w.u64(base_files.size());
  for (const auto& [p, b] : base_files) {
    w.str(p);
    w.bytes(b);
  }
  w.u64(records.size());
  for (const Record& r : records) {
    w.u8(static_cast<uint8_t>(r.op));
    w.u32(r.stream);
    w.u32(r.flags);
    w.u64(r.barrier);
    w.u64(r.offset);
    w.u64(r.length);
    w.u64(r.data);
    w.u64(r.data_len);
    w.str(r.text);
  }
  w.bytes(arena);
  w.u32(crc32(0, w.out()));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(w.out().data()), static_cast<std::streamsize>(w.out().size()));
  f.close();
  if (!f) return Status::Error(EIO, "cannot write recording '" + path + "'");
  return Status::Ok();
}

Result<Recording> Recording::load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Error(ENOENT, "cannot open recording '" + path + "'");
  std::vector<char> raw((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto in = std::as_bytes(std::span(raw));
  if (in.size() < sizeof(kMagic) + 8 || std::memcmp(in.data(), kMagic, sizeof(kMagic)) != 0) {
    return Status::Error(EINVAL, "'" + path + "' is not a bowstack crash recording");
  }
  Reader tail(in.subspan(in.size() - 4));
  if (tail.u32("crc") != crc32(0, in.first(in.size() - 4))) {
    return Status::Error(EINVAL, "recording '" + path + "' is corrupt (checksum mismatch)");
  }
  Reader r(in.subspan(sizeof(kMagic), in.size() - sizeof(kMagic) - 4));
  if (uint32_t v = r.u32("version"); v != kVersion) {
    return Status::Error(EINVAL,
                         fmt::format("recording '{}' has version {}, this tool reads {}", path, v, kVersion));
  }
  Recording rec;
  rec.workload = r.str("workload");
  rec.seed = r.u64("seed");
  for (uint64_t i = 0, n = r.count("devices", 16); i < n; ++i) {
    DeviceInfo d;
    d.name = r.str("device name");
    d.base = r.bytes("device contents");
    rec.devices.push_back(std::move(d));
  }
  for (uint64_t i = 0, n = r.count("files", 8); i < n; ++i) rec.files.push_back(r.str("file path"));
  for (uint64_t i = 0, n = r.count("base files", 16); i < n; ++i) {
    std::string p = r.str("base file path");
    rec.base_files[p] = r.bytes("base file contents");
  }
  for (uint64_t i = 0, n = r.count("records", 57); i < n; ++i) {
    Record x;
    x.op = static_cast<Op>(r.u8("op"));
    x.stream = r.u32("stream");
    x.flags = r.u32("flags");
    x.barrier = r.u64("barrier");
    x.offset = r.u64("offset");
    x.length = r.u64("length");
    x.data = r.u64("data");
    x.data_len = r.u64("data length");
    x.text = r.str("text");
    rec.records.push_back(std::move(x));
  }
  rec.arena = r.bytes("data");
  if (!r.error().empty()) return Status::Error(EINVAL, "recording '" + path + "': " + r.error());
  if (!r.done()) return Status::Error(EINVAL, "recording '" + path + "' has trailing bytes");
  for (size_t i = 0; i < rec.records.size(); ++i) {
    const Record& x = rec.records[i];
    const bool device_op =
        x.op == Op::kWrite || x.op == Op::kTrim || x.op == Op::kFlushStart || x.op == Op::kFlushEnd;
    const bool file_op = x.op == Op::kFileWrite || x.op == Op::kFileTruncate || x.op == Op::kSyncStart ||
                         x.op == Op::kSyncEnd || x.op == Op::kCreate || x.op == Op::kRemove;
    if (x.op < Op::kWrite || x.op > Op::kMark || (device_op && x.stream >= rec.devices.size()) ||
        (file_op && x.stream >= rec.files.size()) || x.data > rec.arena.size() ||
        x.data_len > rec.arena.size() - x.data ||
        (x.op == Op::kWrite && (x.data_len != x.length || x.offset > rec.devices[x.stream].base.size() ||
                                x.length > rec.devices[x.stream].base.size() - x.offset)) ||
        (x.op == Op::kTrim && (x.offset > rec.devices[x.stream].base.size() ||
                               x.length > rec.devices[x.stream].base.size() - x.offset)) ||
        (x.op == Op::kFileWrite && x.data_len != x.length) ||
        (x.op == Op::kFileTruncate && x.offset > (1ull << 40))) {
      return Status::Error(EINVAL, fmt::format("recording '{}': record {} is invalid", path, i));
    }
  }
  return rec;
}

Recorder::Recorder(std::string workload, uint64_t seed) {
  rec_.workload = std::move(workload);
  rec_.seed = seed;
}

uint32_t Recorder::add_device(std::string name, std::vector<std::byte> base) {
  std::lock_guard lock(mu_);
  rec_.devices.push_back(DeviceInfo{std::move(name), std::move(base)});
  return static_cast<uint32_t>(rec_.devices.size() - 1);
}

void Recorder::set_base_files(std::map<std::string, std::vector<std::byte>> files) {
  std::lock_guard lock(mu_);
  for (const auto& [p, b] : files) {
    if (std::find(rec_.files.begin(), rec_.files.end(), p) == rec_.files.end()) rec_.files.push_back(p);
  }
  rec_.base_files = std::move(files);
}

void Recorder::mark(std::string text, std::span<const std::byte> data) {
  Record r;
  r.op = Op::kMark;
  r.text = std::move(text);
  append(std::move(r), data);
}

void Recorder::append(Record r, std::span<const std::byte> data) {
  std::lock_guard lock(mu_);
  r.data = rec_.arena.size();
  r.data_len = data.size();
  rec_.arena.insert(rec_.arena.end(), data.begin(), data.end());
  rec_.records.push_back(std::move(r));
}

uint64_t Recorder::next_barrier() {
  std::lock_guard lock(mu_);
  return ++barriers_;
}

uint32_t Recorder::file_stream(const std::string& path) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < rec_.files.size(); ++i) {
    if (rec_.files[i] == path) return static_cast<uint32_t>(i);
  }
  rec_.files.push_back(path);
  return static_cast<uint32_t>(rec_.files.size() - 1);
}

Recording Recorder::snapshot() const {
  std::lock_guard lock(mu_);
  return rec_;
}

size_t Recorder::size() const {
  std::lock_guard lock(mu_);
  return rec_.records.size();
}

// ---- RecordingDevice ------------------------------------------------------

Status RecordingDevice::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  Status s = lower_device()->write(offset, buf, flags);
  if (s.ok()) {
    rec_->append(Record{.op = Op::kWrite,
                        .stream = stream_,
                        .flags = flags & kFua,
                        .offset = offset,
                        .length = buf.size()},
                 buf);
  }
  return s;
}

Status RecordingDevice::flush() {
  const uint64_t id = rec_->next_barrier();
  rec_->append(Record{.op = Op::kFlushStart, .stream = stream_, .barrier = id});
  Status s = lower_device()->flush();
  if (s.ok()) rec_->append(Record{.op = Op::kFlushEnd, .stream = stream_, .barrier = id});
  return s;
}

Status RecordingDevice::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  Status s = lower_device()->trim(offset, length, flags & ~uint32_t{kFua});
  if (s.ok()) rec_->append(Record{.op = Op::kTrim, .stream = stream_, .offset = offset, .length = length});
  if (s.ok() && (flags & kFua)) s = flush();
  return s;
}

Status RecordingDevice::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  Status s = lower_device()->write_zeroes(offset, length, flags & ~uint32_t{kFua});
  if (s.ok()) rec_->append(Record{.op = Op::kTrim, .stream = stream_, .offset = offset, .length = length});
  if (s.ok() && (flags & kFua)) s = flush();
  return s;
}

// ---- RecordingEnv ---------------------------------------------------------

class RecordingEnv::RecordingFile final : public File {
 public:
  RecordingFile(std::unique_ptr<File> f, Recorder* rec, uint32_t stream)
      : f_(std::move(f)), rec_(rec), stream_(stream) {}
  Result<size_t> read(uint64_t offset, std::span<std::byte> out) override { return f_->read(offset, out); }
  Status write(uint64_t offset, std::span<const std::byte> data) override {
    Status s = f_->write(offset, data);
    if (s.ok()) {
      rec_->append(Record{.op = Op::kFileWrite, .stream = stream_, .offset = offset, .length = data.size()},
                   data);
    }
    return s;
  }
  Status sync() override {
    const uint64_t id = rec_->next_barrier();
    rec_->append(Record{.op = Op::kSyncStart, .stream = stream_, .barrier = id});
    Status s = f_->sync();
    if (s.ok()) rec_->append(Record{.op = Op::kSyncEnd, .stream = stream_, .barrier = id});
    return s;
  }
  // Changes no contents: nothing to record.
  Status reserve(uint64_t offset, uint64_t length) override { return f_->reserve(offset, length); }
  Status truncate(uint64_t size) override {
    Status s = f_->truncate(size);
    if (s.ok()) rec_->append(Record{.op = Op::kFileTruncate, .stream = stream_, .offset = size});
    return s;
  }
  Result<uint64_t> size() override { return f_->size(); }

 private:
  std::unique_ptr<File> f_;
  Recorder* const rec_;
  const uint32_t stream_;
};

Result<std::unique_ptr<File>> RecordingEnv::open(const std::string& path, OpenMode mode) {
  auto f = store_->open(path, mode);
  if (!f.ok()) return f.status();
  const uint32_t stream = rec_->file_stream(path);
  if (mode == OpenMode::kCreateTruncate) rec_->append(Record{.op = Op::kCreate, .stream = stream});
  return std::unique_ptr<File>(new RecordingFile(std::move(f.value()), rec_, stream));
}

Status RecordingEnv::remove(const std::string& path) {
  Status s = store_->remove(path);
  if (s.ok()) rec_->append(Record{.op = Op::kRemove, .stream = rec_->file_stream(path)});
  return s;
}

Status RecordingEnv::sync_dir(const std::string& path) {
  const uint64_t id = rec_->next_barrier();
  rec_->append(Record{.op = Op::kDirSyncStart, .barrier = id, .text = path});
  Status s = store_->sync_dir(path);
  if (s.ok()) rec_->append(Record{.op = Op::kDirSyncEnd, .barrier = id, .text = path});
  return s;
}

}  // namespace bowstack::crash
