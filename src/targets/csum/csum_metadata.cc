#include "targets/csum/csum_metadata.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "core/aligned_buf.h"

namespace bowstack::csum {

namespace {

constexpr uint32_t kPage = 4096;
constexpr uint64_t kSectorsPerPage = kPage / kSector;

Result<Layout> layout_for(const FormatParams& p) {
  const uint32_t log2_region =
      p.log2_region_blocks != 0 ? p.log2_region_blocks : Layout::default_log2_region_blocks(p.block_size);
  return Layout::compute(p.block_size, p.data_size, log2_region, p.journal_sectors);
}

Status write_sector(BlockDevice& md, uint64_t sector, std::span<const std::byte> bytes) {
  // Through an aligned page-sized buffer: devices opened with O_DIRECT
  // need it, and the page's other sectors are kept as they are.
  AlignedBuf page(kPage);
  const uint64_t at = sector / kSectorsPerPage * kPage;
  if (Status s = md.read(at, page.span()); !s.ok()) return s;
  std::copy(bytes.begin(), bytes.end(),
            page.span().begin() + static_cast<ptrdiff_t>((sector % kSectorsPerPage) * kSector));
  return md.write(at, page.span(), 0);
}

}  // namespace

Result<uint64_t> CsumMetadata::bytes_needed(const FormatParams& p) {
  auto l = layout_for(p);
  if (!l.ok()) return l.status();
  return l->total_sectors * kSector;
}

Status CsumMetadata::format(BlockDevice& md, const FormatParams& p) {
  auto l = layout_for(p);
  if (!l.ok()) return l.status();
  if (p.mode == Mode::kJournal && l->journal_sectors == 0) {
    return Status::Error(EINVAL, "csum: journal mode needs a journal (journal_size)");
  }
  const uint64_t have = md.geometry().size;
  if (have < l->total_sectors * kSector) {
    return Status::Error(EINVAL, fmt::format("csum: the metadata device has {} bytes; {} blocks of {} bytes "
                                             "need {}",
                                             have, l->nr_blocks, p.block_size, l->total_sectors * kSector));
  }
  Superblock sb;
  sb.uuid = p.uuid;
  sb.layout = *l;
  sb.mode = p.mode;
  sb.flags = kFlagClean;
  sb.created = p.created;
  std::array<std::byte, kSector> s;
  // Copy 1 first: until copy 0 lands, the metadata has at most one valid
  // superblock, of generation 0, describing the same empty volume.
  sb.generation = 0;
  encode_superblock(sb, kSuperblockSectors[1], s);
  if (Status st = write_sector(md, kSuperblockSectors[1], s); !st.ok()) return st;
  if (Status st = md.flush(); !st.ok()) return st;
  sb.generation = 1;
  encode_superblock(sb, kSuperblockSectors[0], s);
  if (Status st = write_sector(md, kSuperblockSectors[0], s); !st.ok()) return st;
  return md.flush();
}

Result<bool> CsumMetadata::is_blank(BlockDevice& md) {
  if (md.geometry().size < 2 * kPage) return true;
  AlignedBuf head(2 * kPage);
  if (Status s = md.read(0, head.span()); !s.ok()) return s;
  auto first = head.span().first(kSector);
  auto second = head.span().subspan(kSuperblockSectors[1] * kSector, kSector);
  auto zero = [](std::span<const std::byte> b) {
    return std::all_of(b.begin(), b.end(), [](std::byte x) { return x == std::byte{0}; });
  };
  return zero(first) && zero(second);
}

Result<std::unique_ptr<CsumMetadata>> CsumMetadata::open(std::shared_ptr<BlockDevice> md,
                                                         BufioOptions cache) {
  const uint64_t sectors = md->geometry().size / kSector;
  if (sectors < 2 * kSectorsPerPage) {
    return Status::Error(EMEDIUMTYPE, fmt::format("not csum metadata: {} bytes is too small to hold its "
                                                  "superblocks",
                                                  md->geometry().size));
  }
  AlignedBuf head(2 * kPage);
  if (Status s = md->read(0, head.span()); !s.ok()) return s;
  auto chosen = choose_superblock(head.span().first(kSector),
                                  head.span().subspan(kSuperblockSectors[1] * kSector, kSector), sectors);
  if (!chosen.ok()) return chosen.status();
  cache.block_size = kPage;
  auto c = BufferCache::create(md, cache);
  if (!c.ok()) return c.status();
  return std::unique_ptr<CsumMetadata>(new CsumMetadata(std::move(md), std::move(c.value()), *chosen));
}

CsumMetadata::CsumMetadata(std::shared_ptr<BlockDevice> md, std::unique_ptr<BufferCache> cache, Chosen chosen)
    : md_(std::move(md)),
      cache_(std::move(cache)),
      layout_(chosen.sb.layout),
      uuid_(chosen.sb.uuid),
      sb_(chosen.sb),
      sb_location_(chosen.location) {}

CsumMetadata::~CsumMetadata() = default;

Superblock CsumMetadata::superblock() const {
  std::lock_guard lock(sb_mu_);
  return sb_;
}

Status CsumMetadata::commit_superblock(Superblock sb) {
  std::lock_guard lock(sb_mu_);
  sb.layout = layout_;
  sb.uuid = uuid_;
  sb.generation = sb_.generation + 1;
  const uint64_t to = sb_location_ == kSuperblockSectors[0] ? kSuperblockSectors[1] : kSuperblockSectors[0];
  std::array<std::byte, kSector> s;
  encode_superblock(sb, to, s);
  // The superblock pages are not in the cache (pairs start at sector 16,
  // page 2), so this write cannot race a cached copy.
  if (Status st = write_sector(*md_, to, s); !st.ok()) return st;
  if (Status st = md_->flush(); !st.ok()) return st;
  sb_ = sb;
  sb_location_ = to;
  return Status::Ok();
}

Result<Buffer> CsumMetadata::page_of(uint64_t sector) {
  return cache_->read(sector / kSectorsPerPage, nullptr);
}

Status CsumMetadata::pairs(uint64_t first, uint64_t end, std::vector<Pair>* out) {
  std::shared_lock hold(hold_mu_);
  out->clear();
  if (first >= end) return Status::Ok();
  if (end > layout_.nr_blocks) return Status::Error(EINVAL, "csum: pair lookup beyond the device");
  uint64_t b = first;
  while (b < end) {
    const uint64_t sector = layout_.pair_sector(b);
    auto page = page_of(sector);
    if (!page.ok()) return page.status();
    const auto bytes = page->data().subspan((sector % kSectorsPerPage) * kSector, kSector);
    auto decoded = decode_pairs(bytes, uuid_, sector);
    if (!decoded.ok()) return decoded.status();
    const uint64_t sector_end = std::min(end, (b / kPairsPerSector + 1) * kPairsPerSector);
    for (; b < sector_end; ++b) out->push_back((*decoded)[b % kPairsPerSector]);
  }
  return Status::Ok();
}

Status CsumMetadata::set_pairs(std::vector<std::pair<uint64_t, Pair>> updates) {
  std::shared_lock hold(hold_mu_);
  std::sort(updates.begin(), updates.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  size_t i = 0;
  while (i < updates.size()) {
    const uint64_t b0 = updates[i].first;
    if (b0 >= layout_.nr_blocks) return Status::Error(EINVAL, "csum: pair update beyond the device");
    const uint64_t sector = layout_.pair_sector(b0);
    auto page = page_of(sector);
    if (!page.ok()) return page.status();
    auto bytes = page->data().subspan((sector % kSectorsPerPage) * kSector, kSector);
    auto decoded = decode_pairs(bytes, uuid_, sector);
    if (!decoded.ok()) return decoded.status();
    for (; i < updates.size() && layout_.pair_sector(updates[i].first) == sector; ++i) {
      (*decoded)[layout_.pair_index(updates[i].first)] = updates[i].second;
    }
    encode_pairs(*decoded, uuid_, sector, bytes);
    page->mark_dirty();
  }
  return Status::Ok();
}

Status CsumMetadata::dirty_regions(std::vector<uint64_t>* out, uint64_t* damaged) {
  std::shared_lock hold(hold_mu_);
  out->clear();
  const uint64_t regions = layout_.nr_regions();
  for (uint64_t first = 0; first < regions; first += kRegionsPerSector) {
    const uint64_t sector = layout_.dirty_sector(first);
    auto page = page_of(sector);
    if (!page.ok()) return page.status();
    auto bits =
        decode_dirty(page->data().subspan((sector % kSectorsPerPage) * kSector, kSector), uuid_, sector);
    if (!bits.ok()) {
      // Unknown bits: every region of the sector may be dirty.
      if (damaged) ++*damaged;
      DirtyBits all;
      all.fill(~uint64_t{0});
      bits = all;
    }
    for (uint64_t i = 0; i < kRegionsPerSector && first + i < regions; ++i) {
      if (((*bits)[i / 64] >> (i % 64)) & 1) out->push_back(first + i);
    }
  }
  return Status::Ok();
}

Status CsumMetadata::set_regions(const std::vector<uint64_t>& regions, bool dirty) {
  std::shared_lock hold(hold_mu_);
  std::lock_guard lock(bits_mu_);
  for (uint64_t r : regions) {
    if (r >= layout_.nr_regions()) return Status::Error(EINVAL, "csum: region beyond the device");
    const uint64_t sector = layout_.dirty_sector(r);
    auto page = page_of(sector);
    if (!page.ok()) return page.status();
    auto bytes = page->data().subspan((sector % kSectorsPerPage) * kSector, kSector);
    auto bits = decode_dirty(bytes, uuid_, sector);
    DirtyBits b = bits.ok() ? *bits : DirtyBits{};
    const uint64_t i = r % kRegionsPerSector;
    const uint64_t mask = uint64_t{1} << (i % 64);
    if (bits.ok() && ((b[i / 64] & mask) != 0) == dirty) continue;
    b[i / 64] = dirty ? (b[i / 64] | mask) : (b[i / 64] & ~mask);
    encode_dirty(b, uuid_, sector, bytes);
    page->mark_dirty();
  }
  return Status::Ok();
}

Status CsumMetadata::write_dirty() {
  std::unique_lock hold(hold_mu_);  // no page held: every dirty one is written (see hold_mu_)
  return cache_->write_dirty_buffers();
}

}  // namespace bowstack::csum
