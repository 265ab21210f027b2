#!/usr/bin/env bash
# guest-customize.sh ROOTFS PUBKEY_FILE - mmdebstrap customize hook, run on the
# HOST by build-image.sh with ROOTFS = the freshly bootstrapped guest tree.
# Makes the guest boot fast and headless and reachable over ssh through qemu
# user-mode networking. The iSCSI initiator is left as Debian ships it
# (iscsid.conf untouched): the collection must bound its own timeouts.
set -euo pipefail
R=$1
PUBKEY_FILE=$2
HERE=$(dirname "$(readlink -f "$0")")
in_root() { chroot "$R" "$@"; }
echo "[guest-customize] customizing $R"

# ssh access for root with the lab key.
install -d -m 700 "$R/root/.ssh"
install -m 600 "$PUBKEY_FILE" "$R/root/.ssh/authorized_keys"

echo lab > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lab\n' > "$R/etc/hosts"

# Root fs is /dev/vda (whole disk, ext4, label labroot); no fsck at boot.
printf 'LABEL=labroot / ext4 defaults,noatime 0 0\n' > "$R/etc/fstab"

# Static address on qemu's user network (slirp: guest 10.0.2.15, gw 10.0.2.2).
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/10-uplink.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
DNS=10.0.2.3
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
in_root systemctl enable systemd-networkd.service
in_root systemctl mask systemd-networkd-wait-online.service

# Root shell on the serial console (debugging only; ssh is the real access).
mkdir -p "$R/etc/systemd/system/serial-getty@ttyS0.service.d"
cat > "$R/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
EOF

# Journal in RAM only.
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' > "$R/etc/systemd/journald.conf.d/lab.conf"

# Units that only cost boot time in a throw-away VM.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer systemd-timesyncd.service getty@tty1.service; do
  in_root systemctl disable "$u" 2>/dev/null || true
done
# The stock LIO restore (targetctl) stays masked: it costs a ~20 s (TCG)
# python start on every boot. lab-target builds the config, saves it, and
# lab-target-restore.service (below) restores it only once there is one.
in_root systemctl mask rtslib-fb-targetctl.service
# Target-side modules at boot. The initiator side (iscsi_tcp, dm_multipath)
# is left to iscsid / multipathd exactly as on a real host.
printf 'configfs\ntarget_core_mod\ntarget_core_file\niscsi_target_mod\n' > "$R/etc/modules-load.d/lab-target.conf"

# The target fixture. lab-target.py has no shebang in the repo (ansible-test's shebang check allows no
# python3 one); the guest's python3 is /usr/bin/python3.
{ printf '#!/usr/bin/python3\n'; cat "$HERE/lab-target.py"; } > "$R/usr/local/sbin/lab-target"
chmod 755 "$R/usr/local/sbin/lab-target"
# lab-target saves the config after every change; this unit brings it back on
# a cold boot (boot.sh reboot): loop devices of iblock LUNs first, then the
# rtslib config. Nothing to do (and no python start) before the first save.
mkdir -p "$R/etc/rtslib-fb-target"
cat > "$R/etc/systemd/system/lab-target-restore.service" <<'EOF'
[Unit]
Description=brick lab: restore the LIO target config saved by lab-target
ConditionPathExists=|/etc/rtslib-fb-target/saveconfig.json
ConditionPathExists=|/var/lib/lab-target/loops.json
Requires=sys-kernel-config.mount
After=sys-kernel-config.mount systemd-modules-load.service local-fs.target network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-target restore

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable lab-target-restore.service

# Bytecode cache for Ansible's AnsiballZ payloads (lab speed only).
PYVER=$(in_root python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYSITE=$R/usr/local/lib/python$PYVER/dist-packages
install -d "$PYSITE"
install -m 644 "$HERE/lab_pyc_cache.py" "$PYSITE/lab_pyc_cache.py"
echo "import lab_pyc_cache" > "$PYSITE/lab_pyc_cache.pth"

# sshd: key-only root login, no DNS lookups.
cat > "$R/etc/ssh/sshd_config.d/lab.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
GSSAPIAuthentication no
MaxSessions 30
MaxStartups 30:50:60
EOF

# Baseline multipath config: WWID names, map as soon as a 2nd path appears.
cat > "$R/etc/multipath.conf" <<'EOF'
defaults {
    user_friendly_names no
    find_multipaths yes
}
EOF

# A fixed initiator name (every lab VM may share it).
echo "InitiatorName=iqn.1993-08.org.debian:01:brick-lab0001" > "$R/etc/iscsi/initiatorname.iscsi"

# Drop kernel modules no VM needs (GPU, sound, wifi, NIC drivers, ...);
# keep scsi, target, md/dm, block, virtio, net core, netfilter, fs.
KVER=$(find "$R/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | head -1)
K="$R/lib/modules/$KVER/kernel"
rm -rf "$K/sound" "$K/drivers/gpu" "$K/drivers/media" "$K/drivers/net/wireless" \
       "$K/drivers/net/ethernet" "$K/drivers/infiniband" "$K/drivers/staging" \
       "$K/drivers/bluetooth" "$K/net/bluetooth" "$K/net/wireless" "$K/net/mac80211" \
       "$K/drivers/usb" "$K/drivers/hid" "$K/drivers/iio" "$K/drivers/isdn" \
       "$K/drivers/video" "$K/drivers/mtd" "$K/drivers/input" "$K/drivers/hwmon" \
       "$K/drivers/thunderbolt" "$K/drivers/net/can" "$K/drivers/net/usb" \
       "$K/drivers/atm" "$K/drivers/comedi" "$K/drivers/accessibility"
rm -rf "$R/usr/lib/firmware" "$R/lib/firmware"
in_root depmod -a "$KVER"

# initramfs: only what mounting /dev/vda needs (MODULES=list comes from a
# setup hook in build-image.sh, before the kernel package is installed).
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> "$R/etc/initramfs-tools/modules"
in_root update-initramfs -u -k "$KVER"
echo "[guest-customize] done (kernel $KVER, python $PYVER)"
