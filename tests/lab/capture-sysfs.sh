#!/usr/bin/env bash
# capture-sysfs.sh - runs INSIDE the lab guest:  boot.sh ssh 'bash -s' < capture-sysfs.sh
# Logs in to both portals (stock open-iscsi settings), waits for the 2-path
# dm-multipath maps, dumps the real sysfs / udev / device-mapper layout
# (raw material for real-sysfs-notes.txt and for simulators), then cleans up.
set -uo pipefail
T=iqn.2003-01.org.linux-iscsi.lab:target1
P1=127.0.0.1:3260
P2=127.0.0.2:3260
T0=$(date +%s.%N)
sec() { echo; echo "===== $* ===== [+$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s]"; }
run() { echo "\$ $*"; eval "$*" 2>&1; }  # the arguments are one shell command line (pipes, redirections)
dumpattrs() {  # every regular file directly in dir $1: name = value
  local d=$1 f mode
  for f in "$d"/*; do
    [ -f "$f" ] || continue
    mode=$(stat -c %A "$f")
    if [ "${mode:1:1}" != r ]; then
      printf '%-34s   (write-only, mode %s)\n' "$(basename "$f")" "$mode"
    elif LC_ALL=C grep -qaP '[^\x09\x0a\x20-\x7e]' "$f" 2>/dev/null; then
      printf '%-34s   (binary, %s bytes)\n' "$(basename "$f")" "$(wc -c < "$f")"
    else
      printf '%-34s = %s\n' "$(basename "$f")" "$(tr '\n\0' '  ' < "$f" 2>&1 | sed 's/ *$//')"
    fi
  done
  echo "-- subdirs/links: $(find "$d/" -mindepth 1 -maxdepth 1 \( -type d -o -type l \) -printf '%f ' 2>/dev/null)"
}

sec "guest"
run uname -r
run iscsiadm --version
run "multipath -h 2>&1 | head -1"
run cat /etc/iscsi/initiatorname.iscsi

sec "login on both portals (stock iscsid.conf)"
run iscsiadm -m discovery -t sendtargets -p $P1
run iscsiadm -m node -T $T -p $P1 --login
run iscsiadm -m node -T $T -p $P2 --login
sec "waiting for 2 maps x 2 active paths, /dev/mapper links and an idle udev queue"
for _ in $(seq 1 60); do
  act=$(multipath -ll 2>/dev/null | grep -cE 'active ready +running')
  links=$(find /dev/mapper -mindepth 1 -maxdepth 1 ! -name control | wc -l)
  if [ "$act" -ge 4 ] && [ "$links" -ge 2 ] && udevadm settle -t 0 2>/dev/null; then break; fi
  sleep 2
done
sec "ready: active paths=$act mapper links=$links"
run multipath -ll

sec "sessions"
run iscsiadm -m session
run iscsiadm -m session -P 3
sec "class dirs"
run find /sys/class/iscsi_session/ /sys/class/iscsi_host/ -maxdepth 1 -ls
run find /sys/class/iscsi_connection/ /sys/class/scsi_host/ /sys/class/iscsi_transport/ /sys/class/iscsi_endpoint/ /sys/class/iscsi_iface/ -maxdepth 1 -ls
for s in /sys/class/iscsi_session/session*; do run readlink -f "$s"; done
for c in /sys/class/iscsi_connection/*; do run readlink -f "$c"; done
for h in /sys/class/iscsi_host/*; do run readlink -f "$h"; done

sec "device tree of the first session"
S=$(find /sys/class/iscsi_session/ -mindepth 1 -maxdepth 1 -name 'session*' | sort | head -1)
SN=$(basename "$S")
SD=$(readlink -f "$S/device")
run readlink -f "$S/device"
run "find $(dirname "$SD") -maxdepth 5 -not -path '*/power*' -not -path '*/queue/*' -not -path '*/mq/*' | head -200"

sec "attributes: /sys/class/iscsi_session/$SN"
dumpattrs "$S"
C=$(find /sys/class/iscsi_connection/ -mindepth 1 -maxdepth 1 -name "connection${SN#session}:*" | sort | head -1)
sec "attributes: $C"
dumpattrs "$C"
H=$(find "$SD/../iscsi_host" -mindepth 1 -maxdepth 1 -name 'host*' 2>/dev/null | sort | head -1)
[ -n "$H" ] || H=/sys/class/iscsi_host/$(basename "$(dirname "$SD")")
sec "attributes: $H"
dumpattrs "$H"
sec "attributes: /sys/class/scsi_host/$(basename "$H")"
dumpattrs "/sys/class/scsi_host/$(basename "$H")"

sec "block devices"
run 'readlink -f /sys/block/sd*'
run 'readlink -f /sys/block/dm-*'
run ls -l /dev/disk/by-id /dev/disk/by-path /dev/mapper
run lsblk -o NAME,KNAME,MAJ:MIN,TYPE,SIZE,WWN,VENDOR,MODEL,SERIAL,HCTL,TRAN
run 'lsscsi -t -g 2>/dev/null || lsscsi'

SDX=$(basename "$(readlink -f "/dev/disk/by-path/ip-$P1-iscsi-$T-lun-0")")
sec "attributes: /sys/block/$SDX/device (scsi_device of LUN 0 via $P1)"
dumpattrs "/sys/block/$SDX/device"
sec "attributes: /sys/block/$SDX"
dumpattrs "/sys/block/$SDX"
run ls "/sys/block/$SDX/holders" "/sys/block/$SDX/device/scsi_disk" "/sys/block/$SDX/device/scsi_generic" 2>&1
run udevadm info --query=property "--name=/dev/$SDX"

WWID=$(/lib/udev/scsi_id --whitelisted "--device=/dev/$SDX")
DM=$(basename "$(readlink -f "/dev/mapper/$WWID")")
sec "dm-multipath map $WWID ($DM)"
dumpattrs "/sys/block/$DM"
echo "-- dm/"; dumpattrs "/sys/block/$DM/dm"
run ls -l "/sys/block/$DM/slaves" "/sys/block/$DM/holders"
run dmsetup table "$WWID"
run dmsetup status "$WWID"
run dmsetup info "$WWID"
run udevadm info --query=property "--name=/dev/$DM"
run multipathd show paths
run multipathd show maps
run 'multipathd show paths format "%d %w %i %t %T %o %a %r %s"'
run cat /etc/multipath/wwids

sec "iSCSI node records"
run iscsiadm -m node
run "iscsiadm -m node -T $T -p $P1 | grep -E 'timeo|startup|auth|iface|max_retries|nop|login'"

sec "cleanup"
run multipath -F
run iscsiadm -m node -T $T --logout
run iscsiadm -m node -T $T -o delete
run 'ls /sys/class/iscsi_session/ | wc -l'
run ls /sys/class/iscsi_host/
echo CAPTURE DONE
