#!/usr/bin/env bash
# build-image.sh - build the Debian 12 guest image for the brick.storage lab.
#
# Produces, in $LAB_DIR (default /var/tmp/brick-lab, outside the git tree):
#   vmlinuz      guest kernel (Debian linux-image-amd64, 6.1)
#   initrd.img   small initramfs (virtio + ext4 only)
#   root.raw     ext4 root filesystem (raw, no partition table)
#   id_ed25519   ssh key root@guest accepts
#   image.stamp  cache key: hash of the image inputs (this script,
#                guest-customize.sh, lab-target.py, lab_pyc_cache.py, package list)
#
# No loop mounts: mmdebstrap fills a directory, `mkfs.ext4 -d` turns it into
# an image. With unchanged inputs and an existing image this is a no-op, so CI
# may keep $LAB_DIR between runs. FORCE=1 rebuilds anyway.
set -euo pipefail

LAB_DIR=${LAB_DIR:-/var/tmp/brick-lab}
SUITE=${SUITE:-bookworm}
IMG_SIZE=${IMG_SIZE:-3G}
KERNEL_PKG=${KERNEL_PKG:-linux-image-amd64}
FORCE=${FORCE:-0}
HERE=$(dirname "$(readlink -f "$0")")

# Guest packages. The generic kernel (not -cloud-amd64: that one has no
# scsi_dh_alua, which multipath-tools' LIO-ORG defaults want). No tgt: LIO
# (targetcli-fb / rtslib-fb) is the only target, so port 3260 is unambiguous.
PKGS=(
  systemd-sysv udev kmod dbus "$KERNEL_PKG" initramfs-tools
  open-iscsi multipath-tools kpartx targetcli-fb
  psmisc parted gdisk e2fsprogs util-linux sg3-utils lsscsi
  openssh-server sudo python3 iproute2 iptables procps qemu-utils
)

T0=$(date +%s.%N)
log() { awk -v a="$T0" -v b="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "[build-image +%5.1fs] %s\n", b-a, m}'; }

# Host tools (idempotent; ~15-20 s on a fresh machine).
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v ssh >/dev/null || need+=(openssh-client)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  log "installing host packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"; }
  log "host packages installed"
fi

mkdir -p "$LAB_DIR"
stamp=$( { cat "$HERE/build-image.sh" "$HERE/guest-customize.sh" "$HERE/lab-target.py" "$HERE/lab_pyc_cache.py"
           echo "${PKGS[*]} $SUITE $IMG_SIZE"; } | sha256sum | cut -c1-16)
if [ "$FORCE" != 1 ] && [ -f "$LAB_DIR/image.stamp" ] && [ "$(cat "$LAB_DIR/image.stamp")" = "$stamp" ] \
   && [ -f "$LAB_DIR/root.raw" ] && [ -f "$LAB_DIR/vmlinuz" ] && [ -f "$LAB_DIR/initrd.img" ]; then
  log "image cache hit ($stamp) in $LAB_DIR"
  exit 0
fi
log "building image $stamp in $LAB_DIR (inputs changed or no image yet)"
rm -f "$LAB_DIR/image.stamp"

[ -f "$LAB_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C brick-lab -f "$LAB_DIR/id_ed25519"

ROOTFS=$LAB_DIR/rootfs
rm -rf "$ROOTFS"

# The guest's packages come from the host's own Debian sources.
SOURCES=/etc/apt/sources.list.d/debian.sources
[ -f "$SOURCES" ] || SOURCES=/etc/apt/sources.list

# Progress ticker: mmdebstrap is quiet for long stretches.
( while sleep 15; do log "mmdebstrap still running..."; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT

log "step: mmdebstrap ${#PKGS[@]} packages (typically 85-130 s)"
# shellcheck disable=SC2016  # the hooks' $1 (the new rootfs) is expanded by mmdebstrap's shell, not here
mmdebstrap --variant=apt --mode=root \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --aptopt='Apt::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --include="$(IFS=,; echo "${PKGS[*]}")" \
  --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d"' \
  --setup-hook='printf "MODULES=list\nCOMPRESS=gzip\n" > "$1/etc/initramfs-tools/conf.d/lab.conf"' \
  --customize-hook="$HERE/guest-customize.sh \"\$1\" '$LAB_DIR/id_ed25519.pub'" \
  "$SUITE" "$ROOTFS" "$SOURCES"
kill $ticker 2>/dev/null || true
log "mmdebstrap done"

# Kernel + initrd live outside the image: qemu boots them with -kernel/-initrd.
cp -L "$ROOTFS"/boot/vmlinuz-* "$LAB_DIR/vmlinuz"
cp -L "$ROOTFS"/boot/initrd.img-* "$LAB_DIR/initrd.img"
# Package versions in the image, for reports.
# shellcheck disable=SC2016  # ${Package} ${Version} is dpkg-query's format syntax, not shell
chroot "$ROOTFS" dpkg-query -W -f '${Package} ${Version}\n' > "$LAB_DIR/packages.txt"

log "step: mkfs.ext4 -d ($IMG_SIZE)"
rm -f "$LAB_DIR/root.raw"
mkfs.ext4 -q -L labroot -d "$ROOTFS" "$LAB_DIR/root.raw" "$IMG_SIZE"
rm -rf "$ROOTFS"

echo "$stamp" > "$LAB_DIR/image.stamp"
log "image ready: root.raw $(du -h "$LAB_DIR/root.raw" | cut -f1) allocated, kernel $(grep '^linux-image-[0-9]' "$LAB_DIR/packages.txt" | head -1)"
