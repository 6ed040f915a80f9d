// csum over layout=integrity: the data path. Reads verified against the
// blocks' tags, writes queued through the write-behind pipeline (tags into
// the cached tag pages at commit, data in place at apply), flushes.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/aligned_buf.h"
#include "core/endian.h"
#include "targets/csum/csum_format.h"
#include "targets/csum/integrity_target.h"
#include "targets/csum/whole_blocks.h"

namespace bowstack::csum {

using namespace integrity;

namespace {
constexpr uint32_t kPage = 4096;               // tag pages: the buffer cache's block size
constexpr uint32_t kDiscardTag = 0xF6F6F6F6u;  // the kernel's discard marker (four 0xF6 bytes)
constexpr size_t kMaxLogged = 65536;           // blocks whose mismatch is logged (then counted only)
constexpr int kReadAttempts = 16;              // reads that race writes to their blocks, tried again
}  // namespace

uint64_t IntegrityTarget::run_end(uint64_t first, uint64_t end) const {
  const uint64_t area_blocks = l_.interleave_sectors() >> l_.log2_sectors_per_block;
  return std::min(end, (first / area_blocks + 1) * area_blocks);
}

Status IntegrityTarget::read_data(uint64_t first, uint64_t end, std::span<std::byte> buf) {
  for (uint64_t b = first; b < end;) {
    const uint64_t e = run_end(b, end);
    if (Status s = lower_device()->read(data_offset(b), buf.subspan((b - first) * bs_, (e - b) * bs_));
        !s.ok())
      return s;
    b = e;
  }
  return Status::Ok();
}

Status IntegrityTarget::load_tags(uint64_t first, uint64_t end, std::vector<uint32_t>* out) {
  out->resize(end - first);
  for (uint64_t b = first; b < end;) {
    const uint64_t page = l_.tag_offset(lsector(b)) / kPage;
    auto buf = cache_->read(page, nullptr);
    if (!buf.ok()) return buf.status();
    std::lock_guard lock(tags_mu_);
    for (; b < end; ++b) {
      const uint64_t off = l_.tag_offset(lsector(b));
      if (off / kPage != page) break;
      (*out)[b - first] = static_cast<uint32_t>(load_le(buf->data(), off % kPage, 4));
    }
  }
  return Status::Ok();
}

Status IntegrityTarget::store_tags(const std::map<uint64_t, uint32_t>& tags) {
  for (auto it = tags.begin(); it != tags.end();) {
    const uint64_t page = l_.tag_offset(lsector(it->first)) / kPage;
    auto buf = cache_->read(page, nullptr);
    if (!buf.ok()) return buf.status();
    std::lock_guard lock(tags_mu_);
    for (; it != tags.end(); ++it) {
      const uint64_t off = l_.tag_offset(lsector(it->first));
      if (off / kPage != page) break;
      store_le(buf->data(), off % kPage, it->second, 4);
    }
    buf->mark_dirty();
  }
  return Status::Ok();
}

Status IntegrityTarget::read(uint64_t offset, std::span<std::byte> buf) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + buf.size()) / bs_;
  std::vector<uint32_t> tags;
  uint64_t bad = 0;
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    const uint64_t queued = wb_ ? wb_->submitted() : 0;
    // Read-your-writes: an acknowledged write may still be queued.
    if (wb_) wb_->wait_not_pending(first, end);
    if (Status s = read_data(first, end, buf); !s.ok()) return s;
    if (Status s = load_tags(first, end, &tags); !s.ok()) {
      return Status::Error(
          EIO, fmt::format("csum: the tags of blocks {}..{} cannot be read: {}", first, end - 1, why(s)));
    }
    uint64_t discards = 0, unverified = 0;
    bool ok = true;
    for (uint64_t b = first; b < end; ++b) {
      const uint32_t t = tags[b - first];
      if (tag_of(lsector(b), buf.subspan((b - first) * bs_, bs_)) == t) continue;
      if (t == kDiscardTag) {
        ++discards;
      } else if (read_only_ && sb_.recalculating() && lsector(b) >= sb_.recalc_sector) {
        ++unverified;  // its tag was never computed
      } else {
        bad = b;
        ok = false;
        break;
      }
    }
    if (ok) {
      if (discards != 0) discard_tags_read_.fetch_add(discards, std::memory_order_relaxed);
      if (unverified != 0) unverified_reads_.fetch_add(unverified, std::memory_order_relaxed);
      return Status::Ok();
    }
    // A write queued since this read began may have landed between the
    // data read and the tag lookup (one tag: the old one is gone at once):
    // read again. With none, the mismatch is real damage.
    if (!wb_ || wb_->submitted() == queued) break;
  }
  mismatches_.fetch_add(1, std::memory_order_relaxed);
  bool log = false;
  {
    std::lock_guard lock(tags_mu_);
    log = logged_.size() < kMaxLogged && logged_.insert(bad).second;
  }
  if (log) {
    spdlog::error("csum: block {} (bytes {}..{}) does not match its dm-integrity tag: read fails with EIO",
                  bad, bad * bs_, (bad + 1) * bs_ - 1);
  }
  return Status::Error(EIO,
                       fmt::format("csum: block {} (byte offset {}) does not match its tag", bad, bad * bs_));
}

Status IntegrityTarget::queue(uint64_t first, uint64_t end, const std::byte* data, uint32_t flags, int kind) {
  if (!wb_) return Status::Error(EROFS, "csum: the dm-integrity volume is read-only");
  if (wb_->failed()) return Status::Error(EIO, why(wb_->failure()));
  if (first >= end) return Status::Ok();
  // A tag is the block's checksum c(b, D) (docs/format/csum.md section 0).
  auto op = make_checksum_op(first, end, data, flags, kind, bs_);
  return wb_->submit(std::move(op));
}

Status IntegrityTarget::write(uint64_t offset, std::span<const std::byte> buf, uint32_t flags) {
  const BlockRange r = blocks_of(offset, buf.size(), bs_);
  return queue(r.first, r.end, buf.data(), flags, kOpWrite);
}

Status IntegrityTarget::trim(uint64_t offset, uint64_t length, uint32_t flags) {
  // Only whole blocks, which then read as zeroes (with z(b)).
  const BlockRange r = whole_blocks_inside(offset, length, bs_);
  return queue(r.first, r.end, nullptr, flags, kOpTrim);
}

Status IntegrityTarget::write_zeroes(uint64_t offset, uint64_t length, uint32_t flags) {
  if (flags & kFastZero) return Status::Error(ENOTSUP, "csum: no fast zeroing");
  const BlockRange r = blocks_of(offset, length, bs_);
  return queue(r.first, r.end, nullptr, flags, kOpZeroes);
}

Status IntegrityTarget::commit_batch(WriteBehind::Batch& batch) {
  // Each block's final tag: its last write's. No barrier: RECALCULATING,
  // durable since open, covers tags and data reaching the device in any order.
  std::map<uint64_t, uint32_t> fin;
  for (const auto& q : batch) {
    const ChecksumOp& op = static_cast<const ChecksumOp&>(*q);
    for (uint64_t b = op.first; b < op.end; ++b) fin[b] = op.sums[b - op.first];
  }
  if (Status s = store_tags(fin); !s.ok()) {
    return wb_->fail(Status::Error(s.code(), "csum: updating dm-integrity tags failed: " + why(s)));
  }
  return Status::Ok();
}

void IntegrityTarget::apply_batch(WriteBehind::Batch& batch, const Status& committed) {
  if (!committed.ok()) {
    for (auto& q : batch) q->status = Status::Error(EIO, "csum: tag update failed: " + why(committed));
    return;
  }
  // A block written twice in the batch got the last write's tag: only that
  // write's data goes to it.
  std::unordered_map<uint64_t, size_t> last;
  uint64_t total = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const ChecksumOp& op = static_cast<const ChecksumOp&>(*batch[i]);
    for (uint64_t b = op.first; b < op.end; ++b) last[b] = i;
    total += op.end - op.first;
  }
  const bool overlaps = last.size() != total;
  for (size_t i = 0; i < batch.size(); ++i) {
    ChecksumOp& op = static_cast<ChecksumOp&>(*batch[i]);
    Status s;
    uint64_t b = op.first;
    while (s.ok() && b < op.end) {
      while (b < op.end && overlaps && last[b] != i) ++b;
      uint64_t e = b;
      while (e < op.end && (!overlaps || last[e] == i)) ++e;
      if (b == e) break;
      // Contiguous in the export, split where an area's tag run intervenes.
      for (uint64_t r = b; s.ok() && r < e;) {
        const uint64_t re = run_end(r, e);
        const uint64_t off = data_offset(r), len = (re - r) * bs_;
        if (op.kind == kOpWrite) {
          s = lower_device()->write(off, op.data.span().subspan((r - op.first) * bs_, len), op.flags);
        } else {
          // Trim becomes zeroes that may unmap: the tag says zeroes.
          s = lower_device()->write_zeroes(off, len, op.kind == kOpTrim ? (op.flags & kFua) : op.flags);
        }
        r = re;
      }
      b = e;
    }
    // An acknowledged write that cannot be written is lost: only a sticky
    // failure can tell the client (at its next flush).
    if (!s.ok() && !op.wait)
      (void)wb_->fail(Status::Error(s.code(), "csum: writing acknowledged data: " + why(s)));
    op.status = std::move(s);
  }
}

Status IntegrityTarget::flush() {
  if (!wb_) return lower_device()->flush();
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  // The data is on the device; write the dirty tag pages, then one flush
  // covers both. (A tag page a reader holds just now stays dirty: tags need
  // not be durable before close, RECALCULATING covers them.)
  if (Status s = cache_->write_dirty_buffers(); !s.ok()) {
    return Status::Error(EIO, "csum: writing dm-integrity tags failed: " + why(s));
  }
  return Status::Ok();
}

Status IntegrityTarget::detach() {
  if (!wb_) return Status::Ok();
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  return cache_->write_back();
}

Status IntegrityTarget::block_status(uint64_t offset, uint64_t length, std::vector<Extent>* out) {
  return BlockDevice::block_status(offset, length, out);
}

Status IntegrityTarget::cache(uint64_t, uint64_t) { return Status::Ok(); }

Status IntegrityTarget::reserve(uint64_t offset, uint64_t length) {
  const uint64_t first = offset / bs_;
  const uint64_t end = (offset + length + bs_ - 1) / bs_;
  for (uint64_t b = first; b < end;) {
    const uint64_t e = run_end(b, end);
    if (Status s = lower_device()->reserve(data_offset(b), (e - b) * bs_); !s.ok()) return s;
    // The run's tags: whole pages, as the cache writes them.
    const uint64_t t0 = l_.tag_offset(lsector(b)) / kPage * kPage;
    const uint64_t t1 = (l_.tag_offset(lsector(e - 1)) / kPage + 1) * kPage;
    if (Status s = lower_device()->reserve(t0, t1 - t0); !s.ok()) return s;
    b = e;
  }
  return Status::Ok();
}

}  // namespace bowstack::csum
