# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage benchmarks: one entry point, one results file, one table.

    python3 bench/run.py [--quick] [--no-lab] [--lab-wait SECONDS] [--only SECTION,...] [--out FILE]

Sections (each measured in this run, on this machine; see bench/README.md):

* commands, sim_latency  bench_commands.py: our connector vs os-brick on the simulated host
* lab                    bench_lab.py: our connector vs the raw kernel floor on the QEMU lab
* facts, audit, idle, lock  bench_facts / bench_audit / bench_idle / bench_lock ``run(quick)``

Writes bench/results.json (``--out``) and prints the table.  Never part of the default test run.
"""

from __future__ import absolute_import, division, print_function

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

SECTIONS = ("commands", "lab", "facts", "audit", "idle", "lock")
OPS = ("connect_single", "connect_rerun", "connect_multipath_2", "connect_multipath_4",
       "detach_single", "detach_multipath_2", "detach_multipath_4", "volume_paths")
# The goal of the issue: at most half of os-brick's commands.
GOAL_RATIO = 0.5


def _log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


# ------------------------------------------------------------------------------ meta
def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ansible_core():
    try:
        from importlib import metadata
        return metadata.version("ansible-core")
    except Exception:
        pass
    try:
        out = subprocess.run(["ansible", "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
        return out.split("core", 1)[1].split("]", 1)[0].strip() if "core" in out else None
    except Exception:
        return None


def meta():
    u = platform.uname()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": {"system": u.system, "release": u.release, "version": u.version, "arch": u.machine,
                    "cpu_model": _cpu_model(), "cores": os.cpu_count(), "loadavg_at_start": load},
        "python": platform.python_version(),
        "ansible_core": _ansible_core(),
        "os_brick": None,
    }


# ------------------------------------------------------------------------------ sections
def _section(name, fn):
    _log("== %s" % name)
    t0 = time.monotonic()
    try:
        res = fn()
    except Exception as e:
        res = {"error": "%s: %s" % (type(e).__name__, e), "traceback": traceback.format_exc()[-2000:]}
    if isinstance(res, dict):
        res.setdefault("bench_seconds", round(time.monotonic() - t0, 1))
    _log("== %s done in %.1f s" % (name, time.monotonic() - t0))
    return res


def _other(modname, quick):
    path = os.path.join(HERE, modname + ".py")
    if not os.path.exists(path):
        return {"error": "%s.py is not there (yet)" % modname}
    mod = importlib.import_module(modname)
    return mod.run(quick=quick)


# ------------------------------------------------------------------------------ table
def _f(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%." + str(nd) + "f") % v
    return str(v)


def table(res):
    lines = []
    add = lines.append
    c = res.get("commands") or {}
    if c.get("us"):
        ob = c.get("os_brick", {})
        byp = c.get("os_brick_bypass", {})
        d1 = c.get("os_brick_anchors_d1", {})
        add("External commands per operation (simulated host)  [os-brick: %s]" % c.get("os_brick_source", "-"))
        add("| operation | us | os-brick (of which bypass) | anchors D1 | us/os-brick | goal <= %.1f |" % GOAL_RATIO)
        add("|---|---:|---:|---:|---:|---|")
        for k in OPS:
            us, them = c["us"].get(k), ob.get(k)
            ratio = c.get("ratio", {}).get(k)
            ok = "-" if ratio is None else ("ok" if ratio <= GOAL_RATIO else "BEHIND")
            if them == 0 and us == 0:
                ok = "ok (0 = 0)"
            them_s = "%s (%s)" % (_f(them), _f(byp.get(k, 0))) if them is not None else "-"
            add("| %s | %s | %s | %s | %s | %s |" % (k, _f(us), them_s, _f(d1.get(k)), _f(ratio, 2), ok))
        add("")
    s = res.get("sim_latency") or {}
    if s.get("us"):
        add("Wall time on the simulated host, %.2f s per command, median of %s (seconds)"
            % (s.get("latency_per_command_s", 0), s.get("repeats")))
        add("| operation | us | os-brick | us/os-brick |")
        add("|---|---:|---:|---:|")
        for k in OPS + ("connect_multipath_2_dead_portal",):
            if k not in s["us"]:
                continue
            label = k if "dead" not in k else "%s (2nd portal black-holed, time_scale %s)" % (
                k, s.get("dead_portal_time_scale"))
            add("| %s | %s | %s | %s |" % (label, _f(s["us"].get(k)), _f(s.get("os_brick", {}).get(k)),
                                           _f(s.get("ratio", {}).get(k), 3)))
        add("")
    lab = res.get("lab") or {}
    if lab.get("skipped") or (lab.get("error") and not lab.get("attach_single")):
        add("Lab: SKIPPED - %s" % (lab.get("skipped") or lab.get("error")))
        add("")
    elif lab:
        add("Real-kernel lab (QEMU TCG), connector call in one warm guest process, median of %s (seconds)"
            % lab.get("iterations"))
        add("| operation | us | raw floor | us/raw |")
        add("|---|---:|---:|---:|")
        for k in ("attach_single", "attach_multipath_2", "detach_single", "detach_multipath_2"):
            r = lab.get(k) or {}
            add("| %s | %s | %s | %s |" % (k, _f(r.get("us_s")), _f(r.get("raw_s")), _f(r.get("ratio"), 2)))
        d = lab.get("dead_portal_attach") or {}
        if d:
            add("| dead_portal_attach (2 portals, 127.0.0.2 black-holed) | %s | os-brick ref: %s | %s |"
                % (_f(d.get("us_s")), _f(d.get("os_brick_s"), 1), _f(d.get("ratio"), 3)))
        m = lab.get("module_run") or {}
        if m:
            add("")
            add("Whole module run from the host (ansible -m brick.storage.iscsi_volume), seconds: "
                + ", ".join("%s %s" % (k[:-2], _f(v, 1)) for k, v in sorted(m.items())))
        if lab.get("error"):
            add("Lab error: %s" % lab["error"])
        add("")
    for name, keys in (("facts", ("ms_64", "ms_256", "ms_1024", "ms_4096")),
                       ("audit", ("ratio_vs_ping_50", "ratio_vs_ping_200")),
                       ("idle", ("us_s", "sleep3_s")),
                       ("lock", ("handoff_ms", "acquire_release_per_s"))):
        r = res.get(name)
        if r is None:
            continue
        if r.get("error") and not any(k in r for k in keys):
            add("%-6s ERROR: %s" % (name, r["error"]))
        else:
            add("%-6s " % name + ", ".join("%s %s" % (k, _f(r.get(k))) for k in keys))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (lab: 2 instead of 5)")
    ap.add_argument("--no-lab", action="store_true", help="skip the real-kernel lab section")
    ap.add_argument("--lab-wait", type=float, default=None,
                    help="seconds to wait for the shared lab's lock (default 900, env BRICK_BENCH_LAB_WAIT)")
    ap.add_argument("--only", default=None, help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the sections of the existing --out file that this run does not measure")
    a = ap.parse_args(argv)
    only = set(a.only.split(",")) if a.only else set(SECTIONS)

    res = {"meta": meta(), "quick": a.quick}
    t0 = time.monotonic()
    if "commands" in only:
        import bench_commands
        cmd = _section("commands", lambda: bench_commands.run(quick=a.quick))
        res["commands"] = cmd.get("commands", {"error": cmd.get("error")})
        res["sim_latency"] = cmd.get("sim_latency", {})
        res["commands_argv"] = cmd.get("argv", {})
        res["meta"]["os_brick"] = cmd.get("os_brick_version")
        if cmd.get("errors"):
            res["commands"]["errors"] = cmd["errors"]
    for name, mod in (("facts", "bench_facts"), ("audit", "bench_audit"), ("idle", "bench_idle"),
                      ("lock", "bench_lock")):
        if name in only:
            res[name] = _section(name, lambda mod=mod: _other(mod, a.quick))
    if "lab" in only:
        if a.no_lab:
            res["lab"] = {"skipped": "--no-lab"}
        else:
            import bench_lab
            res["lab"] = _section("lab", lambda: bench_lab.run(quick=a.quick, lock_timeout=a.lab_wait))
    res["meta"]["bench_seconds"] = round(time.monotonic() - t0, 1)
    if a.merge and os.path.exists(a.out):
        # read at the end, so that runs of different sections may overlap
        with open(a.out) as f:
            old = json.load(f)
        for k, v in old.items():
            if k not in res and k not in ("table",):
                res[k] = v
        res["meta"].setdefault("merged_runs", []).extend(old["meta"].get("merged_runs", []))
        res["meta"]["merged_runs"].append(dict((k, v) for k, v in old["meta"].items() if k != "merged_runs"))
        res["meta"]["measured_sections"] = sorted(only)
        if not res["meta"].get("os_brick"):
            res["meta"]["os_brick"] = old["meta"].get("os_brick")
    try:
        res["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    res["table"] = table(res).splitlines()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2, sort_keys=True)
        f.write("\n")
    print(table(res))
    _log("results written to %s" % a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
