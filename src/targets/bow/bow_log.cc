#include "targets/bow/bow_log.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <vector>

#include "core/aligned_buf.h"

namespace bowstack::bow {

namespace {

// Reads `size` bytes at `sector`, block by block, through the relocation map.
Status relocated_read(BlockDevice& dev, const RelocationMap& rel, uint64_t sector, uint32_t size,
                      uint32_t block_size, std::byte* out) {
  const uint64_t spb = block_size / 512;
  for (uint32_t done = 0; done < size; done += block_size, sector += spb) {
    uint64_t from = rel.lookup(sector);
    if (from > dev.geometry().size / 512 - spb) {
      return Status::Error(EINVAL,
                           fmt::format("relocated read of sector {} lands outside the device", sector));
    }
    if (Status s = dev.read(from * 512, std::span(out + done, block_size)); !s.ok()) return s;
  }
  return Status::Ok();
}

}  // namespace

uint64_t RelocationMap::lookup(uint64_t sector) const {
  auto it = std::prev(map_.upper_bound(sector));
  return it->second + (sector - it->first);
}

void RelocationMap::relocate(uint64_t source, uint64_t dest, uint64_t count) {
  // Where [dest, dest+count) maps now, piece by piece.
  std::map<uint64_t, uint64_t> slice;
  uint64_t pos = dest;
  while (pos < dest + count) {
    auto it = std::prev(map_.upper_bound(pos));
    auto next = std::next(it);
    uint64_t run_end = next == map_.end() ? dest + count : std::min(next->first, dest + count);
    slice[source + (pos - dest)] = it->second + (pos - it->first);
    pos = run_end;
  }
  const uint64_t end = source + count;
  const uint64_t after = lookup(end);
  map_.erase(map_.lower_bound(source), map_.lower_bound(end));
  map_.emplace(end, after);  // no-op if a run already starts there
  map_.insert(slice.begin(), slice.end());
}

Result<ProbeResult> probe(BlockDevice& dev) {
  const uint32_t n = std::max<uint32_t>(512, dev.geometry().logical_block_size);
  if (dev.geometry().size < n) return ProbeResult::kNoCheckpoint;
  AlignedBuf b(n);
  if (Status s = dev.read(0, std::span(b.data(), n)); !s.ok()) return s;
  LogHeader h = unpack_header(std::span<const std::byte>(b.data(), kHeaderSize));
  if (h.magic == kMagic) return ProbeResult::kCheckpoint;
  if (h.magic == kRestoreMagic) return ProbeResult::kInterruptedRestore;
  return ProbeResult::kNoCheckpoint;
}

Status check_header(const LogHeader& h, uint64_t device_bytes, uint32_t expect_block_size, bool allow_wob) {
  if (h.magic != kMagic && !(allow_wob && h.magic == kRestoreMagic)) {
    return Status::Error(EINVAL, fmt::format("bad magic 0x{:08x}", h.magic));
  }
  if ((h.header_version >> 8) != 1) {
    return Status::Error(EINVAL, fmt::format("unsupported header version 0x{:04x}", h.header_version));
  }
  const uint32_t bs = h.block_size;
  if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0) {
    return Status::Error(EINVAL, fmt::format("block size {} is not a power of two from 512 to 4096", bs));
  }
  if (expect_block_size != 0 && bs != expect_block_size) {
    return Status::Error(
        EINVAL, fmt::format("block size {} differs from the newest log block's {}", bs, expect_block_size));
  }
  if (h.header_size < kHeaderSize || h.header_size > bs - kEntrySize) {
    return Status::Error(
        EINVAL, fmt::format("header size {} outside {}..{}", h.header_size, kHeaderSize, bs - kEntrySize));
  }
  const uint32_t cap = log_capacity(bs, h.header_size);
  if (h.count == 0 || h.count > cap) {
    return Status::Error(EINVAL, fmt::format("entry count {} outside 1..{}", h.count, cap));
  }
  const uint64_t spb = bs / 512;
  const uint64_t sectors = device_bytes / 512;
  if (h.sector0 == 0 || h.sector0 % spb != 0 || h.sector0 > sectors || sectors - h.sector0 < spb) {
    return Status::Error(EINVAL, fmt::format("sector0 {} is not a block inside the device", h.sector0));
  }
  return Status::Ok();
}

Status check_entry(const LogEntry& e, uint32_t index, uint32_t block_size, uint64_t device_bytes) {
  const uint64_t spb = block_size / 512;
  const uint64_t sectors = device_bytes / 512;
  if (e.size == 0 || e.size % block_size != 0) {
    return Status::Error(
        EINVAL, fmt::format("size {} is not a non-zero multiple of the block size {}", e.size, block_size));
  }
  const uint64_t n = e.size / 512;
  if (e.source % spb != 0 || e.dest % spb != 0) {
    return Status::Error(EINVAL, fmt::format("source {} or dest {} is not block aligned", e.source, e.dest));
  }
  if (e.source > sectors || sectors - e.source < n || e.dest > sectors || sectors - e.dest < n) {
    return Status::Error(EINVAL,
                         fmt::format("range of {} sectors at source {} or dest {} is outside the device "
                                     "({} sectors)",
                                     n, e.source, e.dest, sectors));
  }
  if (index == 0 && (e.source != 0 || e.size != block_size)) {
    return Status::Error(EINVAL, "entry 0 must save block 0 (source 0, one block)");
  }
  if (index != 0 && e.source < spb) {
    return Status::Error(EINVAL, "only entry 0 may save block 0");
  }
  if (e.dest < spb) return Status::Error(EINVAL, "dest is block 0");
  // The saved copy cannot share sectors with the range it saves: the write
  // it was saved for would have overwritten it. Nor could a restore be
  // resumed: its own write would destroy the data a re-run must read again.
  if (e.source < e.dest + n && e.dest < e.source + n) {
    return Status::Error(EINVAL,
                         fmt::format("the saved copy at dest {} overlaps the range it saves at source "
                                     "{} ({} sectors)",
                                     e.dest, e.source, n));
  }
  return Status::Ok();
}

LogBlock parse_log_block(std::span<const std::byte> block) {
  LogBlock b;
  b.header = unpack_header(block);
  b.entries.reserve(b.header.count);
  for (uint32_t i = 0; i < b.header.count; ++i) {
    b.entries.push_back(unpack_entry(block.subspan(b.header.header_size + kEntrySize * i, kEntrySize)));
  }
  return b;
}

Result<LogChain> read_and_validate(BlockDevice& dev, ValidateOptions opts) {
  const uint64_t device_bytes = dev.geometry().size;
  auto p = probe(dev);
  if (!p.ok()) return p.status();
  if (*p == ProbeResult::kNoCheckpoint) return Status::Error(ENOENT, "no checkpoint log on the device");
  const bool wob = *p == ProbeResult::kInterruptedRestore;
  if (wob && !opts.allow_interrupted) {
    return Status::Error(EBUSY, "the device holds an interrupted restore (magic WOB)");
  }
  // The newest block's header gives the block size.
  const uint32_t probe_len = std::max<uint32_t>(512, dev.geometry().logical_block_size);
  AlignedBuf first(probe_len);
  if (Status s = dev.read(0, std::span(first.data(), probe_len)); !s.ok()) return s;
  LogHeader newest = unpack_header(std::span<const std::byte>(first.data(), kHeaderSize));
  if (Status s = check_header(newest, device_bytes, 0, wob); !s.ok()) {
    return Status::Error(EINVAL, fmt::format("log block {} (block 0): {}", newest.sequence, s.context()));
  }
  const uint32_t bs = newest.block_size;
  if (device_bytes < 2ull * bs) return Status::Error(EINVAL, "device smaller than two log blocks");
  // Every log block but the newest is saved in a block of its own.
  if (newest.sequence >= device_bytes / bs) {
    return Status::Error(EINVAL,
                         fmt::format("log block {} (block 0): more log blocks than the device has blocks "
                                     "({})",
                                     newest.sequence, device_bytes / bs));
  }
  LogChain chain;
  chain.block_size = bs;
  chain.sector0 = newest.sector0;
  // Filled newest first as blocks pass validation, so memory follows what
  // the device really holds rather than the sequence field.
  std::vector<LogBlock> newest_first;

  RelocationMap rel;
  AlignedBuf block(bs);
  AlignedBuf data;
  size_t data_size = 0;
  for (int64_t seq = newest.sequence; seq >= 0; --seq) {
    // The previous log block is reached through the map at block 0.
    if (Status s = relocated_read(dev, rel, 0, bs, bs, block.data()); !s.ok()) {
      return Status::Error(s.code(), fmt::format("log block {}: {}", seq, s.message()));
    }
    std::span<const std::byte> bytes(block.data(), bs);
    LogHeader h = unpack_header(bytes);
    // Only block 0 itself may be marked WOB; older log blocks lie saved as written.
    if (Status s = check_header(h, device_bytes, bs, wob && seq == newest.sequence); !s.ok()) {
      return Status::Error(EINVAL, fmt::format("log block {}: {}", seq, s.context()));
    }
    if (h.sequence != seq) {
      return Status::Error(EINVAL,
                           fmt::format("log block {}: sequence is {} (expected {})", seq, h.sequence, seq));
    }
    LogBlock lb = parse_log_block(bytes);
    for (int64_t i = static_cast<int64_t>(h.count) - 1; i >= 0; --i) {
      const LogEntry& e = lb.entries[static_cast<size_t>(i)];
      if (Status s = check_entry(e, static_cast<uint32_t>(i), bs, device_bytes); !s.ok()) {
        return Status::Error(EINVAL, fmt::format("log block {} entry {}: {}", seq, i, s.context()));
      }
      if (opts.verify_checksums && e.checksum != 0) {
        if (data_size < e.size) {
          data = AlignedBuf(e.size);
          data_size = e.size;
        }
        if (Status s = relocated_read(dev, rel, e.dest, e.size, bs, data.data()); !s.ok()) {
          return Status::Error(s.code(), fmt::format("log block {} entry {}: {}", seq, i, s.message()));
        }
        uint32_t crc = entry_checksum(e.source, bs, std::span(data.data(), e.size));
        if (crc != e.checksum) {
          return Status::Error(EINVAL,
                               fmt::format("log block {} entry {}: checksum mismatch (stored 0x{:08x}, "
                                           "computed 0x{:08x}) over {} bytes saved at sector {} (read "
                                           "from sector {})",
                                           seq, i, e.checksum, crc, e.size, e.dest, rel.lookup(e.dest)));
        }
      }
      rel.relocate(e.source, e.dest, e.size / 512);
    }
    newest_first.push_back(std::move(lb));
  }
  chain.blocks.assign(std::make_move_iterator(newest_first.rbegin()),
                      std::make_move_iterator(newest_first.rend()));
  return chain;
}

}  // namespace bowstack::bow
