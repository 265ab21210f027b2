#!/usr/bin/env bash
# shellcheck disable=SC2317  # stage functions are called indirectly (run_stage NAME FUNCTION)
# THE test command of brick.storage (README and .ci/run call exactly this).
#
#   bash scripts/test.sh            all stages
#   bash scripts/test.sh --quick    setup + unit tests + changelog lint + ansible-lint
#   bash scripts/test.sh --no-lab   everything but the QEMU lab stage
#
# Stages (each with a banner, elapsed seconds, and a log in tests/output/test-logs/):
#   setup          scripts/setup.sh --py312 (.venv = Python 3.11 + ansible-core 2.19, .venv312 = 3.12 + 2.21)
#   unit-*         pytest tests/unit on both venvs (no tests collected = FAIL)
#   sanity-*       ansible-test sanity --local on both ansible-core versions, on a copy of the git-visible files
#   static         ruff (plugins, tests, bench) and mypy (the connector), settings in pyproject.toml
#   changelog      antsibull-changelog lint
#   lint-*         ansible-lint (production profile, offline) on both ansible-core versions
#   lab-pytest     pytest tests/integration/lab -v (the suite skips loudly when QEMU can't run here;
#                  BRICK_REQUIRE_LAB=1 makes that a failure)
#   lab-ansible-test  ansible-test integration of tests/integration/targets/* on the lab guest (ssh target)
#   molecule-*     molecule test -s NAME for every roles/*/molecule/NAME/molecule.yml
#
# With the lab, the host stages (unit, sanity, static, changelog, lint) run in the background next to the lab
# stages (their output follows the lab's); BRICK_SERIAL=1 runs all stages in turn. Without the lab (or serial) the
# unit tests run on 2 pytest-xdist workers (BRICK_UNIT_WORKERS; 0 = one plain pytest process).
# Environment: BRICK_SKIP_LAB=1 skips the lab stages (with a WARNING). Exit status is non-zero if any stage failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
NO_LAB=0
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --no-lab) NO_LAB=1 ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option: $arg" >&2; exit 2 ;;
  esac
done

export PIP_DISABLE_PIP_VERSION_CHECK=1
export ANSIBLE_NOCOLOR=1 NO_COLOR=1 PY_COLORS=0
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.ansible/collections"
LOG_DIR="$ROOT/tests/output/test-logs"
mkdir -p "$LOG_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/brick-storage-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

banner() {
  printf '\n%s\n=== %s\n%s\n' "================================================================================" "$*" \
    "================================================================================"
}
warn_banner() {
  printf '\n%s\n!!! WARNING: %s\n%s\n' "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" "$*" \
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
}
record() {  # record NAME RESULT SECONDS, in a file (stages that run in the background record there too)
  printf '%s %s %s\n' "$1" "$2" "$3" >> "$WORK/results"
}

# run_stage NAME FUNCTION [ARGS...]: run FUNCTION in a subshell with errexit, tee its output to a log.
# FUNCTION's exit status: 0 = PASS, 3 = WARN (nothing to test, not a failure), anything else = FAIL.
run_stage() {
  local name="$1" rc start
  shift
  banner "stage $name"
  start=$SECONDS
  (set -euo pipefail; shopt -s inherit_errexit; "$@") 2>&1 | tee "$LOG_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  local secs=$((SECONDS - start)) result
  case "$rc" in
    0) result=PASS ;;
    3) result=WARN ;;
    *) result=FAIL ;;
  esac
  record "$name" "$result" "$secs"
  printf '=== stage %s: %s (exit %s) in %ss\n' "$name" "$result" "$rc" "$secs"
}

skip_stage() {  # skip_stage NAME REASON
  record "$1" SKIP 0
  printf '\n=== stage %s: SKIPPED (%s)\n' "$1" "$2"
}

use_venv() {  # use_venv DIR: activate a venv for the current (sub)shell
  export VIRTUAL_ENV="$1"
  export PATH="$1/bin:$PATH"
  hash -r
}

# ----------------------------------------------------------------------------------------------------------------
# stage functions (each runs in a subshell with set -euo pipefail)

st_setup() {
  bash "$ROOT/scripts/setup.sh" --py312
}

st_unit() {  # st_unit VENV
  use_venv "$1"
  if [ ! -d tests/unit ]; then
    echo "FAIL: tests/unit does not exist: there are no unit tests to run" >&2
    return 1
  fi
  local rc=0
  local workers=()
  if [ "${BRICK_UNIT_WORKERS:-2}" != 0 ]; then workers=(-n "${BRICK_UNIT_WORKERS:-2}"); fi
  python -m pytest tests/unit -q -p no:cacheprovider --timeout=300 "${workers[@]}" || rc=$?
  if [ "$rc" = 5 ]; then
    echo "FAIL: pytest collected NO unit tests in tests/unit (exit 5). Unit tests are required." >&2
    return 1
  fi
  return "$rc"
}

# Copy the git-visible files (tracked + untracked-not-ignored, as CI sees them after a commit) into
# DEST/ansible_collections/brick/storage: ansible-test refuses a symlinked collection root.
stage_copy() {
  local dest="$1/ansible_collections/brick/storage"
  mkdir -p "$dest"
  git -C "$ROOT" ls-files -co --exclude-standard -z |
    while IFS= read -r -d '' f; do
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi  # skip tracked files deleted in the work tree
    done |
    tar --null -T - -cf - | tar -xf - -C "$dest"
  echo "$dest"
}

# ansible-test bootstraps pip in its sanity venvs with a get-pip script it downloads from a host that is not
# reachable here. Put an equivalent in its cache: ensurepip, then `pip install` of the same arguments (pip from PyPI).
install_get_pip_shim() {  # install_get_pip_shim VENV
  local venv="$1" src ver cache
  src="$(ls "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)"
  ver="$(sed -n "s/^ *pip='\([0-9.]*\)',*$/\1/p" "$src" | head -n 1)"
  if [ -z "$ver" ]; then
    echo "cannot find the pip version ansible-test wants in $src" >&2
    return 1
  fi
  cache="$HOME/.ansible/test/cache/get_pip_${ver//./_}.py"
  mkdir -p "$(dirname "$cache")"
  if [ -f "$cache" ] && ! grep -q 'brick-storage-get-pip-shim' "$cache"; then
    echo "using existing $cache"
    return 0
  fi
  cat >"$cache" <<'EOF'
"""Offline stand-in for get-pip.py (brick-storage-get-pip-shim, written by brick.storage scripts/test.sh).

ansible-test runs this inside a fresh virtual environment to bootstrap pip. Bootstrap pip from the interpreter's
bundled ensurepip instead of downloading it, then install the requested packages (e.g. pip==24.2) from the
configured package index. --no-setuptools / --no-wheel are get-pip options, not pip install options.
"""
import subprocess
import sys


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))


if __name__ == "__main__":
    main()
EOF
  echo "wrote offline get-pip shim $cache"
}

st_sanity() {  # st_sanity VENV PYVER
  local venv="$1" pyver="$2" coll
  use_venv "$venv"
  install_get_pip_shim "$venv"
  coll="$(stage_copy "$WORK/sanity-$pyver")"
  cd "$coll"
  # Tests skipped, and why:
  #   (none) - every test runs; pslint is skipped by ansible-test itself (no PowerShell content).
  ansible-test sanity --local --python "$pyver" --color no
}

st_static() {
  use_venv "$ROOT/.venv"
  ruff --version
  ruff check plugins tests bench
  mypy --version
  mypy
}

st_changelog() {
  use_venv "$ROOT/.venv"
  antsibull-changelog lint -v
}

st_lint() {  # st_lint VENV NAME
  local venv="$1" name="$2" top coll
  use_venv "$venv"
  top="$WORK/lint-$name"
  coll="$(stage_copy "$top")"
  # community.general (parted, for the partition role) from .ansible/collections, installed by setup.sh.
  ln -s "$ROOT/.ansible/collections/ansible_collections/community" "$top/ansible_collections/community"
  cd "$coll"
  ansible-lint --version
  ANSIBLE_COLLECTIONS_PATH="$top" ansible-lint --offline --profile production
}

st_lab_pytest() {
  use_venv "$ROOT/.venv"
  if [ -z "$(find tests/integration/lab -name 'test_*.py' -o -name '*_test.py' 2>/dev/null | head -n 1)" ]; then
    warn_banner "tests/integration/lab has NO lab tests yet: nothing ran on the real-kernel lab."
    return 3
  fi
  local rc=0
  python -m pytest tests/integration/lab -v -p no:cacheprovider -rs --durations=0 || rc=$?
  if [ "$rc" = 5 ]; then
    warn_banner "pytest collected NO lab tests in tests/integration/lab: nothing ran on the real-kernel lab."
    return 3
  fi
  return "$rc"
}

st_lab_targets() {
  use_venv "$ROOT/.venv"
  if ! python -c "import sys; sys.path.insert(0, 'tests/lab'); from lab import Lab; l = Lab(); ok = l.available(); \
print(l.unavailable_reason or ''); sys.exit(0 if ok else 3)"; then
    warn_banner "the QEMU lab cannot run here: tests/integration/targets did NOT run on a real kernel."
    if [ "${BRICK_REQUIRE_LAB:-0}" = 1 ]; then return 1; fi
    return 3
  fi
  bash tests/lab/integration-targets.sh
}

st_molecule() {  # st_molecule ROLE_DIR SCENARIO
  use_venv "$ROOT/.venv"
  cd "$1"
  molecule test -s "$2"
}

host_stages() {
  run_stage unit-py3.11 st_unit "$ROOT/.venv"
  run_stage unit-py3.12 st_unit "$ROOT/.venv312"
  if [ "$QUICK" = 0 ]; then
    run_stage sanity-core2.19 st_sanity "$ROOT/.venv" 3.11
    run_stage sanity-core2.21 st_sanity "$ROOT/.venv312" 3.12
  else
    skip_stage sanity "--quick"
  fi
  run_stage static st_static
  run_stage changelog st_changelog
  run_stage lint-core2.19 st_lint "$ROOT/.venv" core2.19
  run_stage lint-core2.21 st_lint "$ROOT/.venv312" core2.21
}

# ----------------------------------------------------------------------------------------------------------------
banner "brick.storage tests ($(date -u +%Y-%m-%dT%H:%M:%SZ)) quick=$QUICK no-lab=$NO_LAB CI=${CI:-}"

run_stage setup st_setup
if ! grep -q '^setup PASS ' "$WORK/results"; then
  echo "setup failed: the remaining stages cannot run" >&2
else
  LAB=1
  if [ "$QUICK" = 1 ]; then
    LAB=0; skip_stage lab "--quick"
  elif [ "$NO_LAB" = 1 ]; then
    LAB=0; skip_stage lab "--no-lab"
  elif [ "${BRICK_SKIP_LAB:-0}" = 1 ]; then
    warn_banner "BRICK_SKIP_LAB=1: the QEMU lab stage (integration tests, molecule) is SKIPPED. Nothing was tested on a real kernel."
    LAB=0; skip_stage lab "BRICK_SKIP_LAB=1"
  fi

  # The host stages need no lab: they run in the background next to the lab stages (their output is printed
  # when the lab is done, their logs are in tests/output/test-logs/ as always), with one pytest process. Measured
  # on 2 cores: lab tests 1,220 s next to the host stages against ~1,020 s alone, while the host stages take
  # ~500-650 s on their own, so ~1,700 s in all against ~1,950 s one after another. BRICK_SERIAL=1 runs every
  # stage in turn (the unit tests then on 2 pytest-xdist workers).
  if [ "$LAB" = 1 ] && [ "${BRICK_SERIAL:-0}" != 1 ]; then
    export BRICK_UNIT_WORKERS="${BRICK_UNIT_WORKERS:-0}"
    banner "host stages (unit, sanity, static, changelog, lint) run in the background while the lab stages run"
    # (tried at the lowest CPU priority: the lab tests gained 70 s, the lab's ansible-test and molecule stages lost
    # 180 s, and the starved unit tests took 907 s: so at the same priority)
    host_stages > "$WORK/host-stages.out" 2>&1 &
    host_pid=$!
  else
    host_stages
    host_pid=
  fi

  if [ "$LAB" = 1 ]; then
    run_stage lab-pytest st_lab_pytest
    run_stage lab-ansible-test st_lab_targets
    shopt -s nullglob
    scenarios=(roles/*/molecule/*/molecule.yml)
    shopt -u nullglob
    if [ "${#scenarios[@]}" = 0 ]; then
      warn_banner "no molecule scenarios (roles/*/molecule/*/molecule.yml) yet: no role was tested with molecule."
      record molecule WARN 0
    fi
    for m in "${scenarios[@]}"; do
      role_dir="$(dirname "$(dirname "$(dirname "$m")")")"
      scen="$(basename "$(dirname "$m")")"
      run_stage "molecule-$(basename "$role_dir")-$scen" st_molecule "$ROOT/$role_dir" "$scen"
    done
  fi
  if [ -n "$host_pid" ]; then
    wait "$host_pid" || true
    banner "output of the host stages (ran in the background while the lab stages ran)"
    cat "$WORK/host-stages.out"
  fi
fi

# ----------------------------------------------------------------------------------------------------------------
banner "summary (total ${SECONDS}s; logs in tests/output/test-logs/)"
passed=0 failed=0 skipped=0 warned=0
while read -r name result secs; do
  printf '  %-32s %-5s %6ss\n' "$name" "$result" "$secs"
  case "$result" in
    PASS) passed=$((passed + 1)) ;;
    FAIL) failed=$((failed + 1)) ;;
    SKIP) skipped=$((skipped + 1)) ;;
    WARN) warned=$((warned + 1)) ;;
  esac
done < "$WORK/results"
[ "$warned" = 0 ] || echo "  ($warned stage(s) had nothing to test: see the WARNING banners above)"
echo "stages: $passed passed, $failed failed, $skipped skipped"
if [ "$failed" != 0 ]; then
  echo "FAILED: ${failed} stage(s) failed" >&2
  exit 1
fi
exit 0
