# shellcheck shell=sh
# The guest half of the kernel-client test (kernel_client_test.cc). It runs
# as /test/run under the /init of scripts/build-kernel-guest.sh (busybox sh,
# Debian's kernel, the host's nbd-client and e2fsprogs) and attaches the
# aggregator's volumes with the kernel's NBD client (nbd-client, and
# dst-aggregator map). /test/params sets HOST,
# PORT and, for each volume, its export name and size in bytes.
#
# Each case prints `dst-case NAME: PASS` or `dst-case NAME: FAIL: WHY`; the
# host asserts on those lines. `dst-mark copy-start NAME` and
# `dst-mark copy-done NAME` bracket the copy during which the host kills an
# export node (and, in some cases, restarts it).
# Cases share the guest's state: later ones read what earlier ones wrote.
# /test/params exists in the guest only; the cases run through run_case.
# shellcheck disable=SC1091,SC2317
. /test/params

DEV=/dev/nbd0
MNT=/mnt
SRC=/tmp/src
why=""

# Runs a command, showing its output only if it fails; a failure becomes
# the case's reason.
run() {
  "$@" >/tmp/run.out 2>&1
  rc=$?
  [ "$rc" -eq 0 ] && return 0
  sed 's/^/  | /' /tmp/run.out
  why="'$*' exited with $rc"
  return 1
}

# attach EXPORT SIZE [nbd-client options]: connects $DEV to the export
# ("" for the default export, i.e. no -N) and checks the size the kernel sees.
attach() {
  name=$1
  size=$2
  shift 2
  [ -n "$name" ] && set -- -N "$name" "$@"
  run nbd-client "$HOST" "$PORT" "$DEV" -b 4096 "$@" || return 1
  got=$(blockdev --getsize64 "$DEV")
  [ "$got" = "$size" ] || { why="$DEV has $got bytes, want $size"; return 1; }
}

detach() {
  run nbd-client -d "$DEV" || return 1
  # The device can be connected again once the kernel has let it go.
  tries=0
  while [ -e /sys/block/nbd0/pid ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && { why="$DEV still connected 10 s after nbd-client -d"; return 1; }
    sleep 0.1
  done
}

mount_fs() { run mount -t ext4 "$DEV" "$MNT"; }

# Writes everything out and lets go of the device.
unmount_and_detach() {
  run sync && run umount "$MNT" && detach
}

# new_set SET KIB...: one file of random data per size under $SRC/SET, and
# their checksums in /tmp/SET.sha256 (paths relative to the mount point).
new_set() {
  set_name=$1
  shift
  mkdir -p "$SRC/$set_name"
  n=0
  for kib in "$@"; do
    n=$((n + 1))
    dd if=/dev/urandom of="$SRC/$set_name/f$n" bs=1K count="$kib" status=none
  done
  (cd "$SRC" && sha256sum "$set_name"/*) >"/tmp/$set_name.sha256"
}

copy_set() { run cp -r "$SRC/$1" "$MNT/"; }

# copy_during_fault SET: copies the set's files between the marks the host
# waits for, to inject its fault meanwhile. O_DIRECT keeps I/O going to the
# members for the whole copy, instead of leaving it to a later writeback.
copy_during_fault() {
  run mkdir "$MNT/$1" || return 1
  echo "dst-mark copy-start $case_name"
  for file in "$SRC/$1"/*; do
    run dd if="$file" of="$MNT/$1/${file##*/}" bs=1M oflag=direct || return 1
  done
  echo "dst-mark copy-done $case_name"
}

# verify SET...: the files on the mounted volume match their checksums.
verify() {
  for set_name in "$@"; do
    (cd "$MNT" && sha256sum -c "/tmp/$set_name.sha256") >/tmp/run.out 2>&1 && continue
    sed 's/^/  | /' /tmp/run.out
    why="set $set_name does not match its checksums"
    return 1
  done
}

# reconnect_and_check EXPORT SIZE SETS [-- nbd-client options]: attaches
# again, checks the file system without changing it, and verifies the sets.
reconnect_and_check() {
  name=$1
  size=$2
  sets=$3
  shift 3
  attach "$name" "$size" "$@" || return 1
  run fsck.ext4 -fn "$DEV" || return 1
  mount_fs || return 1
  # shellcheck disable=SC2086 # sets is a list
  verify $sets || return 1
  run umount "$MNT" && detach
}

# The kernel must not have reported an error on the device or the file system.
kernel_log_clean() {
  dmesg | grep -E 'I/O error|blk_update_request|EXT4-fs (error|warning)|nbd.*(timed out|Dead connection|failed)' \
    >/tmp/kernel.out || return 0
  sed 's/^/  | /' /tmp/kernel.out
  why="the kernel logged errors"
  return 1
}

# ---------------------------------------------------------------------------
# Cases.

# A new file system on the linear volume, attached by name; large enough a
# file that it crosses from the first member into the second.
linear_named() {
  new_set a 1 100 3072 40960
  attach "$LINEAR" "$LINEAR_SIZE" || return 1
  run mkfs.ext4 -q "$DEV" || return 1
  mount_fs && copy_set a && unmount_and_detach || return 1
  reconnect_and_check "$LINEAR" "$LINEAR_SIZE" a
}

# The same volume through the default export: nbd-client without -N asks for
# the empty name, which the aggregator maps to its default volume.
linear_default() {
  reconnect_and_check "" "$LINEAR_SIZE" a
}

# The striped volume over two connections (-C 2), which the kernel uses at
# once: the aggregator must order nothing across them.
stripe_two_connections() {
  new_set b 1 100 3072 20480
  attach "$STRIPE" "$STRIPE_SIZE" -C 2 || return 1
  run mkfs.ext4 -q "$DEV" || return 1
  mount_fs && copy_set b && unmount_and_detach || return 1
  reconnect_and_check "$STRIPE" "$STRIPE_SIZE" b -C 2
}

# A copy onto the striped volume during which the host kills an export node
# and restarts it: the copy only slows down.
stripe_member_restart() {
  new_set c 49152
  attach "$STRIPE" "$STRIPE_SIZE" -C 2 || return 1
  mount_fs && copy_during_fault c || return 1
  unmount_and_detach || return 1
  reconnect_and_check "$STRIPE" "$STRIPE_SIZE" "b c" -C 2
}

# A new file system on the mirror of two copies, and a copy onto it during
# which the host kills one copy's export node for good: writes wait until the
# aggregator gives up on that copy (--degrade-after) and go on with the other
# one. Nothing fails, and the files check out on the copy that is left.
mirror_member_killed() {
  new_set e 1 100 3072
  new_set f 8192 16384 16384 24576
  attach "$MIRROR" "$MIRROR_SIZE" -C 2 || return 1
  run mkfs.ext4 -q "$DEV" || return 1
  mount_fs && copy_set e && copy_during_fault f || return 1
  unmount_and_detach || return 1
  reconnect_and_check "$MIRROR" "$MIRROR_SIZE" "e f" -C 2
}

# The mirror again, left with one copy by the case before: a copy onto it
# during which the host replaces that copy, live, by a new export node (member
# replace), rebuilt beside it while the copy goes on, which then takes its
# slot. Nothing fails, and every set checks out, read from the new copy.
mirror_member_replaced() {
  new_set g 8192 8192 16384
  attach "$MIRROR" "$MIRROR_SIZE" -C 2 || return 1
  mount_fs && copy_during_fault g || return 1
  unmount_and_detach || return 1
  reconnect_and_check "$MIRROR" "$MIRROR_SIZE" "e f g" -C 2
}

# A raw volume: the members as they are, without dst's checksums.
raw_linear() {
  new_set d 1 100 8192
  attach "$RAW" "$RAW_SIZE" || return 1
  run mkfs.ext4 -q "$DEV" || return 1
  mount_fs && copy_set d && unmount_and_detach || return 1
  reconnect_and_check "$RAW" "$RAW_SIZE" d
}

# ---------------------------------------------------------------------------
# dst-aggregator map, unmap and list-mapped (the host's build, in /usr/sbin).

# map_volume VOLUME [map options]: maps the volume; the device it printed in
# $mapped, which must be /dev/nbdN with the volume's size ($2 of expect_size).
map_volume() {
  dst-aggregator map --connect "$HOST:$PORT" "$@" >/tmp/map.out 2>/tmp/map.err
  rc=$?
  if [ "$rc" -ne 0 ]; then
    sed 's/^/  | /' /tmp/map.err
    why="'dst-aggregator map $*' exited with $rc"
    return 1
  fi
  mapped=$(cat /tmp/map.out)
  case "$mapped" in
    /dev/nbd[0-9]*) ;;
    *) why="map printed '$mapped', not a device" && return 1 ;;
  esac
}

# expect_size DEVICE BYTES: the size and the 4 KiB sectors the kernel shows.
expect_size() {
  got=$(blockdev --getsize64 "$1")
  [ "$got" = "$2" ] || { why="$1 has $got bytes, want $2"; return 1; }
  got=$(blockdev --getss "$1")
  [ "$got" = 4096 ] || { why="$1 has $got-byte sectors, want 4096"; return 1; }
}

# expect_gone DEVICE: the kernel has let the device go (unmap waits for it).
expect_gone() {
  [ ! -e "/sys/block/${1#/dev/}/pid" ] || { why="$1 still connected after unmap"; return 1; }
}

# expect_error WANT COMMAND...: the command fails with one error line holding WANT.
expect_error() {
  want=$1
  shift
  if "$@" >/tmp/run.out 2>/tmp/run.err; then
    why="'$*' succeeded"
    return 1
  fi
  lines=$(wc -l </tmp/run.err)
  if [ "$lines" -ne 1 ] || ! grep -qF "$want" /tmp/run.err; then
    sed 's/^/  | /' /tmp/run.err
    why="'$*' did not fail with one line saying: $want"
    return 1
  fi
}

# A new file system on the raw volume through `dst-aggregator map` (a device
# the kernel picks), list-mapped, unmap by device; then mapped again onto a
# device named, over two connections, checked, and unmapped by volume name.
map_raw() {
  new_set h 1 100 4096
  map_volume "$RAW" && expect_size "$mapped" "$RAW_SIZE" || return 1
  run mkfs.ext4 -q "$mapped" || return 1
  run mount -t ext4 "$mapped" "$MNT" && copy_set h && run sync && run umount "$MNT" || return 1
  run dst-aggregator list-mapped || return 1
  if ! grep -q "^$mapped  *$RAW  *48 MiB  *1  *[0-9][0-9]*  $HOST:$PORT\$" /tmp/run.out; then
    sed 's/^/  | /' /tmp/run.out
    why="list-mapped does not show $mapped"
    return 1
  fi
  run dst-aggregator unmap "$mapped" && expect_gone "$mapped" || return 1
  map_volume "$RAW" --device /dev/nbd5 --connections 2 || return 1
  [ "$mapped" = /dev/nbd5 ] || { why="map --device /dev/nbd5 printed $mapped"; return 1; }
  expect_size /dev/nbd5 "$RAW_SIZE" || return 1
  run dst-aggregator list-mapped --json || return 1
  if ! grep -qF "\"device\": \"/dev/nbd5\", \"volume\": \"$RAW\", \"endpoint\": \"$HOST:$PORT\", \"size_bytes\": $RAW_SIZE, \"connections\": 2" /tmp/run.out; then
    sed 's/^/  | /' /tmp/run.out
    why="list-mapped --json does not show /dev/nbd5 with two connections"
    return 1
  fi
  run fsck.ext4 -fn /dev/nbd5 && run mount -t ext4 /dev/nbd5 "$MNT" || return 1
  verify h && run umount "$MNT" || return 1
  run dst-aggregator unmap "$RAW" && expect_gone /dev/nbd5
}

# map's and unmap's refusals: an unknown volume, a device nbd-client holds, a
# device map holds; unmap of a device dst did not map.
map_errors() {
  expect_error "unknown volume 'nope'" dst-aggregator map --connect "$HOST:$PORT" nope || return 1
  run nbd-client "$HOST" "$PORT" /dev/nbd6 -N "$LINEAR" -b 4096 || return 1
  expect_error "/dev/nbd6 is busy" \
    dst-aggregator map --connect "$HOST:$PORT" --device /dev/nbd6 "$RAW" || return 1
  expect_error "/dev/nbd6 was not mapped by dst-aggregator" dst-aggregator unmap /dev/nbd6 ||
    return 1
  run nbd-client -d /dev/nbd6 || return 1
  map_volume "$RAW" --device /dev/nbd7 || return 1
  expect_error "/dev/nbd7 is busy: mapped to volume $RAW at $HOST:$PORT" \
    dst-aggregator map --connect "$HOST:$PORT" --device /dev/nbd7 "$LINEAR" || return 1
  run dst-aggregator unmap /dev/nbd7 && expect_gone /dev/nbd7
}

# run_case NAME FUNCTION: runs one case and reports it; a failed case leaves
# the device free for the next one.
run_case() {
  case_name=$1
  why=""
  dmesg -c >/dev/null
  echo "dst-case $1: start at $(cut -d' ' -f1 /proc/uptime) s"
  if $2 && kernel_log_clean; then
    echo "dst-case $1: PASS"
    return 0
  fi
  echo "dst-case $1: FAIL: $why"
  umount "$MNT" 2>/dev/null
  nbd-client -d "$DEV" >/dev/null 2>&1
  failed=1
}

failed=0
run_case linear-named linear_named
run_case linear-default linear_default
run_case stripe-two-connections stripe_two_connections
run_case stripe-member-restart stripe_member_restart
run_case mirror-member-killed mirror_member_killed
run_case mirror-member-replaced mirror_member_replaced
run_case raw-linear raw_linear
run_case map-raw map_raw
run_case map-errors map_errors
exit "$failed"
