# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""What a user waits for: whole module runs against ``ansible -m ping``, and the AnsiballZ payload of each module.

* ``payloads()`` (host only): builds each module's AnsiballZ payload the way a task does (``ansible localhost -c
  local`` in check mode with ``ANSIBLE_KEEP_REMOTE_FILES=1`` and no pipelining, so the file stays) and reports its
  size and what is in its zip: every file, the collection's files and their bytes.  ``ansible.builtin.ping`` is
  the reference (``ansible.module_utils.basic`` and what it needs: the floor of any Python module).
* ``lab_runs(lab, n)`` (the QEMU lab, called by bench_lab.py while it holds the lab): the whole
  ``ansible lab -m MODULE`` from the host, timed around the process, for
  ``attach_rerun`` (iscsi_volume of a volume that is attached: the idempotent path), ``facts``
  (volume_paths_facts with a volume query), ``idle`` (block_device_idle of the attached disk, check mode: one
  check) and ``detach_absent`` (iscsi_volume state=absent of LUN 0 through 127.0.0.2, which has no session and no
  node record: nothing to do), each next to
  ``ansible -m ping`` on the same host in the same run; the order rotates per repetition.  Twice: with the lab's
  bytecode cache for AnsiballZ (``lab_pyc_cache``, what the lab normally runs with; a module is run once before,
  untimed, so that its files are compiled) and without it (what a real host pays: Python compiles every
  module_utils file of the zip on every task).

    python3 bench/bench_e2e.py     # payloads only (the lab part runs from bench_lab.py)
"""

from __future__ import absolute_import, division, print_function

import base64
import glob
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
MODULES = ("iscsi_volume", "volume_paths_facts", "block_device_idle", "multipath_flush")
PAYLOAD_ARGS = {"iscsi_volume": {"portals": [P1], "iqn": T, "lun": 1, "state": "absent"},
                "volume_paths_facts": {},
                "block_device_idle": {"device": "/dev/brick-bench-none"},
                "multipath_flush": {"map": "brick-bench-none"}}
# the pyc cache hook of the lab guest (tests/lab/guest-customize.sh installs it as a .pth file)
PYC_PTH = "/usr/local/lib/python3*/dist-packages/lab_pyc_cache.pth"


def _log(msg):
    sys.stderr.write("[bench_e2e] %s\n" % msg)
    sys.stderr.flush()


def _ansible_bin(name):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.path.join(REPO, ".venv", "bin"),
                            os.environ.get("PATH", "")])
    return shutil.which(name, path=path), path


def _collections():
    top = tempfile.mkdtemp(prefix="brick-bench-coll-")
    os.makedirs(os.path.join(top, "ansible_collections", "brick"))
    os.symlink(REPO, os.path.join(top, "ansible_collections", "brick", "storage"))
    return top


def _base_env(top, path):
    env = dict(os.environ)
    env.update({"PATH": path, "ANSIBLE_COLLECTIONS_PATH": top, "ANSIBLE_HOST_KEY_CHECKING": "False",
                "ANSIBLE_RETRY_FILES_ENABLED": "False", "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "False", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.minimal"})
    return env


# ------------------------------------------------------------------------------------------------ payloads
def _zip_of(ansiballz):
    with open(ansiballz) as f:
        text = f.read()
    m = re.search(r"^zip_data\s*=\s*'([^']*)'", text, re.M) or re.search(r"ZIPDATA\s*=\s*\"\"\"(.*?)\"\"\"", text, re.S)
    if not m:
        raise RuntimeError("no zip data found in %s" % ansiballz)
    return zipfile.ZipFile(io.BytesIO(base64.b64decode(m.group(1))))


def payload(module, args=None):
    """{"bytes", "zip_files", "uncompressed", "collection_files": {path: bytes}} of ``module``'s AnsiballZ."""
    ansible, path = _ansible_bin("ansible")
    if not ansible:
        raise RuntimeError("ansible not found")
    top = _collections()
    tmp = os.path.join(top, "remote_tmp")
    try:
        env = _base_env(top, path)
        env.update({"ANSIBLE_KEEP_REMOTE_FILES": "1", "ANSIBLE_PIPELINING": "False", "ANSIBLE_REMOTE_TMP": tmp,
                    "BRICK_STORAGE_ROOT": os.path.join(top, "empty-host")})
        os.makedirs(os.path.join(top, "empty-host"))
        fq = module if "." in module else "brick.storage." + module
        argv = [ansible, "localhost", "-c", "local", "-C", "-m", fq, "-e", "ansible_python_interpreter=" + sys.executable]
        if args:
            argv += ["-a", json.dumps(args)]
        subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        files = glob.glob(os.path.join(tmp, "*", "AnsiballZ_*.py"))
        if not files:
            raise RuntimeError("no AnsiballZ file kept for %s" % fq)
        z = _zip_of(files[0])
        infos = z.infolist()
        coll = dict((i.filename.split("brick/storage/", 1)[1], i.file_size) for i in infos
                    if i.filename.startswith("ansible_collections/brick/storage/") and i.file_size)
        return {"bytes": os.path.getsize(files[0]), "zip_files": len(infos),
                "uncompressed": sum(i.file_size for i in infos), "collection_files": coll,
                "collection_bytes": sum(coll.values())}
    finally:
        shutil.rmtree(top, ignore_errors=True)


def payloads():
    out = {"ping": payload("ansible.builtin.ping")}
    for module in MODULES:
        out[module] = payload(module, PAYLOAD_ARGS[module])
        out[module]["vs_ping"] = round(out[module]["bytes"] / float(out["ping"]["bytes"]), 2)
    return out


# ------------------------------------------------------------------------------------------------ lab runs
class LabAnsible(object):
    """``ansible lab -m MODULE`` against the lab guest, as tests/integration/lab/conftest.py runs it."""

    def __init__(self, lab):
        self.ansible, path = _ansible_bin("ansible")
        if not self.ansible:
            raise RuntimeError("ansible not found")
        self.top = _collections()
        self.env = _base_env(self.top, path)
        self.env.update({"LAB_DIR": lab.lab_dir, "LAB_SSH_PORT": str(lab.ssh_port), "ANSIBLE_PIPELINING": "True",
                         "ANSIBLE_SSH_PIPELINING": "True", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
                         "ANSIBLE_TIMEOUT": "60"})
        self.inventory = os.path.join(REPO, "tests", "lab", "inventory.yml")

    def run(self, module, args=None, check=False):
        argv = [self.ansible, "lab", "-i", self.inventory, "-m", module]
        if args:
            argv += ["-a", json.dumps(args)]
        if check:
            argv.append("-C")
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=self.env, check=False)
        dt = time.monotonic() - t0
        m = re.search(r"^lab \| [A-Z]+ => (\{.*\})\s*$", p.stdout, re.S | re.M)
        try:
            res = json.loads(m.group(1)) if m else {}
        except ValueError:
            res = {}
        if p.returncode != 0 or not res or res.get("failed") or res.get("unreachable"):
            raise RuntimeError("ansible -m %s %s failed (rc %d): %s %s"
                               % (module, args, p.returncode, p.stdout[-1500:], p.stderr[-800:]))
        return dt, res

    def close(self):
        shutil.rmtree(self.top, ignore_errors=True)


ATTACHED = {"portals": [P1], "iqn": T, "lun": 1, "multipath": "off"}
# LUN 0 through the portal that has no session and no node record: nothing of it is on the host
ABSENT = {"portals": [P2], "iqn": T, "lun": 0, "state": "absent"}


def _rows(device):
    return (("ping", "ansible.builtin.ping", None, False),
            ("attach_rerun", "brick.storage.iscsi_volume", ATTACHED, False),
            ("facts", "brick.storage.volume_paths_facts", {"volume": {"portals": [P1], "iqn": T, "lun": 1}}, False),
            ("idle", "brick.storage.block_device_idle", {"device": device}, True),
            ("detach_absent", "brick.storage.iscsi_volume", ABSENT, False))


def _series(ans, rows, n, warm):
    times = dict((r[0], []) for r in rows)
    if warm:
        for _label, module, args, check in rows:
            ans.run(module, args, check)
    for i in range(n):
        order = rows[i % len(rows):] + rows[:i % len(rows)]
        for label, module, args, check in order:
            dt, res = ans.run(module, args, check)
            if label in ("attach_rerun", "detach_absent") and (res.get("changed") or res.get("commands")):
                raise RuntimeError("%s changed something or ran commands: %s" % (label, res))
            times[label].append(dt)
    out = {}
    ping = statistics.median(times["ping"])
    for label, ts in times.items():
        med = statistics.median(ts)
        out[label] = {"median_s": round(med, 3), "min_s": round(min(ts), 3), "max_s": round(max(ts), 3),
                      "runs": [round(t, 3) for t in ts], "vs_ping": round(med / ping, 2)}
    return out


def lab_runs(lab, n=5):
    """{"cached": {row: {...}}, "uncached": {...}}: module runs vs ping on the lab (see the module docstring)."""
    ans = LabAnsible(lab)
    out = {"repetitions": n}
    try:
        _dt, res = ans.run("brick.storage.iscsi_volume", ATTACHED)  # the volume the re-run finds attached
        rows = _rows(res["device"])
        _log("module runs vs ping, lab bytecode cache on (%d repetitions)" % n)
        out["cached"] = _series(ans, rows, n, warm=True)
        rc, _out, err = lab.ssh("for f in %s; do mv $f $f.off; done" % PYC_PTH, timeout=60)
        if rc != 0:
            raise RuntimeError("could not turn the lab's bytecode cache off: %s" % err)
        try:
            _log("module runs vs ping, no bytecode cache (what a real host pays; %d repetitions)" % n)
            out["uncached"] = _series(ans, rows, n, warm=False)
        finally:
            lab.ssh("for f in %s.off; do mv $f ${f%%.off}; done" % PYC_PTH, timeout=60)
        ans.run("brick.storage.iscsi_volume", dict(ATTACHED, state="absent"))
        return out
    finally:
        ans.close()


if __name__ == "__main__":
    print(json.dumps(payloads(), indent=2, sort_keys=True))
