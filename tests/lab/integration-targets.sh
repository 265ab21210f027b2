#!/usr/bin/env bash
# Run tests/integration/targets/* with `ansible-test integration` against the lab guest (a real kernel).
#
#   bash tests/lab/integration-targets.sh [TARGET...]     (default: every target)
#
# ansible-test needs the collection in a real .../ansible_collections/brick/storage directory: the git-visible
# files are copied to a temporary one. The guest is the ssh target (root, the lab's key, which ansible-test looks
# for as tests/output/.tmp/id_rsa); the targets are destructive (they attach and detach the lab target's LUNs),
# hence --allow-destructive. The guest is started (or resumed), reset to "ready" first, and stopped at the end.
# Environment: LAB_DIR, LAB_SSH_PORT (as boot.sh), ANSIBLE_TEST (default: ansible-test on PATH).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
LAB_DIR="${LAB_DIR:-/var/tmp/brick-lab}"
LAB_SSH_PORT="${LAB_SSH_PORT:-2222}"
ANSIBLE_TEST="${ANSIBLE_TEST:-ansible-test}"
export LAB_DIR LAB_SSH_PORT

work="$(mktemp -d "${TMPDIR:-/tmp}/brick-it.XXXXXX")"
started=0
cleanup() {
  [ "$started" = 0 ] || bash "$HERE/boot.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$HERE/build-image.sh"
bash "$HERE/boot.sh" start
started=1
bash "$HERE/boot.sh" reset

dest="$work/ansible_collections/brick/storage"
mkdir -p "$dest"
git -C "$ROOT" ls-files -co --exclude-standard -z |
  while IFS= read -r -d '' f; do
    if [ -e "$ROOT/$f" ]; then printf '%s\0' "$f"; fi
  done |
  (cd "$ROOT" && tar --null -T - -cf -) | tar -xf - -C "$dest"
mkdir -p "$dest/tests/output/.tmp"
install -m 600 "$LAB_DIR/id_ed25519" "$dest/tests/output/.tmp/id_rsa"
install -m 644 "$LAB_DIR/id_ed25519.pub" "$dest/tests/output/.tmp/id_rsa.pub"

pyver="$(bash "$HERE/boot.sh" ssh "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")"
cd "$dest"
"$ANSIBLE_TEST" integration --allow-destructive --color no -v \
  --target "ssh:root@127.0.0.1:${LAB_SSH_PORT},python=${pyver}@/usr/bin/python3" "$@"
