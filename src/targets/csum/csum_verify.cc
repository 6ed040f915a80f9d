#include "targets/csum/csum_verify.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/aligned_buf.h"
#include "targets/csum/csum_journal_reader.h"
#include "targets/csum/csum_metadata.h"

namespace bowstack::csum {

Result<VerifyReport> verify_volume(std::shared_ptr<BlockDevice> data, std::shared_ptr<BlockDevice> md,
                                   const std::function<void(uint64_t, uint64_t)>& progress) {
  auto m = CsumMetadata::open(md);
  if (!m.ok()) return m.status();
  VerifyReport r;
  r.sb = (*m)->superblock();
  const Layout& l = (*m)->layout();
  if (l.data_size != data->geometry().size) {
    return Status::Error(
        EINVAL, fmt::format("the metadata belongs to a data device of {} bytes; this one has {}", l.data_size,
                            data->geometry().size));
  }
  const uint32_t bs = l.block_size;
  // An unclean volume in mode rebuild: its dirty regions' checksums are
  // recomputed at the next open, so their mismatches mean nothing yet.
  // An unclean volume in mode journal: blocks in committed records are
  // rewritten by the replay at the next open; their journal copies match
  // their checksums (that is what committed means).
  std::vector<bool> journalled(r.sb.clean() || r.sb.mode != Mode::kJournal ? 0 : l.nr_blocks, false);
  if (!journalled.empty()) {
    auto end = walk_journal(*md, r.sb, [&](const JournalRecord& rec) {
      for (const JournalEntry& e : rec.desc.entries) {
        for (uint64_t b = e.block; b < e.block + (e.zero() ? e.value : 1); ++b) journalled[b] = true;
      }
      return Status::Ok();
    });
    if (!end.ok()) return end.status();
    r.journalled = static_cast<uint64_t>(std::count(journalled.begin(), journalled.end(), true));
  }
  std::vector<bool> dirty(l.nr_regions(), false);
  if (!r.sb.clean() && r.sb.mode == Mode::kRebuild) {
    std::vector<uint64_t> regions;
    if (Status s = (*m)->dirty_regions(&regions); !s.ok()) return s;
    for (uint64_t x : regions) {
      dirty[x] = true;
      const uint64_t first = x << l.log2_region_blocks;
      r.unverifiable.push_back({first, std::min(l.nr_blocks, first + (uint64_t{1} << l.log2_region_blocks)),
                                "a region written before an unclean stop in mode rebuild: its checksums are "
                                "recomputed at the next open"});
    }
  }
  // One pair sector's blocks at a time, read in one request.
  constexpr uint64_t kRun = kPairsPerSector * 16;
  AlignedBuf buf(kRun * bs);
  std::vector<Pair> pairs;
  for (uint64_t first = 0; first < l.nr_blocks; first += kRun) {
    const uint64_t end = std::min(l.nr_blocks, first + kRun);
    auto span = buf.span().first((end - first) * bs);
    if (Status s = data->read(first * bs, span); !s.ok()) return s;
    for (uint64_t s0 = first; s0 < end; s0 += kPairsPerSector) {
      const uint64_t s1 = std::min(end, s0 + kPairsPerSector);
      if (Status s = (*m)->pairs(s0, s1, &pairs); !s.ok()) {
        r.unverifiable.push_back({s0, s1, why(s)});
        continue;
      }
      for (uint64_t b = s0; b < s1; ++b) {
        const uint32_t c = block_checksum(b, bs, span.subspan((b - first) * bs, bs));
        const Pair& p = pairs[b - s0];
        const bool ok = p.state == PairState::kEmpty ? c == zero_checksum(b, bs) : (c == p.a || c == p.b);
        if (!ok && !dirty[l.region(b)] && (journalled.empty() || !journalled[b])) {
          r.mismatches.push_back({b, b * bs});
        }
        ++r.blocks;
      }
    }
    if (progress) progress(end, l.nr_blocks);
  }
  return r;
}

}  // namespace bowstack::csum
