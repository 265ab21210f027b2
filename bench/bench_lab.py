# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Attach / detach on the real-kernel QEMU lab (tests/lab): our connector vs the raw kernel floor.

Inside the guest, ONE warm Python process (bench driver below) imports our connector (copied from
plugins/module_utils/connector) and times, alternating over N iterations (medians reported):

* ``us``:  ``Connector.connect`` / ``Connector.disconnect`` with the iscsi_volume defaults
  (single path: LUN 1, ``multipath: "off"``; multipath: LUN 0 on both portals, ``multipath: auto``);
* ``raw``: the minimal sequence that leaves the host in the same state, from the same process:
  node record (``--op new`` + ``node.session.scan=manual``), login (parallel for two portals),
  one LUN scan written to sysfs, wait for the block device (and for the dm map with every path);
  detach = flush (``multipath -f`` for a map, else ``blockdev --flushbufs``), write ``delete``,
  wait for the device to go, logout (parallel), delete the node record.

The ratio us/raw is the headline.  Separately, the whole module run from the host
(``ansible lab -m brick.storage.iscsi_volume``, what a user pays per task, Python start-up and
AnsiballZ included) and a dead portal: 127.0.0.2 black-holed (``lab-target block-portal``), our
multipath attach time, next to os-brick's reference from docs (not installable in the offline guest).

The lab is shared: the lab lock is taken (``Lab.lock()``), the guest is reset to "ready" before and
after, and stopped at the end only if this run started it.  ``run(quick)`` returns
``{"skipped": reason}`` when the lab cannot run or is busy.
"""

from __future__ import absolute_import, division, print_function

import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
GUEST_DIR = "/tmp/brick-bench"
# Dead-portal attach, os-brick: docs/lab.md "Further findings" (os-brick 7.1.1 timed on this lab):
# a login to a black-holed portal returns after ~122.8 s with open-iscsi's defaults, and os-brick's
# multipath connect waits for every login thread.  (The bench issue quotes 125.7 s; lab.md says 122.8.)
OSBRICK_DEAD_PORTAL_S = 122.8
OSBRICK_DEAD_PORTAL_SOURCE = ("reference measured on this lab (shared docs lab.md, 'Further findings': "
                              "login to a black-holed portal returns after ~122.8 s, os-brick waits for it); "
                              "os-brick cannot be installed in the offline guest")

DRIVER = r'''
import glob, json, os, statistics, subprocess, sys, threading, time
sys.path.insert(0, %(dir)r)
from connector import iscsi
from connector.hostfs import HostFS
from connector.runner import Runner

T, P1, P2 = %(t)r, %(p1)r, %(p2)r
RETRIES = []
SETTLE = 3.0  # untimed pause between an attach and the detach that follows (detaches do not follow at once)
N = int(sys.argv[1])
MODE = sys.argv[2]

def sh(*argv, ok=(0,)):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if r.returncode not in ok:
        raise RuntimeError("%%s: rc %%d %%s" %% (" ".join(argv), r.returncode, r.stderr.strip()))
    return r.stdout

def rd(p, d=None):
    try:
        with open(p) as f:
            return f.read().strip()
    except OSError:
        return d

def wr(p, v):
    with open(p, "w") as f:
        f.write(v)

def sessions():
    """{addr:port: (sid, host)} of the target's sessions, from sysfs."""
    out = {}
    for e in os.listdir("/sys/class/iscsi_session"):
        sid = int(e[7:])
        base = "/sys/class/iscsi_session/%%s" %% e
        if rd(base + "/targetname") != T:
            continue
        dev = os.path.realpath(base + "/device")
        host = int(os.path.basename(os.path.dirname(dev))[4:])
        for c in glob.glob(dev + "/connection*/iscsi_connection/connection*"):
            out["%%s:%%s" %% (rd(c + "/persistent_address"), rd(c + "/persistent_port"))] = (sid, host)
    return out

def lun_dev(host, sid, lun):
    base = "/sys/class/iscsi_session/session%%d/device" %% sid
    for t in os.listdir(base):
        if t.startswith("target"):
            p = "%%s/%%s/%%s:%%s/block" %% (base, t, t[6:], lun)
            try:
                b = os.listdir(p)
            except OSError:
                continue
            if b:
                return b[0]
    return None

def wait(fn, timeout=60, poll=0.01):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting")
        time.sleep(poll)

def par(fns):
    errs = []
    def w(f):
        try:
            f()
        except Exception as e:
            errs.append(e)
    ts = [threading.Thread(target=w, args=(f,)) for f in fns]
    for t in ts: t.start()
    for t in ts: t.join()
    if errs:
        raise errs[0]

# ---------------------------------------------------------------- raw floor
def raw_attach(portals, lun):
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "new", ok=(0, 15))
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "update", "-n", "node.session.scan", "-v", "manual")
    par([lambda p=p: sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--login", ok=(0, 15)) for p in portals])
    ss = sessions()
    devs = []
    for p in portals:
        sid, host = ss[p]
        wr("/sys/class/scsi_host/host%%d/scan" %% host, "- - %%d" %% lun)
    for p in portals:
        sid, host = ss[p]
        devs.append(wait(lambda: lun_dev(host, sid, lun)))
    if len(portals) > 1:
        def mapped():
            try:
                hs = [os.listdir("/sys/block/%%s/holders" %% d) for d in devs]
            except OSError:  # /sys/block/sdX shows up a moment after the SCSI device's block/ entry
                return None
            if all(hs) and len(set(h[0] for h in hs)) == 1:
                dm = hs[0][0]
                if rd("/sys/block/%%s/dm/suspended" %% dm, "0") == "0" and int(rd("/sys/block/%%s/size" %% dm, "0")) > 0:
                    return dm
            return None
        return "/dev/" + wait(mapped)
    return "/dev/" + devs[0]

def raw_detach(portals, lun):
    ss = sessions()
    devs = [lun_dev(ss[p][1], ss[p][0], lun) for p in portals if p in ss]
    devs = [d for d in devs if d]
    dms = set()
    for d in devs:
        dms.update(os.listdir("/sys/block/%%s/holders" %% d))
    for dm in dms:
        # same policy as the connector: "map in use" right after the map was made (udev/multipathd
        # still probing it, docs lab.md) is retried after 1 s, twice at most
        for attempt in range(3):
            try:
                sh("multipath", "-f", rd("/sys/block/%%s/dm/name" %% dm))
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                RETRIES.append(1)
                time.sleep(1.0)
    if not dms:
        for d in devs:
            sh("blockdev", "--flushbufs", "/dev/" + d)
    for d in devs:
        wr("/sys/block/%%s/device/delete" %% d, "1")
    wait(lambda: not any(os.path.exists("/sys/block/" + d) for d in devs))
    par([lambda p=p: sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--logout", ok=(0, 21)) for p in portals])
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "delete", ok=(0, 21))

# ---------------------------------------------------------------- us
def us(portals, lun, mp):
    runner = Runner()
    c = iscsi.Connector(HostFS(), runner, login_timeout=5, login_retries=1, device_wait=20.0,
                        multipath=mp, multipath_wait=10.0)
    return c, runner, iscsi.build_paths(portals, [T], [lun])

def us_attach(portals, lun, mp):
    c, r, ps = us(portals, lun, mp)
    res = c.connect(ps)
    return res["device"], len(r.history), c.warnings

def us_detach(portals, lun, mp):
    c, r, ps = us(portals, lun, mp)
    c.disconnect(ps)
    return len(r.history)

def timed(fn, *a):
    t0 = time.monotonic()
    v = fn(*a)
    return time.monotonic() - t0, v

def clean():
    for p in (P1, P2):
        subprocess.run(["iscsiadm", "-m", "node", "-T", T, "-p", p, "--logout"], capture_output=True)
        subprocess.run(["iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "delete"], capture_output=True)

out = {"mode": MODE, "n": N}
if MODE == "dead":
    t, (dev, ncmd, warns) = timed(us_attach, [P1, P2], 0, "auto")
    out["attach_s"] = t
    out["device"] = dev
    out["commands"] = ncmd
    out["warnings"] = warns
else:
    portals, lun, mp = ([P1], 1, "off") if MODE == "single" else ([P1, P2], 0, "auto")
    res = {"us_attach": [], "us_detach": [], "raw_attach": [], "raw_detach": [], "us_commands": []}
    for i in range(N):
        order = (("us", "raw") if i %% 2 == 0 else ("raw", "us"))
        for who in order:
            if who == "us":
                t, (dev, ncmd, w) = timed(us_attach, portals, lun, mp)
                res["us_attach"].append(t)
                res["us_commands"].append(ncmd)
                res.setdefault("us_device", dev)
                time.sleep(SETTLE)
                t, n2 = timed(us_detach, portals, lun, mp)
                res["us_detach"].append(t)
                res["us_commands"].append(n2)
            else:
                t, dev = timed(raw_attach, portals, lun)
                res["raw_attach"].append(t)
                res.setdefault("raw_device", dev)
                time.sleep(SETTLE)
                t, _ = timed(raw_detach, portals, lun)
                res["raw_detach"].append(t)
            time.sleep(0.5)
    out.update(res)
    out["raw_flush_retries"] = len(RETRIES)
print("BENCH-JSON " + json.dumps(out))
'''


def _log(msg):
    sys.stderr.write("[bench_lab] %s\n" % msg)
    sys.stderr.flush()


def _median(xs):
    return round(statistics.median(xs), 3) if xs else None


def _ship(lab):
    """Copy plugins/module_utils/connector and the driver into the guest (tar over ssh)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        src = os.path.join(REPO, "plugins", "module_utils", "connector")
        for f in sorted(os.listdir(src)):
            if f.endswith(".py"):
                tf.add(os.path.join(src, f), arcname="connector/" + f)
        data = (DRIVER % {"dir": GUEST_DIR, "t": T, "p1": P1, "p2": P2}).encode()
        ti = tarfile.TarInfo("driver.py")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    cmd = "rm -rf %s && mkdir -p %s && tar -x -C %s" % (GUEST_DIR, GUEST_DIR, GUEST_DIR)
    p = subprocess.run(lab.ssh_argv() + [cmd], input=buf.getvalue(), capture_output=True, timeout=120, check=False)
    if p.returncode != 0:
        raise RuntimeError("copy to guest failed: %s" % p.stderr.decode(errors="replace"))


def _driver(lab, mode, n, timeout=1800):
    rc, out, err = lab.ssh("python3 %s/driver.py %d %s" % (GUEST_DIR, n, mode), timeout=timeout)
    m = re.search(r"^BENCH-JSON (.*)$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError("guest driver %s failed (rc %s): %s %s" % (mode, rc, out[-1500:], err[-2500:]))
    return json.loads(m.group(1))


def _guest_clean(lab):
    script = ("for p in 127.0.0.1:3260 127.0.0.2:3260; do iscsiadm -m node -T %s -p $p --logout >/dev/null 2>&1; "
              "iscsiadm -m node -T %s -p $p --op delete >/dev/null 2>&1; done; true" % (T, T))
    lab.ssh(script, timeout=300)


class _Ansible(object):
    """``ansible lab -m brick.storage.iscsi_volume`` the way tests/integration/lab/conftest.py runs it."""

    def __init__(self, lab):
        self.top = tempfile.mkdtemp(prefix="brick-bench-coll-")
        ns = os.path.join(self.top, "ansible_collections", "brick")
        os.makedirs(ns)
        os.symlink(REPO, os.path.join(ns, "storage"))
        path = os.pathsep.join([os.path.dirname(sys.executable), os.path.join(REPO, ".venv", "bin"),
                                os.environ.get("PATH", "")])
        self.ansible = shutil.which("ansible", path=path)
        self.env = dict(os.environ)
        self.env.update({
            "PATH": path, "LAB_DIR": lab.lab_dir, "LAB_SSH_PORT": str(lab.ssh_port),
            "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_SSH_PIPELINING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            "ANSIBLE_COLLECTIONS_PATH": self.top,
        })
        self.inventory = os.path.join(REPO, "tests", "lab", "inventory.yml")

    def module(self, args):
        if not self.ansible:
            raise RuntimeError("ansible not found")
        argv = [self.ansible, "lab", "-i", self.inventory, "-m", "brick.storage.iscsi_volume",
                "-a", json.dumps(args), "-o"]
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=self.env, check=False)
        dt = time.monotonic() - t0
        if p.returncode != 0:
            raise RuntimeError("ansible iscsi_volume %s failed: %s %s" % (args, p.stdout[-1500:], p.stderr[-800:]))
        m = re.search(r"=>\s*(\{.*\})\s*$", p.stdout, re.S)
        res = json.loads(m.group(1)) if m else {}
        return dt, res

    def close(self):
        shutil.rmtree(self.top, ignore_errors=True)


def run(quick=False, lock_timeout=None):
    from lab import Lab, LabError
    n = 2 if quick else 5
    lab = Lab(log=lambda m: None)
    if not lab.available():
        return {"skipped": "lab cannot run here: %s" % lab.unavailable_reason}
    lock_timeout = lock_timeout if lock_timeout is not None else float(os.environ.get("BRICK_BENCH_LAB_WAIT", "900"))
    _log("taking the lab lock (waits up to %d s while another session uses the lab)" % lock_timeout)
    try:
        lab.lock(timeout=lock_timeout)
    except LabError as e:
        return {"skipped": "lab busy: %s" % e}
    started = False
    out = {"iterations": n}
    ans = None
    try:
        try:
            lab.ensure_built()
            was_running = lab.is_running()
            if not was_running:
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
        _ship(lab)
        _guest_clean(lab)

        # 1. connector vs raw, one warm process in the guest
        for mode, a_key, d_key in (("single", "attach_single", "detach_single"),
                                   ("multipath", "attach_multipath_2", "detach_multipath_2")):
            _log("guest driver: %s x%d (us and raw, alternating)" % (mode, n))
            r = _driver(lab, mode, n)
            for key, us_k, raw_k in ((a_key, "us_attach", "raw_attach"), (d_key, "us_detach", "raw_detach")):
                us_s, raw_s = _median(r[us_k]), _median(r[raw_k])
                out[key] = {"us_s": us_s, "raw_s": raw_s,
                            "ratio": round(us_s / raw_s, 3) if us_s and raw_s else None,
                            "us_runs": [round(x, 3) for x in r[us_k]],
                            "raw_runs": [round(x, 3) for x in r[raw_k]]}
            out[a_key]["us_commands"] = sorted(set(r["us_commands"][0::2]))
            out[d_key]["us_commands"] = sorted(set(r["us_commands"][1::2]))
            out[a_key]["device"] = {"us": r.get("us_device"), "raw": r.get("raw_device")}
            out[d_key]["raw_flush_retries"] = r.get("raw_flush_retries")
            _guest_clean(lab)

        # 2. the whole module run (ansible from the host)
        ans = _Ansible(lab)
        mod = {}
        mn = 1 if quick else 3
        for label, args in (("single", {"portals": [P1], "iqn": T, "lun": 1, "multipath": "off"}),
                            ("multipath_2", {"portals": [P1, P2], "iqn": T, "lun": 0})):
            att, det, rerun = [], [], []
            for i in range(mn):
                _log("module run %s %d/%d" % (label, i + 1, mn))
                dt, res = ans.module(dict(args, state="present"))
                att.append(dt)
                if i == 0:
                    dt2, res2 = ans.module(dict(args, state="present"))
                    rerun.append(dt2)
                dt, res = ans.module(dict(args, state="absent"))
                det.append(dt)
            mod["attach_" + label + "_s"] = _median(att)
            mod["attach_" + label + "_rerun_s"] = _median(rerun)
            mod["detach_" + label + "_s"] = _median(det)
        out["module_run"] = mod
        _guest_clean(lab)

        # 3. dead portal: 127.0.0.2 black-holed, our 2-portal attach
        _log("dead portal: block 127.0.0.2, multipath attach")
        lab.target("block-portal", "127.0.0.2")
        try:
            r = _driver(lab, "dead", 1, timeout=900)
        finally:
            lab.target("unblock-portal", "127.0.0.2", check=False)
        out["dead_portal_attach"] = {"us_s": round(r["attach_s"], 3), "os_brick_s": OSBRICK_DEAD_PORTAL_S,
                                     "os_brick_source": OSBRICK_DEAD_PORTAL_SOURCE,
                                     "ratio": round(r["attach_s"] / OSBRICK_DEAD_PORTAL_S, 3),
                                     "us_device": r.get("device"), "us_warnings": r.get("warnings")}
        return out
    except Exception as e:  # record, never kill the whole bench
        out["error"] = "%s: %s" % (type(e).__name__, e)
        return out
    finally:
        if ans is not None:
            ans.close()
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
