#!/usr/bin/env bash
# What a staging log buys when the members are slow: one export node (nbdkit, the dst plugin on
# a tmpfs file) behind nbdkit's delay filter (default 2 ms per write), `dst-aggregator serve
# --raw` over it without and with `--log` on tmpfs, and fio's nbd engine:
#   - 4 KiB random writes at QD1 (completion latency) and QD32 (IOPS), for RUNTIME seconds each;
#   - the destage rate: log bytes applied to the member per second in the 10 s after the writes
#     stop (status --json, pending_bytes);
#   - 4 KiB random reads at QD32 over what was written, with the data still in the log (every
#     read looked up in its index and read from the log) and without a log;
#   - the same writes with `--log-mode write-through` (a member read, a log record and the member
#     write before each acknowledgement), unless --no-write-through.
# See docs/benchmarks.md, "A staging log in front of slow members".
#
#   bench/stagelog.sh [--build-dir DIR] [--runtime SECONDS] [--delay 2ms] [--log-size 2G]
#                     [--no-write-through]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$repo/build-bench"
runtime=5
delay=2ms
log_size=2G
write_through=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-dir) build=$2; shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --delay) delay=$2; shift 2 ;;
    --log-size) log_size=$2; shift 2 ;;
    --no-write-through) write_through=0; shift ;;
    *) sed -n '2,15p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
done
[[ -x $build/aggregator/dst-aggregator ]] || {
  echo "bench/stagelog.sh: build $build first (dst-aggregator, nbdkit-dst-plugin)" >&2
  exit 1
}
source "$repo/bench/scratch.sh" stagelog

truncate -s 1G "$tmp/m0.img"
nbdkit --exit-with-parent -U "$tmp/m0.sock" --filter=delay "$build/nbdkit-plugin/nbdkit-dst-plugin.so" \
  file="$tmp/m0.img" size=1G name=m0 delay-write="$delay" >"$tmp/nbdkit.log" 2>&1 &
pids+=($!)
member="nbd+unix:///m0?socket=$tmp/m0.sock"
wait_for "$member"
volume="nbd+unix:///vol0?socket=$tmp/agg.sock"

# Starts the aggregator, with the extra serve arguments given.
start_aggregator() {
  rm -f "$tmp/agg.sock" "$tmp/control.sock"
  "$build/aggregator/dst-aggregator" serve --raw --control "$tmp/control.sock" --unix "$tmp/agg.sock" \
    --name vol0 "$@" "$member" >>"$tmp/agg.log" 2>&1 &
  agg=$!
  pids+=("$agg")
  wait_for "$volume"
}

stop_aggregator() {
  kill -TERM "$agg"
  wait "$agg" || true
}

# fio over the first 256 MiB: prints "IOPS MEAN_LATENCY_US".
run_fio() {
  local rw=$1 qd=$2
  fio --name=stagelog --ioengine=nbd --uri="$volume" --rw="$rw" --bs=4k --iodepth="$qd" \
    --size=256M --time_based --runtime="$runtime" --output-format=json --output="$tmp/fio.json" \
    >/dev/null
  /usr/bin/python3 - "$tmp/fio.json" "$rw" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = job["write" if "write" in sys.argv[2] else "read"]
print(f'{side["iops"]:.0f} {side["clat_ns"]["mean"] / 1000:.1f}')
EOF
}

status_field() {
  "$build/aggregator/dst-aggregator" status --json --control "$tmp/control.sock" |
    /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['volumes'][0]['staging_log']['$1'])"
}

echo "members: 1 (delay-write=$delay), runtime ${runtime} s per run, log $log_size on tmpfs"
start_aggregator
read -r plain_qd1_iops plain_qd1_lat < <(run_fio randwrite 1)
read -r plain_qd32_iops _ < <(run_fio randwrite 32)
read -r plain_read_iops _ < <(run_fio randread 32)
stop_aggregator

start_aggregator --log "$tmp/vol0.log" --log-size "$log_size"
read -r log_qd1_iops log_qd1_lat < <(run_fio randwrite 1)
read -r log_qd32_iops _ < <(run_fio randwrite 32)
# What QD32 left in the log is read back through its index, then destaged.
read -r log_read_iops _ < <(run_fio randread 32)
# The destage rate over 10 s (the member's delay makes a full drain long).
before=$(status_field pending_bytes)
sleep 10
after=$(status_field pending_bytes)
drained=$((before - after))
stop_aggregator

if [[ $write_through == 1 ]]; then
  rm -f "$tmp/vol0.log"
  start_aggregator --log "$tmp/vol0.log" --log-size "$log_size" --log-mode write-through
  read -r through_qd1_iops through_qd1_lat < <(run_fio randwrite 1)
  read -r through_qd32_iops _ < <(run_fio randwrite 32)
  stop_aggregator
fi

printf '| measure | without log | with log | ratio |\n|---|---:|---:|---:|\n'
printf '| 4K random write QD1, mean latency µs | %s | %s | %.2f× |\n' "$plain_qd1_lat" "$log_qd1_lat" \
  "$(echo "$log_qd1_lat / $plain_qd1_lat" | bc -l)"
printf '| 4K random write QD32, IOPS | %s | %s | %.2f× |\n' "$plain_qd32_iops" "$log_qd32_iops" \
  "$(echo "$log_qd32_iops / $plain_qd32_iops" | bc -l)"
printf '| 4K random read QD32, IOPS (with log: data in the log) | %s | %s | %.2f× |\n' \
  "$plain_read_iops" "$log_read_iops" "$(echo "$log_read_iops / $plain_read_iops" | bc -l)"
if [[ $write_through == 1 ]]; then
  printf '\n| measure | without log | write-through log | ratio |\n|---|---:|---:|---:|\n'
  printf '| 4K random write QD1, mean latency µs | %s | %s | %.2f× |\n' "$plain_qd1_lat" \
    "$through_qd1_lat" "$(echo "$through_qd1_lat / $plain_qd1_lat" | bc -l)"
  printf '| 4K random write QD32, IOPS | %s | %s | %.2f× |\n' "$plain_qd32_iops" \
    "$through_qd32_iops" "$(echo "$through_qd32_iops / $plain_qd32_iops" | bc -l)"
fi
printf 'destage: %s bytes of log applied in 10 s: %.2f MiB/s (%s bytes were pending)\n' "$drained" \
  "$(echo "$drained / 10 / 1048576" | bc -l)" "$before"
