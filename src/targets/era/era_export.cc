#include "targets/era/era_export.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/endian.h"

namespace bowstack::era {

namespace {

uint32_t crc(uint32_t seed, const std::byte* p, size_t n) {
  uLong c = seed;
  while (n > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = ::crc32(c, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

struct AlignedFree {
  void operator()(std::byte* p) const { std::free(p); }
};
std::unique_ptr<std::byte, AlignedFree> aligned(size_t n) {
  return std::unique_ptr<std::byte, AlignedFree>(
      static_cast<std::byte*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096)));
}

// Writes to a FILE*, keeping a running CRC of everything written.
class Writer {
 public:
  explicit Writer(std::FILE* f) : f_(f) {}
  bool write(const std::byte* p, size_t n) {
    crc_ = crc(crc_, p, n);
    return std::fwrite(p, 1, n, f_) == n;
  }
  uint32_t crc_so_far() const { return crc_; }

 private:
  std::FILE* f_;
  uint32_t crc_ = 0;
};

struct Header {
  uint32_t block_size = 0;
  uint32_t since = 0;
  uint64_t device_size = 0;
  uint64_t nr_blocks = 0;
  uint32_t current_era = 0;
};

Status corrupt(const std::string& path, const std::string& what) {
  return Status::Error(EINVAL, fmt::format("'{}' is not a valid era export: {}", path, what));
}

}  // namespace

Result<ExportStats> export_changes(EraSource& src, BlockDevice& image, uint32_t since,
                                   const std::string& path) {
  const uint32_t bs = src.sb.data_block_size;
  const uint64_t nr = src.sb.nr_blocks;
  const uint64_t size = image.geometry().size;
  if ((size + bs - 1) / bs != nr) {
    return Status::Error(EINVAL,
                         fmt::format("the image has {} bytes = {} blocks of {} bytes, but the metadata "
                                     "tracks {} blocks: wrong image?",
                                     size, (size + bs - 1) / bs, bs, nr));
  }
  auto runs = written_since(src, since);
  if (!runs.ok()) return runs.status();

  const std::string tmp = path + ".tmp";
  File f(std::fopen(tmp.c_str(), "wb"));
  if (!f) return Status::Error(errno, fmt::format("cannot create '{}'", tmp));
  auto fail = [&](Status s) {
    f.reset();
    ::unlink(tmp.c_str());
    return s;
  };
  Writer w(f.get());
  ExportStats st;
  st.since = since;
  st.current_era = src.current_era;
  st.block_size = bs;
  st.device_size = size;

  std::byte hdr[kExportHeaderSize] = {};
  std::memcpy(hdr, kExportMagic, 8);
  store_le(hdr, 8, kExportVersion, 4);
  store_le(hdr, 12, kExportHeaderSize, 4);
  store_le(hdr, 16, bs, 4);
  store_le(hdr, 20, since, 4);
  store_le(hdr, 24, size, 8);
  store_le(hdr, 32, nr, 8);
  store_le(hdr, 40, src.current_era, 4);
  std::memcpy(hdr + 44, src.sb.uuid.data(), 16);
  store_le(hdr, 60, crc(0, hdr, 60), 4);
  if (!w.write(hdr, sizeof hdr)) return fail(Status::Error(EIO, fmt::format("cannot write '{}'", tmp)));

  const uint64_t per_record = std::max<uint64_t>(1, kMaxRecordBytes / bs);
  auto buf = aligned(per_record * bs);
  for (const auto& [begin, end] : runs.value()) {
    for (uint64_t first = begin; first < end; first += per_record) {
      const uint64_t count = std::min(per_record, end - first);
      const uint64_t length = std::min<uint64_t>((first + count) * bs, size) - first * bs;
      if (Status s = image.read(first * bs, std::span<std::byte>(buf.get(), length)); !s.ok()) {
        return fail(Status::Error(s.code(), fmt::format("reading blocks {}..{} of the image: {}", first,
                                                        first + count - 1, s.message())));
      }
      std::byte rh[kRecordHeaderSize] = {};
      store_le(rh, 0, kRecordMagic, 4);
      store_le(rh, 4, count, 4);
      store_le(rh, 8, first, 8);
      store_le(rh, 16, length, 4);
      store_le(rh, 20, crc(0, buf.get(), length), 4);
      store_le(rh, 28, crc(0, rh, 28), 4);
      if (!w.write(rh, sizeof rh) || !w.write(buf.get(), length)) {
        return fail(Status::Error(EIO, fmt::format("cannot write '{}'", tmp)));
      }
      ++st.records;
      st.blocks += count;
      st.bytes += length;
    }
  }
  std::byte tr[kTrailerSize] = {};
  store_le(tr, 0, kTrailerMagic, 4);
  store_le(tr, 8, st.records, 8);
  store_le(tr, 16, st.bytes, 8);
  store_le(tr, 24, w.crc_so_far(), 4);
  store_le(tr, 28, crc(0, tr, 28), 4);
  if (!w.write(tr, sizeof tr) || std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0) {
    return fail(Status::Error(EIO, fmt::format("cannot write '{}'", tmp)));
  }
  if (std::fclose(f.release()) != 0) {
    ::unlink(tmp.c_str());
    return Status::Error(EIO, fmt::format("cannot write '{}'", tmp));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    Status s = Status::Error(errno, fmt::format("cannot rename '{}' to '{}'", tmp, path));
    ::unlink(tmp.c_str());
    return s;
  }
  return st;
}

namespace {

// One pass over an export file: validates everything; with `target`, also
// writes each record once it has been checked.
Result<ExportStats> scan_export(const std::string& path, BlockDevice* target, uint64_t target_size) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return Status::Error(errno, fmt::format("cannot open '{}'", path));
  uint32_t running = 0;
  auto read_exact = [&](std::byte* p, size_t n) {
    if (std::fread(p, 1, n, f.get()) != n) return false;
    running = crc(running, p, n);
    return true;
  };
  std::byte hdr[kExportHeaderSize];
  if (!read_exact(hdr, sizeof hdr)) return corrupt(path, "shorter than its header");
  if (std::memcmp(hdr, kExportMagic, 8) != 0) return corrupt(path, "bad magic (not an era export file)");
  if (static_cast<uint32_t>(load_le(hdr, 60, 4)) != crc(0, hdr, 60))
    return corrupt(path, "header checksum mismatch");
  if (load_le(hdr, 8, 4) != kExportVersion)
    return corrupt(path, fmt::format("unknown version {}", load_le(hdr, 8, 4)));
  if (load_le(hdr, 12, 4) != kExportHeaderSize) return corrupt(path, "unexpected header size");
  Header h;
  h.block_size = static_cast<uint32_t>(load_le(hdr, 16, 4));
  h.since = static_cast<uint32_t>(load_le(hdr, 20, 4));
  h.device_size = load_le(hdr, 24, 8);
  h.nr_blocks = load_le(hdr, 32, 8);
  h.current_era = static_cast<uint32_t>(load_le(hdr, 40, 4));
  const uint32_t bs = h.block_size;
  if (bs < 512 || (bs & (bs - 1)) != 0) return corrupt(path, fmt::format("block size {}", bs));
  if (h.device_size == 0 || (h.device_size + bs - 1) / bs != h.nr_blocks) {
    return corrupt(path, fmt::format("device size {} does not match {} blocks", h.device_size, h.nr_blocks));
  }
  if (target_size != h.device_size) {
    return Status::Error(EINVAL,
                         fmt::format("size mismatch: the export is of a device of {} bytes, the target has "
                                     "{} bytes",
                                     h.device_size, target_size));
  }
  ExportStats st;
  st.since = h.since;
  st.current_era = h.current_era;
  st.block_size = bs;
  st.device_size = h.device_size;
  const uint64_t per_record = std::max<uint64_t>(1, kMaxRecordBytes / bs);
  auto buf = aligned(per_record * bs);
  uint64_t next_free = 0;  // records must be in order and not overlap
  for (;;) {
    std::byte rh[kRecordHeaderSize];
    const uint32_t before = running;
    if (!read_exact(rh, sizeof rh)) return corrupt(path, "truncated (no trailer)");
    if (static_cast<uint32_t>(load_le(rh, 28, 4)) != crc(0, rh, 28)) {
      return corrupt(path, fmt::format("record {}: header checksum mismatch", st.records));
    }
    const uint32_t magic = static_cast<uint32_t>(load_le(rh, 0, 4));
    if (magic == kTrailerMagic) {
      if (load_le(rh, 8, 8) != st.records || load_le(rh, 16, 8) != st.bytes) {
        return corrupt(path, fmt::format("trailer counts {} records / {} bytes, found {} / {}",
                                         load_le(rh, 8, 8), load_le(rh, 16, 8), st.records, st.bytes));
      }
      if (static_cast<uint32_t>(load_le(rh, 24, 4)) != before) return corrupt(path, "file checksum mismatch");
      if (std::fgetc(f.get()) != EOF) return corrupt(path, "data after the trailer");
      return st;
    }
    if (magic != kRecordMagic) return corrupt(path, fmt::format("record {}: bad magic", st.records));
    const uint64_t count = load_le(rh, 4, 4), first = load_le(rh, 8, 8), length = load_le(rh, 16, 4);
    if (count == 0 || count > per_record || first < next_free || first >= h.nr_blocks ||
        count > h.nr_blocks - first) {
      return corrupt(path, fmt::format("record {}: blocks {}+{} out of order or beyond the device",
                                       st.records, first, count));
    }
    if (length != std::min<uint64_t>((first + count) * bs, h.device_size) - first * bs) {
      return corrupt(path,
                     fmt::format("record {}: length {} does not match {} blocks", st.records, length, count));
    }
    if (!read_exact(buf.get(), length))
      return corrupt(path, fmt::format("record {}: truncated data", st.records));
    if (static_cast<uint32_t>(load_le(rh, 20, 4)) != crc(0, buf.get(), length)) {
      return corrupt(path, fmt::format("record {} (blocks {}..{}): data checksum mismatch", st.records, first,
                                       first + count - 1));
    }
    if (target != nullptr) {
      if (Status s = target->write(first * bs, std::span<const std::byte>(buf.get(), length), 0); !s.ok()) {
        return Status::Error(s.code(),
                             fmt::format("writing blocks {}..{}: {}", first, first + count - 1, s.message()));
      }
    }
    next_free = first + count;
    ++st.records;
    st.blocks += count;
    st.bytes += length;
  }
}

}  // namespace

Result<ExportStats> apply_changes(const std::string& path, BlockDevice& target, bool dry_run) {
  const uint64_t size = target.geometry().size;
  auto checked = scan_export(path, nullptr, size);
  if (!checked.ok() || dry_run) return checked;
  auto applied = scan_export(path, &target, size);
  if (!applied.ok()) return applied;
  if (Status s = target.flush(); !s.ok()) return s;
  return applied;
}

}  // namespace bowstack::era
