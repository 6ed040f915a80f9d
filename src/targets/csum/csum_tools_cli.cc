// `bowstack csum format|rebuild|rewrite|dump|mismatches`: open the files,
// call csum_tools.h (or the running server), print. Exit status: 0 done /
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

namespace bowstack::cli {

using namespace bowstack::csum;

namespace {

int unusable(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 2;
}

std::string metadata_of(const CsumCliOptions& o) {
  return o.metadata.empty() ? csum_default_metadata(o.image) : o.metadata;
}

ToolProgress progress_bar(const CsumCliOptions& o, const char* verb) {
  return progress_line(verb, o.image, o.json);
}

// Both files opened for writing with exclusive locks: refused while a
// server (or another tool) has either.
struct Opened {
  std::shared_ptr<FileDevice> data, md;
};
std::optional<Opened> open_for_writing(const CsumCliOptions& o, int* rc) {
  auto data = FileDevice::open(o.image, FileDeviceOptions{.lock = true});
  if (!data.ok()) {
    *rc = unusable(why(data.status()));
    return std::nullopt;
  }
  auto md = FileDevice::open(metadata_of(o), FileDeviceOptions{.lock = true});
  if (!md.ok()) {
    *rc = unusable(fmt::format("checksums: {}", why(md.status())));
    return std::nullopt;
  }
  return Opened{data.value(), md.value()};
}

int metadata_error(const CsumCliOptions& o, const Status& s) {
  if (s.code() == EMEDIUMTYPE) {
    return unusable(fmt::format("'{}' is not csum metadata: {}", metadata_of(o), s.context()));
  }
  return unusable(fmt::format("'{}': {}", metadata_of(o), why(s)));
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

}  // namespace

std::string csum_default_metadata(const std::string& image) {
  for (const auto& slot : CsumTarget::info().slots) {
    if (slot.name == "metadata") return image + slot.default_suffix;
  }
  return image + ".csum";
}

int run_csum_format(const CsumCliOptions& o) {
  const std::string meta = metadata_of(o);
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
    auto data = FileDevice::open(o.image, FileDeviceOptions{.read_only = true});
    if (!data.ok()) return unusable(why(data.status()));
    p.data_size = (*data)->geometry().size;
  }
  auto need = CsumMetadata::bytes_needed(p);
  if (!need.ok()) return unusable(why(need.status()));
  // The sidecar is created sparse, or grown; a block device must be big
  // enough already (format says so).
  std::error_code ec;
  if (!std::filesystem::exists(meta, ec)) {
    if (Status s = FileDevice::create(meta, *need); !s.ok()) return unusable(why(s));
  } else if (std::filesystem::is_regular_file(meta, ec) && std::filesystem::file_size(meta, ec) < *need) {
    std::filesystem::resize_file(meta, *need, ec);
    if (ec) return unusable(fmt::format("growing '{}': {}", meta, ec.message()));
  }
  int rc = 0;
  auto f = open_for_writing(o, &rc);
  if (!f) return rc;
  auto r = format_over_data(*f->data, *f->md, p, o.force, progress_bar(o, "formatting"));
  if (!r.ok()) return unusable(fmt::format("'{}': {}", meta, why(r.status())));
  if (o.json) {
    nlohmann::json j = {{"image", o.image},
                        {"metadata", meta},
                        {"uuid", uuid_string(r->sb.uuid)},
                        {"block_size", r->sb.layout.block_size},
                        {"blocks", r->sb.layout.nr_blocks},
                        {"data_blocks", r->data_blocks},
                        {"zero_blocks", r->zero_blocks}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "%s: formatted %s: %llu blocks of %u bytes; the current data of %llu blocks was accepted as "
        "correct, %llu blocks are zeroes\n",
        o.image.c_str(), meta.c_str(), static_cast<unsigned long long>(r->sb.layout.nr_blocks),
        r->sb.layout.block_size, static_cast<unsigned long long>(r->data_blocks),
        static_cast<unsigned long long>(r->zero_blocks));
  }
  return 0;
}

int run_csum_rebuild(const CsumCliOptions& o) {
  int rc = 0;
  auto f = open_for_writing(o, &rc);
  if (!f) return rc;
  auto r = rebuild_volume(*f->data, f->md, progress_bar(o, "rebuilding"));
  if (!r.ok()) return metadata_error(o, r.status());
  if (o.json) {
    nlohmann::json j = {{"image", o.image},
                        {"metadata", metadata_of(o)},
                        {"blocks", r->blocks},
                        {"changed", r->changed},
                        {"damaged_sectors", r->damaged_sectors},
                        {"journal_records_replayed", r->replayed}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    if (r->replayed != 0) {
      std::printf("%s: %llu journal records applied first (the volume stopped uncleanly in mode journal)\n",
                  o.image.c_str(), static_cast<unsigned long long>(r->replayed));
    }
    std::printf(
        "%s: every checksum recomputed from the current data (%llu blocks); %llu blocks did not match "
        "before and are now accepted, %llu damaged checksum sectors rewritten\n",
        o.image.c_str(), static_cast<unsigned long long>(r->blocks),
        static_cast<unsigned long long>(r->changed), static_cast<unsigned long long>(r->damaged_sectors));
  }
  return 0;
}

int run_csum_rewrite(const CsumCliOptions& o) {
  if (o.image.empty()) {
    // The running server does it through its write path.
    nlohmann::json request = {
        {"cmd", "message"}, {"text", fmt::format("rewrite {}", o.block)}, {"target", "csum"}};
    auto reply = control_request(o.client.control, request);
    if (!reply.ok()) return fail(why(reply.status()));
    if (!reply->value("ok", false)) return fail(reply->value("error", std::string("request failed")));
    std::printf("%s\n", reply->value("reply", std::string()).c_str());
    return 0;
  }
  int rc = 0;
  auto f = open_for_writing(o, &rc);
  if (!f) return rc;
  auto r = rewrite_block_offline(*f->data, f->md, o.block);
  if (!r.ok()) {
    if (r.status().code() == EINVAL || r.status().code() == EUCLEAN || r.status().code() == EBUSY) {
      return fail(why(r.status()));
    }
    return metadata_error(o, r.status());
  }
  std::printf("block %llu: %s; checksum %08x stored\n", static_cast<unsigned long long>(o.block),
              r->matched ? "already matched its data" : "its current data is now accepted as correct",
              r->checksum);
  return 0;
}

int run_csum_dump(const CsumCliOptions& o) {
  auto md = FileDevice::open(metadata_of(o), FileDeviceOptions{.read_only = true, .lock = true});
  if (!md.ok()) return unusable(fmt::format("checksums: {}", why(md.status())));
  if (o.block_given) {
    auto data = FileDevice::open(o.image, FileDeviceOptions{.read_only = true, .lock = true});
    if (!data.ok()) return unusable(why(data.status()));
    auto r = inspect_block(*data.value(), md.value(), o.block);
    if (!r.ok()) return r.status().code() == EINVAL ? fail(why(r.status())) : metadata_error(o, r.status());
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
  if (!r.ok()) return metadata_error(o, r.status());
  const Superblock& sb = r->sb;
  const Layout& l = sb.layout;
  static const char* kScrub[] = {"never", "running", "paused", "done", "stopped"};
  const char* scrub = sb.scrub_state < 5 ? kScrub[sb.scrub_state] : "?";
  if (o.json) {
    nlohmann::json j;
    j["metadata"] = metadata_of(o);
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
    std::printf("metadata:     %s (csum v%u, uuid %s, generation %llu)\n", metadata_of(o).c_str(), sb.version,
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
