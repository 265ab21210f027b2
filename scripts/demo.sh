#!/usr/bin/env bash
# Set up, then run the main job (the image deploy flow, playbooks/deploy_image.yml) against the embedded
# real-kernel QEMU lab (tests/lab/).
#
#   bash scripts/demo.sh               set up, build/start the lab, deploy, stop the lab
#   bash scripts/demo.sh --keep-lab    ... and leave the lab guest running afterwards
#   bash scripts/demo.sh -- -v         extra arguments after -- go to ansible-playbook
#
# The lab honours LAB_DIR / LAB_SSH_PORT (see tests/lab/boot.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

KEEP_LAB=0
EXTRA=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --keep-lab) KEEP_LAB=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

PLAYBOOK=playbooks/deploy_image.yml
INVENTORY=tests/lab/inventory.yml

step() { printf '\n[demo] ==> %s (t=%ss)\n' "$*" "$SECONDS"; }

if [ ! -f "$PLAYBOOK" ]; then
  echo "[demo] $PLAYBOOK does not exist yet: the deploy flow has not been written. Nothing to run." >&2
  exit 1
fi
for f in "$INVENTORY" tests/lab/build-image.sh tests/lab/boot.sh; do
  if [ ! -f "$f" ]; then
    echo "[demo] $f is missing: the embedded lab is not available in this checkout." >&2
    exit 1
  fi
done

step "setup"
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.ansible/collections"

step "build the lab image (no-op when unchanged)"
bash tests/lab/build-image.sh

LAB_STARTED=0
stop_lab() {
  if [ "$LAB_STARTED" = 1 ] && [ "$KEEP_LAB" = 0 ]; then
    step "stop the lab (use --keep-lab to leave it running)"
    bash tests/lab/boot.sh stop || echo "[demo] WARNING: could not stop the lab cleanly" >&2
  fi
}
trap stop_lab EXIT

step "start the lab"
LAB_STARTED=1
bash tests/lab/boot.sh start

# deploy_image.yml overwrites volumes: it has no default hosts (brick_hosts names them), it writes onto the volume
# named only (brick_deploy_volume: the lab has two), and it makes the test image only on the opt-in
DEMO_VARS=(-e brick_hosts=iscsi_lab -e brick_deploy_volume=lab-lun0 -e brick_deploy_test_image=true)
step "ansible-playbook -i $INVENTORY $PLAYBOOK ${DEMO_VARS[*]} ${EXTRA[*]:-}"
ansible-playbook -i "$INVENTORY" "$PLAYBOOK" "${DEMO_VARS[@]}" "${EXTRA[@]}"

step "done"
if [ "$KEEP_LAB" = 1 ]; then
  echo "[demo] the lab is still running: 'bash tests/lab/boot.sh ssh CMD' to look around, 'bash tests/lab/boot.sh stop' to stop it."
fi
