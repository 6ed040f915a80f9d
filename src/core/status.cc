#include "core/status.h"

#include <cstring>

namespace bowstack {

std::string Status::message() const {
  if (ok()) return "ok";
  std::string what = std::strerror(code_);
  if (context_.empty()) return what;
  return context_ + ": " + what;
}

}  // namespace bowstack
