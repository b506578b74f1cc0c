#!/usr/bin/env bash
# Runs every dst test: installs what is missing, builds with AddressSanitizer
# and UndefinedBehaviorSanitizer in build-test/, and runs ctest (unit,
# integration and the later labels). A missing dependency is a failure.
#   scripts/test.sh [extra ctest arguments, e.g. -L unit]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
build=${DST_TEST_BUILD_DIR:-build-test}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDST_SANITIZE=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@"
