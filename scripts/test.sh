#!/usr/bin/env bash
# Runs every dst test: installs what is missing, builds with AddressSanitizer
# and UndefinedBehaviorSanitizer in build-test/, and runs ctest (unit,
# integration and the later labels). A missing dependency is a failure.
#
# Then the thread stage (README.md "Thread stage"): a ThreadSanitizer build in
# build-tsan/ of the unit tests whose code runs on more than one thread: the
# worker pool and the object pool (common_test), the event loops, the
# listener, TLS and the loops' traffic counters (server_test), and the merge
# gate between loops (volume_test). A race stops the process that has it
# (halt_on_error), so the test fails.
# DST_TEST_TSAN=all adds the unit tests of a volume's checksums on the worker
# pool, the staging log's thread, lease renewal and the control plane, and
# the integration suites that drive those
# paths through the real binaries (checksums and ciphers on the worker pool,
# mirrors, volume changes, the staging log, ...), every aggregator on four
# event loops (DST_TEST_THREADS=4, as the main stage runs the integration
# suites; it runs the fault suites on one). CI does not run that part: its
# second sanitized build of the whole aggregator would take the suite past its
# time. DST_TEST_TSAN=0 skips the stage. With ctest arguments it runs only if
# they also name it (`tsan`).
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
tsan=${DST_TEST_TSAN:-units}
if (($# > 0)) && [[ " $* " != *fuzz* ]]; then
  fuzz=0
fi
if (($# > 0)) && [[ " $* " != *tsan* ]]; then
  tsan=0
fi

bash scripts/install-deps.sh
build=${DST_TEST_BUILD_DIR:-build-test}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDST_SANITIZE=ON -DDST_UNITY_BUILD=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
# One test more than cores: a fifth of the tests' time is spent waiting (for a member's deadline,
# a restart, a guest booting), and a third test fills it (on two cores 390 s instead of 460 s).
(cd "$build" && ctest --output-on-failure --timeout 600 -j "$(($(nproc) + 1))" "$@")

if [[ $tsan != 0 ]]; then
  tsan_build=${DST_TSAN_BUILD_DIR:-build-tsan}
  tsan_units=(common_test server_test volume_test)
  tsan_tests="common_test|server_test|volume_test_threads"
  tsan_targets=("${tsan_units[@]}")
  if [[ $tsan == all || $tsan == 1 ]]; then
    # Not tls: nbdkit with a preloaded ThreadSanitizer runtime hangs in its own exit path after
    # clients that hang up in the middle of its handshake, which those cases make.
    tsan_units+=(checksummed_test stagelog_test cluster_test control_test)
    tsan_tests="${tsan_tests}|checksummed_test_workers|stagelog_test|cluster_test|control_test"
    tsan_tests="${tsan_tests}|aggregator_integration_(data|checksum|encryption|mirror|stagelog|reload|status|volume|threads)"
    tsan_targets=("${tsan_units[@]}" dst-aggregator nbdkit-dst-plugin aggregator_integration_test)
  fi
  cmake -S . -B "$tsan_build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDST_TSAN=ON \
    -DDST_UNITY_BUILD=ON >/dev/null
  cmake --build "$tsan_build" -j "$(nproc)" --target "${tsan_targets[@]}"
  # Every aggregator there runs four event loops (DST_TEST_THREADS), whatever the machine has.
  (cd "$tsan_build" && DST_TEST_THREADS=4 TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" ctest \
    --output-on-failure --timeout 600 -j "$(nproc)" -R "^(${tsan_tests})\$")
fi

if [[ $fuzz == 1 ]]; then
  fuzz_build=${DST_FUZZ_BUILD_DIR:-build-fuzz}
  CC=clang CXX=clang++ cmake -S . -B "$fuzz_build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDST_FUZZ=ON -DDST_UNITY_BUILD=ON -DDST_FUZZ_SECONDS="${DST_FUZZ_SECONDS:-30}" >/dev/null
  cmake --build "$fuzz_build" -j "$(nproc)" --target fuzz_handshake fuzz_requests
  (cd "$fuzz_build" && ctest --output-on-failure -L fuzz -j "$(nproc)")
fi
