#include "targets/bow/bow_restore.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "core/aligned_buf.h"
#include "targets/bow/bow_log.h"
#include "targets/bow/resume_journal.h"

namespace bowstack::bow {

namespace {

// Sector ranges read as sources of saved data in the current log block.
class RangeSet {
 public:
  bool overlaps(uint64_t start, uint64_t end) const {
    auto it = m_.lower_bound(end);
    while (it != m_.begin()) {
      --it;
      if (it->second > start) return true;
      // Ranges may overlap each other here, so keep looking left only while
      // a longer earlier range could still reach `start`.
      if (it->first + max_len_ <= start) break;
    }
    return false;
  }
  void add(uint64_t start, uint64_t end) {
    auto [it, fresh] = m_.emplace(start, end);
    if (!fresh) it->second = std::max(it->second, end);
    max_len_ = std::max(max_len_, end - start);
  }
  void clear() {
    m_.clear();
    max_len_ = 0;
  }

 private:
  std::map<uint64_t, uint64_t> m_;
  uint64_t max_len_ = 0;
};

class Restorer {
 public:
  Restorer(BlockDevice& dev, const RestoreOptions& opts) : dev_(dev), opts_(opts) {}

  // Rolls back from whatever block 0 holds (BOW after validation, or WOB).
  Status run(uint32_t bs, uint64_t total_entries, RestoreReport* report);

 private:
  Status write(uint64_t offset, std::span<const std::byte> data) {
    if (opts_.stop_after_writes >= 0 && writes_ >= static_cast<uint64_t>(opts_.stop_after_writes)) {
      return Status::Error(ECANCELED, fmt::format("stopped after {} writes (test hook)", writes_));
    }
    if (Status s = dev_.write(offset, data, 0); !s.ok()) return s;
    ++writes_;
    return Status::Ok();
  }
  Status flush() { return dev_.flush(); }

  // The unit a write cannot tear below (a sector, or the device's block).
  uint32_t atomic_unit() const { return std::max<uint32_t>(512, dev_.geometry().logical_block_size); }

  // Makes progress durable, then shortens the log block at 0 to `count`
  // entries with magic WOB, so a re-run resumes here. Only the first
  // sector changes (where the header lies), so the write cannot tear.
  Status shorten_log(const LogHeader& h, uint32_t count, std::span<std::byte> bytes) {
    if (Status s = flush(); !s.ok()) return s;
    LogHeader wob = h;
    wob.magic = kRestoreMagic;
    wob.count = count;
    pack_header(wob, bytes);
    if (Status s = write(0, bytes.first(std::min<size_t>(bytes.size(), atomic_unit()))); !s.ok()) return s;
    return flush();
  }

  // Restores entry 0: block 0 becomes the previous log block (marked WOB)
  // or, at the end, its original contents. Everything restored from this
  // log block is made durable first: a crash could otherwise keep the new
  // block 0 and lose those writes, and a re-run, starting from the new
  // block 0, would never redo them. Where a block-sized write can tear, the
  // log is first shortened to entry 0 alone, in the first sector, then the
  // new contents go to the other sectors and the first sector last: every
  // crash leaves a log a re-run finishes. (Android's restore writes block 0
  // in one unflushed write; the crash-state explorer found both failures.)
  // The shortened log has the standard header size, entry 0 right after it:
  // with a larger header_size entry 0 could lie beyond the first sector,
  // where the new contents overwrite it before the header changes.
  Status replace_block0(const LogHeader& h, const LogEntry& e0, std::span<std::byte> bytes,
                        std::span<const std::byte> saved) {
    const size_t unit = atomic_unit();
    if (saved.size() <= unit) {
      if (Status s = flush(); !s.ok()) return s;
      if (Status s = write(0, saved); !s.ok()) return s;
      return flush();
    }
    LogHeader compact = h;
    compact.header_size = kHeaderSize;
    pack_entry(e0, bytes.subspan(kHeaderSize, kEntrySize));
    if (Status s = shorten_log(compact, 1, bytes); !s.ok()) return s;
    if (Status s = write(unit, saved.subspan(unit)); !s.ok()) return s;
    if (Status s = flush(); !s.ok()) return s;
    if (Status s = write(0, saved.first(unit)); !s.ok()) return s;
    return flush();
  }

  BlockDevice& dev_;
  const RestoreOptions& opts_;
  uint64_t writes_ = 0;
};

Status Restorer::run(uint32_t bs, uint64_t total_entries, RestoreReport* report) {
  const uint64_t device_bytes = dev_.geometry().size;
  AlignedBuf block(bs);
  AlignedBuf data;
  size_t data_size = 0;
  uint64_t done = 0;
  bool first = true;
  int64_t seq = -1;
  for (;;) {
    // Block 0 holds the log block to restore next (read directly: everything
    // before it has really been copied back).
    if (Status s = dev_.read(0, std::span(block.data(), bs)); !s.ok()) return s;
    std::span<std::byte> bytes(block.data(), bs);
    LogHeader h = unpack_header(bytes);
    if (Status s = check_header(h, device_bytes, bs, true); !s.ok()) {
      return Status::Error(EIO, fmt::format("log block {}: {} (after validation passed)", seq, s.context()));
    }
    if (!first && h.sequence != seq) {
      return Status::Error(EIO, fmt::format("expected log block {} at block 0, found {}", seq, h.sequence));
    }
    first = false;
    seq = h.sequence;
    LogBlock lb = parse_log_block(bytes);
    RangeSet used;
    for (int64_t i = static_cast<int64_t>(h.count) - 1; i >= 0; --i) {
      const LogEntry& e = lb.entries[static_cast<size_t>(i)];
      // Checked again even after validation: a WOB device skipped it.
      if (Status s = check_entry(e, static_cast<uint32_t>(i), bs, device_bytes); !s.ok()) {
        return Status::Error(EIO, fmt::format("log block {} entry {}: {}", seq, i, s.context()));
      }
      if (data_size < e.size) {
        data = AlignedBuf(e.size);
        data_size = e.size;
      }
      std::span<std::byte> saved(data.data(), e.size);
      if (Status s = dev_.read(e.dest * 512, saved); !s.ok()) return s;
      if (e.checksum != 0) {
        uint32_t crc = entry_checksum(e.source, bs, saved);
        if (crc != e.checksum) {
          return Status::Error(EIO, fmt::format("log block {} entry {}: checksum mismatch while restoring "
                                                "(stored 0x{:08x}, computed 0x{:08x})",
                                                seq, i, e.checksum, crc));
        }
      }
      const uint64_t n = e.size / 512;
      if (used.overlaps(e.source, e.source + n)) {
        // This write destroys saved data an entry after it already used:
        // make progress durable and shorten the log so a re-run starts here.
        if (Status s = flush(); !s.ok()) return s;
        if (Status s = shorten_log(h, static_cast<uint32_t>(i) + 1, bytes); !s.ok()) return s;
        used.clear();
      }
      used.add(e.dest, e.dest + n);
      if (i == 0 && seq != 0) {
        // Restoring the previous log block: mark it as a restore in progress.
        LogHeader prev = unpack_header(saved);
        if (prev.magic == kMagic) {
          prev.magic = kRestoreMagic;
          pack_header(prev, saved);
        }
      }
      if (i == 0) {
        if (Status s = replace_block0(h, e, bytes, saved); !s.ok()) return s;
      } else if (Status s = write(e.source * 512, saved); !s.ok()) {
        return s;
      }
      ++done;
      report->bytes += e.size;
      if (opts_.progress) opts_.progress(done, std::max(done, total_entries));
    }
    report->log_blocks += 1;
    if (seq == 0) break;
    --seq;
  }
  report->entries = done;
  return flush();
}

Status roll_forward(BlockDevice& dev, RestoreReport* report) {
  // Only what roll-forward needs must be sane: block size and sector0.
  const uint32_t n = std::max<uint32_t>(512, dev.geometry().logical_block_size);
  AlignedBuf head(std::max<uint32_t>(n, 4096));
  if (Status s = dev.read(0, std::span(head.data(), n)); !s.ok()) return s;
  LogHeader h = unpack_header(std::span<const std::byte>(head.data(), kHeaderSize));
  const uint32_t bs = h.block_size;
  const uint64_t sectors = dev.geometry().size / 512;
  if (bs < 512 || bs > 4096 || (bs & (bs - 1)) != 0 || h.sector0 == 0 || h.sector0 % (bs / 512) != 0 ||
      h.sector0 > sectors || sectors - h.sector0 < bs / 512) {
    return Status::Error(EINVAL,
                         fmt::format("cannot roll forward: the log header is unusable (block size {}, "
                                     "sector0 {})",
                                     bs, h.sector0));
  }
  AlignedBuf live(bs);
  if (Status s = dev.read(h.sector0 * 512, std::span(live.data(), bs)); !s.ok()) return s;
  if (Status s = dev.write(0, std::span(live.data(), bs), 0); !s.ok()) return s;
  if (Status s = dev.flush(); !s.ok()) return s;
  report->block_size = bs;
  report->outcome = RestoreReport::Outcome::kRolledForward;
  return Status::Ok();
}

// Block 0 holds no bow log. A resume journal beside the image says a
// checkpoint was begun on it and not finished: then "nothing to do" would
// be a lie (block 0 may have been damaged, and with it the way back).
// Unless block 0 holds the very data the checkpoint saved from it (its
// checksum is the journal's log0_crc): then a restore finished and only
// its journal was left behind (*stale is set).
Status no_log_but_journal(BlockDevice& dev, const JournalRef& journal, bool* stale) {
  *stale = false;
  if (journal.env == nullptr) return Status::Ok();
  auto j = ResumeJournal::load(journal.env, journal.path);
  if (!j.ok()) return Status::Ok();  // absent or without a valid header: nothing says otherwise
  const JournalHeader& h = j->header;
  if (h.block_size >= 512 && h.block_size <= 4096 && h.block_size <= dev.geometry().size) {
    AlignedBuf b0(h.block_size);
    if (dev.read(0, b0.span()).ok() && entry_checksum(0, h.block_size, b0.span()) == h.log0_crc) {
      *stale = true;
      return Status::Ok();
    }
  }
  return Status::Error(
      EUCLEAN,
      fmt::format("block 0 holds no bow log, but the resume journal '{}' records a checkpoint begun on "
                  "the device ({} blocks of {} bytes, first log CRC {:08x}, original block 0 saved in "
                  "block {}): either block 0 was damaged or overwritten after the checkpoint, and the log "
                  "that leads back is lost (the saved data still lies in the blocks the journal lists), or "
                  "the checkpoint was committed and the journal was left behind, in which case remove "
                  "'{}'. Nothing written",
                  journal.path, h.blocks, h.block_size, h.log0_crc, h.s0c_initial, journal.path));
}

}  // namespace

uint64_t RestoreCheck::entries() const {
  uint64_t n = 0;
  for (const auto& b : chain.blocks) n += b.entries.size();
  return n;
}

uint64_t RestoreCheck::bytes() const {
  uint64_t n = 0;
  for (const auto& b : chain.blocks) {
    for (const auto& e : b.entries) n += e.size;
  }
  return n;
}

Result<RestoreCheck> check_restore(BlockDevice& dev, const JournalRef& journal) {
  RestoreCheck c;
  auto p = probe(dev);
  if (!p.ok()) return p.status();
  c.state = *p;
  if (c.state == ProbeResult::kNoCheckpoint) {
    c.problem = no_log_but_journal(dev, journal, &c.stale_journal);
    return c;
  }
  // An interrupted restore is validated like a log: what is left of the
  // log block at 0 and every older one, with the saved copies' checksums.
  // Android skips this and would stop half-way at the first bad entry,
  // having written the ones before it.
  auto chain = read_and_validate(dev, ValidateOptions{.verify_checksums = true, .allow_interrupted = true});
  if (!chain.ok()) {
    if (chain.status().code() != EINVAL) return chain.status();
    c.problem = chain.status();
    return c;
  }
  c.chain = std::move(chain.value());
  return c;
}

Result<RestoreReport> restore(BlockDevice& dev, const RestoreOptions& opts) {
  RestoreReport report;
  auto check = check_restore(dev, opts.journal);
  if (!check.ok()) return check.status();
  const RestoreCheck& c = check.value();
  report.continued_interrupted = c.state == ProbeResult::kInterruptedRestore;
  if (!c.problem.ok()) {
    switch (c.state) {
      case ProbeResult::kNoCheckpoint:
        return c.problem;
      case ProbeResult::kInterruptedRestore:
        return Status::Error(c.problem.code(),
                             "the interrupted restore (magic WOB) cannot be finished, "
                             "nothing written: " +
                                 c.problem.context());
      case ProbeResult::kCheckpoint:
        if (opts.dry_run || !opts.roll_forward) {
          return Status::Error(c.problem.code(),
                               "validation failed, nothing written: " + c.problem.context());
        }
        break;
    }
    report.validation_error = c.problem.context();
    if (Status s = roll_forward(dev, &report); !s.ok()) return s;
    return report;
  }
  if (c.state == ProbeResult::kNoCheckpoint) {
    report.stale_journal = c.stale_journal;
    return report;
  }
  const uint64_t total = c.entries();
  report.block_size = c.chain.block_size;
  report.log_blocks = c.chain.blocks.size();
  report.entries = total;
  report.bytes = c.bytes();
  if (opts.dry_run) {
    report.outcome = RestoreReport::Outcome::kValidated;
    return report;
  }
  report.bytes = 0;
  report.log_blocks = 0;
  Restorer r(dev, opts);
  if (Status s = r.run(c.chain.block_size, total, &report); !s.ok()) return s;
  report.outcome = RestoreReport::Outcome::kRestored;
  return report;
}

}  // namespace bowstack::bow
