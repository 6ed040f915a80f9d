#include "core/status.h"

#include <cstring>

namespace bowstack {

std::string Status::message() const {
  if (ok()) return "ok";
  std::string what = std::strerror(code_);
  if (context_.empty()) return what;
  return context_ + ": " + what;
}

std::string why(const Status& s) {
  if (s.context().empty() || (s.code() != EINVAL && s.code() != EBUSY)) return s.message();
  return s.context();
}

}  // namespace bowstack
