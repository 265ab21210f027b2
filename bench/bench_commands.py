# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""External commands and wall time per operation: our connector vs os-brick, on the simulated host.

Both run against the SAME kind of simulated host (tests/sim), one fresh host per scenario:

* us: ``connector.iscsi.Connector`` with the iscsi_volume module's defaults, in this process,
  one ``Runner`` per operation (as one module run); counted from ``Runner.history`` and
  cross-checked with the sim's own command log;
* os-brick: PyPI ``os-brick`` (bench/requirements-bench.txt) in its own virtual environment
  ``bench/.venv-osbrick`` (created on first use), driven by bench/osbrick_sim.py in a subprocess:
  ``ISCSIConnector`` with its executor pointed at the sim's fake commands, sysfs writes
  (``tee -a``) applied to the sim, privsep bypassed.  Its ``multipathd show status`` that goes
  around the injected executor (anchors B10) is counted and reported separately (``bypass``).

Operations (the keys of results.json): connect_single, connect_rerun, connect_multipath_2,
connect_multipath_4, detach_single, detach_multipath_2, detach_multipath_4, volume_paths.
Single path = one portal, no multipath (os-brick ``use_multipath=False``, ours ``multipath: "off"``);
multipath = N portals (os-brick ``use_multipath=True``, ours ``multipath: auto``).

``run(quick=False)`` returns ``{"commands": {...}, "sim_latency": {...}, "os_brick_version",
"argv": {...}}``:

* commands: counted with no latency fault; os-brick's sleeps cut to 1/100 (they do not change
  what it runs, only when);
* sim_latency: wall seconds with ``latency = 0.05`` s per fake command (and per os-brick ``tee``,
  which is a process on a real host), real sleeps for both, median of 3 runs (1 with --quick).

Run alone: ``python3 bench/bench_commands.py [--quick]``.
"""

from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (os.path.join(REPO, "plugins", "module_utils"), os.path.join(REPO, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from connector import iscsi, paths  # noqa: E402
from sim import SimHost  # noqa: E402

VENV = os.path.join(HERE, ".venv-osbrick")
VENV_PY = os.path.join(VENV, "bin", "python")
REQS = os.path.join(HERE, "requirements-bench.txt")
SHIM = os.path.join(HERE, "osbrick_sim.py")

IQN = "iqn.2003-01.org.example.array:vol1"
PORTALS = ["10.0.0.%d:3260" % i for i in range(1, 5)]
LATENCY = 0.05

KEYS = ("connect_single", "connect_rerun", "connect_multipath_2", "connect_multipath_4",
        "detach_single", "detach_multipath_2", "detach_multipath_4", "volume_paths")

# scenario name -> (number of portals, [(op, results key)])
SCENARIOS = {
    "single": (1, [("connect", "connect_single"), ("connect", "connect_rerun"),
                   ("volume_paths", "volume_paths"), ("disconnect", "detach_single")]),
    "mp2": (2, [("connect", "connect_multipath_2"), ("connect", "connect_rerun_multipath_2"),
                ("volume_paths", "volume_paths_multipath_2"), ("disconnect", "detach_multipath_2")]),
    "mp4": (4, [("connect", "connect_multipath_4"), ("disconnect", "detach_multipath_4")]),
}
# Extra (sim_latency only): 2-portal attach with the second portal black-holed.  The sim answers a
# black-holed login after login_timeout x initial_login_retry_max (open-iscsi defaults 15 s x 8 when
# the node record does not set them, as os-brick does not) x time_scale.
DEAD = {"dead2": (2, [("connect", "connect_multipath_2_dead_portal")])}
DEAD_TIME_SCALE = 0.05

# anchors.md D1: os-brick 7.1.1 on a fake host, executor calls (without the bypassing
# `multipathd show status`).  Used only when os-brick cannot be driven here.
ANCHORS_D1 = {"connect_single": 8, "connect_rerun": 4, "connect_multipath_2": 19,
              "connect_multipath_4": 35, "detach_single": 8, "detach_multipath_2": 12,
              "detach_multipath_4": 20, "volume_paths": 1}


def _log(msg):
    sys.stderr.write("[bench_commands] %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------------------ os-brick venv
def ensure_osbrick():
    """Create bench/.venv-osbrick with os-brick from PyPI if needed.  Returns (python, version)
    or (None, reason)."""
    def version():
        r = subprocess.run([VENV_PY, "-c", "from importlib import metadata; print(metadata.version('os-brick'))"],
                           capture_output=True, text=True, timeout=120, check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    if os.path.exists(VENV_PY):
        v = version()
        if v:
            return VENV_PY, v
    _log("installing os-brick into %s (pip, PyPI) ..." % VENV)
    try:
        if not os.path.exists(VENV_PY):
            subprocess.run([sys.executable, "-m", "venv", VENV], check=True, capture_output=True, timeout=300)
        r = subprocess.run([VENV_PY, "-m", "pip", "install", "-q", "-r", REQS],
                           capture_output=True, text=True, timeout=1200, check=False)
        if r.returncode != 0:
            return None, "pip install os-brick failed: %s" % (r.stderr or r.stdout)[-800:]
    except (OSError, subprocess.SubprocessError) as e:
        return None, "could not create %s: %s" % (VENV, e)
    v = version()
    return (VENV_PY, v) if v else (None, "os-brick not importable in %s" % VENV)


# ------------------------------------------------------------------------------ hosts
def _new_host(top, name, n, latency, dead=False):
    h = SimHost(os.path.join(top, name, "host"))
    h.add_target(IQN, portals=PORTALS[:n], luns={0: 64})
    if latency:
        h.set_fault("latency", latency)
    if dead:
        h.set_fault("portal_down", {PORTALS[1]: "blackhole"})
        h.set_fault("time_scale", DEAD_TIME_SCALE)
    return h


# ------------------------------------------------------------------------------ us
def _our_op(host, op, n):
    runner = host.runner()
    conn = iscsi.Connector(host.fs, runner, login_timeout=5, login_retries=1, device_wait=20.0,
                           multipath="off" if n == 1 else "auto", multipath_wait=10.0)
    ps = iscsi.build_paths(PORTALS[:n], [IQN], [0])
    log0 = len(host.commands())
    t0 = time.monotonic()
    err = None
    try:
        if op == "connect":
            conn.connect(ps)
        elif op == "disconnect":
            from connector import idle

            def busy(dev):
                try:
                    return idle.inspect(dev, use_fuser="never", fs=host.fs, runner=runner)["blockers"]
                except Exception:
                    return []
            conn.disconnect(ps, busy_check=busy)
        elif op == "volume_paths":
            paths.gather(host.fs, volume={"portals": PORTALS[:n], "iqn": IQN, "lun": 0}, orphans=False)
    except Exception as e:
        err = "%s: %s" % (type(e).__name__, e)
    dt = time.monotonic() - t0
    return {"seconds": dt, "commands": len(runner.history), "sim_log": len(host.commands()) - log0,
            "argv": [" ".join(h["argv"]) for h in runner.history], "error": err}


def _scenario(name):
    return SCENARIOS[name] if name in SCENARIOS else DEAD[name]


def run_ours(top, scenario, latency):
    n, ops = _scenario(scenario)
    host = _new_host(top, "us-%s-%s" % (scenario, time.monotonic_ns()), n, latency, dead=scenario in DEAD)
    out = {}
    for op, key in ops:
        out[key] = _our_op(host, op, n)
    return out


# ------------------------------------------------------------------------------ os-brick
def run_osbrick(py, top, scenario, latency, fast_sleep):
    n, ops = _scenario(scenario)
    base = os.path.join(top, "ob-%s-%s" % (scenario, time.monotonic_ns()))
    host = _new_host(top, os.path.basename(base), n, latency, dead=scenario in DEAD)
    props = {"target_portal": PORTALS[0], "target_iqn": IQN, "target_lun": 0}
    if n > 1:
        props.update(target_portals=PORTALS[:n], target_iqns=[IQN] * n, target_luns=[0] * n)
    spec = {"root": host.root, "repo": REPO, "use_multipath": n > 1, "props": props,
            "ops": [op for op, _key in ops], "fast_sleep": fast_sleep, "charge_tee": bool(latency),
            "lock_dir": os.path.join(base, "locks")}
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    try:
        r = subprocess.run([py, SHIM, json.dumps(spec)], capture_output=True, text=True,
                           timeout=900, env=env, check=False)
    except subprocess.TimeoutExpired:
        return dict((key, {"error": "os-brick run timed out"}) for _op, key in ops), None
    try:
        doc = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = "os-brick shim failed (rc %s): %s" % (r.returncode, r.stderr[-1500:])
        return dict((key, {"error": err}) for _op, key in ops), None
    out = {}
    for (_op, key), res in zip(ops, doc["results"]):
        out[key] = res
    return out, doc.get("os_brick")


# ------------------------------------------------------------------------------ the bench
def _merge(dst, src):
    for k, v in src.items():
        dst.setdefault(k, []).append(v)


def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def run(quick=False):
    reps = 1 if quick else 3
    top = tempfile.mkdtemp(prefix="brick-bench-cmd-")
    out = {"commands": {"us": {}, "os_brick": {}, "os_brick_bypass": {}, "ratio": {}},
           "sim_latency": {"us": {}, "os_brick": {}, "ratio": {}, "latency_per_command_s": LATENCY,
                           "repeats": reps},
           "argv": {"us": {}, "os_brick": {}}, "errors": []}
    try:
        py, ver = ensure_osbrick()
        out["os_brick_version"] = ver if py else None
        if not py:
            out["errors"].append(ver)
            out["commands"]["os_brick_source"] = "anchors D1 (measured on a fake host)"
            out["commands"]["os_brick"] = dict(ANCHORS_D1)
        else:
            out["commands"]["os_brick_source"] = ("measured: os-brick %s driven against tests/sim by "
                                                  "bench/osbrick_sim.py, this run" % ver)

        # 1. command counts (no latency)
        for sc in SCENARIOS:
            _log("counting commands: %s" % sc)
            ours = run_ours(top, sc, 0)
            for key, r in ours.items():
                out["commands"]["us"][key] = r["commands"]
                out["argv"]["us"][key] = r["argv"]
                if r["error"]:
                    out["errors"].append("us %s: %s" % (key, r["error"]))
                if r["sim_log"] != r["commands"]:
                    out["errors"].append("us %s: Runner.history %d != sim log %d" % (key, r["commands"], r["sim_log"]))
            if py:
                theirs, _timing = run_osbrick(py, top, sc, 0, fast_sleep=True)
                for key, r in theirs.items():
                    if r.get("error"):
                        out["errors"].append("os-brick %s: %s" % (key, r["error"]))
                    if "commands" in r:
                        out["commands"]["os_brick"][key] = r["commands"]
                        out["commands"]["os_brick_bypass"][key] = r["bypass"]
                        out["argv"]["os_brick"][key] = r["argv"]
        for key in list(out["commands"]["us"]):
            a, b = out["commands"]["us"].get(key), out["commands"]["os_brick"].get(key)
            if a is not None and b:
                out["commands"]["ratio"][key] = round(float(a) / b, 3)
        out["commands"]["os_brick_anchors_d1"] = dict(ANCHORS_D1)

        # 2. wall time with a fixed per-command latency, real sleeps
        us_t, ob_t = {}, {}
        ob_cmds = {}
        for i in range(reps):
            for sc in list(SCENARIOS) + list(DEAD):
                _log("latency %.2f s/command, run %d/%d: %s" % (LATENCY, i + 1, reps, sc))
                ours = run_ours(top, sc, LATENCY)
                _merge(us_t, dict((k, r["seconds"] if not r["error"] else None) for k, r in ours.items()))
                if py:
                    theirs, _timing = run_osbrick(py, top, sc, LATENCY, fast_sleep=False)
                    _merge(ob_t, dict((k, r.get("seconds") if not r.get("error") else None)
                                      for k, r in theirs.items()))
                    _merge(ob_cmds, dict((k, r.get("commands")) for k, r in theirs.items()))
                    for k, r in theirs.items():
                        if r.get("error"):
                            out["errors"].append("os-brick (latency) %s: %s" % (k, r["error"]))
        out["sim_latency"]["dead_portal_time_scale"] = DEAD_TIME_SCALE
        for k, xs in us_t.items():
            out["sim_latency"]["us"][k] = _median(xs)
        for k, xs in ob_t.items():
            out["sim_latency"]["os_brick"][k] = _median(xs)
        out["sim_latency"]["os_brick_commands_seen"] = dict((k, sorted(set(x for x in v if x is not None)))
                                                            for k, v in ob_cmds.items())
        for k, a in out["sim_latency"]["us"].items():
            b = out["sim_latency"]["os_brick"].get(k)
            if a is not None and b:
                out["sim_latency"]["ratio"][k] = round(a / b, 3)
        return out
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
