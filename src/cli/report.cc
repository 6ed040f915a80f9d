#include "cli/report.h"

#include <cstdio>

namespace bowstack::cli {

int fail(const std::string& what) {
  std::fprintf(stderr, "bowstack: %s\n", what.c_str());
  return 1;
}

std::string why(const Status& s) {
  if (s.context().empty()) return s.message();
  return s.code() == EINVAL || s.code() == EBUSY ? s.context() : s.message();
}

}  // namespace bowstack::cli
