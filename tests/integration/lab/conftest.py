"""pytest fixtures for the real-kernel QEMU lab (tests/lab/).

* ``lab`` (session): builds the image if needed, starts (resumes) the guest,
  stops it at session end. Skips every lab test with a LOUD message when QEMU
  cannot run here; with BRICK_REQUIRE_LAB=1 that is a failure instead.
* ``lab_ready`` (module, autouse): every test module starts from the saved
  "ready" state (boot.sh reset, ~4 s).
* ``gm`` (with ``guest``, module): the collection's modules run in the guest (guestrun.py), on a guest reset to
  "ready" before every test but the first of a module.
* ``lab_inventory``: path to tests/lab/inventory.yml.
* ``ansible_lab``: run ``ansible`` / ``ansible-playbook`` against the guest.

Everything in this directory is marked ``lab`` (``-m "not lab"`` deselects it).
Guest versions go to tests/output/lab-versions.json and the terminal summary.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LAB_SCRIPTS = REPO / "tests" / "lab"
OUTPUT = REPO / "tests" / "output"
VERSIONS_JSON = OUTPUT / "lab-versions.json"

sys.path.insert(0, str(LAB_SCRIPTS))
from lab import Lab, LabError  # noqa: E402

_STATE = {"versions": None, "timings": {}}


def _loud(msg):
    rule = "!" * 78
    return "\n%s\n!!! BRICK LAB: %s\n%s" % (rule, msg, rule)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "lab: needs the real-kernel QEMU lab guest (tests/lab/, slow)")
    config.addinivalue_line(
        "markers", "lab_slow: a lab test whose ground the default run covers elsewhere (BRICK_LAB_FULL=1 runs it)")


def pytest_collection_modifyitems(config, items):
    full = os.environ.get("BRICK_LAB_FULL") == "1"
    skip_slow = pytest.mark.skip(reason="lab_slow: covered elsewhere in the default run; BRICK_LAB_FULL=1 runs it")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.lab)
            if not full and item.get_closest_marker("lab_slow"):
                item.add_marker(skip_slow)


def pytest_report_header(config):
    lab_dir = os.environ.get("LAB_DIR") or "/var/tmp/brick-lab"
    port = os.environ.get("LAB_SSH_PORT") or "2222"
    lines = ["brick lab: LAB_DIR=%s LAB_SSH_PORT=%s BRICK_REQUIRE_LAB=%s"
             % (lab_dir, port, os.environ.get("BRICK_REQUIRE_LAB", "0"))]
    if VERSIONS_JSON.exists():
        try:
            v = json.loads(VERSIONS_JSON.read_text())["versions"]
            lines.append("brick lab (last run): kernel %s, open-iscsi %s, multipath-tools %s"
                         % (v.get("kernel"), v.get("iscsiadm"), v.get("multipath-tools")))
        except (ValueError, KeyError, TypeError):
            pass
    return lines


def pytest_terminal_summary(terminalreporter):
    v = _STATE["versions"]
    if not v:
        return
    tr = terminalreporter
    tr.section("brick lab")
    tr.write_line("guest kernel %s | iscsiadm %s | multipath-tools %s | targetcli-fb %s | qemu %s"
                  % (v.get("kernel"), v.get("iscsiadm"), v.get("multipath-tools"),
                     v.get("packages", {}).get("targetcli-fb"), v.get("qemu")))
    t = _STATE["timings"]
    if t:
        tr.write_line("lab timings (s): " + ", ".join("%s %.1f" % kv for kv in sorted(t.items())))
    tr.write_line("versions written to %s" % VERSIONS_JSON)


def _unavailable(msg):
    text = _loud(msg)
    if os.environ.get("BRICK_REQUIRE_LAB") == "1":
        pytest.fail(text + "\n(BRICK_REQUIRE_LAB=1: a missing lab is a failure)", pytrace=False)
    sys.stderr.write(text + "\n")
    pytest.skip(text)


@pytest.fixture(scope="session")
def lab():
    lab = Lab(log=lambda m: sys.stderr.write(m + "\n"))
    if not lab.available():
        _unavailable("QEMU lab cannot run here: %s. ALL lab tests are SKIPPED."
                     % lab.unavailable_reason)
    try:
        lab.lock()
        lab.ensure_built()
        was_running = lab.is_running()
        lab.start()
    except LabError as e:
        lab.unlock()
        _unavailable("QEMU lab failed to build/start: %s" % e)
    # A guest resumed just now is in "ready"; one that was already running may
    # be dirty and gets reset before the first module.
    lab._fresh = not was_running
    try:
        _STATE["versions"] = lab.versions()
        OUTPUT.mkdir(parents=True, exist_ok=True)
        VERSIONS_JSON.write_text(json.dumps(
            {"versions": _STATE["versions"], "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            indent=2, sort_keys=True) + "\n")
    except (LabError, OSError) as e:
        sys.stderr.write("[lab] could not record versions: %s\n" % e)
    yield lab
    try:
        lab.stop()
    finally:
        _STATE["timings"].update(lab.timings)
        lab.unlock()


@pytest.fixture(scope="module", autouse=True)
def lab_ready(lab):
    """Each test module starts from the saved "ready" state."""
    if getattr(lab, "_fresh", False):
        lab._fresh = False  # just resumed from "ready": no reset needed
    else:
        lab.reset()
    return lab


@pytest.fixture(scope="module")
def guest(lab, lab_ready):
    """The modules of the collection installed in the guest (guestrun.py), once per test module."""
    from guestrun import GuestModules
    return {"gm": GuestModules(lab), "used": False}


@pytest.fixture
def gm(lab, guest):
    """The guest modules, on a guest in "ready" state: every test but the first of a module resets it (remapped
    LUNs, blocked portals, holders and records must not leak into the next test)."""
    if guest["used"]:
        lab.reset()
        guest["gm"].installed = False
    guest["used"] = True
    return guest["gm"]


@pytest.fixture(scope="session")
def lab_inventory():
    return LAB_SCRIPTS / "inventory.yml"


class AnsibleResult:
    def __init__(self, argv, proc, duration):
        self.argv = argv
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.duration = duration

    def __repr__(self):
        return "<AnsibleResult rc=%s %.1fs %s>" % (self.rc, self.duration, " ".join(self.argv[:3]))

    def check(self):
        assert self.rc == 0, "%s failed rc=%s\n--- stdout\n%s\n--- stderr\n%s" % (
            " ".join(self.argv), self.rc, self.stdout[-6000:], self.stderr[-3000:])
        return self


class AnsibleLab:
    """Run ansible / ansible-playbook against the lab guest.

    The collection under test is made importable as brick.storage through a
    temporary ansible_collections/brick/storage symlink to the repo root.
    """

    def __init__(self, inventory, collections_dir):
        self.inventory = str(inventory)
        bindir = os.path.dirname(sys.executable)  # the venv running pytest first
        path = os.pathsep.join([bindir, str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")])
        self.ansible = shutil.which("ansible", path=path)
        self.playbook_bin = shutil.which("ansible-playbook", path=path)
        self.env = dict(os.environ)
        self.env.update({
            "PATH": path,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_SSH_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            # the TCG guest can take long for the ssh banner when the host is busy
            "ANSIBLE_TIMEOUT": "60",
            "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(
                [str(collections_dir)] + [p for p in os.environ.get(
                    "ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]),
        })

    def _run(self, argv, timeout, env):
        if not argv[0]:
            pytest.skip("ansible / ansible-playbook not found next to %s, in the repo "
                        ".venv or on PATH" % sys.executable)
        e = dict(self.env)
        e.update(env or {})
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=e, check=False)
        return AnsibleResult(argv, proc, time.monotonic() - t0)

    def playbook(self, playbook, extra_vars=None, args=(), timeout=900, env=None, check=False):
        argv = [self.playbook_bin, "-i", self.inventory, str(playbook)]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        argv += list(args)
        r = self._run(argv, timeout, env)
        return r.check() if check else r

    def adhoc(self, module, module_args=None, pattern="lab", args=(), timeout=300,
              env=None, check=False):
        argv = [self.ansible, pattern, "-i", self.inventory, "-m", module]
        if module_args is not None:
            argv += ["-a", module_args if isinstance(module_args, str) else json.dumps(module_args)]
        argv += list(args)
        r = self._run(argv, timeout, env)
        return r.check() if check else r


@pytest.fixture(scope="session")
def ansible_lab(lab, lab_inventory, tmp_path_factory):
    cdir = tmp_path_factory.mktemp("collections")
    ns = cdir / "ansible_collections" / "brick"
    ns.mkdir(parents=True)
    # BRICK_LAB_COLLECTION (see guestrun.py): the roles and modules of another build of the collection
    (ns / "storage").symlink_to(os.environ.get("BRICK_LAB_COLLECTION") or REPO, target_is_directory=True)
    return AnsibleLab(lab_inventory, cdir)
