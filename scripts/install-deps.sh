#!/usr/bin/env bash
# Installs every Debian package that dst's build, tests and demo need.
# Idempotent: packages already present are skipped, so it is cheap to run
# before every build. Must run as root (or through sudo) on Debian 12.
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build pkg-config git clang-format
  # libraries
  libnbd-dev nbdkit-plugin-dev libasio-dev libcrypto++-dev doctest-dev
  libcli11-dev libtomlplusplus-dev libisal-dev libssl-dev
  # the cluster catalog: JSON for etcd's v3 gateway, and a real etcd for the tests
  nlohmann-json3-dev etcd-server etcd-client
  # `map`: the kernel's generic netlink NBD interface
  libnl-3-dev libnl-genl-3-dev
  # fuzz targets (libFuzzer ships with clang's runtime)
  clang libclang-rt-14-dev
  # real peers and clients used by the tests and the demo
  nbdkit libnbd-bin python3-libnbd qemu-utils fio nbd-server
  gnutls-bin openssl
  # the kernel-client test: a stock Debian kernel booted under qemu
  qemu-system-x86 busybox-static nbd-client e2fsprogs cpio kmod
  iproute2 procps
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
