# Sourced by the bench scripts that run their own export nodes and aggregator: a scratch
# directory on tmpfs ($tmp), the processes to stop at exit ($pids, appended by the script), and
# waiting for an NBD export to answer.
#   source bench/scratch.sh NAME   # $tmp is /dev/shm/dst-NAME.XXXXXX, removed at exit
tmp=$(mktemp -d "/dev/shm/dst-$1.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Waits up to 30 s for the NBD URI $1 to answer; exits the script otherwise.
wait_for() {
  for _ in $(seq 300); do nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "${0##*/}: $1 did not answer" >&2
  exit 1
}
