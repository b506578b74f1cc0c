#!/usr/bin/env bash
# Builds dst (optimised, no sanitizers) into build/ after installing what is
# missing. Prints nothing but errors and the path of the results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDST_SANITIZE=OFF >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
echo "built: build/nbdkit-plugin/nbdkit-dst-plugin.so build/aggregator/dst-aggregator"
