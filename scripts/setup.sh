#!/usr/bin/env bash
# Set up a development / CI environment for brick.storage. Idempotent: a second run only re-checks.
#
#   bash scripts/setup.sh            # .venv (Python 3.11, ansible-core 2.19)
#   bash scripts/setup.sh --py312    # ... and .venv312 (Python 3.12, ansible-core 2.21)
#
# Steps (each printed with its elapsed time):
#   1. system packages (python3-venv, git, shellcheck) via apt-get when missing;
#   2. virtual environments + requirements-dev.txt (+ pip check); skipped when the requirements are unchanged;
#   3. community.general into .ansible/collections, extracted from the `ansible` wheel on PyPI (Galaxy is not
#      reachable); the wheel is cached in ~/.cache/brick-storage and checked against a pinned sha256;
#   4. build brick.storage into tests/output/ and install it into .ansible/collections (offline).
#
# Environment overrides: BRICK_PY311 / BRICK_PY312 (interpreter paths), BRICK_CG_WHEEL (a local copy of the
# ansible wheel below, for machines without PyPI), BRICK_CACHE_DIR (default ~/.cache/brick-storage).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WANT_312=0
for arg in "$@"; do
  case "$arg" in
    --py312) WANT_312=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option: $arg" >&2; exit 2 ;;
  esac
done

# community.general comes from this release of the `ansible` community package (it ships community.general 12.6.2,
# requires_ansible >= 2.17, no further collection dependencies: works with ansible-core 2.19 and 2.21).
CG_VERSION="12.6.2"
CG_ANSIBLE_VERSION="13.8.0"
CG_WHEEL_NAME="ansible-${CG_ANSIBLE_VERSION}-py3-none-any.whl"
CG_WHEEL_SHA256="daf9c9a2850bbc6c098ba3368aeba99d4ae37c90bca47f974dc19342c0571361"

CACHE_DIR="${BRICK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brick-storage}"
COLLECTIONS_DIR="$ROOT/.ansible/collections"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export DEBIAN_FRONTEND=noninteractive

T0=$SECONDS
STEP_T0=$SECONDS
step() {
  STEP_T0=$SECONDS
  printf '\n[setup] ==> %s\n' "$*"
}
done_step() {
  printf '[setup]     done in %ss (total %ss)\n' "$((SECONDS - STEP_T0))" "$((SECONDS - T0))"
}
die() {
  printf '[setup] ERROR: %s\n' "$*" >&2
  exit 1
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "missing system packages ($*) and no apt-get to install them"
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
    sudo=(sudo -n)
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    "${sudo[@]}" apt-get update -qq </dev/null
    APT_UPDATED=1
  fi
  echo "[setup]     apt-get install $*"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

# Print the absolute path of a usable interpreter for the given minor version ("3.11" / "3.12"), or nothing.
find_python() {
  local minor="$1" override="$2" cand exe
  if [ -n "$override" ]; then
    echo "$override"
    return 0
  fi
  # pyenv shims need PYENV_VERSION to expose a non-global version; also look into pyenv's versions folder.
  for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$minor".*/bin/python"$minor" /usr/bin/python"$minor" /usr/local/bin/python"$minor"; do
    if [ -x "$cand" ] && "$cand" -c 'import sys' >/dev/null 2>&1; then
      echo "$cand"
      return 0
    fi
  done
  for cand in python"$minor" python3; do
    exe="$("$cand" -c "import sys; print(sys.executable if '%d.%d' % sys.version_info[:2] == '$minor' else '')" 2>/dev/null || true)"
    if [ -n "$exe" ]; then
      echo "$exe"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------------------
step "1/4 system packages"
PY311="$(find_python 3.11 "${BRICK_PY311:-}")" || die "Python 3.11 not found (set BRICK_PY311=/path/to/python3.11)"
PY312=""
if [ "$WANT_312" = 1 ]; then
  PY312="$(find_python 3.12 "${BRICK_PY312:-}")" || die "Python 3.12 not found (set BRICK_PY312=/path/to/python3.12)"
fi
missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
# ShellCheck is needed because ansible-test's "shellcheck" sanity test silently turns into a skip without it.
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
for py in "$PY311" $PY312; do
  if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of the interpreter package.
    missing+=("python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
echo "[setup]     python 3.11: $PY311"
[ -z "$PY312" ] || echo "[setup]     python 3.12: $PY312"
done_step

# ---------------------------------------------------------------------------------------------------------------
# make_venv DIR PYTHON: create DIR with PYTHON and install requirements-dev.txt unless already done for this file.
make_venv() {
  local dir="$1" py="$2" want have
  want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(sha256sum requirements-dev.txt | cut -d' ' -f1)"
  have="$(cat "$dir/.brick-requirements.stamp" 2>/dev/null || true)"
  if [ -x "$dir/bin/python" ] && [ "$want" = "$have" ] && "$dir/bin/python" -c 'import ansible, ansible_test' 2>/dev/null; then
    echo "[setup]     $dir: up to date (python $want)"
    return 0
  fi
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$dir"
    echo "[setup]     creating $dir with $py"
    "$py" -m venv "$dir"
  fi
  echo "[setup]     pip install -r requirements-dev.txt into $dir"
  "$dir/bin/python" -m pip install -q -r requirements-dev.txt
  "$dir/bin/python" -m pip check
  echo "$want" >"$dir/.brick-requirements.stamp"
  "$dir/bin/python" -c 'import sys, ansible.release as r; print("[setup]     %s: python %s, ansible-core %s" % (sys.prefix, sys.version.split()[0], r.__version__))'
}

step "2/4 virtual environments"
make_venv "$ROOT/.venv" "$PY311"
if [ -n "$PY312" ]; then
  make_venv "$ROOT/.venv312" "$PY312"
fi
done_step

# ---------------------------------------------------------------------------------------------------------------
step "3/4 community.general $CG_VERSION -> .ansible/collections"
CG_DIR="$COLLECTIONS_DIR/ansible_collections/community/general"
installed_cg="$("$ROOT/.venv/bin/python" - "$CG_DIR/MANIFEST.json" <<'EOF' 2>/dev/null || true
import json, sys
print(json.load(open(sys.argv[1]))["collection_info"]["version"])
EOF
)"
if [ "$installed_cg" = "$CG_VERSION" ]; then
  echo "[setup]     community.general $CG_VERSION already installed"
else
  wheel="${BRICK_CG_WHEEL:-$CACHE_DIR/$CG_WHEEL_NAME}"
  if [ ! -f "$wheel" ] || ! echo "$CG_WHEEL_SHA256  $wheel" | sha256sum -c --status; then
    mkdir -p "$CACHE_DIR"
    echo "[setup]     downloading $CG_WHEEL_NAME (about 55 MB) from PyPI into $CACHE_DIR"
    rm -f "$CACHE_DIR/$CG_WHEEL_NAME"
    # The wheel is pure Python but requires Python >= 3.12; we only unpack files from it, so ask for it by tag.
    "$ROOT/.venv/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      "ansible==$CG_ANSIBLE_VERSION" -d "$CACHE_DIR"
    wheel="$CACHE_DIR/$CG_WHEEL_NAME"
  fi
  echo "$CG_WHEEL_SHA256  $wheel" | sha256sum -c --status || die "sha256 mismatch for $wheel"
  mkdir -p "$COLLECTIONS_DIR/ansible_collections/community"
  "$ROOT/.venv/bin/python" - "$wheel" "$COLLECTIONS_DIR/ansible_collections/community" <<'EOF'
import os, shutil, sys, tempfile, zipfile
wheel, dest_parent = sys.argv[1], sys.argv[2]
prefix = "ansible_collections/community/general/"
tmp = tempfile.mkdtemp(dir=dest_parent, prefix=".general-")
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
    for m in members:
        rel = m.filename[len(prefix):]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise SystemExit("unsafe path in wheel: " + m.filename)
        target = os.path.join(tmp, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(m) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
final = os.path.join(dest_parent, "general")
if os.path.islink(final):
    os.unlink(final)
elif os.path.exists(final):
    shutil.rmtree(final)
os.rename(tmp, final)
print("[setup]     extracted %d files into %s" % (len(members), final))
EOF
fi
done_step

# ---------------------------------------------------------------------------------------------------------------
step "4/4 build brick.storage and install it into .ansible/collections"
export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS_DIR"
export ANSIBLE_NOCOLOR=1
mkdir -p tests/output
version="$("$ROOT/.venv/bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["version"])')"
artifact="tests/output/brick-storage-$version.tar.gz"
"$ROOT/.venv/bin/ansible-galaxy" collection build --force --output-path tests/output/ .
# ansible-lint may leave a symlink to the working tree here; never let --force follow it.
own="$COLLECTIONS_DIR/ansible_collections/brick/storage"
if [ -L "$own" ]; then
  rm -f "$own"
fi
# --offline: no Galaxy; the community.general dependency is satisfied by the copy installed in step 3.
"$ROOT/.venv/bin/ansible-galaxy" collection install --offline --force -p "$COLLECTIONS_DIR" "$artifact"
"$ROOT/.venv/bin/ansible-galaxy" collection list -p "$COLLECTIONS_DIR" 2>/dev/null | grep -E '^(brick\.storage|community\.general) '
printf '[setup]     artifact: %s (%s bytes)\n' "$artifact" "$(stat -c %s "$artifact")"
done_step

printf '\n[setup] OK in %ss. Activate with: source .venv/bin/activate; export ANSIBLE_COLLECTIONS_PATH=%s\n' \
  "$((SECONDS - T0))" "$COLLECTIONS_DIR"
