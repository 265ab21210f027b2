# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Attach / detach on the real-kernel QEMU lab (tests/lab): our connector, the raw kernel sequence and os-brick
7.1.1, side by side in the same run; then whole module runs against ``ansible -m ping`` (bench_e2e.py).

Inside the guest, one warm Python process per scenario (bench/lab_guest.py; os-brick in a worker process of its own)
times, over N repetitions with the order of the tools rotating per repetition, medians and min-max reported:

* ``us``:      ``Connector.connect`` / ``disconnect`` with the iscsi_volume defaults (single path: LUN 1,
  ``multipath: "off"``; 2 portals: LUN 0 on 127.0.0.1 and 127.0.0.2, ``multipath: auto``);
* ``raw``:     the shortest command sequence that leaves the host in the same state (lab_guest.py);
* ``os_brick``: os-brick's ISCSIConnector from PyPI, installed offline into the guest (lab_osbrick.py), with its
  privsep daemon started before anything is timed.

plus the 2-portal attach with 127.0.0.2 black-holed (``lab-target block-portal``).  Every figure is given as a
ratio to raw and to os-brick of this run, with the command counts.

The lab: ``tests/lab/lab.py``'s ``Lab`` honours ``LAB_DIR`` and ``LAB_SSH_PORT`` (``run.py --lab-dir/--lab-port``
set them), so the bench can run on an instance of its own.  It takes that instance's lock (``Lab.lock()``, the one
the lab tests take), resets the guest to "ready" before and after, and stops it at the end only if it started
it.  ``run(quick)`` returns ``{"skipped": reason}`` when the lab cannot run or is busy.
"""

from __future__ import absolute_import, division, print_function

import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

GUEST_DIR = "/tmp/brick-bench"
TOOLS = ("us", "raw", "osbrick")
ROWS = (("attach_single", "single", "attach"), ("detach_single", "single", "detach"),
        ("attach_multipath_2", "multipath", "attach"), ("detach_multipath_2", "multipath", "detach"),
        ("dead_portal_attach", "dead", "attach"))
# When os-brick cannot run in the guest, its dead-portal figure falls back to the reference measured on this lab
# (shared docs lab.md, "Further findings"): a login to a black-holed portal returns after ~122.8 s with
# open-iscsi's defaults, and os-brick's multipath connect waits for every login thread.
OSBRICK_DEAD_PORTAL_REF_S = 122.8


def _log(msg):
    sys.stderr.write("[bench_lab] %s\n" % msg)
    sys.stderr.flush()


def _ship(lab):
    """Copy plugins/module_utils/connector and lab_guest.py into the guest (tar over ssh)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        src = os.path.join(REPO, "plugins", "module_utils", "connector")
        for f in sorted(os.listdir(src)):
            if f.endswith(".py"):
                tf.add(os.path.join(src, f), arcname="connector/" + f)
        tf.add(os.path.join(HERE, "lab_guest.py"), arcname="lab_guest.py")
    cmd = "rm -rf %s && mkdir -p %s && tar -x -C %s" % (GUEST_DIR, GUEST_DIR, GUEST_DIR)
    p = subprocess.run(lab.ssh_argv() + [cmd], input=buf.getvalue(), capture_output=True, timeout=120, check=False)
    if p.returncode != 0:
        raise RuntimeError("copy to guest failed: %s" % p.stderr.decode(errors="replace"))


def _driver(lab, osbrick_python, mode, n, tools, timeout=3600):
    """lab_guest.py in the guest's python3 (us and raw), os-brick in its worker under ``osbrick_python``."""
    spec = {"mode": mode, "n": n, "tools": list(tools), "dir": GUEST_DIR, "settle": 3.0,
            "osbrick_python": osbrick_python}
    rc, out, err = lab.ssh("python3 %s/lab_guest.py '%s'" % (GUEST_DIR, json.dumps(spec)), timeout=timeout)
    m = re.search(r"^BENCH-JSON (.*)$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError("guest driver %s failed (rc %s): %s %s" % (mode, rc, out[-1500:], err[-2500:]))
    return json.loads(m.group(1))


def _guest_clean(lab):
    t = "iqn.2003-01.org.linux-iscsi.lab:target1"
    script = ("for p in 127.0.0.1:3260 127.0.0.2:3260; do iscsiadm -m node -T %s -p $p --logout >/dev/null 2>&1; "
              "iscsiadm -m node -T %s -p $p --op delete >/dev/null 2>&1; done; true" % (t, t))
    lab.ssh(script, timeout=300)


def _stats(runs, commands):
    if not runs:
        return None
    return {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "max_s": round(max(runs), 3),
            "runs": [round(x, 3) for x in runs], "commands": sorted(set(commands))}


def _ratio(a, b):
    return round(a["median_s"] / b["median_s"], 3) if a and b and b["median_s"] else None


def _rows(results):
    """{row: {"us": stats, "raw": stats, "os_brick": stats, "us_vs_raw", "us_vs_os_brick", ...}}."""
    out = {}
    for row, mode, op in ROWS:
        r = results.get(mode)
        if not r:
            continue
        entry = {}
        for tool in TOOLS:
            t = r["results"].get(tool)
            if t is not None:
                entry["os_brick" if tool == "osbrick" else tool] = _stats(t[op], t[op + "_commands"])
                if t.get("errors"):
                    entry.setdefault("errors", {})[tool] = t["errors"]
                if op == "attach" and t.get("device"):
                    entry.setdefault("device", {})[tool] = t["device"]
                if op == "attach" and t.get("warnings"):
                    entry.setdefault("warnings", {})[tool] = t["warnings"]
        entry["us_vs_raw"] = _ratio(entry.get("us"), entry.get("raw"))
        entry["us_vs_os_brick"] = _ratio(entry.get("us"), entry.get("os_brick"))
        entry["os_brick_vs_raw"] = _ratio(entry.get("os_brick"), entry.get("raw"))
        if op == "detach":
            entry["raw_flush_retries"] = r.get("raw_flush_retries")
        out[row] = entry
    dead = out.get("dead_portal_attach")
    if dead is not None and not dead.get("os_brick") and dead.get("us"):
        dead["os_brick_reference_s"] = OSBRICK_DEAD_PORTAL_REF_S
        dead["us_vs_os_brick"] = round(dead["us"]["median_s"] / OSBRICK_DEAD_PORTAL_REF_S, 3)
        dead["os_brick_source"] = "lab.md reference (os-brick could not run in the guest in this run)"
    return out


def _os_brick(lab, out):
    """Install os-brick in the guest; returns (its venv's python or None, the tools to run)."""
    import lab_osbrick
    try:
        info = lab_osbrick.install(lab, log=_log)
    except Exception as e:  # the bench goes on without os-brick, and says so
        out["os_brick"] = {"error": "%s: %s" % (type(e).__name__, e)}
        _log("os-brick NOT available in the guest: %s" % e)
        return None, ("us", "raw")
    out["os_brick"] = info
    return info["python"], TOOLS


def _measure(lab, out, quick):
    n = 2 if quick else 5
    n_dead = 1 if quick else 2  # os-brick's dead-portal connect takes about 2 minutes per repetition
    python, tools = _os_brick(lab, out)
    _ship(lab)
    _guest_clean(lab)
    results = {}
    for mode, reps in (("single", n), ("multipath", n), ("dead", n_dead)):
        _log("guest driver: %s x%d (%s, alternating)" % (mode, reps, ", ".join(tools)))
        if mode == "dead":
            lab.target("block-portal", "127.0.0.2")
        try:
            results[mode] = _driver(lab, python, mode, reps, tools)
        finally:
            if mode == "dead":
                lab.target("unblock-portal", "127.0.0.2", check=False)
        out.setdefault("startup", results[mode].get("startup") or {})
        _guest_clean(lab)
    out.update(_rows(results))
    out["iterations"] = n
    out["dead_portal_iterations"] = n_dead
    import bench_e2e
    _log("whole module runs vs ansible -m ping")
    out["module_runs"] = bench_e2e.lab_runs(lab, n=2 if quick else 5)


def run(quick=False, lock_timeout=None):
    from lab import Lab, LabError
    lab = Lab(log=lambda m: None)
    if not lab.available():
        return {"skipped": "lab cannot run here: %s" % lab.unavailable_reason}
    lock_timeout = lock_timeout if lock_timeout is not None else float(os.environ.get("BRICK_BENCH_LAB_WAIT", "900"))
    _log("lab %s (ssh port %d): taking its lock (waits up to %d s while another session uses it)"
         % (lab.lab_dir, lab.ssh_port, lock_timeout))
    try:
        lab.lock(timeout=lock_timeout)
    except LabError as e:
        return {"skipped": "lab busy: %s" % e}
    started = False
    out = {"lab_dir": lab.lab_dir, "ssh_port": lab.ssh_port}
    try:
        try:
            lab.ensure_built()
            if not lab.is_running():
                _log("starting the lab guest")
                lab.start()
                started = True
            else:
                _log("resetting the lab guest to 'ready'")
                lab.reset()
        except LabError as e:
            return {"skipped": "lab failed to start: %s" % e}
        try:
            out["versions"] = lab.versions()
        except LabError:
            pass
        _measure(lab, out, quick)
        return out
    except Exception as e:  # record, never kill the whole bench
        out["error"] = "%s: %s" % (type(e).__name__, e)
        return out
    finally:
        try:
            if started:
                _log("stopping the lab guest (this run started it)")
                lab.stop()
            else:
                _log("resetting the lab guest to 'ready'")
                lab.reset()
        except LabError as e:
            out.setdefault("cleanup_error", str(e))
        lab.unlock()


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
