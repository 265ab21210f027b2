# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage benchmarks: one entry point, one results file, one table.

    python3 bench/run.py [--quick] [--no-lab] [--lab-wait SECONDS] [--lab-dir DIR --lab-port PORT]
                         [--only SECTION,...] [--merge] [--out FILE] [--table]

Sections (each measured in this run, on this machine; see bench/README.md):

* commands, sim_latency  bench_commands.py: our connector vs os-brick on the simulated host
* lab                    bench_lab.py: our connector, the raw kernel sequence and os-brick 7.1.1 side by side on
                         the QEMU lab, then whole module runs vs ``ansible -m ping`` there (bench_e2e.lab_runs)
* e2e                    bench_e2e.payloads(): the AnsiballZ payload of each module vs ping's
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

SECTIONS = ("commands", "lab", "e2e", "facts", "audit", "idle", "lock")
OPS = ("connect_single", "connect_rerun", "connect_multipath_2", "connect_multipath_4",
       "detach_single", "detach_multipath_2", "detach_multipath_4", "volume_paths")
# The goal of the issue: at most half of os-brick's commands.
GOAL_RATIO = 0.5
# Targets of issue 18 (ratios from the same run)
LAB_VS_RAW, LAB_VS_OSBRICK = 1.2, 0.5
E2E_VS_PING = 1.3
AUDIT_VS_PING = 1.2
FACTS_1024_MS, FACTS_LINEAR = 100.0, 0.2
LAB_ROWS = ("attach_single", "detach_single", "attach_multipath_2", "detach_multipath_2", "dead_portal_attach")


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


def _ok(value, target):
    if value is None:
        return "-"
    return "ok" if value <= target else "MISSED"


def _mm(st, nd=2):
    """median [min-max] of a stats dict."""
    if not st:
        return "-"
    return "%s [%s-%s]" % (_f(st.get("median_s"), nd), _f(st.get("min_s"), nd), _f(st.get("max_s"), nd))


def _cmds(st):
    if not st:
        return "-"
    return "/".join(str(c) for c in st.get("commands") or []) or "-"


def _lab_table(lab, add):
    ob = lab.get("os_brick") or {}
    add("Real-kernel lab (QEMU TCG): one warm guest process per scenario, the tools alternating, median [min-max] of "
        "%s (dead portal: %s), seconds; os-brick %s" % (lab.get("iterations"), lab.get("dead_portal_iterations"),
                                                        ob.get("version") or ("NOT RUN: %s" % ob.get("error"))))
    add("| operation | us | raw | os-brick | us/raw (<= %.1f) | us/os-brick (<= %.1f) | raw/os-brick (the floor) "
        "| commands us / raw / os-brick |" % (LAB_VS_RAW, LAB_VS_OSBRICK))
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k in LAB_ROWS:
        r = lab.get(k)
        if not r:
            continue
        them = _mm(r.get("os_brick"))
        if not r.get("os_brick") and r.get("os_brick_reference_s"):
            them = "ref %s" % _f(r["os_brick_reference_s"], 1)
        vr, vo = r.get("us_vs_raw"), r.get("us_vs_os_brick")
        floor = r.get("os_brick_vs_raw")
        add("| %s | %s | %s | %s | %s %s | %s %s | %s | %s / %s / %s |"
            % (k, _mm(r.get("us")), _mm(r.get("raw")), them, _f(vr, 2), _ok(vr, LAB_VS_RAW), _f(vo, 3),
               _ok(vo, LAB_VS_OSBRICK), _f(round(1.0 / floor, 3) if floor else None, 3), _cmds(r.get("us")),
               _cmds(r.get("raw")), _cmds(r.get("os_brick"))))
    st = lab.get("startup") or {}
    if st:
        add("os-brick start-up in the guest (not in the figures): import %s s, privsep daemon %s s"
            % (_f(st.get("osbrick_import_s"), 1), _f(st.get("osbrick_privsep_start_s"), 1)))
    errs = dict((k, lab[k]["errors"]) for k in LAB_ROWS if (lab.get(k) or {}).get("errors"))
    if errs:
        add("Lab errors: %s" % json.dumps(errs)[:1500])
    if lab.get("error"):
        add("Lab error: %s" % lab["error"])
    add("")


def _e2e_table(runs, payloads, add):
    if runs and runs.get("error"):
        add("End to end on the lab: ERROR %s" % runs["error"])
        add("")
    elif runs:
        add("End to end on the lab: the whole `ansible lab -m MODULE` from the host vs `ansible lab -m ping`, "
            "median [min-max] of %s (seconds)" % runs.get("repetitions"))
        add("| run | lab bytecode cache on | x ping | cache off (what a host pays) | x ping | target |")
        add("|---|---:|---:|---:|---:|---|")
        on, off = runs.get("cached") or {}, runs.get("uncached") or {}
        for k in ("ping", "attach_rerun", "facts", "idle", "detach_absent"):
            a, b = on.get(k), off.get(k)
            target = "<= %.1f x ping" % E2E_VS_PING if k in ("attach_rerun", "facts") else "-"
            if target != "-":
                target += " (%s / %s)" % (_ok((a or {}).get("vs_ping"), E2E_VS_PING),
                                          _ok((b or {}).get("vs_ping"), E2E_VS_PING))
            add("| %s | %s | %s | %s | %s | %s |" % (k, _mm(a), _f((a or {}).get("vs_ping"), 2), _mm(b),
                                                     _f((b or {}).get("vs_ping"), 2), target))
        add("")
    if payloads and not payloads.get("error"):
        add("AnsiballZ payload per module (bytes)")
        add("| module | payload | x ping | files in the zip | collection files | collection bytes |")
        add("|---|---:|---:|---:|---:|---:|")
        for k in ("ping", "iscsi_volume", "volume_paths_facts", "block_device_idle", "multipath_flush"):
            p = payloads.get(k)
            if p:
                add("| %s | %s | %s | %s | %s | %s |" % (k, p["bytes"], _f(p.get("vs_ping", 1.0), 2), p["zip_files"],
                                                         len(p["collection_files"]), p["collection_bytes"]))
        add("")
    elif payloads:
        add("AnsiballZ payloads: ERROR %s" % payloads["error"])
        add("")


def _facts_table(r, add):
    if r is None:
        return
    if r.get("error"):
        add("facts  ERROR: %s" % r["error"])
        return
    sizes = r.get("sizes") or []
    add("volume_paths_facts vs LUN paths (ms: median wall / least CPU; linearity = CPU per path / the %s-path one)"
        % (sizes[0] if sizes else "-"))
    add("| paths | gather | audit (expected list) | whole module | linearity gather / audit / module |")
    add("|---:|---:|---:|---:|---:|")
    for n in sizes:
        lin = "/".join(_f(r.get("linearity_%s_%d" % (w, n)), 2) for w in ("gather", "audit", "module"))
        add("| %d | %s / %s | %s / %s | %s / %s | %s |"
            % (n, _f(r.get("ms_%d" % n), 1), _f(r.get("cpu_ms_%d" % n), 1), _f(r.get("audit_ms_%d" % n), 1),
               _f(r.get("audit_cpu_ms_%d" % n), 1), _f(r.get("module_ms_%d" % n), 1),
               _f(r.get("module_cpu_ms_%d" % n), 1), lin if n != sizes[0] else "1.00"))
    if sizes:
        worst = max([abs(r.get("linearity_%s_%d" % (w, n), 1.0) - 1.0) for w in ("gather", "audit", "module")
                     for n in sizes[1:]] or [0.0])
        add("targets: %d paths under %.0f ms (gather: CPU %s ms: %s; wall %s ms, which includes waiting for a core on "
            "a busy machine); linear within %d%% (worst %d%%: %s)"
            % (sizes[0], FACTS_1024_MS, _f(r.get("cpu_ms_%d" % sizes[0]), 1),
               _ok(r.get("cpu_ms_%d" % sizes[0]), FACTS_1024_MS), _f(r.get("ms_%d" % sizes[0]), 1),
               FACTS_LINEAR * 100, round(worst * 100), _ok(worst, FACTS_LINEAR)))
    add("")


def _audit_table(r, add):
    if r is None:
        return
    if r.get("error") and not r.get("sizes"):
        add("audit  ERROR: %s" % r["error"])
        return
    add("Orphan audit vs `ansible -m ping`, simulated hosts, local connection, forks %s, strategy %s, least of %s "
        "(seconds; where the audit's time goes, from its task times)" % (r.get("forks"), r.get("strategy"), r.get("repeats")))
    add("| hosts | ping | audit | audit/ping | target | ping's task | module task | settings check | "
        "per host after the report | report (once) | start-up and end |")
    add("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for n in r.get("sizes") or (50, 200):
        if "ratio_vs_ping_%d" % n not in r:
            continue
        t = r.get("tasks_%d" % n) or {}
        ratio = r["ratio_vs_ping_%d" % n]
        target = "reported" if n > 200 else "<= %.1f %s" % (AUDIT_VS_PING, _ok(ratio, AUDIT_VS_PING))
        add("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (n, _f(r.get("ping_s_%d" % n), 1), _f(r.get("audit_s_%d" % n), 1), _f(ratio, 2), target,
               _f(r.get("ping_task_s_%d" % n), 1), _f(t.get("module"), 1), _f(t.get("argspec"), 1),
               _f(t.get("per_host_after", t.get("per_host_include")), 1), _f(t.get("once"), 1), _f(t.get("startup"), 1)))
    v = r.get("variants") or {}
    if v:
        add("Same %s hosts, other settings (ping under the same settings): " % r.get("variants_hosts")
            + "; ".join("%s: audit %s s, ping %s s, x%s" % (k, _f(m["audit_s"], 1), _f(m["ping_s"], 1), _f(m["ratio"], 2))
                        for k, m in sorted(v.items())))
    add("")


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
        _lab_table(lab, add)
    _e2e_table(lab.get("module_runs"), (res.get("e2e") or {}).get("payloads"), add)
    _facts_table(res.get("facts"), add)
    _audit_table(res.get("audit"), add)
    for name, keys in (("idle", ("us_s", "sleep3_s")),
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
    ap.add_argument("--lab-dir", default=None, help="the lab instance to use (env LAB_DIR; default /var/tmp/brick-lab)")
    ap.add_argument("--lab-port", default=None, help="its ssh port on the host (env LAB_SSH_PORT; default 2222)")
    ap.add_argument("--table", action="store_true", help="print (and store) the table of the --out file; measure nothing")
    ap.add_argument("--only", default=None, help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    ap.add_argument("--merge", action="store_true",
                    help="keep the sections of the existing --out file that this run does not measure")
    a = ap.parse_args(argv)
    only = set(a.only.split(",")) if a.only else set(SECTIONS)
    if a.table:
        with open(a.out) as f:
            res = json.load(f)
        res["table"] = table(res).splitlines()
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
            f.write("\n")
        print(table(res))
        return 0
    if a.lab_dir:
        os.environ["LAB_DIR"] = a.lab_dir
    if a.lab_port:
        os.environ["LAB_SSH_PORT"] = str(a.lab_port)

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
    if "e2e" in only:
        import bench_e2e
        res["e2e"] = _section("e2e", lambda: {"payloads": bench_e2e.payloads()})
    if "lab" in only:
        if a.no_lab:
            res["lab"] = {"skipped": "--no-lab"}
        else:
            import bench_lab
            res["lab"] = _section("lab", lambda: bench_lab.run(quick=a.quick, lock_timeout=a.lab_wait))
            if not res["meta"].get("os_brick"):
                res["meta"]["os_brick"] = (res["lab"].get("os_brick") or {}).get("version")
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
