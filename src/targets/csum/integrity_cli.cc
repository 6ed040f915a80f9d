#include "targets/csum/integrity_cli.h"

#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/report.h"
#include "core/file_device.h"
#include "targets/csum/csum_report.h"
#include "targets/csum/integrity_volume.h"

namespace bowstack::cli {

using namespace bowstack::csum::integrity;

int run_integrity_format(const IntegrityFormatOptions& o) {
  // An exclusive lock: refused while a server or a verify has the image open.
  auto dev = FileDevice::open(o.image, FileDeviceOptions{.lock = true});
  if (!dev.ok()) return fail(why(dev.status()));
  return run_integrity_format_on(*dev.value(), o.image, o);
}

int run_integrity_format_on(BlockDevice& dev, const std::string& image, const IntegrityFormatOptions& o) {
  auto sb =
      format_integrity(dev, FormatParams{.block_size = o.block_size, .journal_sections = o.journal_sections});
  if (!sb.ok()) return fail(fmt::format("'{}': {}", image, why(sb.status())));
  std::printf(
      "%s: dm-integrity volume (superblock version %u, crc32c tags), %u-byte blocks, %llu bytes of data, "
      "%u journal sections\n",
      image.c_str(), static_cast<unsigned>(sb->version), sb->block_size(),
      static_cast<unsigned long long>(sb->provided_data_sectors * kSector), sb->journal_sections);
  return 0;
}

int run_integrity_verify(const std::string& image, bool json) {
  auto dev = FileDevice::open(image, FileDeviceOptions{.read_only = true, .lock = true});
  if (!dev.ok()) {
    std::fprintf(stderr, "bowstack: %s\n", why(dev.status()).c_str());
    return 2;
  }
  return run_integrity_verify_on(dev.value(), image, json);
}

int run_integrity_verify_on(std::shared_ptr<BlockDevice> dev, const std::string& image, bool json) {
  auto progress = progress_line("verifying", image, json);
  auto r = verify_integrity(std::move(dev), progress);
  if (!r.ok()) {
    const Status& s = r.status();
    const std::string what = s.code() == EMEDIUMTYPE
                                 ? fmt::format("'{}' is not a dm-integrity volume: {}", image, s.context())
                                 : fmt::format("'{}': {}", image, why(s));
    std::fprintf(stderr, "bowstack: %s\n", what.c_str());
    return 2;
  }
  const IntegrityVerifyReport& v = r.value();
  if (json) {
    nlohmann::json j;
    j["image"] = image;
    j["layout"] = "integrity";
    j["block_size"] = v.sb.block_size();
    j["provided_data_sectors"] = v.sb.provided_data_sectors;
    j["blocks"] = v.blocks;
    j["discarded"] = v.discarded;
    add_findings(&j, v.mismatches, v.unverifiable);
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_findings(v.mismatches, v.unverifiable);
    std::printf("%s: %llu blocks of %u bytes verified, %zu mismatches, %zu unverifiable ranges",
                image.c_str(), static_cast<unsigned long long>(v.blocks), v.sb.block_size(),
                v.mismatches.size(), v.unverifiable.size());
    if (v.discarded != 0) {
      std::printf(", %llu discarded blocks accepted unverified",
                  static_cast<unsigned long long>(v.discarded));
    }
    std::printf("\n");
  }
  return v.clean() ? 0 : 1;
}

}  // namespace bowstack::cli
