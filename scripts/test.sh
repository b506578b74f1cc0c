#!/usr/bin/env bash
# Runs every dst test: installs what is missing, builds with AddressSanitizer
# and UndefinedBehaviorSanitizer in build-test/, and runs ctest (unit,
# integration and the later labels). A missing dependency is a failure.
#
# Then the fuzz stage (ctest label `fuzz`, docs/security.md "Fuzzing"): the
# libFuzzer targets, built with clang in build-fuzz/ (only they and the
# libraries they link), each run for DST_FUZZ_SECONDS (default 30) over a
# scratch copy of its seed corpus; a crash, leak, hang or broken invariant
# fails it. With ctest arguments the fuzz stage runs only if they name it
# (`-L fuzz`); DST_TEST_FUZZ=0 skips it.
#   scripts/test.sh [extra ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz=${DST_TEST_FUZZ:-1}
if (($# > 0)) && [[ " $* " != *fuzz* ]]; then
  fuzz=0
fi

bash scripts/install-deps.sh
build=${DST_TEST_BUILD_DIR:-build-test}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDST_SANITIZE=ON -DDST_UNITY_BUILD=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
(cd "$build" && ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@")

if [[ $fuzz == 1 ]]; then
  fuzz_build=${DST_FUZZ_BUILD_DIR:-build-fuzz}
  CC=clang CXX=clang++ cmake -S . -B "$fuzz_build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDST_FUZZ=ON -DDST_UNITY_BUILD=ON -DDST_FUZZ_SECONDS="${DST_FUZZ_SECONDS:-30}" >/dev/null
  cmake --build "$fuzz_build" -j "$(nproc)" --target fuzz_handshake fuzz_requests
  (cd "$fuzz_build" && ctest --output-on-failure -L fuzz -j "$(nproc)")
fi
