// `bowstack csum format|rebuild|rewrite|dump|mismatches`: open the volume
// (csum_volume_cli.h: IMAGE, or --table), call csum_tools.h (or the running
// server), print. Exit status: 0 done /
// clean, 1 findings (mismatches, damage), 2 the volume cannot be used.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "control/control_server.h"
#include "core/file_device.h"
#include "core/parse.h"
#include "targets/csum/csum_cli.h"
#include "targets/csum/csum_report.h"
#include "targets/csum/csum_target.h"
#include "targets/csum/csum_tools.h"
#include "targets/csum/csum_volume_cli.h"

namespace bowstack::cli {

using namespace bowstack::csum;

namespace {

int unusable(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 2;
}

ToolProgress progress_bar(const CsumCliOptions& o, const CsumPlaces& p, const char* verb) {
  return progress_line(verb, p.data_name(), o.json);
}

// A volume's devices, as the verb needs them opened.
struct Volume {
  std::shared_ptr<BlockDevice> data, md;
};

// Both opened for writing with exclusive locks: refused while a server (or
// another tool) has either. An RBD image for the checksums is created, or
// grown from size 0, to `md_create_size` when that is non-zero (format).
Result<Volume> open_for_writing(const CsumPlaces& p, uint64_t md_create_size = 0) {
  auto data = open_csum_leaf(p, p.data, LeafOpen{});
  if (!data.ok()) return data.status();
  auto md = open_csum_leaf(p, *p.md, LeafOpen{.create_size = md_create_size});
  if (!md.ok()) return Status::Error(md.status().code(), "checksums: " + md.status().context());
  return Volume{data.value(), md.value()};
}

// The places of a verb that works on layout=csum only (not integrity, whose
// tools are format and verify).
Result<CsumPlaces> csum_only_places(const CsumCliOptions& o, const char* tool) {
  auto p = csum_places(o, tool);
  if (p.ok() && p->layout != "csum") {
    return Status::Error(EINVAL,
                         fmt::format("{}: the table's csum node has layout={}; {} works on layout=csum "
                                     "volumes (verify and format know layout=integrity)",
                                     o.table, p->layout, tool));
  }
  return p;
}

int metadata_error(const CsumPlaces& p, const Status& s) {
  if (s.code() == EMEDIUMTYPE) {
    return unusable(fmt::format("'{}' is not csum metadata: {}", p.md_name(), s.context()));
  }
  return unusable(fmt::format("'{}': {}", p.md_name(), why(s)));
}

const char* state_name(PairState s) {
  switch (s) {
    case PairState::kEmpty:
      return "empty";
    case PairState::kA:
      return "A";
    default:
      return "B";
  }
}

// `csum format --table` on a csum node with layout=integrity: a new
// dm-integrity volume in the table's data image. Its data is lost, so the
// command line must say --layout integrity itself.
int format_integrity_of_table(const CsumCliOptions& o, const CsumPlaces& p) {
  if (!o.layout_given) {
    return unusable(
        fmt::format("{}: the table's csum node has layout=integrity: formatting makes '{}' a new "
                    "dm-integrity volume and its data is lost; give --layout integrity to do that",
                    o.table, p.data_name()));
  }
  // An exclusive lock: refused while a server or a verify has the image open.
  auto data = open_csum_leaf(p, p.data, LeafOpen{});
  if (!data.ok()) return unusable(data.status().context());
  return run_integrity_format_on(
      *data.value(), p.data_name(),
      IntegrityFormatOptions{.block_size = o.block_size, .journal_sections = o.journal_sections});
}

}  // namespace

std::string csum_default_metadata(const std::string& image) {
  for (const auto& slot : CsumTarget::info().slots) {
    if (slot.name == "metadata") return image + slot.default_suffix;
  }
  return image + ".csum";
}

int run_csum_format(const CsumCliOptions& o) {
  auto places = csum_places(o, "csum format");
  if (!places.ok()) return unusable(places.status().context());
  const CsumPlaces& pl = places.value();
  if (pl.layout == "integrity") return format_integrity_of_table(o, pl);
  const std::string meta = pl.md_name();
  FormatParams p;
  p.block_size = o.block_size;
  if (!o.journal_size.empty()) {
    auto j = parse_size(o.journal_size, "--journal-size");
    if (!j.ok()) return unusable(why(j.status()));
    if (*j < (2u << 20) || *j % 4096 != 0)
      return unusable("--journal-size must be at least 2M and whole pages");
    p.journal_sectors = *j / kSector;
    p.mode = Mode::kJournal;
  }
  {
    auto data = open_csum_leaf(pl, pl.data, LeafOpen{.read_only = true});
    if (!data.ok()) return unusable(data.status().context());
    p.data_size = (*data)->geometry().size;
  }
  auto need = CsumMetadata::bytes_needed(p);
  if (!need.ok()) return unusable(why(need.status()));
  // A sidecar file is created sparse, or grown; a block device must be big
  // enough already (format says so). An RBD image is created, or grown from
  // size 0, when it is opened.
  if (pl.md->kind == TableNode::Kind::kFile) {
    std::error_code ec;
    const std::string& path = pl.md->path;
    if (!std::filesystem::exists(path, ec)) {
      if (Status s = FileDevice::create(path, *need); !s.ok()) return unusable(why(s));
    } else if (std::filesystem::is_regular_file(path, ec) && std::filesystem::file_size(path, ec) < *need) {
      std::filesystem::resize_file(path, *need, ec);
      if (ec) return unusable(fmt::format("growing '{}': {}", path, ec.message()));
    }
  }
  auto f = open_for_writing(pl, *need);
  if (!f.ok()) return unusable(f.status().context());
  auto r = format_over_data(*f->data, *f->md, p, o.force, progress_bar(o, pl, "formatting"));
  if (!r.ok()) return unusable(fmt::format("'{}': {}", meta, why(r.status())));
  if (o.json) {
    nlohmann::json j = {{"image", pl.data_name()},          {"metadata", meta},
                        {"uuid", uuid_string(r->sb.uuid)},  {"block_size", r->sb.layout.block_size},
                        {"blocks", r->sb.layout.nr_blocks}, {"data_blocks", r->data_blocks},
                        {"zero_blocks", r->zero_blocks}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s: formatted %s: %llu blocks of %u bytes; the current data of %llu blocks was accepted as "
        "correct, %llu blocks are zeroes\n",
        pl.data_name().c_str(), meta.c_str(), static_cast<unsigned long long>(r->sb.layout.nr_blocks),
        r->sb.layout.block_size, static_cast<unsigned long long>(r->data_blocks),
        static_cast<unsigned long long>(r->zero_blocks));
  }
  return 0;
}

int run_csum_rebuild(const CsumCliOptions& o) {
  auto places = csum_only_places(o, "csum rebuild");
  if (!places.ok()) return unusable(places.status().context());
  const CsumPlaces& p = places.value();
  auto f = open_for_writing(p);
  if (!f.ok()) return unusable(f.status().context());
  auto r = rebuild_volume(*f->data, f->md, progress_bar(o, p, "rebuilding"));
  if (!r.ok()) return metadata_error(p, r.status());
  const std::string image = p.data_name();
  if (o.json) {
    nlohmann::json j = {{"image", image},
                        {"metadata", p.md_name()},
                        {"blocks", r->blocks},
                        {"changed", r->changed},
                        {"damaged_sectors", r->damaged_sectors},
                        {"journal_records_replayed", r->replayed}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    if (r->replayed != 0) {
      std::printf("%s: %llu journal records applied first (the volume stopped uncleanly in mode journal)\n",
                  image.c_str(), static_cast<unsigned long long>(r->replayed));
    }
    std::printf(
        "%s: every checksum recomputed from the current data (%llu blocks); %llu blocks did not match "
        "before and are now accepted, %llu damaged checksum sectors rewritten\n",
        image.c_str(), static_cast<unsigned long long>(r->blocks),
        static_cast<unsigned long long>(r->changed), static_cast<unsigned long long>(r->damaged_sectors));
  }
  return 0;
}

int run_csum_rewrite(const CsumCliOptions& o) {
  if (o.image.empty() && o.table.empty()) {
    // The running server does it through its write path.
    nlohmann::json request = {
        {"cmd", "message"}, {"text", fmt::format("rewrite {}", o.block)}, {"target", "csum"}};
    auto reply = control_request(o.client.control, request);
    if (!reply.ok()) return fail(why(reply.status()));
    if (!reply->value("ok", false)) return fail(reply->value("error", std::string("request failed")));
    std::printf("%s\n", reply->value("reply", std::string()).c_str());
    return 0;
  }
  auto places = csum_only_places(o, "csum rewrite");
  if (!places.ok()) return unusable(places.status().context());
  const CsumPlaces& p = places.value();
  auto f = open_for_writing(p);
  if (!f.ok()) return unusable(f.status().context());
  auto r = rewrite_block_offline(*f->data, f->md, o.block);
  if (!r.ok()) {
    if (r.status().code() == EINVAL || r.status().code() == EUCLEAN || r.status().code() == EBUSY) {
      return fail(why(r.status()));
    }
    return metadata_error(p, r.status());
  }
  std::printf("block %llu: %s; checksum %08x stored\n", static_cast<unsigned long long>(o.block),
              r->matched ? "already matched its data" : "its current data is now accepted as correct",
              r->checksum);
  return 0;
}

int run_csum_dump(const CsumCliOptions& o) {
  auto places = csum_only_places(o, "csum dump");
  if (!places.ok()) return unusable(places.status().context());
  const CsumPlaces& p = places.value();
  auto md = open_csum_leaf(p, *p.md, LeafOpen{.read_only = true});
  if (!md.ok()) return unusable(fmt::format("checksums: {}", md.status().context()));
  if (o.block_given) {
    auto data = open_csum_leaf(p, p.data, LeafOpen{.read_only = true});
    if (!data.ok()) return unusable(data.status().context());
    auto r = inspect_block(*data.value(), md.value(), o.block);
    if (!r.ok()) return r.status().code() == EINVAL ? fail(why(r.status())) : metadata_error(p, r.status());
    if (o.json) {
      nlohmann::json j = {{"block", r->block}, {"offset", r->block * r->block_size}};
      j["state"] = r->pair_error.empty() ? state_name(r->pair.state) : "damaged";
      j["slot_a"] = fmt::format("{:08x}", r->pair.a);
      j["slot_b"] = fmt::format("{:08x}", r->pair.b);
      j["data_checksum"] = fmt::format("{:08x}", r->data_checksum);
      j["matches"] = r->matches;
      if (!r->pair_error.empty()) j["error"] = r->pair_error;
      std::printf("%s\n", j.dump(2).c_str());
    } else if (!r->pair_error.empty()) {
      std::printf("block %llu: checksums unreadable: %s; data checksum %08x\n",
                  static_cast<unsigned long long>(r->block), r->pair_error.c_str(), r->data_checksum);
    } else {
      std::printf("block %llu: state %s, slot A %08x, slot B %08x; data checksum %08x: %s\n",
                  static_cast<unsigned long long>(r->block), state_name(r->pair.state), r->pair.a, r->pair.b,
                  r->data_checksum, r->matches ? "matches" : "MISMATCH");
    }
    return r->matches ? 0 : 1;
  }
  auto r = dump_volume(md.value());
  if (!r.ok()) return metadata_error(p, r.status());
  const Superblock& sb = r->sb;
  const Layout& l = sb.layout;
  static const char* kScrub[] = {"never", "running", "paused", "done", "stopped"};
  const char* scrub = sb.scrub_state < 5 ? kScrub[sb.scrub_state] : "?";
  if (o.json) {
    nlohmann::json j;
    j["metadata"] = p.md_name();
    j["version"] = sb.version;
    j["uuid"] = uuid_string(sb.uuid);
    j["generation"] = sb.generation;
    j["mode"] = mode_name(sb.mode);
    j["clean"] = sb.clean();
    j["block_size"] = l.block_size;
    j["data_size"] = l.data_size;
    j["nr_blocks"] = l.nr_blocks;
    j["region_blocks"] = uint64_t{1} << l.log2_region_blocks;
    j["areas"] = {{"pairs", {{"start", l.pairs_start}, {"sectors", l.pairs_sectors}}},
                  {"bitmap", {{"start", l.bitmap_start}, {"sectors", l.bitmap_sectors}}},
                  {"journal", {{"start", l.journal_start}, {"sectors", l.journal_sectors}}},
                  {"total_sectors", l.total_sectors}};
    j["pairs"] = {{"empty", r->empty}, {"settled", r->settled}, {"two_checksums", r->two}};
    j["dirty_regions"] = r->dirty_regions;
    j["scrub"] = {{"state", scrub},
                  {"cursor", sb.scrub_cursor},
                  {"started", sb.scrub_started},
                  {"finished", sb.scrub_finished},
                  {"found", sb.scrub_mismatches}};
    j["mismatches_total"] = sb.mismatches_total;
    j["unclean_opens"] = sb.unclean_opens;
    j["created"] = sb.created;
    j["damaged"] = nlohmann::json::array();
    for (const auto& d : r->damaged) {
      j["damaged"].push_back(
          {{"sector", d.sector}, {"first_block", d.first}, {"end_block", d.end}, {"why", d.why}});
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("metadata:     %s (csum v%u, uuid %s, generation %llu)\n", p.md_name().c_str(), sb.version,
                uuid_string(sb.uuid).c_str(), static_cast<unsigned long long>(sb.generation));
    std::printf("data:         %llu bytes, %llu blocks of %u bytes\n",
                static_cast<unsigned long long>(l.data_size), static_cast<unsigned long long>(l.nr_blocks),
                l.block_size);
    std::printf("mode:         %s, %s\n", mode_name(sb.mode),
                sb.clean() ? "closed cleanly" : "NOT closed cleanly (in use, or crashed)");
    std::printf(
        "areas:        pairs %llu+%llu, bitmap %llu+%llu, journal %llu+%llu (sectors)\n",
        static_cast<unsigned long long>(l.pairs_start), static_cast<unsigned long long>(l.pairs_sectors),
        static_cast<unsigned long long>(l.bitmap_start), static_cast<unsigned long long>(l.bitmap_sectors),
        static_cast<unsigned long long>(l.journal_start), static_cast<unsigned long long>(l.journal_sectors));
    std::printf("pairs:        %llu empty, %llu settled, %llu with two checksums\n",
                static_cast<unsigned long long>(r->empty), static_cast<unsigned long long>(r->settled),
                static_cast<unsigned long long>(r->two));
    std::printf("dirty:        %llu regions of %llu blocks\n",
                static_cast<unsigned long long>(r->dirty_regions),
                static_cast<unsigned long long>(uint64_t{1} << l.log2_region_blocks));
    std::printf("scrub:        %s, cursor %llu, found %llu\n", scrub,
                static_cast<unsigned long long>(sb.scrub_cursor),
                static_cast<unsigned long long>(sb.scrub_mismatches));
    std::printf("counters:     %llu mismatches seen, %llu unclean opens\n",
                static_cast<unsigned long long>(sb.mismatches_total),
                static_cast<unsigned long long>(sb.unclean_opens));
    for (const auto& d : r->damaged) {
      std::printf("damaged:      sector %llu: %s\n", static_cast<unsigned long long>(d.sector),
                  d.why.c_str());
    }
  }
  return r->damaged.empty() ? 0 : 1;
}

int run_csum_mismatches(const CsumCliOptions& o) {
  nlohmann::json request = {{"cmd", "message"}, {"text", "mismatches"}, {"target", "csum"}};
  auto reply = control_request(o.client.control, request);
  if (!reply.ok()) return unusable(why(reply.status()));
  if (!reply->value("ok", false)) return unusable(reply->value("error", std::string("request failed")));
  nlohmann::json list = nlohmann::json::parse(reply->value("reply", std::string("{}")), nullptr, false);
  if (list.is_discarded() || !list.contains("blocks")) return unusable("the server's reply is not a list");
  if (o.client.json) {
    std::printf("%s\n", list.dump(2).c_str());
  } else {
    for (const auto& b : list["blocks"]) {
      std::printf("%s: block %llu (byte offset %llu), found by %s\n", b.value("what", std::string()).c_str(),
                  static_cast<unsigned long long>(b.value("block", uint64_t{0})),
                  static_cast<unsigned long long>(b.value("offset", uint64_t{0})),
                  b.value("found_by", std::string()).c_str());
    }
    std::printf("%zu bad blocks listed\n", list["blocks"].size());
  }
  return list["blocks"].empty() ? 0 : 1;
}

}  // namespace bowstack::cli
