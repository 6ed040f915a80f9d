#include "crash/states.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <random>

namespace bowstack::crash {

namespace {

bool is_device_op(Op op) { return op == Op::kWrite || op == Op::kTrim; }
bool is_content_op(Op op) { return op == Op::kFileWrite || op == Op::kFileTruncate || op == Op::kCreate; }
bool is_existence_op(Op op) { return op == Op::kCreate || op == Op::kRemove; }
bool is_barrier_end(Op op) { return op == Op::kFlushEnd || op == Op::kSyncEnd || op == Op::kDirSyncEnd; }
bool is_fua_write(const Record& r) { return r.op == Op::kWrite && (r.flags & kFua) != 0; }

void apply_content(std::vector<std::byte>& file, const Recording& rec, const Record& r) {
  switch (r.op) {
    case Op::kCreate:
      file.clear();
      break;
    case Op::kFileTruncate:
      file.resize(r.offset);
      break;
    case Op::kFileWrite: {
      if (file.size() < r.offset + r.length) file.resize(r.offset + r.length);
      auto d = rec.data(r);
      std::memcpy(file.data() + r.offset, d.data(), d.size());
      break;
    }
    default:
      break;
  }
}

// Whether a file stream exists after applying an existence op.
bool apply_existence(const Record& r) { return r.op == Op::kCreate; }

}  // namespace

const char* state_kind_name(StateKind k) {
  switch (k) {
    case StateKind::kPrefix:
      return "prefix";
    case StateKind::kSubset:
      return "subset";
    case StateKind::kTorn:
      return "torn";
  }
  return "?";
}

std::vector<StateSpec> generate_states(const Recording& rec, uint64_t seed, const StateOptions& opts) {
  std::vector<StateSpec> specs;
  const size_t n = rec.records.size();
  std::mt19937_64 rng(seed);
  for (size_t j = 0; j < n; ++j) {
    const Record& r = rec.records[j];
    const bool write = r.op == Op::kWrite || r.op == Op::kFileWrite;
    if (is_barrier_end(r.op) || is_fua_write(r) || (opts.prefix_at_every_write && write) || j + 1 == n) {
      specs.push_back({specs.size(), StateKind::kPrefix, j, 0});
    }
  }
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (uint64_t k = 0; k < opts.random_states; ++k) {
    const size_t c = static_cast<size_t>(rng() % n);
    const StateKind kind = unit(rng) < opts.torn_fraction ? StateKind::kTorn : StateKind::kSubset;
    specs.push_back({specs.size(), kind, c, rng()});
  }
  return specs;
}

Materializer::Materializer(const Recording& rec) : rec_(rec) {
  for (const auto& d : rec_.devices)
    devices_.push_back(std::make_shared<const std::vector<std::byte>>(d.base));
  frontier_.device.assign(rec_.devices.size(), 0);
  frontier_.file.assign(rec_.files.size(), 0);
  for (const auto& [path, bytes] : rec_.base_files) {
    const int f = rec_.file_index(path);
    if (f < 0) continue;
    contents_[static_cast<uint32_t>(f)] = bytes;
    exists_[static_cast<uint32_t>(f)] = true;
  }
  uint64_t max_id = 0;
  for (const Record& r : rec_.records) max_id = std::max(max_id, r.barrier);
  barrier_start_.assign(max_id + 1, 0);
  for (size_t j = 0; j < rec_.records.size(); ++j) {
    const Op op = rec_.records[j].op;
    if (op == Op::kFlushStart || op == Op::kSyncStart || op == Op::kDirSyncStart) {
      barrier_start_[rec_.records[j].barrier] = j;
    }
  }
}

bool Materializer::durable(const Frontier& f, size_t j) const {
  const Record& r = rec_.records[j];
  if (is_device_op(r.op)) return j < f.device[r.stream];
  if (is_content_op(r.op)) return j < f.file[r.stream];
  return false;
}

void Materializer::advance(size_t c) {
  // Move the frontiers over the barriers completed by c.
  Frontier next = frontier_;
  for (size_t j = at_; j <= c && j < rec_.records.size(); ++j) {
    const Record& r = rec_.records[j];
    if (!is_barrier_end(r.op)) continue;
    const size_t start = barrier_start_[r.barrier];
    switch (r.op) {
      case Op::kFlushEnd:
        next.device[r.stream] = std::max(next.device[r.stream], start);
        break;
      case Op::kSyncEnd:
        next.file[r.stream] = std::max(next.file[r.stream], start);
        break;
      default:
        next.dir = std::max(next.dir, start);
        break;
    }
  }
  at_ = std::max(at_, c + 1);
  // Fold the newly durable operations into the images, in logged order:
  // for each stream, those in [old frontier, new frontier).
  size_t lo = frontier_.dir, hi = next.dir;
  for (size_t d = 0; d < next.device.size(); ++d) {
    lo = std::min(lo, frontier_.device[d]);
    hi = std::max(hi, next.device[d]);
  }
  for (size_t f = 0; f < next.file.size(); ++f) {
    lo = std::min(lo, frontier_.file[f]);
    hi = std::max(hi, next.file[f]);
  }
  std::vector<std::shared_ptr<std::vector<std::byte>>> changed(devices_.size());
  auto newly = [](size_t j, size_t old_frontier, size_t new_frontier) {
    return j >= old_frontier && j < new_frontier;
  };
  for (size_t j = lo; j < hi; ++j) {
    const Record& r = rec_.records[j];
    if (is_device_op(r.op) && newly(j, frontier_.device[r.stream], next.device[r.stream])) {
      auto& img = changed[r.stream];
      if (!img) img = std::make_shared<std::vector<std::byte>>(*devices_[r.stream]);
      if (r.op == Op::kWrite) {
        auto d = rec_.data(r);
        std::memcpy(img->data() + r.offset, d.data(), d.size());
      } else {
        std::memset(img->data() + r.offset, 0, r.length);
      }
    }
    if (is_content_op(r.op) && newly(j, frontier_.file[r.stream], next.file[r.stream])) {
      apply_content(contents_[r.stream], rec_, r);
    }
    if (is_existence_op(r.op) && newly(j, frontier_.dir, next.dir)) exists_[r.stream] = apply_existence(r);
  }
  for (size_t d = 0; d < changed.size(); ++d) {
    if (changed[d]) devices_[d] = std::move(changed[d]);
  }
  frontier_ = std::move(next);
}

CrashState Materializer::build(const StateSpec& spec) const {
  const size_t c = spec.crash_point;
  // The operations a crash at c may or may not have kept, in logged order;
  // existence is a separate choice from content for a create.
  struct Item {
    size_t j;
    bool existence;
    bool mandatory;
  };
  std::vector<Item> items;
  size_t from = frontier_.dir;
  for (size_t v : frontier_.device) from = std::min(from, v);
  for (size_t v : frontier_.file) from = std::min(from, v);
  for (size_t j = from; j <= c && j < rec_.records.size(); ++j) {
    const Record& r = rec_.records[j];
    if ((is_device_op(r.op) || is_content_op(r.op)) && !durable(frontier_, j)) {
      items.push_back({j, false, is_fua_write(r)});
    }
    if (is_existence_op(r.op) && j >= frontier_.dir) items.push_back({j, true, false});
  }
  std::mt19937_64 rng(spec.rng);
  std::vector<bool> keep(items.size(), true);
  if (spec.kind != StateKind::kPrefix) {
    const double q = 0.1 + 0.8 * std::uniform_real_distribution<double>(0.0, 1.0)(rng);
    std::bernoulli_distribution coin(q);
    for (size_t i = 0; i < items.size(); ++i) keep[i] = items[i].mandatory || coin(rng);
  }
  // A torn write: one kept multi-sector device write, not FUA, lands only
  // in part.
  size_t torn = items.size();
  uint64_t grain = 512;
  std::vector<bool> torn_keep;
  if (spec.kind == StateKind::kTorn) {
    std::vector<size_t> multi;
    for (size_t i = 0; i < items.size(); ++i) {
      const Record& r = rec_.records[items[i].j];
      // A completed FUA write is durable whole: only cached writes can tear.
      if (keep[i] && !items[i].existence && r.op == Op::kWrite && r.length > 512 && !items[i].mandatory) {
        multi.push_back(i);
      }
    }
    if (!multi.empty()) {
      torn = multi[rng() % multi.size()];
      const Record& r = rec_.records[items[torn].j];
      grain = (r.length > 4096 && r.offset % 4096 == 0 && r.length % 4096 == 0 && (rng() & 1)) ? 4096 : 512;
      const uint64_t chunks = (r.length + grain - 1) / grain;
      torn_keep.assign(chunks, false);
      for (uint64_t k = 0; k < chunks; ++k) torn_keep[k] = rng() & 1;
      // At least one chunk kept and one lost, so the write really tears.
      torn_keep[rng() % chunks] = true;
      uint64_t lost = rng() % chunks;
      if (chunks > 1 && torn_keep[lost]) {
        torn_keep[lost] = false;
        if (std::none_of(torn_keep.begin(), torn_keep.end(), [](bool b) { return b; }))
          torn_keep[(lost + 1) % chunks] = true;
      }
    }
  }

  CrashState st;
  st.spec = spec;
  for (const auto& base : devices_) st.devices.push_back(std::make_shared<CowDevice>(base));
  auto contents = contents_;
  auto exists = exists_;
  size_t kept = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!keep[i]) continue;
    ++kept;
    const Record& r = rec_.records[items[i].j];
    if (items[i].existence) {
      exists[r.stream] = apply_existence(r);
      if (r.op == Op::kCreate && !contents.count(r.stream)) contents[r.stream] = {};
      continue;
    }
    if (is_content_op(r.op)) {
      apply_content(contents[r.stream], rec_, r);
      continue;
    }
    CowDevice& dev = *st.devices[r.stream];
    if (r.op == Op::kTrim) {
      (void)dev.write_zeroes(r.offset, r.length, 0);
      continue;
    }
    auto d = rec_.data(r);
    if (i != torn) {
      (void)dev.write(r.offset, d, 0);
      continue;
    }
    for (uint64_t k = 0; k < torn_keep.size(); ++k) {
      if (!torn_keep[k]) continue;
      const uint64_t at = k * grain, n = std::min<uint64_t>(grain, r.length - at);
      (void)dev.write(r.offset + at, d.subspan(at, n), 0);
    }
  }
  std::map<std::string, std::vector<std::byte>> files;
  for (const auto& [f, e] : exists) {
    if (e) files[rec_.files[f]] = contents.count(f) ? contents[f] : std::vector<std::byte>{};
  }
  st.env = std::make_shared<MemEnv>();
  st.env->restore(files);
  if (spec.kind == StateKind::kPrefix) {
    st.description = fmt::format("prefix through record {}", c);
  } else {
    st.description = fmt::format("{} at record {}: {} of {} pending operations kept",
                                 state_kind_name(spec.kind), c, kept, items.size());
    if (torn < items.size()) {
      const Record& r = rec_.records[items[torn].j];
      const auto n = std::count(torn_keep.begin(), torn_keep.end(), true);
      st.description += fmt::format(
          "; write at record {} (device {}, offset {}, {} bytes) torn: {} of {} {}-byte "
          "pieces landed",
          items[torn].j, r.stream, r.offset, r.length, n, torn_keep.size(), grain);
    } else if (spec.kind == StateKind::kTorn) {
      st.description += "; no multi-sector write pending to tear";
    }
  }
  return st;
}

}  // namespace bowstack::crash
