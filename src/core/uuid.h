// Volume uuids, as the targets' metadata formats store them (16 bytes, in
// the textual order) and as tools print them.
// Thread-safety: pure functions (random_uuid() uses std::random_device).
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace bowstack {

using Uuid = std::array<uint8_t, 16>;
// "5f0c2a91-7d3e-4b8a-9c61-0e4f2b7d8a13"
std::string uuid_string(const Uuid& u);
// A random (version 4, variant 1) uuid.
Uuid random_uuid();

}  // namespace bowstack
