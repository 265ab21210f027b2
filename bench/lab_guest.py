# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Guest side of bench_lab.py: runs INSIDE the lab guest, in one warm process, and prints ``BENCH-JSON {...}``.

    python3 lab_guest.py SPEC_JSON

SPEC: ``{"mode": "single" | "multipath" | "dead", "n": repetitions, "tools": ["us", "raw", "osbrick"],
"dir": where the connector was copied, "settle": seconds, "osbrick_python": the os-brick venv's python}``.  Per
repetition every tool attaches and (except in "dead") detaches the same volume; the order of the tools rotates
from one repetition to the next, so that no tool always goes first or always follows another.  Only the
connect/disconnect calls are timed: imports and os-brick's privsep daemon start-up are not (they are reported
once, as ``startup``).

us and raw run in this process (the system python3); os-brick runs in a worker process of its own (the venv's
python running this file with ``--worker``), driven over a pipe and timed inside the worker.  In one process,
os-brick's imports would make every ``fork()`` of ours dearer: the connector forks for the kernel
writes that may block (kernel_writes.py), and fork copies the page tables of the whole process.

* ``us``:      ``Connector.connect`` / ``disconnect`` with the iscsi_volume module's defaults;
* ``raw``:     the shortest command sequence that leaves the host in the same state (see ``raw_attach``);
* ``osbrick``: os-brick's ``ISCSIConnector.connect_volume`` / ``disconnect_volume`` as a compute node runs it
  (privsep daemon, its own defaults), its commands counted where they are handed to privsep.

Before the first repetition, one untimed single-path attach and detach (raw) loads iscsi_tcp and starts iscsid,
so that the first tool does not pay for it.

"dead" is a 2-portal attach with the second portal black-holed by the caller (``lab-target block-portal``); the
raw sequence and ours bound the login the same way (``login_timeout`` 5 s, 1 retry), os-brick keeps open-iscsi's
defaults (which is what it does on a host).  Between tools everything the attach left is removed (untimed).
"""

import glob
import json
import os
import subprocess
import sys
import threading
import time

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
LOGIN_TIMEOUT, LOGIN_RETRIES = 5, 1   # the module defaults, used by "us" and by "raw"
RETRIES = []
COMMANDS = []  # raw's and os-brick's commands, counted per call


# ------------------------------------------------------------------------------------------------ helpers
def sh(*argv, ok=(0,)):
    COMMANDS.append(argv)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if r.returncode not in ok:
        raise RuntimeError("%s: rc %d %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
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
    if not os.path.isdir("/sys/class/iscsi_session"):
        return out  # iscsi_tcp is not loaded yet (iscsid is socket-activated)
    for e in os.listdir("/sys/class/iscsi_session"):
        base = "/sys/class/iscsi_session/%s" % e
        if rd(base + "/targetname") != T:
            continue
        dev = os.path.realpath(base + "/device")
        host = int(os.path.basename(os.path.dirname(dev))[4:])
        for c in glob.glob(dev + "/connection*/iscsi_connection/connection*"):
            out["%s:%s" % (rd(c + "/persistent_address"), rd(c + "/persistent_port"))] = (int(e[7:]), host)
    return out


def lun_dev(sid, lun):
    base = "/sys/class/iscsi_session/session%d/device" % sid
    for t in os.listdir(base):
        if t.startswith("target"):
            try:
                b = os.listdir("%s/%s/%s:%s/block" % (base, t, t[6:], lun))
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
        except Exception as e:  # a thread reports, the caller raises
            errs.append(e)
    ts = [threading.Thread(target=w, args=(f,)) for f in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]


def holder_map(devs):
    """The dm map holding all of ``devs``, ready (not suspended, sized), or None."""
    try:
        hs = [os.listdir("/sys/block/%s/holders" % d) for d in devs]
    except OSError:  # /sys/block/sdX shows up a moment after the SCSI device's block/ entry
        return None
    if all(hs) and len(set(h[0] for h in hs)) == 1:
        dm = hs[0][0]
        if rd("/sys/block/%s/dm/suspended" % dm, "0") == "0" and int(rd("/sys/block/%s/size" % dm, "0")) > 0:
            return dm
    return None


# ------------------------------------------------------------------------------------------------ raw floor
def raw_attach(portals, lun, dead=False):
    """Node record (``--op new`` + one ``--op update``: manual scan, and in "dead" the same login bounds as ours),
    logins in parallel, one LUN scan per session, wait for the disk(s) and, with 2 portals, for the map."""
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "new", ok=(0, 15))
        bounds = ["-n", "node.conn[0].timeo.login_timeout", "-v", str(LOGIN_TIMEOUT),
                  "-n", "node.session.initial_login_retry_max", "-v", str(LOGIN_RETRIES)] if dead else []
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "update", "-n", "node.session.scan", "-v", "manual",
           *bounds)
    ok = (0, 15, 8) if dead else (0, 15)
    par([lambda p=p: sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--login", ok=ok) for p in portals])
    ss = sessions()
    live = [p for p in portals if p in ss]
    for p in live:
        wr("/sys/class/scsi_host/host%d/scan" % ss[p][1], "- - %d" % lun)
    devs = [wait(lambda p=p: lun_dev(ss[p][0], lun)) for p in live]
    if len(portals) == 1:
        return "/dev/" + devs[0]
    if len(devs) == 1:  # one live path: find_multipaths builds no map for it on its own
        wwid = "3" + rd("/sys/block/%s/device/wwid" % devs[0]).split(".", 1)[1]
        if ("/%s/" % wwid) not in (rd("/etc/multipath/wwids") or ""):
            sh("multipath", "-a", wwid)
        sh("multipathd", "add", "path", "/dev/" + devs[0], ok=(0, 1))
    return "/dev/" + wait(lambda: holder_map(devs))


def raw_detach(portals, lun):
    """Flush (``multipath -f`` for a map, else ``blockdev --flushbufs``), ``delete``, wait for the disks to go,
    log out in parallel, delete the node records."""
    ss = sessions()
    devs = [d for d in (lun_dev(ss[p][0], lun) for p in portals if p in ss) if d]
    dms = set()
    for d in devs:
        dms.update(os.listdir("/sys/block/%s/holders" % d))
    for dm in dms:
        # the connector's policy: "map in use" right after the map was made (udev and multipathd still probe it,
        # docs lab.md) is retried after 1 s, twice at most
        for attempt in range(3):
            try:
                sh("multipath", "-f", rd("/sys/block/%s/dm/name" % dm))
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
        wr("/sys/block/%s/device/delete" % d, "1")
    wait(lambda: not any(os.path.exists("/sys/block/" + d) for d in devs))
    par([lambda p=p: sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--logout", ok=(0, 21)) for p in portals])
    for p in portals:
        sh("iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "delete", ok=(0, 21))


# ------------------------------------------------------------------------------------------------ tools
class Us(object):
    def __init__(self, spec):
        sys.path.insert(0, spec["dir"])
        from connector import iscsi
        from connector.hostfs import HostFS
        from connector.runner import Runner
        self.iscsi, self.HostFS, self.Runner = iscsi, HostFS, Runner

    def _conn(self, portals, lun, mp):
        runner = self.Runner()
        c = self.iscsi.Connector(self.HostFS(), runner, login_timeout=LOGIN_TIMEOUT, login_retries=LOGIN_RETRIES,
                                 device_wait=20.0, multipath=mp, multipath_wait=10.0)
        return c, runner, self.iscsi.build_paths(portals, [T], [lun])

    def attach(self, portals, lun, mp, dead=False):
        c, r, ps = self._conn(portals, lun, mp)
        res = c.connect(ps)
        return res["device"], len(r.history), c.warnings

    def detach(self, portals, lun, mp):
        c, r, ps = self._conn(portals, lun, mp)
        c.disconnect(ps)
        return len(r.history)


class Raw(object):
    def attach(self, portals, lun, mp, dead=False):
        del COMMANDS[:]
        dev = raw_attach(portals, lun, dead=dead)
        return dev, len(COMMANDS), []

    def detach(self, portals, lun, mp):
        del COMMANDS[:]
        raw_detach(portals, lun)
        return len(COMMANDS)


class OsBrick(object):
    """os-brick 7.1.1 from the venv this process runs in; privsep daemon started before anything is timed."""

    def __init__(self, spec):
        t0 = time.monotonic()
        import logging
        logging.basicConfig(level=logging.ERROR)
        import warnings
        warnings.simplefilter("ignore")
        from oslo_config import cfg
        import os_brick
        from os_brick import privileged
        from os_brick.privileged import rootwrap as priv_rootwrap
        from os_brick.initiator import connector as brick_connector
        from importlib import metadata
        self.version = metadata.version("os-brick")
        self.import_s = time.monotonic() - t0
        lock_path = "/run/brick-bench-osbrick-locks"
        os.makedirs(lock_path, exist_ok=True)
        os_brick.setup(cfg.CONF)
        for group in ("os_brick", "oslo_concurrency"):
            cfg.CONF.set_override("lock_path", lock_path, group=group)
        # sudo's secure_path does not hold the venv: start the helper from the venv itself (we are root)
        cfg.CONF.set_override("helper_command", "%s/privsep-helper --privsep_context os_brick.privileged.default"
                              % os.path.dirname(sys.executable), group="privsep_osbrick")
        real = priv_rootwrap.execute

        def counting(*cmd, **kw):  # every command os-brick hands to privsep (also the ones that bypass its
            COMMANDS.append(cmd)    # executor, e.g. LinuxSCSI.is_multipath_running)
            return real(*cmd, **kw)
        priv_rootwrap.execute = counting
        self.factory = brick_connector.InitiatorConnector.factory
        t0 = time.monotonic()
        privileged.default.start()
        self.privsep_s = time.monotonic() - t0
        self.conns = {}
        self.infos = {}

    @staticmethod
    def props(portals, lun):
        if len(portals) == 1:
            return {"target_portal": portals[0], "target_iqn": T, "target_lun": lun}
        return {"target_portal": portals[0], "target_iqn": T, "target_lun": lun, "target_portals": list(portals),
                "target_iqns": [T] * len(portals), "target_luns": [lun] * len(portals)}

    def _conn(self, mp):
        if mp not in self.conns:
            self.conns[mp] = self.factory("ISCSI", None, use_multipath=mp != "off")
        return self.conns[mp]

    def attach(self, portals, lun, mp, dead=False):
        del COMMANDS[:]
        info = self._conn(mp).connect_volume(self.props(portals, lun))
        self.infos[(tuple(portals), lun)] = info
        return info.get("path"), len(COMMANDS), []

    def detach(self, portals, lun, mp):
        del COMMANDS[:]
        info = self.infos.pop((tuple(portals), lun), {})
        self._conn(mp).disconnect_volume(self.props(portals, lun), info, force=False, ignore_errors=False)
        return len(COMMANDS)


class OsBrickProxy(object):
    """os-brick in its worker process (``--worker``): one JSON line per call each way; ``last_t`` is the call's
    time measured in the worker."""

    def __init__(self, spec):
        self.proc = subprocess.Popen([spec["osbrick_python"], os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True, bufsize=1)
        self.startup = self._reply()
        self.last_t = None

    def _reply(self):
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the os-brick worker exited (rc %s)" % self.proc.poll())
            if line.startswith("OSB-JSON "):
                r = json.loads(line[9:])
                if r.get("error"):
                    raise RuntimeError(r["error"])
                return r

    def _call(self, op, *a, **kw):
        self.proc.stdin.write(json.dumps({"op": op, "a": a, "kw": kw}) + "\n")
        r = self._reply()
        self.last_t = r["t"]
        return r["v"]

    def attach(self, portals, lun, mp, dead=False):
        return tuple(self._call("attach", portals, lun, mp, dead=dead))

    def detach(self, portals, lun, mp):
        return self._call("detach", portals, lun, mp)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def worker(spec):
    """The os-brick side of OsBrickProxy: reads calls on stdin, answers on stdout."""
    def say(d):
        sys.stdout.write("OSB-JSON " + json.dumps(d) + "\n")
        sys.stdout.flush()
    try:
        ob = OsBrick(spec)
    except Exception as e:  # the driver records it and goes on without os-brick
        say({"error": "os-brick start-up: %s: %s" % (type(e).__name__, e)})
        return 1
    say({"osbrick_import_s": round(ob.import_s, 2), "osbrick_privsep_start_s": round(ob.privsep_s, 2),
         "osbrick_version": ob.version})
    for line in sys.stdin:
        call = json.loads(line)
        try:
            t, v = timed(getattr(ob, call["op"]), *call["a"], **call["kw"])
            say({"t": t, "v": v})
        except Exception as e:  # reported to the driver, which cleans up and goes on
            say({"error": "%s: %s" % (type(e).__name__, str(e)[:500])})
    return 0


# ------------------------------------------------------------------------------------------------ cleanup
def clean():
    """Remove whatever an attach of the target left (maps, disks, sessions, node records).  Untimed."""
    ss = sessions()
    devs = []
    for sid, _host in ss.values():
        base = "/sys/class/iscsi_session/session%d/device" % sid
        devs += [os.path.basename(b) for b in glob.glob(base + "/target*/*:*:*:*/block/*")]
    dms = set()
    for d in devs:
        dms.update(h for h in os.listdir("/sys/block/%s/holders" % d) if h.startswith("dm-"))
    for dm in dms:
        for _attempt in range(5):
            r = subprocess.run(["multipath", "-f", rd("/sys/block/%s/dm/name" % dm)], capture_output=True, check=False)
            if r.returncode == 0:
                break
            time.sleep(1)
    for d in devs:
        try:
            wr("/sys/block/%s/device/delete" % d, "1")
        except OSError:
            pass
    for p in (P1, P2):
        subprocess.run(["iscsiadm", "-m", "node", "-T", T, "-p", p, "--logout"], capture_output=True, check=False)
        subprocess.run(["iscsiadm", "-m", "node", "-T", T, "-p", p, "--op", "delete"], capture_output=True,
                       check=False)


# ------------------------------------------------------------------------------------------------ main
def timed(fn, *a, **kw):
    t0 = time.monotonic()
    v = fn(*a, **kw)
    return time.monotonic() - t0, v


def warm_up(spec):
    """One untimed single-path attach and detach (raw): the first login of a guest loads iscsi_tcp and starts
    iscsid (socket-activated), which no tool should pay for in its figures."""
    raw_attach([P1], 1)
    time.sleep(spec["settle"])
    raw_detach([P1], 1)
    clean()
    del RETRIES[:]
    time.sleep(0.5)


def repetition(i, tools, objs, spec, res):
    mode = spec["mode"]
    portals, lun, mp = ([P1], 1, "off") if mode == "single" else ([P1, P2], 0, "auto")
    order = tools[i % len(tools):] + tools[:i % len(tools)]
    for who in order:
        r = res[who]
        try:
            t, (dev, ncmd, warns) = timed(objs[who].attach, portals, lun, mp, dead=mode == "dead")
            t = getattr(objs[who], "last_t", None) or t
            r["attach"].append(t)
            r["attach_commands"].append(ncmd)
            r.setdefault("device", dev)
            if warns:
                r.setdefault("warnings", warns)
            if mode == "dead":
                clean()
            else:
                time.sleep(spec["settle"])
                t, ncmd = timed(objs[who].detach, portals, lun, mp)
                t = getattr(objs[who], "last_t", None) or t
                r["detach"].append(t)
                r["detach_commands"].append(ncmd)
        except Exception as e:  # record it, leave a clean host, go on with the others
            r.setdefault("errors", []).append("rep %d: %s: %s" % (i, type(e).__name__, str(e)[:500]))
            clean()
        time.sleep(0.5)


def main(argv):
    spec = json.loads(argv[1])
    tools = list(spec["tools"])
    objs, startup = {}, {}
    if "us" in tools:
        objs["us"] = Us(spec)
    if "raw" in tools:
        objs["raw"] = Raw()
    if "osbrick" in tools:
        objs["osbrick"] = OsBrickProxy(spec)
        startup = objs["osbrick"].startup
    clean()
    warm_up(spec)
    res = dict((who, {"attach": [], "detach": [], "attach_commands": [], "detach_commands": []}) for who in tools)
    for i in range(int(spec["n"])):
        repetition(i, tools, objs, spec, res)
    if "osbrick" in objs:
        objs["osbrick"].close()
    print("BENCH-JSON " + json.dumps({"mode": spec["mode"], "n": spec["n"], "tools": tools, "results": res,
                                      "startup": startup, "raw_flush_retries": len(RETRIES)}))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(worker(json.loads(sys.argv[2])))
    sys.exit(main(sys.argv))
