# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark: the orphan audit playbook over 50, 200 and 1,000 simulated hosts vs ``ansible -m ping``.

Every host is a directory tree shaped like an initiator (bench_facts.build_tree: two multipath volumes over
two portals) reached with the local connection; the modules read it through ``BRICK_STORAGE_ROOT``
(``brick_storage_environment`` host variable, honoured by playbooks/orphan_audit.yml).  One host in ten gets a
dangling link and a FAILED session so the report has content.  Both commands run in the same process, with
the same inventory, interpreter, forks (``FORKS``) and strategy (``STRATEGY``, set through ``ANSIBLE_STRATEGY``
for both: the ad-hoc ``ansible`` honours it too); the ratio is audit seconds / ping seconds.

Where the audit's time goes: a callback (bench/callback_plugins/bench_task_times.py) records the wall time of
every task of both runs, summed as ``tasks_<n>``: ``argspec`` (the check of the role's settings: once for
the fleet since issue 18, a task per host before), ``module`` (volume_paths_facts, per host; ping's one task is
``ping_task``), ``per_host_after`` (what follows the report per host: ``meta: end_role`` for the hosts with nothing to
do, decided in the controller, and the include of post.yml for the others), ``once`` (the report, built and written once on the controller) and
``startup`` (the rest: ansible-playbook start, inventory, play set-up and the end).

``variants``: the audit and ping again at 200 hosts with the settings that docs/orphan_audit.md discusses for
large fleets (the ``free`` strategy, 50 forks, a jsonfile fact cache), each with ping under the same settings.

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
STRATEGY = "linear"
SIZES = (50, 200, 1000)
VARIANTS_AT = 200
# name: (strategy, forks, extra environment (``%(top)s`` = the bench's temporary directory))
VARIANTS = {"free_20": ("free", 20, {}),
            "linear_50": ("linear", 50, {}),
            "jsonfile_cache_20": ("linear", 20, {"ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
                                                 "ANSIBLE_CACHE_PLUGIN_CONNECTION": "%(top)s/fact-cache"})}


def _fleet(top, n):
    inv = os.path.join(top, "inventory-%d.yml" % n)
    if os.path.exists(inv):
        return inv
    hosts = []
    for i in range(n):
        root = os.path.join(top, "hosts-%d" % n, "h%04d" % i)
        bench_facts.build_tree(root, 4, luns_per_target=2)
        if i % 10 == 0:  # an orphan or three
            os.remove(root + "/dev/sdb")
            with open(root + "/sys/devices/platform/host2/session2/iscsi_session/session2/state", "w") as f:
                f.write("FAILED\n")
        hosts.append(("h%04d" % i, root))
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


def _env(top, colls, strategy=STRATEGY, forks=FORKS, extra=None):
    env = dict(os.environ)
    env.update(ANSIBLE_COLLECTIONS_PATH=colls, ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_RETRY_FILES_ENABLED="False",
               ANSIBLE_LOCAL_TEMP=os.path.join(top, "tmp"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="False", ANSIBLE_FORKS=str(forks), ANSIBLE_STRATEGY=strategy,
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="bench_task_times", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    for k, v in (extra or {}).items():
        env[k] = v % {"top": top}
    return env


def _timed(argv, env, cwd, times_file):
    if os.path.exists(times_file):
        os.remove(times_file)
    env = dict(env, BRICK_BENCH_TASK_TIMES=times_file)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, check=False)
    dt = time.perf_counter() - t0
    tasks = []
    if os.path.exists(times_file):
        with open(times_file) as f:
            tasks = [json.loads(line) for line in f if line.strip()]
    return dt, p, tasks


def _split(total, tasks):
    """The audit's tasks summed by kind (see the module docstring)."""
    out = {"argspec": 0.0, "module": 0.0, "per_host_after": 0.0, "once": 0.0}
    for t in tasks:
        name = t["task"]
        if "Validating arguments" in name or "Check the audit's settings" in name:
            out["argspec"] += t["s"]
        elif "Read the volume paths" in name:
            out["module"] += t["s"]
        elif "Clean up, and fail" in name or "End the role" in name:
            out["per_host_after"] += t["s"]
        else:
            out["once"] += t["s"]
    out["startup"] = total - sum(out.values())
    return dict((k, round(v, 2)) for k, v in out.items())


def measure(n, top, colls, repeats=1, strategy=STRATEGY, forks=FORKS, extra=None):
    """{"ping_s", "audit_s", "ratio", "ping_task_s", "tasks"}: the least of ``repeats`` runs of each."""
    inv = _fleet(top, n)
    env = _env(top, colls, strategy, forks, extra)
    report = os.path.join(top, "report-%d" % n)
    times_file = os.path.join(top, "task-times.jsonl")
    ping, audit = [], []
    for _attempt in range(repeats):
        dt, p, tasks = _timed(["ansible", "all", "-i", inv, "-m", "ansible.builtin.ping", "-f", str(forks)], env, top,
                              times_file)
        if p.returncode != 0:
            raise RuntimeError("ping failed:\n" + p.stdout[-3000:])
        ping.append((dt, sum(t["s"] for t in tasks)))
        dt, p, tasks = _timed(["ansible-playbook", "-i", inv, os.path.join(REPO, "playbooks", "orphan_audit.yml"),
                               "-f", str(forks), "-e", "brick_orphan_audit_report_dir=" + report], env, top,
                              times_file)
        if p.returncode != 0:
            raise RuntimeError("audit failed:\n" + p.stdout[-3000:])
        audit.append((dt, _split(dt, tasks)))
    with open(os.path.join(report, "orphan-report.json")) as f:
        rep = json.load(f)
    assert rep["totals"]["hosts_audited"] == n, rep["totals"]
    assert rep["totals"]["hosts_with_orphans"] == (n + 9) // 10, rep["totals"]
    ping_s, ping_task = min(ping)
    audit_s, tasks = min(audit, key=lambda x: x[0])
    return {"ping_s": round(ping_s, 2), "audit_s": round(audit_s, 2), "ratio": round(audit_s / ping_s, 2),
            "ping_task_s": round(ping_task, 2), "tasks": tasks, "strategy": strategy, "forks": forks}


def run(quick=False, sizes=SIZES, variants=True):
    top = tempfile.mkdtemp(prefix="brick-bench-audit-")
    try:
        colls = _collections(top)
        out = {"forks": FORKS, "strategy": STRATEGY, "repeats": 1 if quick else 2, "sizes": list(sizes)}
        for n in sizes:
            sys.stderr.write("[bench_audit] %d hosts: ping and the audit (forks %d, strategy %s)\n"
                             % (n, FORKS, STRATEGY))
            m = measure(n, top, colls, repeats=1 if quick else 2)
            out["ping_s_%d" % n] = m["ping_s"]
            out["audit_s_%d" % n] = m["audit_s"]
            out["ratio_vs_ping_%d" % n] = m["ratio"]
            out["ping_task_s_%d" % n] = m["ping_task_s"]
            out["tasks_%d" % n] = m["tasks"]
        if variants:
            out["variants_hosts"] = VARIANTS_AT
            out["variants"] = {}
            for name, (strategy, forks, extra) in sorted(VARIANTS.items()):
                sys.stderr.write("[bench_audit] %d hosts, %s: ping and the audit\n" % (VARIANTS_AT, name))
                out["variants"][name] = measure(VARIANTS_AT, top, colls, 1, strategy, forks, extra)
        return out
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
