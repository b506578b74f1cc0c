#!/usr/bin/env bash
# What one I/O costs the aggregator, in numbers that do not depend on how
# busy the machine is: instructions per I/O (valgrind's callgrind) and system
# calls per I/O (perf's syscall tracepoints, which count what `strace -c`
# counts without slowing the process down). See docs/benchmarks.md, "The
# fast path".
#
#   bench/profile.sh [--build-dir DIR] [--ios N] [--threads N] [--out DIR] callgrind|syscalls|allocs WORKLOAD
#
# --threads N is the aggregator's event loops (default: its own, one per core).
# WORKLOAD: randread-4k-qd32, randwrite-4k-qd32, randread-4k-qd1,
# randwrite-4k-qd1, seqread-1m-qd8, seqwrite-1m-qd8. It starts nbdkit with
# the dst plugin on a 256 MiB tmpfs file and `dst-aggregator serve --raw`
# over it, runs fio's nbd engine for a fixed number of I/Os (default 20000,
# 2000 for 1 MiB), and divides the aggregator's counts by that number.
# callgrind's counters are zeroed once the export answers, so start-up is
# not counted; `syscalls` needs perf and the right to trace (root, or
# kernel.perf_event_paranoid = -1). `allocs` counts the aggregator's heap
# allocations (malloc, calloc, realloc, aligned; so every operator new) with
# bench/malloc_count.c preloaded: two runs, of N and 2N I/Os, each from start
# to a clean stop, and the difference divided by N, so that start-up, the
# connection and the stop cancel out. The build should be RelWithDebInfo
# (default build-prof/, configured and built if missing) so that the
# profile has names. The callgrind file and fio's output stay in --out
# (default bench/results/profile-TIME-WORKLOAD-TOOL/).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$repo/build-prof"
ios=""
out=""
threads=()
while [[ $# -gt 2 ]]; do
  case $1 in
    --build-dir) build=$2; shift 2 ;;
    --ios) ios=$2; shift 2 ;;
    --threads) threads=(--threads "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "bench/profile.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ $# -eq 2 ]] || { sed -n '2,22p' "${BASH_SOURCE[0]}" >&2; exit 2; }
tool=$1
workload=$2
case $workload in
  randread-4k-qd32) rw=randread bs=4k qd=32 ;;
  randwrite-4k-qd32) rw=randwrite bs=4k qd=32 ;;
  randread-4k-qd1) rw=randread bs=4k qd=1 ;;
  randwrite-4k-qd1) rw=randwrite bs=4k qd=1 ;;
  seqread-1m-qd8) rw=read bs=1M qd=8 ;;
  seqwrite-1m-qd8) rw=write bs=1M qd=8 ;;
  *) echo "bench/profile.sh: unknown workload $workload" >&2; exit 2 ;;
esac
if [[ $bs == 1M ]]; then ios=${ios:-2000} io_size="${ios}M"; else ios=${ios:-20000} io_size="$((ios * 4))k"; fi
case $tool in
  callgrind) command -v valgrind >/dev/null || { echo "apt-get install -y valgrind" >&2; exit 1; } ;;
  syscalls) command -v perf >/dev/null || { echo "apt-get install -y linux-perf" >&2; exit 1; } ;;
  allocs) ;;
  *) echo "bench/profile.sh: tool is callgrind, syscalls or allocs" >&2; exit 2 ;;
esac

if [[ ! -x $build/aggregator/dst-aggregator || ! -f $build/bench/libdst_malloc_count.so ]]; then
  [[ -f $build/CMakeCache.txt ]] ||
    cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDST_WERROR=OFF >/dev/null
  cmake --build "$build" --target dst-aggregator nbdkit-dst-plugin dst_malloc_count >/dev/null
fi
out=${out:-$repo/bench/results/profile-$(date -u +%Y%m%d-%H%M%S)-$workload-$tool}
mkdir -p "$out"
source "$repo/bench/scratch.sh" profile

dd if=/dev/urandom of="$tmp/m0.img" bs=1M count=256 status=none
nbdkit --exit-with-parent -U "$tmp/m0.sock" "$build/nbdkit-plugin/nbdkit-dst-plugin.so" \
  file="$tmp/m0.img" size=256M name=m0 >"$tmp/nbdkit.log" 2>&1 &
pids+=($!)
member="nbd+unix:///m0?socket=$tmp/m0.sock"
wait_for "$member"
serve=("$build/aggregator/dst-aggregator" serve --raw --control none --unix "$tmp/agg.sock" --name vol0
  "${threads[@]}" "$member")
fio=(fio --name=profile --ioengine=nbd --uri="nbd+unix:///vol0?socket=$tmp/agg.sock" --rw=$rw
  --bs=$bs --iodepth=$qd --norandommap --output-format=json)

if [[ $tool == allocs ]]; then
  # Allocations of one aggregator run, from start to a clean stop, with $1 I/Os in between.
  count_allocs() {
    rm -f "$tmp/agg.sock"
    DST_MALLOC_COUNT_FILE="$tmp/allocs" LD_PRELOAD="$build/bench/libdst_malloc_count.so" \
      "${serve[@]}" >"$tmp/agg.log" 2>&1 &
    local pid=$!
    wait_for "nbd+unix:///vol0?socket=$tmp/agg.sock"
    local size=$(($1 * 4))k
    [[ $bs == 1M ]] && size=${1}M
    "${fio[@]}" --io_size="$size" --output="$out/fio-$1.json"
    kill -TERM "$pid"
    wait "$pid"
    cat "$tmp/allocs"
  }
  once=$(count_allocs "$ios")
  twice=$(count_allocs $((2 * ios)))
  awk -v a="$once" -v b="$twice" -v n="$ios" -v w="$workload" 'BEGIN {
    printf "%s: %.2f allocations per I/O (%d over %d I/Os, %d over %d)\n", w, (b - a) / n, a, n, b, 2 * n }'
  exit 0
fi

if [[ $tool == callgrind ]]; then
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.%p" "${serve[@]}" >"$tmp/agg.log" 2>&1 &
else
  "${serve[@]}" >"$tmp/agg.log" 2>&1 &
fi
agg=$!
pids+=("$agg")
wait_for "nbd+unix:///vol0?socket=$tmp/agg.sock"

fio+=(--io_size="$io_size" --output="$out/fio.json")
if [[ $tool == callgrind ]]; then
  callgrind_control -z "$agg" >/dev/null 2>&1
  "${fio[@]}"
  callgrind_control -d "$agg" >/dev/null 2>&1
  total=$(awk '/^summary:/ {print $2}' "$out/callgrind.$agg.1")
  echo "$workload: $((total / ios)) instructions per I/O ($total over $ios I/Os; $out/callgrind.$agg.1)"
else
  perf stat -x, -e 'syscalls:sys_enter_*' -p "$agg" -o "$out/perf.csv" 2>/dev/null &
  perf_pid=$!
  sleep 0.5 # perf attaches
  "${fio[@]}"
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  awk -F, -v n="$ios" -v w="$workload" '$1 + 0 > 0 {
      sub("syscalls:sys_enter_", "", $3); total += $1
      if ($1 / n >= 0.005) printf "  %-16s %6.2f per I/O\n", $3, $1 / n }
    END { printf "%s: %.2f system calls per I/O\n", w, total / n }' "$out/perf.csv"
fi
