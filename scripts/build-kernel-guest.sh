#!/usr/bin/env bash
# Builds the guest that the kernel-client test (tests/kernel/) boots under
# qemu: Debian 12's stock kernel and a busybox initramfs holding the modules
# the test needs (nbd, virtio-net, ext4), the host's nbd-client, mkfs.ext4
# and fsck.ext4 with their shared libraries, and a generic /init.
#
#   scripts/build-kernel-guest.sh     prints the directory holding vmlinuz and initrd.cpio
#
# The /init runs the script named by `dst.script=PATH` on the kernel command
# line (default /test/run), which the caller appends to initrd.cpio as a
# second cpio archive (the kernel unpacks both into the same root), then
# prints `dst-guest: exit CODE` and powers the machine off.
#
# The result is cached in ${DST_GUEST_CACHE:-$HOME/.cache/dst/kernel-guest}/KVER
# and rebuilt only when this script, the kernel or the packages copied into
# the guest change. The only download is the kernel package, through apt.
set -euo pipefail

script_path=$(readlink -f "$0")
cache=${DST_GUEST_CACHE:-$HOME/.cache/dst/kernel-guest}
# Host programs that run in the guest; their libraries are found with ldd.
guest_tools=(/usr/sbin/nbd-client /usr/sbin/mke2fs /usr/sbin/e2fsck)
# Packages whose files end up in the guest: a new version means a rebuild.
guest_packages=(busybox-static nbd-client e2fsprogs libc6)
# The modules to load, dependencies first (resolved with depmod/modprobe).
# crc32c_generic is named because ext4 reaches crc32c only through a soft
# dependency, which busybox's insmod does not follow.
guest_modules=(virtio_pci virtio_net nbd crc32c_generic ext4)

log() { echo "build-kernel-guest: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# linux-image-amd64 is a metapackage; its dependency names the kernel
# package of the day, e.g. linux-image-6.1.0-56-amd64.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

resolve_kernel_package() {
  local pkg
  pkg=$(kernel_package)
  if [[ -z "$pkg" ]]; then
    # A fresh machine may have no package lists yet.
    [[ $(id -u) -eq 0 ]] || die "linux-image-amd64 unknown to apt; run apt-get update as root"
    log "apt-get update"
    apt-get update -qq >&2
    pkg=$(kernel_package)
  fi
  [[ -n "$pkg" ]] || die "cannot resolve linux-image-amd64's kernel package"
  echo "$pkg"
}

# What the cached guest was built from.
build_stamp() {
  local pkg=$1
  {
    sha256sum "$script_path" | cut -d' ' -f1
    apt-cache policy "$pkg" | awk '/Candidate:/ { print "'"$pkg"'=" $2 }'
    dpkg-query -W -f='${Package}=${Version}\n' "${guest_packages[@]}"
  } 2>/dev/null
}

# Extracts vmlinuz and all modules of the kernel package into $1.
fetch_kernel() {
  local pkg=$1 dest=$2 dl
  dl=$(mktemp -d)
  # apt drops privileges to _apt for downloads, which cannot write a
  # private temporary directory; let it.
  chmod 0777 "$dl"
  log "downloading $pkg"
  (cd "$dl" && apt-get download -qq "$pkg" >&2) || die "apt-get download $pkg failed"
  dpkg-deb -x "$dl"/*.deb "$dest"
  rm -rf "$dl"
}

# Prints the .ko files of guest_modules and their dependencies, in load order
# and without duplicates, relative to the kernel tree $1.
module_load_order() {
  local tree=$1 kver=$2 mod
  for mod in "${guest_modules[@]}"; do
    modprobe -d "$tree" -S "$kver" --ignore-install --show-depends "$mod"
  done | awk '$1 == "insmod" { print $2 }' |
    grep -v '/crc32c-intel\.ko$' | # needs SSE4.2, which qemu's default CPU lacks
    awk '!seen[$0]++' | sed "s|^$tree||"
}

# Copies a program and every shared library it needs into the root $1.
copy_with_libs() {
  local root=$1 prog=$2 lib
  install -D -m 0755 "$prog" "$root$prog"
  for lib in $(ldd "$prog" | awk '/=>/ { print $3 } /^\t\// { print $1 }'); do
    [[ -e "$root$lib" ]] || install -D -m 0755 "$lib" "$root$lib"
  done
}

write_init() {
  cat >"$1" <<'EOF'
#!/bin/sh
# /init of the dst test guest (scripts/build-kernel-guest.sh).
export PATH=/usr/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

while read -r mod; do
  insmod "$mod" || echo "dst-guest: insmod $mod failed"
done </etc/dst-guest/modules

# qemu's user-mode network: the host's loopback is 10.0.2.2.
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

script=/test/run
for word in $(cat /proc/cmdline); do
  case "$word" in dst.script=*) script=${word#dst.script=} ;; esac
done
echo "dst-guest: running $script"
sh "$script"
echo "dst-guest: exit $?"
sync
poweroff -f
EOF
  chmod 0755 "$1"
}

# Builds the guest for kernel package $1 into directory $2.
build_guest() {
  local pkg=$1 out=$2 kver=${1#linux-image-} tree root mod applet tool
  tree=$out/kernel
  root=$out/root
  mkdir -p "$tree" "$root"/{bin,dev,etc/dst-guest,mnt,proc,sys,tmp,usr/sbin}
  fetch_kernel "$pkg" "$tree"
  cp "$tree/boot/vmlinuz-$kver" "$out/vmlinuz"
  depmod -b "$tree" "$kver"

  module_load_order "$tree" "$kver" >"$root/etc/dst-guest/modules"
  while read -r mod; do
    install -D -m 0644 "$tree$mod" "$root$mod"
  done <"$root/etc/dst-guest/modules"

  install -m 0755 /bin/busybox "$root/bin/busybox"
  for applet in $(busybox --list); do
    [[ -e "$root/bin/$applet" ]] || ln -s busybox "$root/bin/$applet"
  done
  for tool in "${guest_tools[@]}"; do
    copy_with_libs "$root" "$tool"
  done
  ln -s mke2fs "$root/usr/sbin/mkfs.ext4"
  ln -s e2fsck "$root/usr/sbin/fsck.ext4"
  cp /etc/mke2fs.conf "$root/etc/"
  write_init "$root/init"

  # Uncompressed: qemu loads it as is and the kernel unpacks it without
  # spending emulated CPU time on decompression.
  (cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet) >"$out/initrd.cpio"
  rm -rf "$tree" "$root"
}

main() {
  local pkg kver out stamp tmp
  pkg=$(resolve_kernel_package)
  kver=${pkg#linux-image-}
  out=$cache/$kver
  stamp=$(build_stamp "$pkg")
  mkdir -p "$cache"
  # One build at a time; a second caller waits and then finds the result.
  exec 9>"$cache/.lock"
  flock 9
  if [[ -f "$out/stamp" && "$(cat "$out/stamp")" == "$stamp" ]]; then
    echo "$out"
    return
  fi
  log "building the guest for $pkg in $out"
  tmp=$(mktemp -d "$cache/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  build_guest "$pkg" "$tmp"
  echo "$stamp" >"$tmp/stamp"
  rm -rf "$out"
  mv "$tmp" "$out"
  trap - EXIT
  log "done: $(du -sh "$out" | cut -f1)"
  echo "$out"
}

main "$@"
