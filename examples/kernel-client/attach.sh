#!/usr/bin/env bash
# Attaches a dst volume as a block device with the Linux kernel's NBD client,
# or detaches it (docs/kernel-client.md). Run as root; needs nbd-client.
#   attach.sh HOST[:PORT] VOLUME [DEVICE]   e.g. attach.sh agg vol0 /dev/nbd0
#   attach.sh HOST[:PORT] '' [DEVICE]       the aggregator's default volume
#   attach.sh -d [DEVICE]                   detach (unmount the device first)
set -euo pipefail

die() {
  echo "attach.sh: $*" >&2
  exit 1
}

# The file system on the device must be gone first: a detach under a
# mounted file system leaves it with I/O errors.
detach() {
  local dev=${1:-/dev/nbd0}
  if findmnt -rn -S "$dev" >/dev/null; then
    die "$dev is mounted on $(findmnt -rn -o TARGET -S "$dev"); umount it first"
  fi
  nbd-client -d "$dev"
}

attach() {
  local server=$1 volume=$2 dev=${3:-/dev/nbd0}
  local host=${server%:*} port=10809
  [[ "$server" == *:* ]] && port=${server##*:}
  modprobe nbd
  if nbd-client -c "$dev" >/dev/null; then
    die "$dev is already connected; detach it with: attach.sh -d $dev"
  fi
  # -b 4096: whole 4 KiB blocks, so that the aggregator never has to merge a
  #   partial checksum block with a read.
  # -C 2: two connections; the aggregator advertises multi-conn.
  # No -t: a request deadline shorter than the aggregator's retry-window
  #   would turn an export node's restart into I/O errors.
  local args=("$host" "$port" "$dev" -b 4096 -C 2)
  [[ -n "$volume" ]] && args+=(-N "$volume")
  nbd-client "${args[@]}"
  echo "$dev: $(blockdev --getsize64 "$dev") bytes of ${volume:-the default volume} on $host:$port"
}

case "${1:-}" in
  -d) detach "${2:-}" ;;
  "" | -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    (($# >= 2)) || die "usage: attach.sh HOST[:PORT] VOLUME [DEVICE]"
    attach "$@"
    ;;
esac
