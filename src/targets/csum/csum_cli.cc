// csum's verbs on the `bowstack` command: `bowstack csum verify IMAGE` and,
// for layout=integrity, `csum format` (integrity_cli.cc). Logic lives in
// csum_verify.cc and integrity_volume.cc; this file opens files and prints.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "cli/verb_registry.h"
#include "core/file_device.h"
#include "targets/csum/csum_target.h"
#include "targets/csum/csum_verify.h"
#include "targets/csum/integrity_cli.h"

namespace bowstack::cli {
namespace {

using namespace bowstack::csum;

struct CsumCliOptions {
  std::string image;
  std::string metadata;  // empty: IMAGE + the metadata slot's default suffix, as serve resolves it
  bool json = false;
  std::string layout = "csum";  // or "integrity": dm-integrity's format inside IMAGE
  IntegrityFormatOptions integrity;
};

// Exit status: 0 every block verified, 1 mismatches or unverifiable blocks,
// 2 the volume cannot be verified at all.
int unusable(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 2;
}

std::string default_metadata(const std::string& image) {
  for (const auto& slot : CsumTarget::info().slots) {
    if (slot.name == "metadata") return image + slot.default_suffix;
  }
  return image + ".csum";
}

int run_csum_verify(const CsumCliOptions& o) {
  const std::string meta = o.metadata.empty() ? default_metadata(o.image) : o.metadata;
  // Shared locks: refused while a server holds either file (it may be
  // changing both), fine beside other readers.
  auto data = FileDevice::open(o.image, FileDeviceOptions{.read_only = true, .lock = true});
  if (!data.ok()) return unusable(why(data.status()));
  auto md = FileDevice::open(meta, FileDeviceOptions{.read_only = true, .lock = true});
  if (!md.ok()) return unusable(fmt::format("checksums: {}", why(md.status())));
  const bool tty = !o.json && ::isatty(STDERR_FILENO) != 0;
  uint64_t shown = UINT64_MAX;
  auto progress = [&](uint64_t done, uint64_t total) {
    if (!tty || total == 0) return;
    const uint64_t pct = done * 100 / total;
    if (pct == shown) return;
    shown = pct;
    std::fprintf(stderr, "\rverifying %s: %3llu%%", o.image.c_str(), static_cast<unsigned long long>(pct));
    if (done == total) std::fprintf(stderr, "\n");
  };
  auto r = verify_volume(data.value(), md.value(), progress);
  if (!r.ok()) {
    const Status& s = r.status();
    if (s.code() == EMEDIUMTYPE)
      return unusable(fmt::format("'{}' is not csum metadata: {}", meta, s.context()));
    return unusable(fmt::format("'{}': {}", meta, why(s)));
  }
  const VerifyReport& v = r.value();
  if (o.json) {
    nlohmann::json j;
    j["image"] = o.image;
    j["metadata"] = meta;
    j["block_size"] = v.sb.layout.block_size;
    j["blocks"] = v.blocks;
    j["clean_shutdown"] = v.sb.clean();
    j["mismatches"] = nlohmann::json::array();
    for (const auto& b : v.mismatches) j["mismatches"].push_back({{"block", b.block}, {"offset", b.offset}});
    j["unverifiable"] = nlohmann::json::array();
    for (const auto& u : v.unverifiable)
      j["unverifiable"].push_back({{"first", u.first}, {"end", u.end}, {"why", u.why}});
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (const auto& b : v.mismatches) {
      std::printf("mismatch: block %llu (byte offset %llu)\n", static_cast<unsigned long long>(b.block),
                  static_cast<unsigned long long>(b.offset));
    }
    for (const auto& u : v.unverifiable) {
      std::printf("unverifiable: blocks %llu..%llu: %s\n", static_cast<unsigned long long>(u.first),
                  static_cast<unsigned long long>(u.end - 1), u.why.c_str());
    }
    std::printf("%s: %llu blocks of %u bytes verified, %zu mismatches, %zu unverifiable ranges%s\n",
                o.image.c_str(), static_cast<unsigned long long>(v.blocks), v.sb.layout.block_size,
                v.mismatches.size(), v.unverifiable.size(),
                v.sb.clean() ? "" : " (not closed cleanly: either checksum of a block is accepted)");
  }
  return v.clean() ? 0 : 1;
}

// --layout on a verb; integrity needs no --metadata (its tags are in IMAGE).
void add_layout_option(CLI::App* verb, CsumCliOptions* o) {
  verb->add_option("--layout", o->layout,
                   "csum (checksums in a metadata file) or integrity (dm-integrity's format)")
      ->check(CLI::IsMember({"csum", "integrity"}))
      ->capture_default_str();
}

int run_integrity(const CsumCliOptions& o, bool format) {
  if (!o.metadata.empty())
    return unusable("--metadata does not apply to --layout integrity: its tags are in IMAGE");
  if (!format) return run_integrity_verify(o.image, o.json);
  IntegrityFormatOptions f = o.integrity;
  f.image = o.image;
  return run_integrity_format(f);
}

CLI::App* add_format_verb(CLI::App* cmd, CsumCliOptions* o) {
  CLI::App* format = cmd->add_subcommand("format",
                                         "make IMAGE a checksummed volume (--layout integrity: "
                                         "dm-integrity's format; all data in IMAGE is lost)");
  format->add_option("IMAGE", o->image, "the image (an existing file)")->required();
  add_layout_option(format, o);
  format->add_option("--block-size", o->integrity.block_size, "bytes per block: 512, 1024, 2048 or 4096")
      ->check(CLI::IsMember({512, 1024, 2048, 4096}))
      ->capture_default_str();
  format->add_option("--journal-sections", o->integrity.journal_sections,
                     "dm-integrity journal sections (default: the kernel's for the image's size)");
  format->footer("Example:\n  truncate -s 1G disk.img && bowstack csum format --layout integrity disk.img");
  return format;
}

VerbRunner add_csum_verbs(CLI::App& app) {
  auto o = std::make_shared<CsumCliOptions>();
  CLI::App* cmd = app.add_subcommand("csum", "csum: offline tools for checksummed volumes");
  cmd->require_subcommand(1);
  CLI::App* verify = cmd->add_subcommand(
      "verify", "check every block of IMAGE against its checksum (exit 0 clean, 1 mismatches, 2 unusable)");
  verify->add_option("IMAGE", o->image, "the data image")->required();
  verify->add_option("--metadata", o->metadata, "the checksums (default: IMAGE.csum, as serve finds them)");
  verify->add_flag("--json", o->json, "print the report as JSON");
  add_layout_option(verify, o.get());
  verify->footer(
      "Example:\n  bowstack csum verify disk.img\n  bowstack csum verify --json disk.img\n"
      "  bowstack csum verify --layout integrity disk.img");
  CLI::App* format = add_format_verb(cmd, o.get());
  return [=]() -> int {
    if (!*cmd) return -1;
    if (*verify) return o->layout == "integrity" ? run_integrity(*o, false) : run_csum_verify(*o);
    if (*format) {
      if (o->layout == "integrity") return run_integrity(*o, true);
      return unusable("csum format: only --layout integrity is implemented in this build");
    }
    return 1;
  };
}

const VerbRegistration kCsumVerbs("csum", &add_csum_verbs);

}  // namespace
}  // namespace bowstack::cli
