#!/usr/bin/env bash
# The whole test suite: install what is missing, build with ASan+UBSan
# (warnings are errors), run unit and functional tests, then the
# concurrency tests again under ThreadSanitizer, then build the libFuzzer
# targets with clang and run each briefly from its committed corpus
# (docs/reliability.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/build.sh" test
"$root/scripts/build.sh" tsan
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$root/build/test"
ctest --output-on-failure -j "$(nproc)" --timeout 600 "$@"
cd "$root/build/tsan"
TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1} ctest --output-on-failure -L unit -j "$(nproc)" --timeout 600
"$root/scripts/build.sh" fuzz
cd "$root/build/fuzz"
ctest --output-on-failure -L fuzz -j "$(nproc)" --timeout 600
