#include "core/uuid.h"

#include <fmt/format.h>

#include <random>

namespace bowstack {

std::string uuid_string(const Uuid& u) {
  std::string s;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", u[i]);
  }
  return s;
}

Uuid random_uuid() {
  std::random_device rd;
  Uuid u;
  for (auto& b : u) b = static_cast<uint8_t>(rd());
  u[6] = static_cast<uint8_t>((u[6] & 0x0f) | 0x40);  // version 4
  u[8] = static_cast<uint8_t>((u[8] & 0x3f) | 0x80);  // variant 1
  return u;
}

}  // namespace bowstack
