#include "targets/era/era_tools.h"

#include <fmt/format.h>

#include <algorithm>

namespace bowstack::era {

namespace {

constexpr uint64_t kPrefetchChunk = 64;
constexpr uint64_t kWriteBackEvery = 256;

// The offline tools stream the whole metadata: a larger cache than a target's.
BufioOptions tool_cache() {
  BufioOptions o;
  o.max_bytes = 32u << 20;
  return o;
}

// Neither superblock slot is valid. Damaged era metadata still shows era's
// magic in a superblock or in the blocks after them; a device with none
// (zeroes, another format) is not era metadata at all: EMEDIUMTYPE, saying
// what its superblock slots hold.
Status identify(BlockDevice& dev, const Status& damaged) {
  constexpr uint64_t kLook = 256;  // blocks (1 MiB): the superblocks, writesets and first array blocks
  const uint64_t n = std::min<uint64_t>(kLook, dev.geometry().size / kMetaBlockSize);
  if (n < 2) return damaged;
  std::vector<std::byte> head(n * kMetaBlockSize);
  if (!dev.read(0, head).ok()) return damaged;
  for (uint64_t i = 0; i < n; ++i) {
    const uint32_t magic = unpack_header(std::span(head).subspan(i * kMetaBlockSize, kMetaBlockSize)).magic;
    for (Kind k :
         {Kind::kSuperblock, Kind::kWriteset, Kind::kEraArray, Kind::kSnapWriteset, Kind::kSnapEraArray}) {
      if (magic == static_cast<uint32_t>(k)) return damaged;
    }
  }
  const std::span<const std::byte> slots(head.data(), 2 * kMetaBlockSize);
  if (all_zero(slots)) {
    return Status::Error(EMEDIUMTYPE,
                         "both superblock slots (metadata blocks 0 and 1) are all zeroes and no era block "
                         "follows: it was never formatted (serving with --target era formats it; 'bowstack "
                         "era restore' writes it from XML)");
  }
  return Status::Error(
      EMEDIUMTYPE,
      fmt::format("neither superblock slot (metadata blocks 0 and 1) holds era's superblock magic "
                  "(found {:08x} and {:08x}), nor does any block after them",
                  unpack_header(slots.first(kMetaBlockSize)).magic,
                  unpack_header(slots.subspan(kMetaBlockSize)).magic));
}

}  // namespace

Result<EraSource> open_source(std::shared_ptr<BlockDevice> dev, bool snapshot, DamageSink* sink) {
  auto md = EraMetadata::open(dev, tool_cache(), sink);
  if (!md.ok()) return md.status().code() == EUCLEAN ? identify(*dev, md.status()) : md.status();
  EraSource src;
  src.md = std::move(md.value());
  src.sb = src.md->superblock();
  src.snapshot = snapshot;
  const uint64_t words = src.md->layout().ws_blocks * kWordsPerWritesetBlock;
  if (snapshot) {
    if (!src.sb.snap_held) {
      return Status::Error(
          EINVAL, "no metadata snapshot is held (send 'take_metadata_snap' to the era target first)");
    }
    src.current_era = src.sb.snap_era;
    if (Status s = src.md->read_snapshot_writeset(&src.current, sink); !s.ok()) return s;
  } else {
    for (int region = 0; region < 2; ++region) {
      if (Status s = src.md->scan_region(region, sink); !s.ok()) return s;
    }
    src.current_era = src.sb.current_era;
    if (Status s = src.md->read_writeset(src.current_era, &src.current); !s.ok()) return s;
    if (src.sb.fold_era != 0) {
      src.unfolded_era = src.sb.fold_era;
      if (Status s = src.md->read_writeset(src.unfolded_era, &src.unfolded); !s.ok()) return s;
    }
  }
  src.current.resize(words, 0);
  src.unfolded.resize(words, 0);
  return src;
}

Status for_each_era(EraSource& src, bool logical, DamageSink* sink, const EraChunkFn& fn) {
  EraMetadata& md = *src.md;
  const uint64_t nr = src.sb.nr_blocks;
  std::vector<uint32_t> eras(kEntriesPerArrayBlock);
  for (uint64_t i = 0; i < md.layout().array_blocks; ++i) {
    if (i % kPrefetchChunk == 0) {
      if (src.snapshot) {
        md.cache().prefetch(md.layout().snap_era_array(i), kPrefetchChunk);
      } else {
        md.prefetch_era_blocks(i, kPrefetchChunk);
      }
    }
    auto b = src.snapshot ? md.read_snapshot_era_block(i, sink) : md.read_era_block(i, sink);
    if (!b.ok()) {
      if (sink != nullptr && b.status().code() == ENODATA) continue;  // reported
      return b.status();
    }
    const uint64_t first = i * kEntriesPerArrayBlock;
    const uint64_t n = std::min<uint64_t>(kEntriesPerArrayBlock, nr - first);
    for (uint64_t e = 0; e < n; ++e) eras[e] = get_entry(b->data(), static_cast<uint32_t>(e));
    b->release();
    if (logical) {
      for (uint64_t e = 0; e < n; ++e) {
        const uint64_t blk = first + e;
        if (src.unfolded_era != 0 && test_bit(src.unfolded, blk))
          eras[e] = std::max(eras[e], src.unfolded_era);
        if (test_bit(src.current, blk)) eras[e] = std::max(eras[e], src.current_era);
      }
    }
    if (Status s = fn(first, std::span<const uint32_t>(eras.data(), n)); !s.ok()) return s;
  }
  return Status::Ok();
}

Result<Runs> written_since(EraSource& src, uint32_t since) {
  Runs runs;
  Status s = for_each_era(src, true, nullptr, [&](uint64_t first, std::span<const uint32_t> eras) {
    for (size_t e = 0; e < eras.size(); ++e) {
      if (eras[e] < since) continue;
      const uint64_t b = first + e;
      if (!runs.empty() && runs.back().second == b) {
        runs.back().second = b + 1;
      } else {
        runs.emplace_back(b, b + 1);
      }
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return runs;
}

Result<CheckResult> check_metadata(std::shared_ptr<BlockDevice> dev) {
  CheckResult r;
  auto opened = open_source(dev, false, &r.damage);
  if (!opened.ok()) {
    if (opened.status().code() != EUCLEAN) return opened.status();
    r.damage.push_back(Damage{0, why(opened.status())});
    return r;
  }
  EraSource& src = opened.value();
  r.superblock_ok = true;
  r.sb = src.sb;
  const uint32_t current = src.sb.current_era;
  Status s = for_each_era(src, false, &r.damage, [&](uint64_t first, std::span<const uint32_t> eras) {
    for (size_t e = 0; e < eras.size(); ++e) {
      if (eras[e] > current) {
        r.damage.push_back(
            Damage{src.md->layout().era_array(0, first / kEntriesPerArrayBlock),
                   fmt::format("era array: block {} was written in era {}, beyond the current era {}",
                               first + e, eras[e], current)});
      }
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if (src.sb.snap_held) {
    auto snap = open_source(dev, true, &r.damage);
    if (!snap.ok()) {
      if (snap.status().code() != EUCLEAN) return snap.status();
      r.damage.push_back(Damage{src.md->layout().snap_writeset(0), why(snap.status())});
    } else {
      Status ss =
          for_each_era(snap.value(), false, &r.damage, [&](uint64_t first, std::span<const uint32_t> eras) {
            for (size_t e = 0; e < eras.size(); ++e) {
              if (eras[e] > src.sb.snap_era) {
                r.damage.push_back(Damage{
                    src.md->layout().snap_era_array(first / kEntriesPerArrayBlock),
                    fmt::format("snapshot era array: block {} has era {}, beyond the snapshot's era {}",
                                first + e, eras[e], src.sb.snap_era)});
              }
            }
            return Status::Ok();
          });
      if (!ss.ok()) return ss;
    }
  }
  return r;
}

uint64_t metadata_blocks_for(uint64_t nr_blocks) { return Layout::for_blocks(nr_blocks).total; }

uint64_t max_blocks_for_metadata(uint64_t bytes) {
  // metadata_blocks_for grows with nr_blocks: search for the last that fits.
  uint64_t lo = 0, hi = kMaxDataBlocks;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (metadata_blocks_for(mid) * kMetaBlockSize <= bytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

namespace {

Status validate_model(const EraModel& m) {
  auto bad = [](const std::string& what) { return Status::Error(EINVAL, what); };
  const uint32_t s = m.block_size_sectors;
  if (s == 0 || (s & (s - 1)) != 0 || s > (1u << 21)) {
    return bad(fmt::format("block_size {} sectors is not a power of two up to 1 GiB", s));
  }
  if (m.nr_blocks == 0 || m.nr_blocks > kMaxDataBlocks)
    return bad(fmt::format("nr_blocks {} is out of range", m.nr_blocks));
  if (m.current_era < kFirstEra)
    return bad(fmt::format("current_era {} must be at least {}", m.current_era, kFirstEra));
  if (m.eras.size() != m.nr_blocks) {
    return bad(fmt::format("the era array has {} entries for {} blocks", m.eras.size(), m.nr_blocks));
  }
  for (uint64_t b = 0; b < m.nr_blocks; ++b) {
    if (m.eras[b] > m.current_era) {
      return bad(fmt::format("block {} has era {}, beyond current_era {}", b, m.eras[b], m.current_era));
    }
  }
  for (const auto& ws : m.writesets) {
    if (ws.era > m.current_era)
      return bad(fmt::format("writeset of era {} is beyond current_era {}", ws.era, m.current_era));
    if (ws.bits.size() * 64 < m.nr_blocks) return bad(fmt::format("writeset of era {} is too short", ws.era));
  }
  return Status::Ok();
}

Uuid parse_uuid_or_random(const std::string& text) {
  Uuid u{};
  std::string hex;
  for (char c : text) {
    if (c != '-') hex += c;
  }
  if (hex.size() != 32) return random_uuid();
  for (size_t i = 0; i < 16; ++i) {
    unsigned v = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        return random_uuid();
      }
    }
    u[i] = static_cast<uint8_t>(v);
  }
  return u;
}

}  // namespace

Status restore_metadata(const EraModel& m, std::shared_ptr<BlockDevice> dev) {
  if (Status s = validate_model(m); !s.ok()) return s;
  // Archived writesets are folded into the era array; the current one stays
  // a writeset. Both block by block, as they are written: no copy of the
  // model is made (parse_xml sized its memory limit on the model alone).
  std::vector<const EraModel::Writeset*> archived, current;
  for (const auto& ws : m.writesets) (ws.era == m.current_era ? current : archived).push_back(&ws);
  // Until format writes the superblock at its very end, the device has no
  // valid superblock: an interrupted restore is never mistaken for a finished one.
  std::vector<std::byte> zero(2 * kMetaBlockSize);
  if (dev->geometry().size >= zero.size()) {
    if (Status s = dev->write(0, zero, 0); !s.ok()) return s;
    if (Status s = dev->flush(); !s.ok()) return s;
  }
  FormatParams p{m.block_size_sectors * 512, m.nr_blocks, m.nr_blocks * m.block_size_sectors * 512ull,
                 parse_uuid_or_random(m.uuid), m.current_era};
  auto populate = [&](EraMetadata& md) -> Status {
    std::vector<Flip> flips;
    std::vector<uint32_t> eras(kEntriesPerArrayBlock);
    for (uint64_t i = 0; i < md.layout().array_blocks; ++i) {
      const uint64_t first = i * kEntriesPerArrayBlock;
      const uint64_t n = std::min<uint64_t>(kEntriesPerArrayBlock, m.nr_blocks - first);
      bool any = false;
      for (uint64_t e = 0; e < n; ++e) {
        uint32_t era = m.eras[first + e];
        for (const EraModel::Writeset* ws : archived) {
          if (test_bit(ws->bits, first + e)) era = std::max(era, ws->era);
        }
        eras[e] = era;
        any = any || era != 0;
      }
      if (!any) continue;
      auto edit = md.edit_era_block(i);
      if (!edit.ok()) return edit.status();
      for (uint64_t e = 0; e < n; ++e) put_entry(edit->first.data(), static_cast<uint32_t>(e), eras[e]);
      edit->first.mark_dirty();
      edit->first.release();
      flips.push_back(edit->second);
      if (flips.size() % kWriteBackEvery == 0) {
        if (Status s = md.cache().write_back(); !s.ok()) return s;
      }
    }
    std::vector<uint64_t> words(kWordsPerWritesetBlock);
    for (uint64_t i = 0; i < md.layout().ws_blocks; ++i) {
      std::fill(words.begin(), words.end(), 0);
      const uint64_t first = i * kWordsPerWritesetBlock;
      const uint64_t nr_words = (m.nr_blocks + 63) / 64;
      const uint64_t tail = m.nr_blocks % 64 == 0 ? ~uint64_t{0} : (uint64_t{1} << (m.nr_blocks % 64)) - 1;
      for (const EraModel::Writeset* ws : current) {
        const uint64_t end = std::min({first + kWordsPerWritesetBlock, ws->bits.size(), nr_words});
        for (uint64_t w = first; w < end; ++w)
          words[w - first] |= w + 1 == nr_words ? ws->bits[w] & tail : ws->bits[w];
      }
      if (std::all_of(words.begin(), words.end(), [](uint64_t w) { return w == 0; })) continue;
      auto f = md.stage_writeset(m.current_era, i, words);
      if (!f.ok()) return f.status();
      flips.push_back(f.value());
    }
    if (Status s = md.cache().write_dirty_buffers(); !s.ok()) return s;
    md.apply(flips);
    return Status::Ok();
  };
  auto md = EraMetadata::format(std::move(dev), p, tool_cache(), populate);
  if (!md.ok()) return md.status();
  return Status::Ok();
}

}  // namespace bowstack::era
