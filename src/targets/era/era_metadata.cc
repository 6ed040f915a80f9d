#include "targets/era/era_metadata.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>

namespace bowstack::era {

namespace {

constexpr uint64_t kWriteBackEvery = 256;  // blocks staged between merged write-backs in bulk writers
constexpr uint64_t kPrefetchChunk = 64;

Status report(DamageSink* sink, uint64_t block, std::string what) {
  if (sink == nullptr) return Status::Error(EUCLEAN, std::move(what));
  sink->push_back(Damage{block, std::move(what)});
  return Status::Ok();
}

// Fills the header of a block about to be staged (the validator adds magic,
// location, version, uuid and checksum when it is written).
void stage_header(std::span<std::byte> block, uint64_t generation, uint32_t era, uint64_t index) {
  BlockHeader h;
  h.generation = generation;
  h.era = era;
  h.index = index;
  pack_header(h, block);
}

}  // namespace

EraMetadata::EraMetadata(std::shared_ptr<BlockDevice> dev, std::unique_ptr<BufferCache> cache, Superblock sb,
                         int sb_slot)
    : dev_(std::move(dev)),
      cache_(std::move(cache)),
      layout_(Layout::for_blocks(sb.nr_blocks)),
      sb_v_(Kind::kSuperblock, nullptr),
      ws_v_(Kind::kWriteset, &sb.uuid),
      arr_v_(Kind::kEraArray, &sb.uuid),
      snap_ws_v_(Kind::kSnapWriteset, &sb.uuid),
      snap_arr_v_(Kind::kSnapEraArray, &sb.uuid),
      sb_(sb),
      sb_slot_(sb_slot) {
  ws_[0].resize(layout_.ws_blocks);
  ws_[1].resize(layout_.ws_blocks);
  arr_.resize(layout_.array_blocks);
}

Result<bool> EraMetadata::is_blank(BlockDevice& dev) {
  if (dev.geometry().size < 2ull * kMetaBlockSize) return false;
  std::vector<std::byte> head(2 * kMetaBlockSize);
  if (Status s = dev.read(0, head); !s.ok()) return s;
  return all_zero(head);
}

Result<std::unique_ptr<EraMetadata>> EraMetadata::format(std::shared_ptr<BlockDevice> dev,
                                                         const FormatParams& p, BufioOptions opts,
                                                         const Populate& populate) {
  opts.block_size = kMetaBlockSize;
  auto cache = BufferCache::create(dev, opts);
  if (!cache.ok()) return cache.status();
  const Layout l = Layout::for_blocks(p.nr_blocks);
  if (l.total > cache.value()->block_count()) {
    return Status::Error(
        ENOSPC, fmt::format("era: the metadata device is too small: {} data blocks need {} "
                            "metadata blocks ({} bytes), it has {}",
                            p.nr_blocks, l.total, l.total * kMetaBlockSize, cache.value()->block_count()));
  }
  Superblock sb;
  sb.generation = 1;
  sb.uuid = p.uuid;
  sb.data_block_size = p.data_block_size;
  sb.nr_blocks = p.nr_blocks;
  sb.origin_size = p.origin_size;
  sb.current_era = p.current_era;
  sb.total_blocks = l.total;
  sb.ws_blocks = l.ws_blocks;
  sb.array_blocks = l.array_blocks;
  sb.created = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  if (Status s = validate_superblock(sb, cache.value()->block_count()); !s.ok()) return s;

  std::unique_ptr<EraMetadata> md(new EraMetadata(dev, std::move(cache.value()), sb, 0));
  BufferCache& c = *md->cache_;
  uint64_t staged = 0;
  auto stage = [&](uint64_t block, const EraValidator& v, uint64_t index) -> Status {
    auto b = c.new_block(block, &v);
    if (!b.ok()) return b.status();
    stage_header(b->data(), 0, 0, index);
    b->mark_dirty();
    if (++staged % kWriteBackEvery == 0) return c.write_back();
    return Status::Ok();
  };
  // Both slots of everything, generation 0: every pair starts valid, so an
  // all-zero block is never mistaken for an empty one later.
  for (int region = 0; region < 2; ++region) {
    for (int slot = 0; slot < 2; ++slot) {
      for (uint64_t i = 0; i < l.ws_blocks; ++i) {
        if (Status s = stage(l.writeset(region, slot, i), md->ws_v_, i); !s.ok()) return s;
      }
    }
  }
  for (int slot = 0; slot < 2; ++slot) {
    for (uint64_t i = 0; i < l.array_blocks; ++i) {
      if (Status s = stage(l.era_array(slot, i), md->arr_v_, i); !s.ok()) return s;
    }
  }
  for (int region = 0; region < 2; ++region) {
    std::fill(md->ws_[region].begin(), md->ws_[region].end(), SlotState{0, 0, 0});
  }
  std::fill(md->arr_.begin(), md->arr_.end(), SlotState{0, 0, 0});
  if (populate) {
    if (Status s = populate(*md); !s.ok()) return s;
  }
  // Everything the superblock describes is durable before the superblock.
  if (Status s = c.write_dirty_buffers(); !s.ok()) return s;
  for (int slot = 1; slot >= 0; --slot) {
    Superblock copy = sb;
    copy.generation = slot == 0 ? 1 : 0;
    auto b = c.new_block(Layout::superblock(slot), &md->sb_v_);
    if (!b.ok()) return b.status();
    pack_superblock(copy, b->data());
    b->mark_dirty();
  }
  if (Status s = c.write_dirty_buffers(); !s.ok()) return s;
  return md;
}

Result<std::unique_ptr<EraMetadata>> EraMetadata::open(std::shared_ptr<BlockDevice> dev, BufioOptions opts,
                                                       DamageSink* sink) {
  opts.block_size = kMetaBlockSize;
  auto cache = BufferCache::create(dev, opts);
  if (!cache.ok()) return cache.status();
  BufferCache& c = *cache.value();
  if (c.block_count() < 2) {
    return Status::Error(EUCLEAN, fmt::format("era: the metadata device ({} bytes) is too small to hold era "
                                              "metadata",
                                              dev->geometry().size));
  }
  const EraValidator v(Kind::kSuperblock, nullptr);
  std::optional<Superblock> best;
  int best_slot = -1;
  std::string why[2];
  for (int slot = 0; slot < 2; ++slot) {
    auto b = c.read(Layout::superblock(slot), &v);
    if (!b.ok()) {
      if (b.status().code() != EUCLEAN) return b.status();
      why[slot] = b.status().context();
      continue;
    }
    Superblock sb = unpack_superblock(b->data());
    if (!best || sb.generation > best->generation) {
      best = sb;
      best_slot = slot;
    }
  }
  if (!best) {
    return Status::Error(EUCLEAN,
                         fmt::format("era: no valid superblock (slot 0: {}; slot 1: {})", why[0], why[1]));
  }
  for (int slot = 0; slot < 2; ++slot) {
    // One damaged slot is what a torn superblock write leaves; report it but go on.
    if (!why[slot].empty() && sink != nullptr && why[slot].find("never written") == std::string::npos) {
      sink->push_back(Damage{Layout::superblock(slot), why[slot] + " (the other slot is used)"});
    }
  }
  if (Status s = validate_superblock(*best, c.block_count()); !s.ok()) return s;
  return std::unique_ptr<EraMetadata>(
      new EraMetadata(std::move(dev), std::move(cache.value()), *best, best_slot));
}

Superblock EraMetadata::superblock() const {
  std::lock_guard lock(sb_mu_);
  return sb_;
}

Status EraMetadata::commit_superblock(Superblock next) {
  int slot;
  {
    std::lock_guard lock(sb_mu_);
    slot = 1 - sb_slot_;
    next.generation = sb_.generation + 1;
    next.uuid = sb_.uuid;
  }
  {
    auto b = cache_->new_block(Layout::superblock(slot), &sb_v_);
    if (!b.ok()) return b.status();
    pack_superblock(next, b->data());
    b->mark_dirty();
  }
  if (Status s = cache_->write_dirty_buffers(); !s.ok()) return s;
  std::lock_guard lock(sb_mu_);
  sb_ = next;
  sb_slot_ = slot;
  return Status::Ok();
}

Result<EraMetadata::PairChoice> EraMetadata::choose(uint64_t b0, uint64_t b1, const EraValidator& v,
                                                    uint64_t index) {
  PairChoice c;
  const uint64_t blocks[2] = {b0, b1};
  for (int8_t s = 0; s < 2; ++s) {
    auto b = cache_->read(blocks[s], &v);
    if (!b.ok()) {
      if (b.status().code() != EUCLEAN) return b.status();
      c.damage[s] = b.status().context();
      continue;
    }
    const BlockHeader h = unpack_header(b->data());
    if (h.index != index) {
      c.damage[s] = fmt::format("metadata block {} ({}): holds index {}, expected {}", blocks[s], v.name(),
                                h.index, index);
      continue;
    }
    if (c.slot < 0 || h.generation > c.generation) {
      c.slot = s;
      c.generation = h.generation;
      c.era = h.era;
    }
  }
  return c;
}

Status EraMetadata::scan_region(int region, DamageSink* sink) {
  const uint32_t current = superblock().current_era;
  const uint64_t w = layout_.ws_blocks;
  for (uint64_t i = 0; i < w; ++i) {
    if (i % kPrefetchChunk == 0) {
      const uint64_t n = std::min(kPrefetchChunk, w - i);
      cache_->prefetch(layout_.writeset(region, 0, i), n);
      cache_->prefetch(layout_.writeset(region, 1, i), n);
    }
    auto c = choose(layout_.writeset(region, 0, i), layout_.writeset(region, 1, i), ws_v_, i);
    if (!c.ok()) return c.status();
    ws_[region][i] = SlotState{};
    if (c->slot < 0) {
      Status s = report(sink, layout_.writeset(region, 0, i),
                        fmt::format("writeset region {} block {}: both copies damaged ({}; {})", region, i,
                                    c->damage[0], c->damage[1]));
      if (!s.ok()) return s;
      continue;
    }
    if (c->era > current || (c->era != 0 && static_cast<int>(c->era % 2) != region)) {
      Status s =
          report(sink, layout_.writeset(region, c->slot, i),
                 fmt::format("writeset region {} block {}: tagged with era {}, impossible at current era {}",
                             region, i, c->era, current));
      if (!s.ok()) return s;
      continue;
    }
    ws_[region][i] = SlotState{c->slot, c->generation, c->era};
  }
  return Status::Ok();
}

Status EraMetadata::read_writeset(uint32_t era, std::vector<uint64_t>* words) {
  const int region = static_cast<int>(era % 2);
  words->resize(layout_.ws_blocks * kWordsPerWritesetBlock);
  for (uint64_t i = 0; i < layout_.ws_blocks; ++i) {
    const SlotState& st = ws_[region][i];
    if (st.durable < 0 || st.era != era) continue;
    auto b = cache_->read(layout_.writeset(region, st.durable, i), &ws_v_);
    if (!b.ok()) return b.status();
    for (uint32_t w = 0; w < kWordsPerWritesetBlock; ++w) {
      (*words)[i * kWordsPerWritesetBlock + w] |= get_word(b->data(), w);
    }
  }
  return Status::Ok();
}

Result<Flip> EraMetadata::stage_writeset(uint32_t era, uint64_t i, std::span<const uint64_t> words) {
  const int region = static_cast<int>(era % 2);
  const SlotState& st = ws_[region][i];
  const int8_t slot = st.durable == 0 ? 1 : 0;
  auto b = cache_->new_block(layout_.writeset(region, slot, i), &ws_v_);
  if (!b.ok()) return b.status();
  stage_header(b->data(), st.generation + 1, era, i);
  for (uint32_t w = 0; w < kWordsPerWritesetBlock; ++w) put_word(b->data(), w, words[w]);
  b->mark_dirty();
  return Flip{Kind::kWriteset, region, i, slot, st.generation + 1, era};
}

Status EraMetadata::resolve_era_block(uint64_t i, DamageSink* sink) {
  if (arr_[i].durable >= 0) return Status::Ok();
  auto c = choose(layout_.era_array(0, i), layout_.era_array(1, i), arr_v_, i);
  if (!c.ok()) return c.status();
  if (c->slot < 0) {
    Status s = report(
        sink, layout_.era_array(0, i),
        fmt::format("era array block {}: both copies damaged ({}; {})", i, c->damage[0], c->damage[1]));
    return s.ok() ? Status::Error(ENODATA, "damaged") : s;
  }
  arr_[i] = SlotState{c->slot, c->generation, 0};
  return Status::Ok();
}

Result<Buffer> EraMetadata::read_era_block(uint64_t i, DamageSink* sink) {
  if (Status s = resolve_era_block(i, sink); !s.ok()) return s;
  return cache_->read(layout_.era_array(arr_[i].durable, i), &arr_v_);
}

Result<std::pair<Buffer, Flip>> EraMetadata::edit_era_block(uint64_t i) {
  auto src = read_era_block(i);
  if (!src.ok()) return src.status();
  const SlotState st = arr_[i];
  const int8_t slot = st.durable == 0 ? 1 : 0;
  auto dst = cache_->new_block(layout_.era_array(slot, i), &arr_v_);
  if (!dst.ok()) return dst.status();
  std::memcpy(dst->data().data(), src->data().data(), kMetaBlockSize);
  src->release();
  stage_header(dst->data(), st.generation + 1, 0, i);
  return std::make_pair(std::move(dst.value()), Flip{Kind::kEraArray, 0, i, slot, st.generation + 1, 0});
}

void EraMetadata::prefetch_era_blocks(uint64_t first, uint64_t count) {
  if (first >= layout_.array_blocks) return;
  count = std::min(count, layout_.array_blocks - first);
  cache_->prefetch(layout_.era_array(0, first), count);
  cache_->prefetch(layout_.era_array(1, first), count);
}

Status EraMetadata::fold(uint32_t era) {
  const int region = static_cast<int>(era % 2);
  const uint64_t nr = layout_.nr_blocks;
  std::vector<Flip> flips;
  Buffer cur;
  Flip cur_flip;
  uint64_t cur_block = UINT64_MAX;
  auto finish = [&] {
    if (!cur) return;
    cur.mark_dirty();
    cur.release();
    flips.push_back(cur_flip);
    if (flips.size() % kWriteBackEvery == 0) (void)cache_->write_back();  // errors resurface below
  };
  for (uint64_t i = 0; i < layout_.ws_blocks; ++i) {
    const SlotState st = ws_[region][i];
    if (st.durable < 0) {
      return Status::Error(EUCLEAN, fmt::format("era: writeset block {} of era {} is damaged", i, era));
    }
    if (st.era != era) continue;
    auto ws = cache_->read(layout_.writeset(region, st.durable, i), &ws_v_);
    if (!ws.ok()) return ws.status();
    const uint64_t first = i * kBitsPerWritesetBlock;
    prefetch_era_blocks(first / kEntriesPerArrayBlock, kBitsPerWritesetBlock / kEntriesPerArrayBlock);
    for (uint32_t w = 0; w < kWordsPerWritesetBlock; ++w) {
      uint64_t word = get_word(ws->data(), w);
      while (word != 0) {
        const uint64_t b = first + w * 64 + static_cast<uint64_t>(std::countr_zero(word));
        word &= word - 1;
        if (b >= nr) break;
        const uint64_t blk = b / kEntriesPerArrayBlock;
        if (blk != cur_block) {
          finish();
          auto e = edit_era_block(blk);
          if (!e.ok()) return e.status();
          cur = std::move(e->first);
          cur_flip = e->second;
          cur_block = blk;
        }
        const uint32_t entry = static_cast<uint32_t>(b % kEntriesPerArrayBlock);
        if (get_entry(cur.data(), entry) < era) put_entry(cur.data(), entry, era);
      }
    }
  }
  finish();
  if (Status s = cache_->write_dirty_buffers(); !s.ok()) return s;
  apply(flips);
  return Status::Ok();
}

Status EraMetadata::write_snapshot(const std::vector<uint64_t>& writeset, uint32_t era, uint64_t snap_id) {
  uint64_t staged = 0;
  auto pace = [&]() -> Status {
    return ++staged % kWriteBackEvery == 0 ? cache_->write_back() : Status::Ok();
  };
  for (uint64_t i = 0; i < layout_.ws_blocks; ++i) {
    auto b = cache_->new_block(layout_.snap_writeset(i), &snap_ws_v_);
    if (!b.ok()) return b.status();
    stage_header(b->data(), snap_id, era, i);
    for (uint32_t w = 0; w < kWordsPerWritesetBlock; ++w) {
      put_word(b->data(), w, writeset[i * kWordsPerWritesetBlock + w]);
    }
    b->mark_dirty();
    b->release();
    if (Status s = pace(); !s.ok()) return s;
  }
  for (uint64_t i = 0; i < layout_.array_blocks; ++i) {
    if (i % kPrefetchChunk == 0) prefetch_era_blocks(i, kPrefetchChunk);
    auto src = read_era_block(i);
    if (!src.ok()) return src.status();
    auto dst = cache_->new_block(layout_.snap_era_array(i), &snap_arr_v_);
    if (!dst.ok()) return dst.status();
    std::memcpy(dst->data().data(), src->data().data(), kMetaBlockSize);
    src->release();
    stage_header(dst->data(), snap_id, era, i);
    dst->mark_dirty();
    dst->release();
    if (Status s = pace(); !s.ok()) return s;
  }
  return cache_->write_dirty_buffers();
}

Status EraMetadata::read_snapshot_writeset(std::vector<uint64_t>* words, DamageSink* sink) {
  const Superblock sb = superblock();
  words->assign(layout_.ws_blocks * kWordsPerWritesetBlock, 0);
  for (uint64_t i = 0; i < layout_.ws_blocks; ++i) {
    if (i % kPrefetchChunk == 0) cache_->prefetch(layout_.snap_writeset(i), kPrefetchChunk);
    const uint64_t blk = layout_.snap_writeset(i);
    auto b = cache_->read(blk, &snap_ws_v_);
    if (!b.ok()) {
      if (b.status().code() != EUCLEAN) return b.status();
      if (Status s = report(sink, blk, b.status().context()); !s.ok()) return s;
      continue;
    }
    const BlockHeader h = unpack_header(b->data());
    if (h.generation != sb.snap_id || h.era != sb.snap_era || h.index != i) {
      Status s = report(sink, blk,
                        fmt::format("metadata block {} (snapshot writeset): stale (id {}, era {}, index {}; "
                                    "expected id {}, era {}, index {})",
                                    blk, h.generation, h.era, h.index, sb.snap_id, sb.snap_era, i));
      if (!s.ok()) return s;
      continue;
    }
    for (uint32_t w = 0; w < kWordsPerWritesetBlock; ++w) {
      (*words)[i * kWordsPerWritesetBlock + w] = get_word(b->data(), w);
    }
  }
  return Status::Ok();
}

Result<Buffer> EraMetadata::read_snapshot_era_block(uint64_t i, DamageSink* sink) {
  const Superblock sb = superblock();
  const uint64_t blk = layout_.snap_era_array(i);
  auto b = cache_->read(blk, &snap_arr_v_);
  if (!b.ok()) {
    if (b.status().code() != EUCLEAN) return b.status();
    Status s = report(sink, blk, b.status().context());
    return s.ok() ? Status::Error(ENODATA, "damaged") : s;
  }
  const BlockHeader h = unpack_header(b->data());
  if (h.generation != sb.snap_id || h.era != sb.snap_era || h.index != i) {
    Status s = report(sink, blk,
                      fmt::format("metadata block {} (snapshot era array): stale (id {}, index {}; "
                                  "expected id {}, index {})",
                                  blk, h.generation, h.index, sb.snap_id, i));
    return s.ok() ? Status::Error(ENODATA, "damaged") : s;
  }
  return b;
}

void EraMetadata::apply(const std::vector<Flip>& flips) {
  for (const Flip& f : flips) {
    SlotState st{f.slot, f.generation, f.era};
    if (f.kind == Kind::kWriteset) {
      ws_[f.region][f.index] = st;
    } else {
      arr_[f.index] = st;
    }
  }
}

}  // namespace bowstack::era
