# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark: the orphan audit playbook over 50 and 200 simulated hosts vs ``ansible -m ping``.

Every host is a directory tree shaped like an initiator (bench_facts.build_tree: two multipath volumes over
two portals) reached with the local connection; the modules read it through ``BRICK_STORAGE_ROOT``
(``brick_storage_environment`` host variable, honoured by playbooks/orphan_audit.yml).  One host in ten gets a
dangling link and a FAILED session so the report has content.  Both commands run in the same process, with
the same inventory, forks and interpreter; the ratio is audit seconds / ping seconds.

    python3 bench/bench_audit.py [--quick]
"""

from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_facts  # noqa: E402

FORKS = 20


def _fleet(top, n):
    hosts = []
    for i in range(n):
        root = os.path.join(top, "hosts-%d" % n, "h%03d" % i)
        bench_facts.build_tree(root, 4, luns_per_target=2)
        if i % 10 == 0:  # an orphan or three
            os.remove(root + "/dev/sdb")
            with open(root + "/sys/devices/platform/host2/session2/iscsi_session/session2/state", "w") as f:
                f.write("FAILED\n")
        hosts.append(("h%03d" % i, root))
    inv = os.path.join(top, "inventory-%d.yml" % n)
    with open(inv, "w") as f:
        f.write("all:\n  vars:\n    ansible_connection: local\n    ansible_python_interpreter: %s\n  hosts:\n"
                % sys.executable)
        for name, root in hosts:
            f.write("    %s:\n      brick_storage_environment: {BRICK_STORAGE_ROOT: %s}\n" % (name, root))
    return inv


def _collections(top):
    coll = os.path.join(top, "collections", "ansible_collections", "brick")
    os.makedirs(coll)
    os.symlink(REPO, os.path.join(coll, "storage"))
    return os.path.join(top, "collections")


def _env(top, colls):
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=colls, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCAL_TEMP=os.path.join(top, "tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_FORKS=str(FORKS))
    return env


def _timed(argv, env, cwd):
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, check=False)
    dt = time.perf_counter() - t0
    return dt, p


def measure(n, top, colls, repeats=1):
    inv = _fleet(top, n)
    env = _env(top, colls)
    report = os.path.join(top, "report-%d" % n)
    ping, audit = [], []
    for _attempt in range(repeats):
        dt, p = _timed(["ansible", "all", "-i", inv, "-m", "ansible.builtin.ping", "-f", str(FORKS)], env, top)
        if p.returncode != 0:
            raise RuntimeError("ping failed:\n" + p.stdout[-3000:])
        ping.append(dt)
        dt, p = _timed(["ansible-playbook", "-i", inv, os.path.join(REPO, "playbooks", "orphan_audit.yml"),
                        "-f", str(FORKS), "-e", "brick_orphan_audit_report_dir=" + report], env, top)
        if p.returncode != 0:
            raise RuntimeError("audit failed:\n" + p.stdout[-3000:])
        audit.append(dt)
    with open(os.path.join(report, "orphan-report.json")) as f:
        rep = json.load(f)
    assert rep["totals"]["hosts_audited"] == n, rep["totals"]
    assert rep["totals"]["hosts_with_orphans"] == (n + 9) // 10, rep["totals"]
    return min(ping), min(audit)


def run(quick=False):
    top = tempfile.mkdtemp(prefix="brick-bench-audit-")
    try:
        colls = _collections(top)
        out = {}
        for n in (50, 200):
            ping, audit = measure(n, top, colls, repeats=1 if quick else 2)
            out["ping_s_%d" % n] = round(ping, 2)
            out["audit_s_%d" % n] = round(audit, 2)
            out["ratio_vs_ping_%d" % n] = round(audit / ping, 2)
        return out
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
