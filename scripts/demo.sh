#!/usr/bin/env bash
# The main job on local defaults: builds dst, starts three export nodes
# (nbdkit with the dst plugin) on temporary files, formats them as one
# striped volume with end-to-end checksums, serves it with the aggregator,
# and has real NBD clients write data through the volume and read it back.
# Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build.sh
plugin=$PWD/build/nbdkit-plugin/nbdkit-dst-plugin.so
aggregator=$PWD/build/aggregator/dst-aggregator
work=$(mktemp -d /tmp/dst-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
wait_for() { for _ in $(seq 100); do [[ -e $1 ]] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; return 1; }

step "export nodes: nbdkit + dst plugin on three 32 MiB sparse files"
members=()
for i in 0 1 2; do
  nbdkit -f --exit-with-parent -U "$work/node$i.sock" -P "$work/node$i.pid" "$plugin" \
    file="$work/disk$i.img" size=32M name=disk$i description="demo disk $i" &
  pids+=($!)
  members+=("nbd+unix:///disk$i?socket=$work/node$i.sock")
done
for i in 0 1 2; do wait_for "$work/node$i.pid"; done
printf '%s\n' "${members[@]}"

step "create: volume vol0 striped over the three nodes (64 KiB chunks, crc32c checksums)"
"$aggregator" create --name vol0 --layout stripe --chunk 64K "${members[@]}"

step "aggregator: assemble vol0 from the superblocks (members given in another order) and serve it"
"$aggregator" serve --description "demo volume" --unix "$work/agg.sock" --control "$work/control.sock" \
  "${members[2]}" "${members[0]}" "${members[1]}" 2>"$work/agg.log" &
pids+=($!)
wait_for "$work/agg.sock"
sleep 0.2
cat "$work/agg.log"
uri="nbd+unix:///vol0?socket=$work/agg.sock"
nbdinfo "$uri" | grep -E 'export=|description|export-size|can_multi_conn|is_read_only'

step "write 48 MiB of random data with nbdcopy, read it back, compare"
head -c 48M /dev/urandom >"$work/in.bin"
nbdcopy --flush "$work/in.bin" "$uri"
nbdcopy "$uri" "$work/out.bin"
head -c 48M "$work/out.bin" | sha256sum | sed "s|-|read back (first 48 MiB)|"
sha256sum <"$work/in.bin" | sed "s|-|written|"
cmp -n 48M "$work/in.bin" "$work/out.bin"
echo "data read back equals data written"

step "the second 64 KiB chunk of the volume is the first chunk of disk1's data area (at 1 MiB)"
cmp -n 64K -i 64K:1M "$work/in.bin" "$work/disk1.img" && echo "stripe mapping as expected"

step "corrupt one byte of disk1's data area behind the aggregator's back: the read fails, never wrong data"
printf '\xff' | dd of="$work/disk1.img" bs=1 seek=$((1024 * 1024 + 100)) conv=notrunc status=none
if nbdcopy "$uri" "$work/out2.bin" 2>"$work/copy.err"; then
  echo "corruption was not detected" >&2
  exit 1
fi
grep -m1 "checksum mismatch" "$work/agg.log"

step "the running aggregator's view: dst-aggregator status"
"$aggregator" status --control "$work/control.sock"

step "allocation map of the volume (48 MiB data, the rest a hole: never written)"
nbdinfo --map "$uri"

step "stop the aggregator: checksums written back, volume marked clean"
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" || true
tail -1 "$work/agg.log"
"$aggregator" inspect "${members[0]}" | grep -E 'state'
echo
echo "demo OK"
