#include "cli/report.h"

#include <cstdio>

namespace bowstack::cli {

int fail(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 1;
}

}  // namespace bowstack::cli
