#include "targets/csum/integrity_volume.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

#include "core/aligned_buf.h"
#include "core/endian.h"

namespace bowstack::csum::integrity {

namespace {

constexpr size_t kChunk = 1u << 20;  // data read per request while verifying
constexpr size_t kJournalBatch = 4u << 20;

uint32_t tag_at(std::span<const std::byte> run, uint64_t i) {
  return static_cast<uint32_t>(load_le(run, i * kTagSize, 4));
}

bool is_discard_tag(uint32_t tag) { return tag == 0xF6F6F6F6u; }

// The tag run of every area: the tag of a zero block for each block the
// area exports, zero past them.
Status write_zero_tags(BlockDevice& dev, const Layout& l) {
  const uint32_t bs = l.block_size();
  const std::vector<std::byte> zeroes(bs);
  AlignedBuf run(l.metadata_run * kSector);
  for (uint64_t first = 0; first < l.provided_data_sectors; first += l.interleave_sectors()) {
    const uint64_t end = std::min(l.provided_data_sectors, first + l.interleave_sectors());
    std::fill(run.data(), run.data() + run.size(), std::byte{0});
    for (uint64_t s = first, i = 0; s < end; s += l.sectors_per_block(), ++i) {
      store_le(run.span(), i * kTagSize, tag_of(s, zeroes), 4);
    }
    if (Status st = dev.write(l.tag_offset(first), run.span(), 0); !st.ok()) return st;
  }
  return Status::Ok();
}

}  // namespace

Status write_empty_journal(BlockDevice& dev, const Layout& l) {
  const size_t section_bytes = size_t{l.journal_section_sectors} * kSector;
  const uint32_t per_write = static_cast<uint32_t>(std::max<size_t>(1, kJournalBatch / section_bytes));
  AlignedBuf buf(section_bytes * std::min(per_write, l.journal_sections));
  for (uint32_t first = 0; first < l.journal_sections; first += per_write) {
    const uint32_t n = std::min(per_write, l.journal_sections - first);
    for (uint32_t i = 0; i < n; ++i) {
      encode_empty_journal_section(l, first + i, 0, buf.span().subspan(i * section_bytes, section_bytes));
    }
    const uint64_t at = (kSbSectors + uint64_t{first} * l.journal_section_sectors) * kSector;
    if (Status s = dev.write(at, buf.span().first(n * section_bytes), 0); !s.ok()) return s;
  }
  return Status::Ok();
}

Status check_journal(BlockDevice& dev, const Layout& l, bool* canonical) {
  const size_t section_bytes = size_t{l.journal_section_sectors} * kSector;
  AlignedBuf buf(section_bytes);
  AlignedBuf empty;
  if (canonical) empty = AlignedBuf(section_bytes);
  uint64_t used = 0;
  bool same = true;
  for (uint32_t s = 0; s < l.journal_sections; ++s) {
    const uint64_t at = (kSbSectors + uint64_t{s} * l.journal_section_sectors) * kSector;
    if (Status st = dev.read(at, buf.span()); !st.ok()) return st;
    auto n = journal_section_entries_in_use(l, s, buf.span());
    if (!n.ok()) return n.status();
    used += *n;
    if (canonical && same) {
      encode_empty_journal_section(l, s, 0, empty.span());
      same = std::equal(buf.data(), buf.data() + section_bytes, empty.data());
    }
  }
  if (used != 0) {
    return Status::Error(ENOTSUP, fmt::format("the kernel journal has {} entries in use; replay it with the "
                                              "kernel first (integritysetup open, then close)",
                                              used));
  }
  if (canonical) *canonical = same;
  return Status::Ok();
}

Result<Superblock> format_integrity(BlockDevice& dev, const FormatParams& p) {
  if (p.block_size < kSector || p.block_size > 4096 || !std::has_single_bit(p.block_size)) {
    return Status::Error(
        EINVAL, fmt::format("integrity: block size {} must be 512, 1024, 2048 or 4096", p.block_size));
  }
  const Geometry g = dev.geometry();
  if (g.logical_block_size > 4096) {
    return Status::Error(EINVAL, fmt::format("integrity: the device's {}-byte logical blocks are larger than "
                                             "the format's 4096-byte alignment",
                                             g.logical_block_size));
  }
  const uint64_t device_sectors = g.size / kSector;
  const auto log2_spb = static_cast<uint32_t>(std::countr_zero(p.block_size / kSector));
  const uint32_t sections =
      p.journal_sections != 0 ? p.journal_sections : default_journal_sections(log2_spb, device_sectors);
  auto l = Layout::compute(log2_spb, p.log2_interleave_sectors, true, sections, device_sectors);
  if (!l.ok()) return l.status();
  const Superblock sb = new_superblock(*l);

  AlignedBuf sbuf(kSbBytes);
  std::fill(sbuf.data(), sbuf.data() + sbuf.size(), std::byte{0});
  if (Status s = dev.write(0, sbuf.span(), 0); !s.ok()) return s;
  if (Status s = dev.flush(); !s.ok()) return s;
  if (Status s = write_empty_journal(dev, *l); !s.ok()) return s;
  // Tag runs and data alike; a hole reads as zeroes.
  const uint64_t from = l->initial_sectors * kSector;
  const uint64_t to = g.size / g.logical_block_size * g.logical_block_size;
  if (Status s = dev.write_zeroes(from, to - from, 0); !s.ok()) return s;
  if (Status s = write_zero_tags(dev, *l); !s.ok()) return s;
  if (Status s = dev.flush(); !s.ok()) return s;
  encode_superblock(sb, sbuf.span());
  if (Status s = dev.write(0, sbuf.span(), 0); !s.ok()) return s;
  if (Status s = dev.flush(); !s.ok()) return s;
  return sb;
}

Result<IntegrityVerifyReport> verify_integrity(std::shared_ptr<BlockDevice> dev,
                                               const std::function<void(uint64_t, uint64_t)>& progress) {
  const Geometry g = dev->geometry();
  if (g.size < kSbBytes) {
    return Status::Error(EMEDIUMTYPE, fmt::format("{} bytes cannot hold a dm-integrity volume", g.size));
  }
  AlignedBuf sbuf(kSbBytes);
  if (Status s = dev->read(0, sbuf.span()); !s.ok()) return s;
  const uint64_t device_sectors = g.size / kSector;
  auto sb = decode_superblock(sbuf.span(), device_sectors);
  if (!sb.ok()) return sb.status();
  auto lr = Layout::of(*sb, device_sectors);
  if (!lr.ok()) return Status::Error(EUCLEAN, lr.status().context());
  const Layout& l = *lr;
  if (Status s = check_journal(*dev, l); !s.ok()) return s;

  IntegrityVerifyReport r;
  r.sb = *sb;
  const uint32_t bs = l.block_size();
  const uint32_t spb = l.sectors_per_block();
  const uint64_t nr_blocks = sb->provided_data_sectors / spb;
  // Tags from recalc_sector up are still being computed (by the kernel, or
  // by us after a crash in rebuild mode): not verifiable yet.
  uint64_t end_sector = sb->provided_data_sectors;
  if (sb->recalculating() && sb->recalc_sector < end_sector) {
    end_sector = sb->recalc_sector / spb * spb;
    r.unverifiable.push_back(
        {end_sector / spb, nr_blocks,
         fmt::format("recalculating: the tags from sector {} up are not computed yet", sb->recalc_sector)});
  }
  AlignedBuf run(l.metadata_run * kSector);
  AlignedBuf data(std::min<uint64_t>(kChunk, l.interleave_sectors() * kSector));
  const uint64_t chunk_sectors = data.size() / kSector;
  for (uint64_t area_first = 0; area_first < end_sector; area_first += l.interleave_sectors()) {
    const uint64_t area_end = std::min(end_sector, area_first + l.interleave_sectors());
    if (Status s = dev->read(l.tag_offset(area_first), run.span()); !s.ok()) return s;
    for (uint64_t first = area_first; first < area_end; first += chunk_sectors) {
      const uint64_t n = std::min(chunk_sectors, area_end - first);
      auto span = data.span().first(n * kSector);
      if (Status s = dev->read(l.data_sector(first) * kSector, span); !s.ok()) return s;
      for (uint64_t s = first; s < first + n; s += spb) {
        const uint32_t stored = tag_at(run.span(), (s - area_first) / spb);
        if (tag_of(s, span.subspan((s - first) * kSector, bs)) == stored) {
          ++r.blocks;
        } else if (is_discard_tag(stored)) {
          ++r.discarded;
        } else {
          r.mismatches.push_back({s / spb, s * kSector});
        }
      }
    }
    if (progress) progress(area_end / spb, nr_blocks);
  }
  return r;
}

}  // namespace bowstack::csum::integrity
