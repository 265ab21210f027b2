#!/usr/bin/env bash
# boot.sh - run the brick.storage lab guest under qemu (TCG; the KVM on these
# hosts is PVM and cannot run a stock kernel, see README.md).
#
#   boot.sh start       resume the saved "ready" state (~4 s) or, if there is none
#                       (or it is stale), cold boot, prepare and save "ready"
#   boot.sh save        save the running VM as state "ready" (qcow2 internal snapshot)
#   boot.sh reset       roll the running VM back to "ready" (loadvm, no reboot)
#   boot.sh reboot      cold reboot of the running guest (systemctl reboot; a
#                       monitor system_reset if it does not go down in time);
#                       waits for ssh and for systemd to finish booting
#   boot.sh stop        stop qemu cleanly (monitor "quit")
#   boot.sh status      exit 0 if qemu runs (prints pid, port, snapshot)
#   boot.sh ssh CMD..   run CMD in the guest as root
#   boot.sh inventory   print an Ansible INI inventory for the guest
#   boot.sh prepare     bring a freshly booted guest to "ready" (no save)
#   boot.sh hmp CMD     qemu human monitor command
#
# Environment (defaults):
#   LAB_DIR=/var/tmp/brick-lab   image from build-image.sh
#   LAB_RUN=$LAB_DIR/run         runtime dir (overlay disk, pid, monitor, serial log)
#   LAB_SSH_PORT=2222            host port (127.0.0.1 only) forwarded to guest :22
#   LAB_MEM=1536 LAB_SMP=2       guest size (TCG: one host thread per vCPU)
#   LAB_CPU=qemu64               faster under TCG than -cpu max
#   LAB_FRESH=0                  1 = throw the overlay (and "ready") away first
#   LAB_BOOT_TIMEOUT=300         seconds to wait for ssh
#   LAB_SHUTDOWN_TIMEOUT=90      reboot: seconds for a clean shutdown before system_reset
#   LAB_TARGET_ARGS=             extra args for `lab-target setup` in prepare
#   LAB_WARM_ANSIBLE=1           run a few modules in prepare so the guest's
#                                bytecode cache is warm, with LAB_ANSIBLE or the
#                                repo's .venv/bin/ansible or `ansible` on PATH
#                                (the cache is keyed on source: use the same
#                                ansible-core version the tests use)
set -euo pipefail

HERE=$(dirname "$(readlink -f "$0")")
LAB_DIR=${LAB_DIR:-/var/tmp/brick-lab}
LAB_RUN=${LAB_RUN:-$LAB_DIR/run}
SSH_PORT=${LAB_SSH_PORT:-2222}
MEM=${LAB_MEM:-1536}
SMP=${LAB_SMP:-2}
CPU=${LAB_CPU:-qemu64}
FRESH=${LAB_FRESH:-0}
BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-300}
SHUTDOWN_TIMEOUT=${LAB_SHUTDOWN_TIMEOUT:-90}
LAB_TARGET_ARGS=${LAB_TARGET_ARGS:-}
WARM_ANSIBLE=${LAB_WARM_ANSIBLE:-1}
KARGS=${LAB_KARGS:-"root=/dev/vda rw console=ttyS0 quiet loglevel=3 mitigations=off systemd.show_status=false"}

OVERLAY=$LAB_RUN/overlay.qcow2
PIDFILE=$LAB_RUN/qemu.pid
MON=$LAB_RUN/monitor.sock
KEY=$LAB_DIR/id_ed25519
SSH_OPTS=(-i "$KEY" -p "$SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=5 -o ServerAliveInterval=15)

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }
T0=$(now)
log() { echo "[boot.sh +$(elapsed "$T0")s] $*"; }
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
# shellcheck disable=SC2029  # the arguments are a command line for the guest's shell: it expands them there
gssh() { ssh "${SSH_OPTS[@]}" root@127.0.0.1 "$@"; }

# The "ready" state depends on the image and on how prepare builds it.
ready_stamp() {
  { cat "$LAB_DIR/image.stamp"; sed -n '/^prepare()/,/^}/p' "$0"; echo "$LAB_TARGET_ARGS $MEM $SMP $CPU"; } \
    | sha256sum | cut -c1-16
}

# Human monitor (HMP) command through the unix socket; prints the reply.
hmp() {
  python3 - "$MON" "$*" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(600)
def until_prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        d = s.recv(65536)
        if not d: break
        buf += d
    return buf.decode(errors="replace")
until_prompt()
s.sendall(sys.argv[2].encode() + b"\n")
out = until_prompt()
lines = [l for l in out.replace("\r", "").split("\n")[1:] if l and not l.startswith("(qemu)")]
out = "\n".join(l for l in lines if not l.startswith("\x1b"))
if out: print(out)
EOF
}

has_ready_state() {
  [ -f "$OVERLAY" ] && qemu-img snapshot -U -l "$OVERLAY" 2>/dev/null | grep -q ' ready '
}

wait_ssh() {
  local t0=$1 deadline=$(( $(date +%s) + BOOT_TIMEOUT )) next=10
  while ! gssh true 2>/dev/null; do
    running || { echo "qemu died; see $LAB_RUN/serial.log" >&2; tail -20 "$LAB_RUN/serial.log" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { echo "ssh not up after ${BOOT_TIMEOUT}s; see $LAB_RUN/serial.log" >&2; exit 1; }
    local e; e=$(elapsed "$t0")
    if [ "${e%.*}" -ge "$next" ]; then log "waiting for ssh on 127.0.0.1:$SSH_PORT... ${e}s"; next=$((next + 10)); fi
    sleep 1
  done
  log "ssh up after $(elapsed "$t0") s"
}

start() {
  if running; then log "already running (pid $(cat "$PIDFILE"))"; return 0; fi
  if [ ! -f "$LAB_DIR/root.raw" ] || [ ! -f "$LAB_DIR/image.stamp" ]; then
    echo "no image in $LAB_DIR: run $HERE/build-image.sh first" >&2
    exit 1
  fi
  mkdir -p "$LAB_RUN"
  # The overlay and the RAM state in it are only valid on top of the exact
  # root.raw (and prepare recipe) they were made from.
  local stamp; stamp=$(ready_stamp)
  if [ "$FRESH" = 1 ] || [ "$(cat "$LAB_RUN/ready.stamp" 2>/dev/null)" != "$stamp" ]; then
    [ -f "$OVERLAY" ] && log "dropping stale overlay (image or prepare recipe changed, or LAB_FRESH=1)"
    rm -f "$OVERLAY" "$LAB_RUN/ready.stamp"
  fi
  [ -f "$OVERLAY" ] || qemu-img create -q -f qcow2 -F raw -b "$LAB_DIR/root.raw" "$OVERLAY"
  local resume=()
  if has_ready_state; then resume=(-loadvm ready); fi
  rm -f "$MON"
  local t0; t0=$(now)
  log "starting qemu (${resume[*]:-cold boot, then prepare + save: ~2-3 min under TCG})"
  # -nodefaults: no VGA/floppy/cdrom. restrict=on: the guest reaches nothing
  # outside qemu's user network; only ssh on host 127.0.0.1:$SSH_PORT is open.
  qemu-system-x86_64 -name brick-lab -nodefaults -no-user-config \
    -machine pc -accel tcg,thread=multi -cpu "$CPU" -smp "$SMP" -m "$MEM" \
    -kernel "$LAB_DIR/vmlinuz" -initrd "$LAB_DIR/initrd.img" -append "$KARGS" \
    -drive file="$OVERLAY",format=qcow2,if=virtio,cache=unsafe,discard=unmap \
    -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:"$SSH_PORT"-:22 \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci \
    -display none -serial file:"$LAB_RUN/serial.log" \
    -monitor unix:"$MON",server,nowait \
    -pidfile "$PIDFILE" -daemonize "${resume[@]}" \
    9>&- </dev/null >"$LAB_RUN/qemu.log" 2>&1 \
    || { echo "qemu failed to start:" >&2; cat "$LAB_RUN/qemu.log" >&2; exit 1; }
  log "qemu pid $(cat "$PIDFILE")"
  wait_ssh "$t0"
  if [ ${#resume[@]} -gt 0 ]; then
    # RAM state is from save time: put the guest clock right.
    gssh "date -s @$(date +%s) >/dev/null"
  else
    prepare
    save
    echo "$stamp" > "$LAB_RUN/ready.stamp"
  fi
  log "lab up (ssh 127.0.0.1:$SSH_PORT)"
}

# Bring a freshly booted guest to the state every test starts from: boot
# finished, LIO target exported on two portals, multipathd running, no
# sessions, open-iscsi defaults untouched, python warmed up.
prepare() {
  local t0; t0=$(now)
  log "prepare: waiting for systemd to finish booting"
  gssh "systemctl is-system-running --wait >/dev/null || systemctl --failed --no-legend"
  log "prepare: lab-target setup $LAB_TARGET_ARGS"
  gssh "lab-target setup $LAB_TARGET_ARGS"
  gssh "systemctl is-active --quiet multipathd || systemctl start multipathd"
  gssh "python3 -c 'import json, subprocess, shlex, tempfile'"
  # Fill the guest's bytecode cache for Ansible modules before "ready" is
  # saved (a reset rolls the disk back, so a cache filled later is lost).
  local ansible=${LAB_ANSIBLE:-}
  [ -n "$ansible" ] || { [ -x "$HERE/../../.venv/bin/ansible" ] && ansible=$HERE/../../.venv/bin/ansible; } || true
  [ -n "$ansible" ] || ansible=$(command -v ansible || true)
  if [ "$WARM_ANSIBLE" != 0 ] && [ -n "$ansible" ]; then
    log "prepare: warming the guest's bytecode cache with $ansible ($("$ansible" --version | head -1))"
    local inv; inv=$(mktemp)
    inventory > "$inv"
    local x name args
    for x in "ping:" "command:true" "shell:true" "stat:path=/" "wait_for:path=/ timeout=1" \
             "file:path=/tmp state=directory" "find:paths=/sys/class/iscsi_host file_type=any"; do
      name=${x%%:*}; args=${x#*:}
      log "prepare: warming ansible.builtin.$name"
      ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_PIPELINING=True \
        "$ansible" all -i "$inv" -m "ansible.builtin.$name" ${args:+-a "$args"} >/dev/null 2>&1 || true
    done
    rm -f "$inv"
  else
    log "prepare: no ansible (LAB_ANSIBLE, repo .venv, PATH) or LAB_WARM_ANSIBLE=0: no bytecode warm-up"
  fi
  gssh sync
  log "prepared in $(elapsed "$t0") s"
}

save() {
  local t0; t0=$(now)
  log "savevm ready"
  gssh sync
  hmp "savevm ready"
  log "saved state 'ready' in $(elapsed "$t0") s ($(du -h "$OVERLAY" | cut -f1) overlay)"
}

reset() {
  running || { echo "lab not running (boot.sh start)" >&2; exit 1; }
  has_ready_state || { echo "no saved 'ready' state (boot.sh stop; boot.sh start)" >&2; exit 1; }
  local t0; t0=$(now)
  hmp "loadvm ready"
  wait_ssh "$t0"
  gssh "date -s @$(date +%s) >/dev/null"
  log "reset to 'ready' in $(elapsed "$t0") s"
}

# A real cold reboot: the guest shuts down (sessions, maps, file systems) and
# qemu boots -kernel/-initrd again in the same process, on the same overlay.
# The disk keeps what the guest wrote; the internal "ready" snapshot is not
# touched, so `reset` still goes back to it. Done when the boot id changed,
# ssh answers and systemd has finished booting (lab-target-restore included).
reboot_guest() {
  running || { echo "lab not running (boot.sh start)" >&2; exit 1; }
  local t0 old new hard=0 down_by limit
  t0=$(now)
  old=$(gssh cat /proc/sys/kernel/random/boot_id)
  log "reboot: systemctl reboot (boot id $old)"
  # --no-block: systemctl returns at once and ssh is not cut mid-command.
  gssh "sync; systemctl reboot --no-block" || true
  down_by=$(( $(date +%s) + SHUTDOWN_TIMEOUT ))
  limit=$(( down_by + BOOT_TIMEOUT ))
  while :; do
    running || { echo "qemu died; see $LAB_RUN/serial.log" >&2; tail -20 "$LAB_RUN/serial.log" >&2; exit 1; }
    new=$(timeout 30 ssh "${SSH_OPTS[@]}" root@127.0.0.1 cat /proc/sys/kernel/random/boot_id 2>/dev/null || true)
    if [ -n "$new" ] && [ "$new" != "$old" ]; then break; fi
    if [ "$hard" = 0 ] && [ "$(date +%s)" -ge "$down_by" ]; then
      log "reboot: guest still up after ${SHUTDOWN_TIMEOUT}s: sync + monitor system_reset"
      timeout 20 ssh "${SSH_OPTS[@]}" root@127.0.0.1 sync 2>/dev/null || true
      hmp system_reset
      hard=1
    fi
    [ "$(date +%s)" -lt "$limit" ] || { echo "guest not back after reboot; see $LAB_RUN/serial.log" >&2; exit 1; }
    sleep 2
  done
  log "reboot: ssh up again after $(elapsed "$t0") s (boot id $new)"
  gssh "systemctl is-system-running --wait >/dev/null || systemctl --failed --no-legend"
  log "rebooted in $(elapsed "$t0") s$([ "$hard" = 1 ] && echo ' (hard reset)')"
}

stop() {
  running || { log "not running"; rm -f "$PIDFILE"; return 0; }
  local pid; pid=$(cat "$PIDFILE")
  hmp quit >/dev/null 2>&1 || kill "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then echo "qemu $pid did not stop" >&2; exit 1; fi
  rm -f "$PIDFILE" "$MON"
  log "stopped"
}

status() {
  if running; then
    echo "running pid=$(cat "$PIDFILE") ssh=127.0.0.1:$SSH_PORT lab_dir=$LAB_DIR ready_state=$(has_ready_state && echo yes || echo no)"
    return 0
  fi
  echo "stopped lab_dir=$LAB_DIR image=$([ -f "$LAB_DIR/root.raw" ] && cat "$LAB_DIR/image.stamp" 2>/dev/null || echo none) ready_state=$(has_ready_state && echo yes || echo no)"
  return 1
}

inventory() {
  cat <<EOF
[iscsi_lab]
lab ansible_host=127.0.0.1 ansible_port=$SSH_PORT ansible_user=root ansible_ssh_private_key_file=$KEY ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' ansible_python_interpreter=/usr/bin/python3 ansible_ssh_pipelining=true
EOF
}

# Serialize state-changing commands between concurrent callers.
locked() {
  mkdir -p "$LAB_RUN"
  exec 9>"$LAB_RUN/boot.lock"
  flock -w 900 9 || { echo "could not lock $LAB_RUN/boot.lock" >&2; exit 1; }
  "$@"
}

cmd=${1:-start}; shift || true
case "$cmd" in
  start|save|prepare|reset|stop) locked "$cmd" ;;
  reboot) locked reboot_guest ;;
  status) status ;;
  ssh) gssh "$@" ;;
  hmp) hmp "$@" ;;
  inventory) inventory ;;
  *) echo "usage: $0 start|save|reset|reboot|stop|status|ssh CMD|inventory|prepare|hmp CMD" >&2; exit 2 ;;
esac
