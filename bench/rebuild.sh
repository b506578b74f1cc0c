#!/usr/bin/env bash
# Rebuild benchmark: a full rebuild of a mirror copy (serve --discard 1) with
# idle clients, timed from its start line to its done line, against nbdcopy
# copying the same member export to another. See bench/README.md ("Rebuild").
#
#   bench/rebuild.sh [--size 1G] [--written 256M] [--rounds 3] [--no-build]
#   bench/rebuild.sh --help
#
# Orchestration is bench/rebuild.py (with bench/dstbench.py's helpers), run
# with Debian's /usr/bin/python3 and only its standard library.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=/usr/bin/python3
if [[ ! -x $python ]]; then
  echo "bench/rebuild.sh: $python is missing: apt-get install -y python3" >&2
  exit 1
fi
exec "$python" "$here/rebuild.py" "$@"
