#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time, as the ctest entries fuzz_*
# do: over a scratch copy of its seed corpus, so that the inputs it adds never
# land in the checked-in one. Fails on any crash, leak, timeout, memory blow-up
# or broken invariant; the input that caused it is kept in ARTIFACT_DIR.
#   run_fuzzer.sh FUZZER SEED_CORPUS ARTIFACT_DIR SECONDS [more libFuzzer flags]
set -euo pipefail
fuzzer=$1 seeds=$2 artifacts=$3 seconds=$4
shift 4

work=$(mktemp -d "${TMPDIR:-/tmp}/dst-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -R "$seeds" "$work/corpus"
# Inputs left by an earlier run would make this one look failed.
rm -rf "$artifacts"
mkdir -p "$artifacts"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
status=0
"$fuzzer" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$@" "$work/corpus" || status=$?

found=$(find "$artifacts" -type f)
if ((status != 0)) || [[ -n $found ]]; then
  echo "run_fuzzer: $(basename "$fuzzer") failed (exit status $status)" >&2
  [[ -z $found ]] || echo "run_fuzzer: reproduce with: $fuzzer $found" >&2
  exit 1
fi
