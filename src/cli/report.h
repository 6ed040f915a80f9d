// How every verb of the `bowstack` command reports an error: one line on
// stderr, "bowstack: WHAT", and exit status 1.
#pragma once

#include <string>

#include "core/status.h"

namespace bowstack::cli {

// Prints "bowstack: what" on stderr; returns 1, the exit status.
int fail(const std::string& what);
// The text of an error for a person (core/status.h).
using bowstack::why;

}  // namespace bowstack::cli
