#!/usr/bin/env bash
# The benchmark harness: fio's nbd engine against an export node directly, the
# aggregator over it, and other NBD proxies. See bench/README.md.
#
#   bench/run.sh [--quick] [--rounds N] [--runtime S] [--workloads W,...] [--configs C,...]
#   bench/run.sh --list            # the configurations and workloads
#   bench/run.sh --help            # every option
#
# Orchestration is bench/dstbench.py, run with Debian's /usr/bin/python3 and
# only its standard library.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python=/usr/bin/python3
if [[ ! -x $python ]]; then
  echo "bench/run.sh: $python is missing: apt-get install -y python3" >&2
  exit 1
fi
exec "$python" "$here/dstbench.py" "$@"
