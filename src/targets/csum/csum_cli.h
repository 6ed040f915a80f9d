// csum's verbs on the `bowstack` command (csum_cli.cc registers them).
// The offline tools find the metadata exactly as serve does: IMAGE plus the
// metadata slot's default suffix, unless --metadata names it; or the table
// given with --table says where both are (csum_volume_cli.h).
#pragma once

#include <cstdint>
#include <string>

#include "cli/verbs.h"
#include "targets/csum/integrity_cli.h"

namespace bowstack::cli {

struct CsumCliOptions {
  std::string image;
  std::string metadata;  // empty: IMAGE + the metadata slot's default suffix
  std::string table;     // --table FILE instead of IMAGE and --metadata: the table's csum node
  bool json = false;
  uint32_t block_size = 4096;
  bool force = false;
  uint64_t block = 0;
  bool block_given = false;
  ClientOptions client;           // running-server verbs
  std::string layout = "csum";    // or "integrity": dm-integrity's format inside IMAGE
  bool layout_given = false;      // --layout was on the command line
  uint32_t journal_sections = 0;  // layout=integrity: 0 the kernel's default
  std::string journal_size;       // layout=csum: a journal (mode journal) of this size
};

// IMAGE + the suffix serve gives the metadata slot.
std::string csum_default_metadata(const std::string& image);
// Offline (server stopped; exit 0 done, 1 findings, 2 unusable).
int run_csum_format(const CsumCliOptions& o);
int run_csum_rebuild(const CsumCliOptions& o);
int run_csum_rewrite(const CsumCliOptions& o);
int run_csum_dump(const CsumCliOptions& o);
// Running server: the csum node's list of bad blocks.
int run_csum_mismatches(const CsumCliOptions& o);

}  // namespace bowstack::cli
