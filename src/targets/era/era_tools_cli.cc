// Offline era tools: `bowstack era dump|invalidate|check|restore|export|apply`.
// Logic lives in src/targets/era/; era_files_cli.cc finds and opens the
// metadata and image (paths, or --table); this file prints.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/report.h"
#include "core/file_paths.h"
#include "core/parse.h"
#include "targets/era/era_cli.h"
#include "targets/era/era_export.h"
#include "targets/era/era_files_cli.h"
#include "targets/era/era_tools.h"
#include "targets/era/era_xml.h"

namespace bowstack::cli {

namespace {

using namespace bowstack::era;

// Damage is the metadata's fault, not the tool's: say so and where to look.
int fail_source(const EraPlaces& p, const Status& s) {
  const std::string name = p.metadata.name();
  if (s.code() == EMEDIUMTYPE) return fail(fmt::format("'{}' is not era metadata: {}", name, s.context()));
  if (s.code() == EUCLEAN) {
    return fail(
        fmt::format("era metadata '{}' is damaged: {} (run 'bowstack era check {}')", name, why(s), p.args));
  }
  return fail(fmt::format("era metadata '{}': {}", name, why(s)));
}

// The metadata of a tool that only reads it (locked, unless it reads the
// snapshot of a live target), with where it is.
struct Source {
  EraPlaces places;
  std::shared_ptr<BlockDevice> dev;
};
Result<Source> open_for_reading(const EraCliOptions& o, const char* tool, bool need_image = false) {
  auto p = era_places(o, tool, need_image);
  if (!p.ok()) return p.status();
  auto dev = open_era_place(p->metadata, "metadata", true, !o.snapshot);
  if (!dev.ok()) return dev.status();
  return Source{std::move(p.value()), std::move(dev.value())};
}

struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != stdout) std::fclose(f);
  }
};
using OutFile = std::unique_ptr<std::FILE, FileCloser>;

Result<OutFile> open_output(const std::string& path) {
  if (path.empty() || path == "-") return OutFile(stdout);
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return Status::Error(errno, fmt::format("cannot create '{}'", path));
  return OutFile(f);
}

// What the XML may claim: no more blocks than the metadata can hold (a
// block device's size; a file's size plus the free space of its
// filesystem, since restore grows it; an RBD image is created or grown to
// fit, or checked once open), and no more memory than half of what is free.
Result<ParseLimits> restore_limits(const EraPlace& where) {
  ParseLimits limits;
  if (!where.rbd) {
    const std::string& metadata = where.path;
    auto info = inspect_path(metadata);
    if (!info.ok()) return info.status();
    auto capacity = path_capacity(metadata);
    if (!capacity.ok()) return capacity.status();
    limits.max_blocks_why =
        info->block_device
            ? fmt::format("the metadata device '{}' ({} bytes)", metadata, *capacity)
            : fmt::format("the metadata file '{}' ({} bytes with the free space of its filesystem)", metadata,
                          *capacity);
    limits.max_blocks = std::min(kMaxDataBlocks, max_blocks_for_metadata(*capacity));
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0)
    limits.max_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 2;
  return limits;
}

}  // namespace

int run_era_dump(const EraCliOptions& o) {
  auto m = open_for_reading(o, "era dump");
  if (!m.ok()) return fail(m.status().context());
  auto src = open_source(m->dev, o.snapshot);
  if (!src.ok()) return fail_source(m->places, src.status());
  auto out = open_output(o.output);
  if (!out.ok()) return fail(why(out.status()));
  DumpOptions d{.logical = o.logical, .compact = o.compact};
  Status s =
      o.json ? write_json(src.value(), d, out.value().get()) : write_xml(src.value(), d, out.value().get());
  if (!s.ok()) return fail_source(m->places, s);
  return 0;
}

int run_era_invalidate(const EraCliOptions& o) {
  auto m = open_for_reading(o, "era invalidate");
  if (!m.ok()) return fail(m.status().context());
  auto src = open_source(m->dev, o.snapshot);
  if (!src.ok()) return fail_source(m->places, src.status());
  auto runs = written_since(src.value(), static_cast<uint32_t>(o.since));
  if (!runs.ok()) return fail_source(m->places, runs.status());
  auto out = open_output(o.output);
  if (!out.ok()) return fail(why(out.status()));
  std::FILE* f = out.value().get();
  fmt::print(f, "<blocks>\n");
  for (const auto& [b, e] : runs.value()) {
    if (e - b == 1) {
      fmt::print(f, "  <block block=\"{}\"/>\n", b);
    } else {
      fmt::print(f, "  <range begin=\"{}\" end=\"{}\"/>\n", b, e);
    }
  }
  fmt::print(f, "</blocks>\n");
  if (std::fflush(f) != 0 || std::ferror(f) != 0) return fail("cannot write the output");
  return 0;
}

int run_era_check(const EraCliOptions& o) {
  auto m = open_for_reading(o, "era check");
  if (!m.ok()) return fail(m.status().context());
  const std::string name = m->places.metadata.name();
  auto r = check_metadata(m->dev);
  if (!r.ok() && r.status().code() == EMEDIUMTYPE) return fail_source(m->places, r.status());
  if (!r.ok()) return fail(fmt::format("era check of '{}': {}", name, why(r.status())));
  const CheckResult& c = r.value();
  if (o.json) {
    nlohmann::json j;
    j["metadata"] = name;
    j["ok"] = c.damage.empty();
    if (c.superblock_ok) {
      j["superblock"] = {{"uuid", uuid_string(c.sb.uuid)},     {"block_size", c.sb.data_block_size},
                         {"nr_blocks", c.sb.nr_blocks},        {"current_era", c.sb.current_era},
                         {"generation", c.sb.generation},      {"fold_pending", c.sb.fold_era != 0},
                         {"metadata_snapshot", c.sb.snap_held}};
    }
    auto& d = j["damage"];
    d = nlohmann::json::array();
    for (const Damage& x : c.damage) d.push_back({{"block", x.block}, {"what", x.what}});
    std::printf("%s\n", j.dump(2).c_str());
    return c.damage.empty() ? 0 : 1;
  }
  if (c.superblock_ok) {
    std::printf(
        "%s: era metadata %s, %llu blocks of %s, current era %u, generation %llu%s%s\n", name.c_str(),
        uuid_string(c.sb.uuid).c_str(), static_cast<unsigned long long>(c.sb.nr_blocks),
        format_size(c.sb.data_block_size).c_str(), c.sb.current_era,
        static_cast<unsigned long long>(c.sb.generation),
        c.sb.fold_era != 0 ? fmt::format(", archive of era {} unfinished", c.sb.fold_era).c_str() : "",
        c.sb.snap_held ? fmt::format(", metadata snapshot of era {}", c.sb.snap_era).c_str() : "");
  }
  if (c.damage.empty()) {
    std::printf("no damage found\n");
    return 0;
  }
  for (const Damage& x : c.damage)
    std::printf("damage at metadata block %llu: %s\n", static_cast<unsigned long long>(x.block),
                x.what.c_str());
  std::fprintf(stderr, "bowstack: era metadata '%s' is damaged: %zu problem%s found\n", name.c_str(),
               c.damage.size(), c.damage.size() == 1 ? "" : "s");
  return 1;
}

int run_era_restore(const EraCliOptions& o) {
  auto p = era_places(o, "era restore", false);
  if (!p.ok()) return fail(p.status().context());
  const EraPlace& where = p->metadata;
  const std::string name = where.name();
  std::ifstream in(o.input, std::ios::binary);
  if (!in) return fail(fmt::format("cannot read '{}': {}", o.input, std::strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  auto limits = restore_limits(where);
  if (!limits.ok()) return fail(why(limits.status()));
  auto model = parse_xml(text.str(), limits.value());
  if (!model.ok()) return fail(fmt::format("era restore: '{}': {}", o.input, why(model.status())));
  const uint64_t bytes = metadata_blocks_for(model->nr_blocks) * kMetaBlockSize;
  // A held file is not even grown (the open below locks it again for the
  // restore itself).
  if (!where.rbd) {
    if (Status s = prepare_file(where.path, bytes, fmt::format("era metadata '{}'", name)); !s.ok()) {
      return fail(s.code() == EBUSY ? s.context() : why(s));
    }
  }
  auto dev = open_era_place(where, "metadata", false, true, bytes);
  if (!dev.ok()) return fail(dev.status().context());
  if (const uint64_t size = (*dev)->geometry().size; size < bytes) {
    return fail(fmt::format("era metadata '{}' has {} bytes; the XML's {} blocks need {}: grow it first",
                            name, size, model->nr_blocks, bytes));
  }
  if (Status s = restore_metadata(model.value(), dev.value()); !s.ok()) {
    return fail(fmt::format("era restore to '{}' failed: {}", name, why(s)));
  }
  std::printf("%s: restored era metadata: %llu blocks of %u sectors, current era %u, %zu writesets\n",
              name.c_str(), static_cast<unsigned long long>(model->nr_blocks), model->block_size_sectors,
              model->current_era, model->writesets.size());
  return 0;
}

int run_era_export(const EraCliOptions& o) {
  auto m = open_for_reading(o, "era export", true);
  if (!m.ok()) return fail(m.status().context());
  auto src = open_source(m->dev, o.snapshot);
  if (!src.ok()) return fail_source(m->places, src.status());
  auto image = open_era_place(m->places.image, "image", true);
  if (!image.ok()) return fail(image.status().context());
  auto st = export_changes(src.value(), *image.value(), static_cast<uint32_t>(o.since), o.output);
  if (!st.ok()) {
    if (st.status().code() == EUCLEAN) return fail_source(m->places, st.status());
    return fail(fmt::format("era export: {}", why(st.status())));
  }
  std::printf("%s: %llu blocks (%s) written since era %u (current era %u) in %llu records\n",
              o.output.c_str(), static_cast<unsigned long long>(st->blocks), format_size(st->bytes).c_str(),
              st->since, st->current_era, static_cast<unsigned long long>(st->records));
  return 0;
}

int run_era_apply(const EraCliOptions& o) {
  auto image = open_era_place(EraPlace{.path = o.image}, "image", o.dry_run);
  if (!image.ok()) return fail(image.status().context());
  auto st = apply_changes(o.input, *image.value(), o.dry_run);
  if (!st.ok()) return fail(fmt::format("era apply: {}", why(st.status())));
  std::printf("%s: %s %llu blocks (%s) written since era %u (era %u at export)\n", o.image.c_str(),
              o.dry_run ? "export is valid, would apply" : "applied",
              static_cast<unsigned long long>(st->blocks), format_size(st->bytes).c_str(), st->since,
              st->current_era);
  return 0;
}

}  // namespace bowstack::cli
