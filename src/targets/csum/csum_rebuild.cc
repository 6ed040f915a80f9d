// csum mode `rebuild` (docs/format/csum.md section 7; seed 000, option 3):
// no crash protection for the data. Every write stores its blocks' new
// checksums settled at once; before the first write into a clean region
// the region's dirty bit is made durable (group-committed: one metadata
// flush for every region a batch dirties, none when all were dirty
// already). After an unclean stop the checksums of every dirty region are
// recomputed from whatever data is there. That cannot tell a torn or
// scrambled block from a good one: the crash's own damage becomes "good".
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/aligned_buf.h"
#include "core/bytes.h"
#include "targets/csum/csum_target.h"

namespace bowstack::csum {

namespace {
// Bits are cleared at most this often (each clear costs a metadata flush).
constexpr auto kClearEvery = std::chrono::seconds(1);

}  // namespace

Status CsumTarget::commit_rebuild(const std::unordered_map<uint64_t, uint32_t>& fin) {
  std::vector<std::pair<uint64_t, Pair>> updates;
  updates.reserve(fin.size());
  for (const auto& [b, c] : fin) {
    // Zeroes are stored EMPTY (same meaning), so scrub can skip them.
    updates.emplace_back(b, c == zero_checksum(b, bs_) ? Pair{} : Pair{PairState::kA, c, c});
  }
  std::vector<uint64_t> newly;
  {
    std::lock_guard lock(pairs_mu_);
    const uint64_t seq = committed_seq_ + 1;
    for (const auto& [b, c] : fin) {
      uint64_t& r = region_seq_[md_->layout().region(b)];
      if (r == 0) newly.push_back(md_->layout().region(b));
      r = seq;
    }
    std::sort(newly.begin(), newly.end());
    newly.erase(std::unique(newly.begin(), newly.end()), newly.end());
    if (Status s = md_->set_pairs(std::move(updates)); !s.ok()) return wb_->fail(s);
    if (!newly.empty()) {
      if (Status s = md_->set_regions(newly, true); !s.ok()) return wb_->fail(s);
    }
  }
  if (!newly.empty()) {
    // The region must be known dirty before any data lands in it.
    if (Status s = md_->write_dirty(); !s.ok()) {
      return wb_->fail(Status::Error(s.code(), "csum: writing the dirty-region bitmap failed: " + why(s)));
    }
    commits_.fetch_add(1, std::memory_order_relaxed);
  }
  std::lock_guard lock(pairs_mu_);
  ++committed_seq_;
  return Status::Ok();
}

Status CsumTarget::flush_rebuild() {
  if (Status s = wb_->drain(); !s.ok()) return Status::Error(EIO, why(s));
  uint64_t upto;
  bool due;
  {
    std::lock_guard lock(pairs_mu_);
    upto = applied_seq_;
    due = std::chrono::steady_clock::now() - regions_cleared_ >= kClearEvery &&
          std::any_of(region_seq_.begin(), region_seq_.end(),
                      [upto](uint64_t s) { return s != 0 && s <= upto; });
  }
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  if (!due) return Status::Ok();
  // The data of every batch up to `upto` is durable; once their pairs are
  // too, their regions need no recomputing.
  if (Status s = md_->write_dirty(); !s.ok()) {
    return wb_->fail(Status::Error(s.code(), "csum: writing checksums failed: " + why(s)));
  }
  std::lock_guard lock(pairs_mu_);
  std::vector<uint64_t> clean;
  for (uint64_t r = 0; r < region_seq_.size(); ++r) {
    if (region_seq_[r] != 0 && region_seq_[r] <= upto) {
      region_seq_[r] = 0;
      clean.push_back(r);
    }
  }
  regions_cleared_ = std::chrono::steady_clock::now();
  // Cleared in the cache only: written with the next metadata write.
  if (Status s = md_->set_regions(clean, false); !s.ok()) {
    spdlog::warn("csum: clearing dirty regions: {}", why(s));
  }
  return Status::Ok();
}

Status CsumTarget::recover_rebuild() {
  uint64_t damaged = 0;
  std::vector<uint64_t> dirty;
  if (Status s = md_->dirty_regions(&dirty, &damaged); !s.ok()) return s;
  if (damaged != 0) {
    spdlog::warn("csum: {} dirty-region bitmap sectors are damaged: all their regions are recomputed",
                 damaged);
  }
  spdlog::warn(
      "csum: mode rebuild after an unclean stop: recomputing the checksums of {} regions from the data "
      "(damage the crash did there cannot be detected)",
      dirty.size());
  if (Status s = lower_device()->flush(); !s.ok()) return s;
  const Layout& l = md_->layout();
  const uint64_t region_blocks = uint64_t{1} << l.log2_region_blocks;
  const uint64_t step = std::min<uint64_t>(region_blocks, (4u << 20) / bs_);
  AlignedBuf buf(step * bs_);
  for (uint64_t r : dirty) {
    const uint64_t first = r * region_blocks, end = std::min(l.nr_blocks, first + region_blocks);
    for (uint64_t b0 = first; b0 < end; b0 += step) {
      const uint64_t b1 = std::min(end, b0 + step);
      if (Status s = lower_device()->read(b0 * bs_, buf.span().first((b1 - b0) * bs_)); !s.ok()) return s;
      std::vector<std::pair<uint64_t, Pair>> updates;
      for (uint64_t b = b0; b < b1; ++b) {
        const auto d = buf.span().subspan((b - b0) * bs_, bs_);
        if (all_zero(d)) {
          updates.emplace_back(b, Pair{});
        } else {
          const uint32_t c = block_checksum(b, bs_, d);
          updates.emplace_back(b, Pair{PairState::kA, c, c});
        }
      }
      // A damaged pair sector stays damaged (its sector may reach into a
      // clean region, whose checksums must not be invented): its blocks
      // read as EIO until 'csum rebuild' accepts them.
      if (Status s = md_->set_pairs(updates); !s.ok()) {
        for (const auto& u : updates) {
          if (Status one = md_->set_pairs({u}); !one.ok() && one.code() != EUCLEAN) return one;
        }
        spdlog::error("csum: recomputing blocks {}..{}: {}", b0, b1 - 1, why(s));
      }
    }
  }
  // Pairs first, then the bits: the bitmap is the progress of an
  // interrupted recovery.
  if (Status s = md_->write_dirty(); !s.ok()) return s;
  if (Status s = md_->set_regions(dirty, false); !s.ok()) return s;
  return md_->write_dirty();
}

Status CsumTarget::settle_rebuild() {
  if (Status s = md_->write_dirty(); !s.ok()) return s;
  std::vector<uint64_t> clean;
  {
    std::lock_guard lock(pairs_mu_);
    for (uint64_t r = 0; r < region_seq_.size(); ++r) {
      if (region_seq_[r] != 0) clean.push_back(r);
      region_seq_[r] = 0;
    }
    if (Status s = md_->set_regions(clean, false); !s.ok()) return s;
  }
  return md_->write_dirty();
}

}  // namespace bowstack::csum
