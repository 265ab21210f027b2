#!/usr/bin/env bash
# kernel-findings.sh - the experiments behind real-sysfs-notes.txt, section
# 2026-11-29 (reused LUN, busy paths, failure timeline, queueing, del path,
# deleting devices of a failed session, node records, host names).
# Runs INSIDE the lab guest, one experiment per call, each from "ready":
#   tests/lab/boot.sh reset
#   tests/lab/boot.sh ssh 'bash -s a_map' < tests/lab/kernel-findings.sh
# Experiments: a_map a_single a_open_resize a_ua b_busy MODE c_timeline MODE
#   d_queueing MODE d_after e_delpath f_delete g_records g_more h_hostname
# Most of them leave sessions, maps, records or a changed target behind:
# boot.sh reset before each one.
# Experiment log, kept as it ran: word splitting and unused helpers are on purpose.
# shellcheck disable=SC1010,SC2002,SC2012,SC2015,SC2016,SC2034,SC2046,SC2086,SC2154,SC2217,SC2317
set -u

# common prelude for the kernel-finding scripts (runs in the guest)
T=iqn.2003-01.org.linux-iscsi.lab:target1
P1=127.0.0.1:3260
P2=127.0.0.2:3260
T0=$(date +%s.%N)
el() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
sec() { echo; echo "===== $* ===== [+$(el)s]"; }
run() { echo "\$ $*"; eval "$*" 2>&1; echo "[rc=$?]"; }
# new node record, manual scan, login; prints the scsi host number
login_manual() {  # IQN PORTAL
  iscsiadm -m node -T "$1" -p "$2" --op new >/dev/null
  iscsiadm -m node -T "$1" -p "$2" --op update -n node.session.scan -v manual
  iscsiadm -m node -T "$1" -p "$2" --login >/dev/null || return 1
}
host_of() {  # PORTAL-IP -> hostN of the session to that address
  local s
  for s in /sys/class/iscsi_session/session*; do
    if [ "$(cat $s/device/connection*/iscsi_connection/*/persistent_address)" = "$1" ]; then
      basename "$(ls -d $s/device/../scsi_host/host* 2>/dev/null || readlink -f $s/device/..)"; return
    fi
  done
}
sess_of() { local s; for s in /sys/class/iscsi_session/session*; do
  [ "$(cat $s/device/connection*/iscsi_connection/*/persistent_address)" = "$1" ] && basename $s; done; }
sd_of() {  # HOSTN LUN -> sdX
  local h=${1#host}; ls /sys/class/scsi_device/$h:0:0:$2/device/block/ 2>/dev/null
}
scan() { echo "0 0 $2" > /sys/class/scsi_host/$1/scan; }
wait_cond() {  # SECONDS CMD...
  local n=$(( $1 * 2 )); shift
  for _ in $(seq 1 $n); do eval "$*" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1
}
rd() {  # DEV [extra dd args]: timed direct read of 1 MiB
  local t0 rc; t0=$(date +%s.%N)
  timeout ${RD_TIMEOUT:-30} dd if=$1 of=/tmp/rd.bin bs=1M count=1 iflag=direct status=none $2 2>/tmp/dderr; rc=$?
  echo "  read $1: rc=$rc after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s sha=$(sha256sum </tmp/rd.bin | cut -c1-16) $(tr '\n' ' ' </tmp/dderr)"
}
jcur() { journalctl -u multipathd --no-pager -n 0 --show-cursor | tail -1 | sed 's/-- cursor: //' > /root/cur; }
jlog() { echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic | grep -v '^-- No entries'; jcur; }

# a: LUN 0 as a 2-path map, remap-lun 0, reads/rescans; then change uevents (multipathd reaction)
a_map() {
sec "a/map: LUN 0 on both portals, manual scan, 2-path map"
login_manual $T $P1; login_manual $T $P2
H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); echo "P1=$H1 P2=$H2"
scan $H1 0; scan $H2 0
udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H2 0); echo "path P1=$A path P2=$B"
W=$(/lib/udev/scsi_id -g -d /dev/$A); echo "wwid=$W"
wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]" && echo "map has 2 slaves"
DM=$(basename $(readlink -f /dev/mapper/$W)); echo "map dm=$DM"
dd if=/dev/urandom of=/root/pat bs=1M count=1 status=none
dd if=/root/pat of=/dev/mapper/$W bs=1M oflag=direct status=none; echo "pattern written: $(sha256sum </root/pat | cut -c1-16)"
ZERO=$(head -c 1048576 /dev/zero | sha256sum | cut -c1-16); echo "zeroes: $ZERO"
state() {
  for d in $A $B; do echo "  $d: wwid=$(cat /sys/block/$d/device/wwid) size=$(cat /sys/block/$d/size) state=$(cat /sys/block/$d/device/state) scsi_id=$(/lib/udev/scsi_id -g -d /dev/$d)"; done
  echo "  map: $(dmsetup table $W 2>&1)"; echo "  slaves: $(ls /sys/block/$DM/slaves 2>&1)"
  multipath -ll 2>&1 | sed 's/^/  /'
  multipathd show paths format "%d %w %t %T %o" 2>&1 | sed 's/^/  /'
}
rd() { echo "  read $1: $(timeout 30 dd if=$1 bs=1M count=1 iflag=direct status=none 2>/tmp/dderr | sha256sum | cut -c1-16) rc=${PIPESTATUS[0]} $(cat /tmp/dderr)"; }
run state
dmesg -c >/dev/null
journalctl -u multipathd --no-pager -n 0 --show-cursor | tail -1 | sed 's/-- cursor: //' > /root/cur
udevadm monitor -k -u -p > /root/mon.txt 2>&1 & MON=$!
sleep 1
sec "lab-target remap-lun 0 (sessions stay)"
run lab-target remap-lun 0
sleep 8
sec "after remap, no rescan, no I/O (8 s)"
echo "-- uevents:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt; : > /root/mon.txt
echo "-- dmesg:"; dmesg -c
run state
sec "read from map and from the paths, before any rescan"
rd /dev/mapper/$W; rd /dev/$A; rd /dev/$B
sleep 3
echo "-- uevents during the reads:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt | head -20; sed -n '/^KERNEL/,/^$/p' /root/mon.txt | grep -E 'ACTION|DEVPATH|SDEV_UA|DEVTYPE' | head -20; : > /root/mon.txt
echo "-- dmesg:"; dmesg -c
run state
echo "-- multipathd journal so far:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
sec "wait 12 s (checker interval) then look again"
sleep 12
run state
echo "-- uevents:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt; : > /root/mon.txt
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
sec "echo 1 > /sys/block/$A/device/rescan ; same for $B"
run "echo 1 > /sys/block/$A/device/rescan"
run "echo 1 > /sys/block/$B/device/rescan"
sleep 6
echo "-- uevents:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt; sed -n '/^KERNEL/,/^$/p' /root/mon.txt | grep -E 'ACTION|DEVPATH|SDEV_UA' | head -20; : > /root/mon.txt
echo "-- dmesg:"; dmesg -c
run state
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
sec "reads after the rescan"
rd /dev/mapper/$W; rd /dev/$A; rd /dev/$B
sleep 10
sec "10 s later"
run state
echo "-- uevents:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt; : > /root/mon.txt
echo "-- dmesg:"; dmesg -c
echo "-- multipathd journal (whole experiment):"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
kill $MON
journalctl -u multipathd --no-pager -n 0 --show-cursor | tail -1 | sed 's/-- cursor: //' > /root/cur
udevadm monitor -k -u > /root/mon.txt 2>&1 & MON=$!
sleep 1
sec "a/map (continued): a change uevent on sda (udevadm trigger -c change)"
run "udevadm trigger -c change /sys/block/$A; udevadm settle -t 30"
sleep 5
echo "-- uevents:"; grep -E '^(KERNEL|UDEV)' /root/mon.txt; : > /root/mon.txt
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
run multipath -ll
run "multipathd show paths format '%d %w %t %T %o'"
run "udevadm info -q property /dev/$A | grep -E 'ID_SERIAL=|DM_MULTIPATH|SYSTEMD_READY|ID_FS_TYPE'"
run "ls -l /dev/disk/by-id/ | grep -E 'scsi-3|wwn'"
sec "same for sdb"
run "udevadm trigger -c change /sys/block/$B; udevadm settle -t 30"
sleep 5
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
run multipath -ll
run "dmsetup table; dmsetup info -c"
run "cat /etc/multipath/wwids | grep -v '^#'"
sec "a read from the old map"
run "timeout 30 dd if=/dev/mapper/$W bs=1M count=1 iflag=direct status=none | sha256sum | cut -c1-16"
sec "multipathd reconfigure"
run "multipathd reconfigure"; sleep 8
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
run multipath -ll
kill $MON
}

# a: LUN 0 as a single path (no map), remap-lun 0
a_single() {
sec "a/single: LUN 0 on 127.0.0.1 only (one path, find_multipaths yes: no map)"
login_manual $T $P1
H1=$(host_of 127.0.0.1); scan $H1 0; udevadm settle -t 60
A=$(sd_of $H1 0); echo "path=$A"
dd if=/dev/urandom of=/root/pat bs=1M count=1 status=none
dd if=/root/pat of=/dev/$A bs=1M oflag=direct status=none; echo "pattern written: $(sha256sum </root/pat | cut -c1-16)"
state() { echo "  $A: wwid=$(cat /sys/block/$A/device/wwid) size=$(cat /sys/block/$A/size) state=$(cat /sys/block/$A/device/state) scsi_id=$(/lib/udev/scsi_id -g -d /dev/$A) udev ID_SERIAL=$(udevadm info -q property /dev/$A | sed -n 's/^ID_SERIAL=//p')"; echo "  dmsetup: $(dmsetup ls --target multipath 2>&1)"; }
rd() { echo "  read $1: $(timeout 30 dd if=$1 bs=1M count=1 iflag=direct status=none 2>/tmp/dderr | sha256sum | cut -c1-16) rc=${PIPESTATUS[0]} $(cat /tmp/dderr)"; }
run state
journalctl -u multipathd --no-pager -n 0 --show-cursor | tail -1 | sed 's/-- cursor: //' > /root/cur
dmesg -c > /dev/null
udevadm monitor -k -u > /root/mon.txt 2>&1 & MON=$!
sleep 1
sec "remap-lun 0"
lab-target remap-lun 0
sleep 5
echo "-- uevents:"; grep -E '^(KERNEL|UDEV) ' /root/mon.txt; : > /root/mon.txt
run state
sec "read before rescan"
rd /dev/$A
sleep 2; echo "-- uevents:"; grep -E '^(KERNEL|UDEV) ' /root/mon.txt; : > /root/mon.txt; echo "-- dmesg:"; dmesg -c
sec "rescan"
run "echo 1 > /sys/block/$A/device/rescan"; sleep 3
echo "-- uevents:"; grep -E '^(KERNEL|UDEV) ' /root/mon.txt; : > /root/mon.txt; echo "-- dmesg:"; dmesg -c
run state
rd /dev/$A
sec "change uevent"
run "udevadm trigger -c change /sys/block/$A; udevadm settle -t 30"; sleep 3
run state
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
run "ls -l /dev/disk/by-id/ | grep -E 'scsi-3|wwn'"
kill $MON
}

# a: 2-path map held open, remap-lun 0 --size-mb 96 (the rescan changes the size: change uevent)
a_open_resize() {
sec "a/map3: 2-path map of LUN 0 held OPEN (sleep <map), remap-lun 0 --size-mb 96 (new size)"
login_manual $T $P1; login_manual $T $P2
H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); scan $H1 0; scan $H2 0; udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H2 0); W=$(/lib/udev/scsi_id -g -d /dev/$A); echo "paths $A $B wwid $W"
wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]" && echo "map has 2 slaves"
DM=$(basename $(readlink -f /dev/mapper/$W))
sleep 100000 < /dev/mapper/$W & HOLD=$!
state() {
  for d in $A $B; do echo "  $d: wwid=$(cat /sys/block/$d/device/wwid) size=$(cat /sys/block/$d/size) state=$(cat /sys/block/$d/device/state)"; done
  dmsetup info -c -o name,open,segments,uuid 2>&1 | sed 's/^/  /'; dmsetup table 2>&1 | sed 's/^/  /'
  multipath -ll 2>&1 | sed 's/^/  /'
}
rd() { echo "  read $1: $(timeout 30 dd if=$1 bs=1M count=1 iflag=direct status=none 2>/tmp/dderr | sha256sum | cut -c1-16) rc=${PIPESTATUS[0]} $(cat /tmp/dderr)"; }
run state
journalctl -u multipathd --no-pager -n 0 --show-cursor | tail -1 | sed 's/-- cursor: //' > /root/cur
dmesg -c > /dev/null
udevadm monitor -k -u -p > /root/mon.txt 2>&1 & MON=$!
sleep 1
sec "remap-lun 0 --size-mb 96"
lab-target remap-lun 0 --size-mb 96
sleep 5
echo "-- uevents:"; grep -E '^(KERNEL|UDEV) ' /root/mon.txt; : > /root/mon.txt
run state
sec "read from the map (64 MiB map over a 96 MiB LUN)"
rd /dev/mapper/$W; rd /dev/$A
sleep 2; echo "-- uevents:"; grep -E '^(KERNEL|UDEV) ' /root/mon.txt; : > /root/mon.txt; echo "-- dmesg:"; dmesg -c
sec "rescan $A"
run "echo 1 > /sys/block/$A/device/rescan"; sleep 6
echo "-- uevents:"; grep -E '^(KERNEL|UDEV) |RESIZE|ACTION' /root/mon.txt; : > /root/mon.txt; echo "-- dmesg:"; dmesg -c
run state
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
sec "rescan $B"
run "echo 1 > /sys/block/$B/device/rescan"; sleep 8
echo "-- uevents:"; grep -E '^(KERNEL|UDEV) |RESIZE' /root/mon.txt; : > /root/mon.txt; echo "-- dmesg:"; dmesg -c
run state
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
sec "read from the old map (held open) and the paths"
rd /dev/mapper/$W; rd /dev/$A
run "timeout 20 dd if=/dev/$DM bs=1M count=1 iflag=direct status=none | wc -c"
run "multipathd show maps format '%n %d %Q %N %s'"
sec "release the holder; 10 s"
kill $HOLD; sleep 10
run state
echo "-- multipathd journal:"; journalctl -u multipathd --no-pager --after-cursor "$(cat /root/cur)" -o short-monotonic
kill $MON
}

# a: which LUN gets a UNIT ATTENTION after remap-lun; echo offline on a running device
a_ua() {
sec "a/ua: single path LUN 0 + LUN 1 (no map, no checker); remap-lun 0; first command afterwards = sg_turs -v"
login_manual $T $P1
H1=$(host_of 127.0.0.1); scan $H1 0; scan $H1 1; udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H1 1); echo "LUN0=$A LUN1=$B"
run "sg_turs -v /dev/$A; sg_turs -v /dev/$B"
dmesg -c >/dev/null
lab-target remap-lun 0 >/dev/null
run "sg_turs -v /dev/$A"
run "sg_turs -v /dev/$A"
run "sg_turs -v /dev/$B"
run "sg_turs -v /dev/$B"
run "sg_inq -p 0x83 /dev/$A | head -12"
run "cat /sys/block/$A/device/wwid"
echo "-- dmesg:"; dmesg -c
sec "f2 follow-up: echo offline > device/state on a running device, then on a transport-offline one"
run "echo offline > /sys/block/$B/device/state; cat /sys/block/$B/device/state"
run "t0=\$(date +%s.%N); echo 1 > /sys/block/$B/device/delete; awk -v a=\$t0 -v b=\$(date +%s.%N) 'BEGIN{printf \"delete of an offline device: %.2f s\n\", b-a}'"
}

# b: LUN 1 busy on 127.0.0.1 (MODE=mount|excl|plain), then a second path on 127.0.0.2
b_busy() {
MODE=${1:?mount|excl|plain}   # mount | excl | plain
sec "b/$MODE: LUN 1 on 127.0.0.1 only, its sdX busy ($MODE), then 127.0.0.2"
login_manual $T $P1
H1=$(host_of 127.0.0.1); scan $H1 1; udevadm settle -t 60
A=$(sd_of $H1 1); W=$(/lib/udev/scsi_id -g -d /dev/$A); echo "path P1 = $A wwid $W"
run "dmsetup ls --target multipath"
case $MODE in
  mount) run "mkfs.ext4 -q -F /dev/$A && mkdir -p /mnt/b && mount /dev/$A /mnt/b && findmnt /mnt/b" ;;
  excl)  python3 -c "import os,time; fd=os.open('/dev/$A', os.O_RDONLY|os.O_EXCL); print('O_EXCL open ok', flush=True); time.sleep(100000)" & HOLD=$!; sleep 3 ;;
  plain) python3 -c "import os,time; fd=os.open('/dev/$A', os.O_RDONLY); print('plain open ok', flush=True); time.sleep(100000)" & HOLD=$!; sleep 3 ;;
esac
jcur
sec "login 127.0.0.2, scan LUN 1 there"
login_manual $T $P2
H2=$(host_of 127.0.0.2); scan $H2 1; udevadm settle -t 60
B=$(sd_of $H2 1); echo "path P2 = $B"
sleep 15
run "multipath -ll"
run "dmsetup table"
run "dmsetup info -c -o name,open,uuid"
run "multipathd show paths format '%d %w %t %T %o %m'"
for d in $A $B; do run "ls /sys/block/$d/holders; udevadm info -q property /dev/$d | grep -E 'DM_MULTIPATH_DEVICE_PATH|SYSTEMD_READY|ID_FS_TYPE|FIND_MULTIPATHS'"; done
jlog
run "cat /etc/multipath/wwids | grep -v '^#'"
if [ "$MODE" = mount ]; then run "echo hello > /mnt/b/x && sync && cat /mnt/b/x"; fi
sec "multipath -v2 (manual map creation attempt) while $A is busy"
run "multipath -v2 $W"
run "multipath -ll"
jlog
case $MODE in mount) run "umount /mnt/b" ;; *) kill $HOLD ;; esac
sec "holder released; wait 15 s: does multipathd add $A by itself?"
sleep 15
run "multipath -ll"
jlog
sec "multipathd add path $A (or reconfigure)"
run "multipathd add path $A"; sleep 5
run "multipath -ll"
jlog
}

# c: path failure timeline (MODE=map|single), sampled by a python loop every 0.5 s
c_timeline() {
MODE=${1:?map|single}  # map | single
if [ "$MODE" = map ]; then
  sec "c/map: 2-path map of LUN 0, block-portal 127.0.0.2; sampled every 0.5 s for 40 s"
  login_manual $T $P1; login_manual $T $P2
  H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); scan $H1 0; scan $H2 0; udevadm settle -t 60
  A=$(sd_of $H1 0); B=$(sd_of $H2 0); W=$(/lib/udev/scsi_id -g -d /dev/$A)
  wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]"
  SECS=40
else
  sec "c/single: LUN 0 on 127.0.0.2 only (no map, stock replacement_timeout 120), block-portal 127.0.0.2; 0.5 s for 150 s"
  login_manual $T $P2
  H2=$(host_of 127.0.0.2); scan $H2 0; udevadm settle -t 60
  B=$(sd_of $H2 0); W=
  SECS=150
fi
S2=$(sess_of 127.0.0.2)
echo "path $B session $S2 recovery_tmo=$(cat /sys/class/iscsi_session/$S2/recovery_tmo) ${W:+map $W: $(dmsetup status $W)}"
cat > /root/sampler.py <<'PY'
# sampler.py SECONDS INTERVAL SESSION DEV [DMNAME]: print a line whenever the state changes
import subprocess, sys, time
secs, ival, sess, dev = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
dm = sys.argv[5] if len(sys.argv) > 5 else None
def rd(p):
    try:
        with open(p) as f: return f.read().strip()
    except OSError as e: return "ERR:%s" % e.strerror
t0 = time.monotonic(); prev = None; n = 0; last = ""
while True:
    t = time.monotonic() - t0
    if t > secs: break
    cur = "%s tmo=%s %s=%s" % (rd("/sys/class/iscsi_session/%s/state" % sess),
                              rd("/sys/class/iscsi_session/%s/recovery_tmo" % sess), dev,
                              rd("/sys/block/%s/device/state" % dev))
    if dm:
        st = subprocess.run(["dmsetup", "status", dm], capture_output=True, text=True).stdout.split()
        cur += " dm:[%s]" % " ".join(st[3:])
    n += 1
    line = "%6.1f  %s" % (t, cur)
    if cur != prev:
        if last: print(last + "   (last sample before the change)")
        print(line, flush=True); prev = cur; last = ""
    else:
        last = line
    time.sleep(max(0.0, ival * n - (time.monotonic() - t0)))
if last: print(last)
print("samples: %d in %.1f s" % (n, time.monotonic() - t0))

PY
dmesg -c >/dev/null
lab-target block-portal 127.0.0.2; echo "blocked at $(cat /proc/uptime | cut -d' ' -f1) (uptime)"
echo "t(s) since block-portal: session state, recovery_tmo, device state [, dmsetup status]"
python3 /root/sampler.py $SECS 0.5 $S2 $B $W
echo "-- dmesg:"; dmesg -c | grep -v CDB
[ "$MODE" = single ] && { sec "read from $B now"; rd /dev/$B; }
lab-target unblock-portal 127.0.0.2
}

# d: every path of an open map deleted, queueing disabled before (MODE=off) or not (MODE=on)
d_queueing() {
MODE=${1:?off|on}  # off | on
sec "d/$MODE: 2-path map of LUN 0, held open; every path deleted; queueing $MODE"
login_manual $T $P1; login_manual $T $P2
H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); scan $H1 0; scan $H2 0; udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H2 0); W=$(/lib/udev/scsi_id -g -d /dev/$A)
wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]" && echo "map $W: $A $B"
run "multipathd help 2>&1 | grep -i queueing"
run "multipathd show maps format '%n %Q %N'"
run "dmsetup table $W"
jcur
if [ "$MODE" = off ]; then
  run "multipathd disablequeueing map $W"
  run "multipathd show maps format '%n %Q %N'"
  run "dmsetup table $W"
  jlog
fi
sleep 100000 < /dev/mapper/$W & HOLD=$!
sec "delete both paths (echo 1 > device/delete) while sleep $HOLD holds the map"
run "echo 1 > /sys/block/$A/device/delete"
run "echo 1 > /sys/block/$B/device/delete"
sleep 4
run "multipath -ll; dmsetup table $W; dmsetup status $W; dmsetup info -c -o name,open $W"
run "multipathd show maps format '%n %Q %N'"
jlog
sec "timeout 20 dd read from the map"
t0=$(date +%s.%N)
( timeout 20 dd if=/dev/mapper/$W of=/dev/null bs=4k count=1 iflag=direct 2>/tmp/dd.err; echo "dd rc=$? after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: $(tr '\n' ' ' </tmp/dd.err)" > /tmp/dd.res ) &
for i in $(seq 1 100); do
  sleep 1
  [ -s /tmp/dd.res ] && break
  p=$(pgrep -x dd | head -1)
  if [ $((i % 5)) = 0 ]; then echo "  +${i}s dd pid=$p state=$(awk '{print $3}' /proc/$p/stat 2>/dev/null) wchan=$(cat /proc/$p/wchan 2>/dev/null) $(multipathd show maps format '%n %Q' | tail -1)"; fi
  if [ "$MODE" = on ] && [ $i = 40 ] && [ ! -s /tmp/dd.res ]; then
    echo "  +${i}s still blocked: dmsetup message $W 0 fail_if_no_path"; dmsetup message $W 0 fail_if_no_path
  fi
done
cat /tmp/dd.res
jlog
echo "-- dmesg:"; dmesg | tail -8
kill $HOLD
}

# d: paths deleted first, then multipathd disablequeueing map
d_after() {
sec "d/after: 2-path map held open; both paths deleted FIRST, then multipathd disablequeueing map; then read"
login_manual $T $P1; login_manual $T $P2
H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); scan $H1 0; scan $H2 0; udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H2 0); W=$(/lib/udev/scsi_id -g -d /dev/$A)
wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]" && echo "map $W: $A $B"
sleep 100000 < /dev/mapper/$W & HOLD=$!
jcur
echo 1 > /sys/block/$A/device/delete; echo 1 > /sys/block/$B/device/delete; sleep 3
run "dmsetup table $W; multipathd show maps format '%n %Q %N'"
run "multipathd disablequeueing map $W"
run "dmsetup table $W; multipathd show maps format '%n %Q %N'"
RD_TIMEOUT=20 rd /dev/mapper/$W
sleep 8
run "dmsetup table $W; multipathd show maps format '%n %Q %N'"
jlog
sec "restorequeueing map: back to 'queue_if_no_path'?"
run "multipathd restorequeueing map $W"
run "dmsetup table $W; multipathd show maps format '%n %Q %N'"
jlog
run "dmsetup message $W 0 fail_if_no_path; dmsetup table $W"
RD_TIMEOUT=20 rd /dev/mapper/$W
kill $HOLD
}

# e: multipathd del path on a mounted 2-path map, then delete the sd device
e_delpath() {
sec "e: 2-path map of LUN 0, ext4 mounted, writer running; multipathd del path /dev/sdB"
login_manual $T $P1; login_manual $T $P2
H1=$(host_of 127.0.0.1); H2=$(host_of 127.0.0.2); scan $H1 0; scan $H2 0; udevadm settle -t 60
A=$(sd_of $H1 0); B=$(sd_of $H2 0); W=$(/lib/udev/scsi_id -g -d /dev/$A)
wait_cond 60 "[ \$(ls /sys/block/\$(basename \$(readlink -f /dev/mapper/$W))/slaves | wc -l) = 2 ]" && echo "map $W: $A (P1) $B (P2)"
DM=$(basename $(readlink -f /dev/mapper/$W))
mkfs.ext4 -q -F /dev/mapper/$W && mkdir -p /mnt/e && mount /dev/mapper/$W /mnt/e && echo "mounted $DM"
MP=$(pidof multipathd)
run "ls -l /proc/$MP/fd | grep -E '/dev/(sd|dm)'"
( i=0; while :; do dd if=/dev/urandom of=/mnt/e/f$((i%4)) bs=64k count=8 oflag=direct conv=fsync status=none || echo "WRITE FAILED at $(date +%T.%N)"; i=$((i+1)); sleep 0.3; done ) > /root/writer.log 2>&1 & WR=$!
sleep 3
jcur; dmesg -c > /dev/null
run "multipathd del path /dev/$B"
sleep 3
run "multipath -ll"
run "dmsetup table $W"
run "ls /sys/block/$DM/slaves; echo holders of $B: \$(ls /sys/block/$B/holders)"
run "multipathd show paths format '%d %t %T %m'"
run "ls -l /proc/$MP/fd | grep -E '/dev/(sd|dm)'"
jlog
run "echo check > /mnt/e/c && sync && cat /mnt/e/c"
rd /dev/mapper/$W
sec "echo 1 > /sys/block/$B/device/delete"
t0=$(date +%s.%N); echo 1 > /sys/block/$B/device/delete; echo "delete took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"
sleep 3
run "multipath -ll"
run "ls /sys/block/$DM/slaves; ls -d /sys/block/$B 2>&1"
run "ls -l /proc/$MP/fd | grep -E '/dev/(sd|dm)'"
jlog
echo "-- dmesg:"; dmesg -c
sec "writer + 15 s later"
sleep 15
run "echo check2 > /mnt/e/c && sync && cat /mnt/e/c"
kill $WR; sleep 1
echo "writer log: $(wc -l < /root/writer.log) lines"; cat /root/writer.log | head
run "multipath -ll"
jlog
sec "rescan host for the deleted path: does multipathd put it back into the map?"
scan $H2 0; udevadm settle -t 60; sleep 5
B2=$(sd_of $H2 0); echo "rescanned: $B2"
run "multipath -ll"
jlog
umount /mnt/e
}

# f: echo 1 > device/delete on devices of a FAILED / FREE session
f_delete() {
sec "f: delete of scsi devices whose session failed (single path, no map, replacement_timeout 60)"
lab-target add-lun 2 --size-mb 16 >/dev/null
lab-target add-lun 3 --size-mb 16 >/dev/null
lab-target add-lun 4 --size-mb 16 >/dev/null
# LUN 4 with the write cache on (WCE=1) as many arrays report it: SYNCHRONIZE CACHE at delete
python3 - <<'PY'
from rtslib_fb import RTSRoot
for so in RTSRoot().storage_objects:
    if so.name == "lab4":
        so.set_attribute("emulate_write_cache", "1")
        print("lab4 emulate_write_cache =", so.get_attribute("emulate_write_cache"))
PY
iscsiadm -m node -T $T -p $P2 --op new >/dev/null
iscsiadm -m node -T $T -p $P2 --op update -n node.session.scan -v manual
iscsiadm -m node -T $T -p $P2 --op update -n node.session.timeo.replacement_timeout -v 60
iscsiadm -m node -T $T -p $P2 --login >/dev/null
H=$(host_of 127.0.0.2); S=$(sess_of 127.0.0.2)
for l in 0 1 2 3 4; do scan $H $l; done; udevadm settle -t 60
for l in 0 1 2 3 4; do eval D$l=$(sd_of $H $l); done
echo "session $S recovery_tmo=$(cat /sys/class/iscsi_session/$S/recovery_tmo); LUN0=$D0 LUN1=$D1 LUN2=$D2 LUN3=$D3 LUN4=$D4"
dmesg | grep -E "\[($D4|$D0)\] Write cache"
run "dmsetup ls --target multipath"
tdel() {  # DEV LABEL: time echo 1 > delete, with a watchdog print
  local t0 t1; t0=$(date +%s.%N)
  ( echo 1 > /sys/block/$1/device/delete; echo done > /tmp/del.$1 ) & local p=$!
  while kill -0 $p 2>/dev/null; do sleep 0.25; done
  echo "  $2: echo 1 > /sys/block/$1/device/delete returned after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s; session $(cat /sys/class/iscsi_session/$S/state); /sys/block/$1 $( [ -e /sys/block/$1 ] && echo still there || echo gone)"
}
dmesg -c > /dev/null
lab-target block-portal 127.0.0.2
TB=$(date +%s.%N)
since() { awk -v a="$TB" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
wait_cond 60 "[ \$(cat /sys/class/iscsi_session/$S/state) = FAILED ]"
echo "+$(since)s session $(cat /sys/class/iscsi_session/$S/state), $D0 $(cat /sys/block/$D0/device/state)"
sec "f1: FAILED session, plain delete of $D0 (no I/O pending)"
tdel $D0 "f1 FAILED +$(since)s"
sec "f2: FAILED session, echo offline > state, then delete $D1"
run "echo offline > /sys/block/$D1/device/state; cat /sys/block/$D1/device/state"
tdel $D1 "f2 FAILED+offline +$(since)s"
sec "f4: FAILED session, WCE=1 device $D4 (delete sends SYNCHRONIZE CACHE)"
tdel $D4 "f4 FAILED+WCE +$(since)s"
sec "f1b: FAILED session, a read pending on $D2 (dd in the background), then delete $D2"
( t0=$(date +%s.%N); dd if=/dev/$D2 of=/dev/null bs=4k count=1 iflag=direct 2>/tmp/dd2.err; echo "  pending read on $D2: rc=$? after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s $(tr '\n' ' ' </tmp/dd2.err)" ) &
sleep 2
tdel $D2 "f1b FAILED+read pending +$(since)s"
wait
sec "f3: wait for FREE (replacement_timeout 60), then delete $D3"
wait_cond 90 "[ \$(cat /sys/class/iscsi_session/$S/state) = FREE ]"
echo "+$(since)s session $(cat /sys/class/iscsi_session/$S/state), $D3 $(cat /sys/block/$D3/device/state)"
tdel $D3 "f3 FREE +$(since)s"
echo "-- dmesg:"; dmesg -c | grep -v CDB
lab-target unblock-portal 127.0.0.2
}

# g: node / discovery record layout, hand-written CHAP lines
g_records() {
NODEDIR=/etc/iscsi/nodes
lsrec() { find /etc/iscsi/nodes /etc/iscsi/send_targets -mindepth 1 -printf '  %M %p\n' 2>/dev/null | sort -k2; }
sec "g1: record made by iscsiadm -m node --op new (no discovery)"
run "iscsiadm -m node -T $T -p $P1 --op new"
run lsrec
F=$(find $NODEDIR -type f | head -1); echo "record file: $F"
run "cat '$F'"
sec "g2: discovery (sendtargets) records"
run "iscsiadm -m discovery -t sendtargets -p $P1"
run lsrec
run "iscsiadm -m node"
run "iscsiadm -m node -P 1"
run "diff <(grep -v '^#' '$F') <(grep -v '^#' '$NODEDIR/$T/127.0.0.1,3260,1/default')"
run "ls /etc/iscsi/send_targets/*; cat /etc/iscsi/send_targets/127.0.0.1,3260/st_config"
sec "g2b: login -p $P1 with BOTH records (the --op new one without tpgt and the discovered one)"
run "iscsiadm -m node -T $T -p $P1 --login"
run "iscsiadm -m session"
run "iscsiadm -m node -T $T --logout"
run "iscsiadm -m node -o delete; rm -rf /etc/iscsi/send_targets/*; lsrec"

sec "g3: session CHAP: hand-written node.session.auth.* in a record made by --op new (lab-target setup --chap chapuser:chapsecret12)"
lab-target setup --chap chapuser:chapsecret12 | grep -E 'auth=|acl'
run "iscsiadm -m node -T $T -p $P1 --op new"
F=$NODEDIR/$T/127.0.0.1,3260/default; [ -f "$F" ] || F=$(find $NODEDIR -type f | head -1)
run "stat -c '%a %U %n' '$F'"
echo "iscsid pid before: $(pidof iscsid)"
run "iscsiadm -m node -T $T -p $P1 --login"
sed -i -e 's/^node.session.auth.authmethod = .*/node.session.auth.authmethod = CHAP/' \
       -e 's/^node.session.auth.username = .*/node.session.auth.username = chapuser/' \
       -e 's/^node.session.auth.password = .*/node.session.auth.password = chapsecret12/' "$F"
chmod 600 "$F"
run "grep '^node.session.auth' '$F'; stat -c '%a %n' '$F'"
run "iscsiadm -m node -T $T -p $P1 -o show | grep '^node.session.auth'"
run "iscsiadm -m node -T $T -p $P1 -o show --show | grep '^node.session.auth'"
echo "iscsid pid now: $(pidof iscsid) (no restart)"
run "iscsiadm -m node -T $T -p $P1 --login"
run "cat /sys/class/iscsi_session/session*/username /sys/class/iscsi_session/session*/password"
run "iscsiadm -m node -T $T -p $P1 --logout"
sec "g3b: the same lines APPENDED at the end (the record keeps authmethod = None earlier): which wins?"
run "iscsiadm -m node -T $T -p $P1 -o delete; iscsiadm -m node -T $T -p $P1 --op new"
printf 'node.session.auth.authmethod = CHAP\nnode.session.auth.username = chapuser\nnode.session.auth.password = chapsecret12\n' >> "$F"
run "grep -n '^node.session.auth' '$F'"
run "iscsiadm -m node -T $T -p $P1 -o show | grep '^node.session.auth.authmethod\|^node.session.auth.username'"
run "iscsiadm -m node -T $T -p $P1 --login"
run "iscsiadm -m node -T $T -p $P1 --logout"
sec "g3c: a whole record written by hand from scratch (minimal lines only, mode 0600, tpgt 1 in the dir name)"
run "iscsiadm -m node -o delete"
D=$NODEDIR/$T/127.0.0.2,3260,1; mkdir -p "$D"
cat > "$D/default" <<REC
node.name = $T
node.tpgt = 1
node.conn[0].address = 127.0.0.2
node.conn[0].port = 3260
node.session.auth.authmethod = CHAP
node.session.auth.username = chapuser
node.session.auth.password = chapsecret12
REC
chmod 600 "$D/default"
run lsrec
run "iscsiadm -m node"
run "iscsiadm -m node -T $T -p $P2 -o show | grep -E '^node.(name|tpgt|startup|session.auth.authmethod|session.auth.username|session.timeo.replacement_timeout|conn\[0\].(address|port|timeo.login_timeout))|^iface.(iscsi_ifacename|transport_name)'"
run "iscsiadm -m node -T $T -p $P2 --login"
run "iscsiadm -m session -P 1 | grep -E 'Target|Current Portal|Persistent Portal|Iface Name|Session State'"
run "iscsiadm -m node -T $T -p $P2 --logout"
run "cat '$D/default'"
run "iscsiadm -m node -o delete"

sec "g4: discovery CHAP: hand-written discovery.sendtargets.auth.* in /etc/iscsi/send_targets (lab-target setup --discovery-chap du:dsecret12345)"
lab-target setup --discovery-chap du:dsecret12345 | grep discovery_auth
run "iscsiadm -m discoverydb -t sendtargets -p $P1 -o new"
run lsrec
SF=/etc/iscsi/send_targets/127.0.0.1,3260/st_config
run "stat -c '%a %n' $SF; cat $SF"
run "iscsiadm -m discoverydb -t sendtargets -p $P1 --discover"
sed -i -e 's/^discovery.sendtargets.auth.authmethod = .*/discovery.sendtargets.auth.authmethod = CHAP/' \
       -e 's/^discovery.sendtargets.auth.username = .*/discovery.sendtargets.auth.username = du/' \
       -e 's/^discovery.sendtargets.auth.password = .*/discovery.sendtargets.auth.password = dsecret12345/' $SF
chmod 600 $SF
run "grep auth $SF"
run "iscsiadm -m discoverydb -t sendtargets -p $P1 -o show | grep auth"
run "iscsiadm -m discoverydb -t sendtargets -p $P1 --discover"
run lsrec
sec "g4b: legacy 'iscsiadm -m discovery -t st -p' with the CHAP discovery record in place"
run "iscsiadm -m discovery -t sendtargets -p $P1"
run "grep auth $SF"
sec "g4c: legacy discovery on the other portal (no record)"
run "iscsiadm -m discovery -t sendtargets -p $P2"
echo "iscsid pid at the end: $(pidof iscsid)"
}

# g: appended CHAP lines, iscsiadm -o update, discovery record, legacy discovery, minimal records
g_more() {
NODEDIR=/etc/iscsi/nodes
sec "g5: session CHAP + mutual CHAP lines APPENDED by hand to an --op new record (the file has no username/password lines when they are empty)"
lab-target setup --chap chapuser:chapsecret12 --mutual-chap tgtuser:tgtsecret123 | grep acl
iscsiadm -m node -T $T -p $P1 --op new >/dev/null
F=$NODEDIR/$T/127.0.0.1,3260
printf 'node.session.auth.authmethod = CHAP\nnode.session.auth.username = chapuser\nnode.session.auth.password = chapsecret12\nnode.session.auth.username_in = tgtuser\nnode.session.auth.password_in = tgtsecret123\n' >> "$F"
chmod 600 "$F"
run "iscsiadm -m node -T $T -p $P1 -o show | grep '^node.session.auth'"
run "iscsiadm -m node -T $T -p $P1 -o show --show | grep '^node.session.auth'"
run "iscsiadm -m node -T $T -p $P1 --login"
run "iscsiadm -m session -P 3 | grep -iE 'username|password' "
run "iscsiadm -m node -T $T -p $P1 --logout"
sec "g5b: iscsiadm -o update on the hand-edited record: does it keep the hand-written lines?"
run "iscsiadm -m node -T $T -p $P1 -o update -n node.session.timeo.replacement_timeout -v 30"
run "grep -nE 'auth|replacement' '$F'"
run "iscsiadm -m node -o delete"
sec "g6: discovery CHAP lines APPENDED to st_config"
lab-target setup --discovery-chap du:dsecret12345 | grep discovery_auth
iscsiadm -m discoverydb -t sendtargets -p $P1 -o new >/dev/null
SF=/etc/iscsi/send_targets/127.0.0.1,3260/st_config
printf 'discovery.sendtargets.auth.authmethod = CHAP\ndiscovery.sendtargets.auth.username = du\ndiscovery.sendtargets.auth.password = dsecret12345\n' >> $SF
chmod 600 $SF
run "iscsiadm -m discoverydb -t sendtargets -p $P1 -o show | grep 'sendtargets.auth'"
run "iscsiadm -m discoverydb -t sendtargets -p $P1 --discover"
run "grep -n auth $SF"
run "grep -h 'node.session.auth' $NODEDIR/$T/*/default | sort | uniq -c"
sec "g6b: legacy iscsiadm -m discovery -t st -p $P1 with that record in place"
run "iscsiadm -m discovery -t sendtargets -p $P1"
run "grep -n auth $SF"
sec "g6c: the record is now without credentials?"
run "iscsiadm -m discoverydb -t sendtargets -p $P1 --discover"
run "iscsiadm -m node -o delete; rm -rf /etc/iscsi/send_targets/*"
sec "g7: defaults of a minimal hand-written record vs an --op new record (iscsid.conf)"
lab-target setup >/dev/null
iscsiadm -m node -T $T -p $P1 --op new >/dev/null
D=$NODEDIR/$T/127.0.0.2,3260,1; mkdir -p "$D"
printf 'node.name = %s\nnode.tpgt = 1\nnode.conn[0].address = 127.0.0.2\nnode.conn[0].port = 3260\n' $T > $D/default; chmod 600 $D/default
run "diff <(iscsiadm -m node -T $T -p $P1 -o show | grep -vE 'address|tpgt|discovery') <(iscsiadm -m node -T $T -p $P2 -o show | grep -vE 'address|tpgt|discovery')"
run "grep -vE '^#|^\s*$' /etc/iscsi/iscsid.conf | grep -E 'login_timeout|startup|replacement|noop|scan|queue_depth|cmds_max'"
run "iscsiadm -m node -T $T -p $P2 --login && iscsiadm -m node -T $T -p $P2 --logout"
run "iscsiadm -m node -o delete"
}

# h: a host name (localhost) as portal
h_hostname() {
sec "h: host names as portal"
run "getent hosts localhost; getent ahosts localhost"
run "iscsiadm -m node -T $T -p localhost:3260 --op new"
run "find /etc/iscsi/nodes -mindepth 1 | sort"
run "iscsiadm -m node"
run "iscsiadm -m node -T $T -p localhost:3260 --login"
run "iscsiadm -m session"
for c in /sys/class/iscsi_session/session*/device/connection*/iscsi_connection/*; do
  echo "  $c: persistent_address=$(cat $c/persistent_address) persistent_port=$(cat $c/persistent_port) address=$(cat $c/address) port=$(cat $c/port)"
done
run "iscsiadm -m session -P 1 | grep -E 'Current Portal|Persistent Portal'"
run "ls /dev/disk/by-path/"
run "iscsiadm -m node -T $T -p 127.0.0.1:3260 --login"
run "iscsiadm -m node -T $T -p localhost --logout"
run "iscsiadm -m node -T $T -p 127.0.0.1 -o show | head -3"
run "iscsiadm -m node -o delete"
sec "h2: -p localhost (no port) and discovery via a host name"
run "iscsiadm -m node -T $T -p localhost --op new; find /etc/iscsi/nodes -mindepth 2 | sort"
run "iscsiadm -m node -o delete"
run "iscsiadm -m discovery -t st -p localhost"
run "find /etc/iscsi/nodes /etc/iscsi/send_targets -mindepth 1 | sort"
sec "h3: localhost session: udev links"
iscsiadm -m node -T $T -p localhost:3260 --op new >/dev/null
run "iscsiadm -m node -T $T -p localhost:3260 --login"
udevadm settle -t 60; sleep 2
run "ls -l /dev/disk/by-path/ | grep iscsi"
run "udevadm info -q property /dev/sda | grep -E 'ID_PATH|DEVLINKS'"
run "iscsiadm -m node -T $T -p 127.0.0.1:3260 -o show | head -2"
run "iscsiadm -m node -T $T -p 127.0.0.1:3260 --logout"
run "iscsiadm -m session"
run "iscsiadm -m node -T $T -p localhost:3260 --logout"
}

exp=${1:-}
{ [ -n "$exp" ] && declare -F "$exp" >/dev/null; } || { echo "usage: bash -s EXPERIMENT [MODE] < kernel-findings.sh" >&2; exit 2; }
shift
"$exp" "$@"
