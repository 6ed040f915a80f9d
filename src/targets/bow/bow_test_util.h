// Helpers shared by the bow target's unit tests.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

#include "core/test_bytes.h"

namespace bowstack::bow::test_util {

using Bytes = std::vector<std::byte>;

using bowstack::testdata::random_bytes;

}  // namespace bowstack::bow::test_util
