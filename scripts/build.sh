#!/usr/bin/env bash
# scripts/build.sh release|test|tsan [extra cmake args...]
#   release: optimised, for serving and benchmarks  -> build/release
#   test:    ASan+UBSan, warnings are errors         -> build/test
#   tsan:    ThreadSanitizer, warnings are errors    -> build/tsan
#   fuzz:    clang, libFuzzer+ASan+UBSan, the fuzzers only (fuzz/) -> build/fuzz
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kind=${1:-release}
shift || true
case $kind in
  release) args=(-DCMAKE_BUILD_TYPE=Release -DBOWSTACK_WERROR=ON -DBOWSTACK_TESTS=OFF) ;;
  test) args=(-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DBOWSTACK_WERROR=ON
              -DBOWSTACK_SANITIZE=address,undefined) ;;
  tsan) args=(-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DBOWSTACK_WERROR=ON
              -DBOWSTACK_SANITIZE=thread) ;;
  fuzz) args=(-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DBOWSTACK_WERROR=ON
              -DBOWSTACK_FUZZ=ON -DBOWSTACK_TESTS=OFF)
        export CC=${CC:-clang} CXX=${CXX:-clang++} ;;
  *) echo "usage: $0 release|test|tsan|fuzz" >&2; exit 2 ;;
esac
targets=()
# Under TSan only the unit tests run (they hold the concurrent paths); skip the rest.
[[ $kind == tsan ]] && targets=(bowstack_unit_tests)
cmake -S "$root" -B "$root/build/$kind" -G Ninja "${args[@]}" "$@" >/dev/null
ninja -C "$root/build/$kind" -j "$(nproc)" "${targets[@]}"
