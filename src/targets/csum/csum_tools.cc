#include "targets/csum/csum_tools.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>

#include "core/aligned_buf.h"
#include "core/bytes.h"
#include "targets/csum/csum_journal_reader.h"

namespace bowstack::csum {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kSectorsPerPage = kPage / kSector;
// Pair sectors computed per step: one page of them, kPairsPerSector *
// kSectorsPerPage blocks of data (1.9 MiB at 4 KiB blocks).
constexpr uint64_t kStepBlocks = kPairsPerSector * kSectorsPerPage;

struct Counts {
  uint64_t data = 0, zero = 0;
};

// Computes the settled pairs of blocks [first, end) from the data (EMPTY for
// zeroes) into `page` (the pair sectors starting at first / 60, encoded).
// REQUIRES: first a multiple of kStepBlocks; page.size() == kPage.
Status pairs_from_data(BlockDevice& data, const Layout& l, const Uuid& uuid, uint64_t first, AlignedBuf& buf,
                       std::span<std::byte> page, Counts* n, std::vector<uint32_t>* sums) {
  const uint64_t end = std::min(l.nr_blocks, first + kStepBlocks);
  const uint32_t bs = l.block_size;
  // Holes need no reading (a device that cannot tell is read).
  auto h = only_holes(data, first * bs, (end - first) * bs);
  const bool holes = h.ok() && *h;
  if (!holes) {
    if (Status s = data.read(first * bs, buf.span().first((end - first) * bs)); !s.ok()) return s;
  }
  sums->assign(end - first, 0);
  for (uint64_t k = 0; k < kSectorsPerPage; ++k) {
    PairSector ps{};
    const uint64_t s0 = first + k * kPairsPerSector;
    if (s0 >= end) {  // past the last block: zero (section 3.2)
      auto out = page.subspan(k * kSector, kSector);
      std::fill(out.begin(), out.end(), std::byte{0});
      continue;
    }
    for (uint64_t b = s0; b < std::min(end, s0 + kPairsPerSector); ++b) {
      const auto blk = buf.span().subspan((b - first) * bs, bs);
      if (holes || all_zero(blk)) {
        ++n->zero;
        (*sums)[b - first] = zero_checksum(b, bs);
        continue;
      }
      const uint32_t c = block_checksum(b, bs, blk);
      ps[b - s0] = Pair{PairState::kA, c, c};
      (*sums)[b - first] = c;
      ++n->data;
    }
    const uint64_t sector = l.pair_sector(s0);
    encode_pairs(ps, uuid, sector, page.subspan(k * kSector, kSector));
  }
  return Status::Ok();
}

// Writes the pair pages of the whole volume from the data. `check(b, c)`
// (may be empty) sees each block's new checksum before its page is written.
Status write_all_pairs(BlockDevice& data, BlockDevice& md, const Layout& l, const Uuid& uuid, Counts* n,
                       const ToolProgress& progress,
                       const std::function<void(uint64_t, const std::vector<uint32_t>&)>& check) {
  AlignedBuf buf(kStepBlocks * l.block_size);
  AlignedBuf page(kPage);
  std::vector<uint32_t> sums;
  for (uint64_t first = 0; first < l.nr_blocks; first += kStepBlocks) {
    if (Status s = pairs_from_data(data, l, uuid, first, buf, page.span(), n, &sums); !s.ok()) return s;
    if (check) check(first, sums);
    if (Status s = md.write(l.pair_sector(first) * kSector, page.span(), 0); !s.ok()) return s;
    if (progress) progress(std::min(l.nr_blocks, first + kStepBlocks), l.nr_blocks);
  }
  // The rest of the pair area and the bitmap: zeroes (EMPTY, all clean).
  const uint64_t used = (l.nr_blocks + kStepBlocks - 1) / kStepBlocks * kSectorsPerPage;
  const uint64_t from = (l.pairs_start + used) * kSector;
  const uint64_t to = (l.bitmap_start + l.bitmap_sectors) * kSector;
  if (to > from) {
    if (Status s = md.write_zeroes(from, to - from, 0); !s.ok()) return s;
  }
  return Status::Ok();
}

uint64_t unix_seconds() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

}  // namespace

Result<FormatReport> format_over_data(BlockDevice& data, BlockDevice& md, FormatParams p, bool overwrite,
                                      const ToolProgress& progress) {
  p.data_size = data.geometry().size;
  auto need = CsumMetadata::bytes_needed(p);
  if (!need.ok()) return need.status();
  if (md.geometry().size < *need) {
    return Status::Error(EINVAL,
                         fmt::format("the metadata device has {} bytes; {} bytes of data in blocks of {} "
                                     "need {}",
                                     md.geometry().size, p.data_size, p.block_size, *need));
  }
  auto blank = CsumMetadata::is_blank(md);
  if (!blank.ok()) return blank.status();
  if (!*blank && !overwrite) {
    return Status::Error(EEXIST,
                         "the metadata device is not blank (csum metadata already, or something else); "
                         "'csum rebuild' accepts the current data of an existing volume, '--force' "
                         "replaces whatever is there");
  }
  if (p.created == 0) p.created = unix_seconds();
  if (p.uuid == Uuid{}) p.uuid = random_uuid();
  // Invalid first: an interrupted format must not leave old superblocks
  // over new pairs.
  if (Status s = md.write_zeroes(0, kPairsStart * kSector, 0); !s.ok()) return s;
  if (Status s = md.flush(); !s.ok()) return s;
  const uint32_t log2_region =
      p.log2_region_blocks != 0 ? p.log2_region_blocks : Layout::default_log2_region_blocks(p.block_size);
  auto l = Layout::compute(p.block_size, p.data_size, log2_region, p.journal_sectors);
  if (!l.ok()) return l.status();
  Counts n;
  if (Status s = write_all_pairs(data, md, *l, p.uuid, &n, progress, {}); !s.ok()) return s;
  if (Status s = md.flush(); !s.ok()) return s;
  if (Status s = CsumMetadata::format(md, p); !s.ok()) return s;
  FormatReport r;
  r.sb.uuid = p.uuid;
  r.sb.layout = *l;
  r.sb.mode = p.mode;
  r.sb.flags = kFlagClean;
  r.sb.created = p.created;
  r.sb.generation = 1;
  r.data_blocks = n.data;
  r.zero_blocks = n.zero;
  return r;
}

Result<RebuildReport> rebuild_volume(BlockDevice& data, std::shared_ptr<BlockDevice> md,
                                     const ToolProgress& progress) {
  auto m = CsumMetadata::open(md);
  if (!m.ok()) return m.status();
  const Layout l = (*m)->layout();
  if (l.data_size != data.geometry().size) {
    return Status::Error(
        EINVAL, fmt::format("the metadata belongs to a data device of {} bytes; this one has {}", l.data_size,
                            data.geometry().size));
  }
  RebuildReport r;
  Superblock sb = (*m)->superblock();
  if (!sb.clean() && sb.mode == Mode::kJournal) {
    // Committed records hold acknowledged writes newer than the data in
    // place: apply them first, as the next open would.
    auto end = walk_journal(*md, sb, [&](const JournalRecord& rec) -> Status {
      const std::byte* p = rec.data.data();
      for (const JournalEntry& e : rec.desc.entries) {
        Status s = e.zero()
                       ? data.write_zeroes(e.block * l.block_size, uint64_t{e.value} * l.block_size, 0)
                       : data.write(e.block * l.block_size, std::span<const std::byte>(p, l.block_size), 0);
        if (!s.ok()) return s;
        if (!e.zero()) p += l.block_size;
      }
      ++r.replayed;
      return Status::Ok();
    });
    if (!end.ok()) return end.status();
    // The journal is empty from here on; new sequence numbers past any
    // record left behind (see recover_journal).
    sb.journal_tail = end->pos >= l.journal_sectors ? 0 : end->pos;
    sb.journal_tail_seq = end->seq + l.journal_sectors / 8 + 1;
  }
  if (Status s = data.flush(); !s.ok()) return s;
  std::vector<Pair> old;
  auto check = [&](uint64_t first, const std::vector<uint32_t>& sums) {
    for (uint64_t s0 = first; s0 < first + sums.size(); s0 += kPairsPerSector) {
      const uint64_t s1 = std::min<uint64_t>(first + sums.size(), s0 + kPairsPerSector);
      if (!(*m)->pairs(s0, s1, &old).ok()) {
        ++r.damaged_sectors;
        continue;
      }
      for (uint64_t b = s0; b < s1; ++b) {
        const Pair& p = old[b - s0];
        const uint32_t c = sums[b - first];
        const bool ok =
            p.state == PairState::kEmpty ? c == zero_checksum(b, l.block_size) : (c == p.a || c == p.b);
        if (!ok) ++r.changed;
      }
    }
  };
  Counts n;
  // The cache in *m only ever reads (no pair is set through it), so these
  // direct writes cannot be overwritten by it.
  if (Status s = write_all_pairs(data, *md, l, sb.uuid, &n, progress, check); !s.ok()) return s;
  if (Status s = md->flush(); !s.ok()) return s;
  sb.flags |= kFlagClean;
  if (Status s = (*m)->commit_superblock(sb); !s.ok()) return s;
  r.sb = (*m)->superblock();
  r.blocks = l.nr_blocks;
  return r;
}

Result<RewriteReport> rewrite_block_offline(BlockDevice& data, std::shared_ptr<BlockDevice> md,
                                            uint64_t block) {
  auto m = CsumMetadata::open(md);
  if (!m.ok()) return m.status();
  const Layout& l = (*m)->layout();
  if (l.data_size != data.geometry().size) {
    return Status::Error(
        EINVAL, fmt::format("the metadata belongs to a data device of {} bytes; this one has {}", l.data_size,
                            data.geometry().size));
  }
  if (block >= l.nr_blocks) {
    return Status::Error(EINVAL, fmt::format("block {} is past the end ({} blocks)", block, l.nr_blocks));
  }
  if (!(*m)->superblock().clean() && (*m)->superblock().mode == Mode::kJournal) {
    return Status::Error(EBUSY,
                         "the volume stopped uncleanly in mode journal: its journal may hold newer data for "
                         "this block; serve it once (which replays the journal) or run 'csum rebuild'");
  }
  std::vector<Pair> one;
  if (Status s = (*m)->pairs(block, block + 1, &one); !s.ok()) {
    return Status::Error(EUCLEAN, fmt::format("the checksums of block {} cannot be read ({}); accepting one "
                                              "block would accept its sector's 59 neighbours too: use "
                                              "'csum rebuild'",
                                              block, why(s)));
  }
  // The data whose checksum is stored must be durable first.
  if (Status s = data.flush(); !s.ok()) return s;
  AlignedBuf blk(l.block_size);
  if (Status s = data.read(block * l.block_size, blk.span()); !s.ok()) return s;
  RewriteReport r;
  r.before = one[0];
  r.checksum = block_checksum(block, l.block_size, blk.span());
  r.matched = r.before.state == PairState::kEmpty ? r.checksum == zero_checksum(block, l.block_size)
                                                  : (r.checksum == r.before.a || r.checksum == r.before.b);
  if (Status s = (*m)->set_pairs({{block, Pair{PairState::kA, r.checksum, r.checksum}}}); !s.ok()) return s;
  if (Status s = (*m)->write_dirty(); !s.ok()) return s;
  return r;
}

Result<DumpReport> dump_volume(std::shared_ptr<BlockDevice> md) {
  auto m = CsumMetadata::open(md);
  if (!m.ok()) return m.status();
  DumpReport r;
  r.sb = (*m)->superblock();
  const Layout& l = r.sb.layout;
  AlignedBuf page(kPage);
  const uint64_t pair_sectors = (l.nr_blocks + kPairsPerSector - 1) / kPairsPerSector;
  for (uint64_t i = 0; i < pair_sectors; ++i) {
    const uint64_t sector = l.pairs_start + i;
    if (i % kSectorsPerPage == 0) {
      if (Status s = md->read(sector * kSector, page.span()); !s.ok()) return s;
    }
    auto ps = decode_pairs(page.span().subspan((i % kSectorsPerPage) * kSector, kSector), r.sb.uuid, sector);
    const uint64_t first = i * kPairsPerSector, end = std::min(l.nr_blocks, first + kPairsPerSector);
    if (!ps.ok()) {
      r.damaged.push_back({sector, first, end, why(ps.status())});
      continue;
    }
    for (uint64_t b = first; b < end; ++b) {
      const Pair& p = (*ps)[b - first];
      if (p.state == PairState::kEmpty) {
        ++r.empty;
      } else if (p.a == p.b) {
        ++r.settled;
      } else {
        ++r.two;
      }
    }
  }
  const uint64_t dirty_sectors = (l.nr_regions() + kRegionsPerSector - 1) / kRegionsPerSector;
  for (uint64_t i = 0; i < dirty_sectors; ++i) {
    const uint64_t sector = l.bitmap_start + i;
    if (Status s = md->read(sector / kSectorsPerPage * kPage, page.span()); !s.ok()) return s;
    auto bits =
        decode_dirty(page.span().subspan((sector % kSectorsPerPage) * kSector, kSector), r.sb.uuid, sector);
    if (!bits.ok()) {
      r.damaged.push_back({sector, 0, 0, why(bits.status())});
      continue;
    }
    for (uint64_t w : *bits) r.dirty_regions += static_cast<uint64_t>(__builtin_popcountll(w));
  }
  return r;
}

Result<BlockReport> inspect_block(BlockDevice& data, std::shared_ptr<BlockDevice> md, uint64_t block) {
  auto m = CsumMetadata::open(md);
  if (!m.ok()) return m.status();
  const Layout& l = (*m)->layout();
  if (block >= l.nr_blocks) {
    return Status::Error(EINVAL, fmt::format("block {} is past the end ({} blocks)", block, l.nr_blocks));
  }
  BlockReport r;
  r.block = block;
  r.block_size = l.block_size;
  if (!(*m)->superblock().clean() && (*m)->superblock().mode == Mode::kJournal) {
    return Status::Error(EBUSY,
                         "the volume stopped uncleanly in mode journal: its journal may hold newer data for "
                         "this block; serve it once (which replays the journal) or run 'csum rebuild'");
  }
  std::vector<Pair> one;
  if (Status s = (*m)->pairs(block, block + 1, &one); !s.ok()) {
    r.pair_error = why(s);
  } else {
    r.pair = one[0];
  }
  AlignedBuf blk(l.block_size);
  if (Status s = data.read(block * l.block_size, blk.span()); !s.ok()) return s;
  r.data_checksum = block_checksum(block, l.block_size, blk.span());
  r.matches = r.pair_error.empty() && (r.pair.state == PairState::kEmpty
                                           ? r.data_checksum == zero_checksum(block, l.block_size)
                                           : (r.data_checksum == r.pair.a || r.data_checksum == r.pair.b));
  return r;
}

}  // namespace bowstack::csum
