#include "targets/csum/csum_journal_reader.h"

#include <fmt/format.h>

#include <algorithm>

namespace bowstack::csum {

Result<JournalRecord> read_journal_record(BlockDevice& md, const Superblock& sb, uint64_t pos, uint64_t seq) {
  const Layout& l = sb.layout;
  const uint32_t bs = l.block_size;
  if (pos + kJournalPage / kSector > l.journal_sectors) {
    return Status::Error(EUCLEAN, "csum: journal position past the end");
  }
  JournalRecord r;
  AlignedBuf page(kJournalPage);
  if (Status s = md.read((l.journal_start + pos) * kSector, page.span()); !s.ok()) return s;
  auto d = decode_journal_descriptor(page.span(), sb.uuid, l.journal_start + pos, seq, l.nr_blocks, bs,
                                     l.journal_sectors - pos);
  if (!d.ok()) return d.status();
  r.desc = std::move(d.value());
  r.data = AlignedBuf(std::max<uint64_t>(r.desc.data_sectors * kSector, kSector));
  if (r.desc.data_sectors != 0) {
    const uint64_t at = (l.journal_start + pos) * kSector + kJournalPage;
    if (Status s = md.read(at, r.data.span().first(r.desc.data_sectors * kSector)); !s.ok()) return s;
  }
  // Committed only if every data block is what its entry's checksum says.
  const std::byte* p = r.data.data();
  for (const JournalEntry& e : r.desc.entries) {
    if (e.zero()) continue;
    if (block_checksum(e.block, bs, std::span<const std::byte>(p, bs)) != e.value) {
      return Status::Error(EUCLEAN, fmt::format("csum: journal record {}: block {} torn", seq, e.block));
    }
    p += bs;
  }
  return r;
}

Result<JournalEnd> walk_journal(BlockDevice& md, const Superblock& sb,
                                const std::function<Status(const JournalRecord&)>& each) {
  JournalEnd at{sb.journal_tail, sb.journal_tail_seq};
  if (sb.layout.journal_sectors == 0) return at;
  for (;;) {
    auto r = read_journal_record(md, sb, at.pos, at.seq);
    if (!r.ok() && r.status().code() != EUCLEAN) return r.status();
    if (!r.ok() && at.pos != 0) {
      r = read_journal_record(md, sb, 0, at.seq);  // the writer wrapped
      if (!r.ok() && r.status().code() != EUCLEAN) return r.status();
      if (r.ok()) at.pos = 0;
    }
    if (!r.ok()) return at;
    if (Status s = each(*r); !s.ok()) return s;
    at.pos += r->desc.record_sectors();
    ++at.seq;
  }
}

}  // namespace bowstack::csum
