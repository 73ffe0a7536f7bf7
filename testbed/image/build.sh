#!/usr/bin/env bash
# The recipe of the emulated Raspberry Pi OS image: builds its root filesystem into ROOTFS.
#   build.sh ROOTFS MIRROR
# scripts/testbed-image hashes this directory to decide when to rebuild.
set -euo pipefail
rootfs=$1 mirror=$2
here=$(cd "$(dirname "$0")" && pwd)

include=$(grep -v '^#' "$here/packages.txt" | paste -sd, -)
debootstrap --arch=arm64 --variant=minbase --include="$include" bookworm "$rootfs" "$mirror"

# Raspberry Pi OS stand-ins: boot firmware files, vcgencmd, raspi-config's boot-time governor,
# sysfs semantics for the bind-mounted stand-ins.
cp -a "$here/rootfs/." "$rootfs/"
chown -R root:root "$rootfs/boot" "$rootfs/usr/bin/vcgencmd" "$rootfs/usr/lib/pi-standins" "$rootfs/etc/systemd/system"
systemctl --root="$rootfs" enable pi-sysfs-standin.service vcgencmd-standin-boot.service raspi-config.service \
  tryboot-standin.service pi-watchdog-standin.service
# Raspberry Pi OS names the host raspberrypi; the container runtime manages these files.
echo raspberrypi >"$rootfs/etc/hostname"
# The user Raspberry Pi Imager creates: sudo without a password, as in 010_pi-nopasswd.
chroot "$rootfs" useradd --create-home --shell /bin/bash --groups sudo,video,adm pi
echo 'pi ALL=(ALL) NOPASSWD: ALL' >"$rootfs/etc/sudoers.d/010_pi-nopasswd"
chmod 0440 "$rootfs/etc/sudoers.d/010_pi-nopasswd"
rm -f "$rootfs/etc/machine-id" && touch "$rootfs/etc/machine-id"
# Package lists stay, as on a Raspberry Pi OS image: --check can tell what apt would install.
chroot "$rootfs" apt-get update -qq
chroot "$rootfs" apt-get clean
