"""A stateful fuzzer of the ownership promise (issue 21): "never touch what is not provably ours".

hypothesis drives the connector (``iscsi.Connector.connect`` / ``disconnect``, check mode and real, ``force``, and
the orphan audit's cleanup plan from ``paths.gather``) on one simulated host (tests/sim) with two targets on two
shared portals (P1 also known by a host name), two ifaces (``default``, ``eth1``), LUNs the array re-maps to new
WWIDs, node records the admin made, mounts, open handles, partitions, and faults: a portal that goes dark (refuse or
blackhole), sessions FAILED then FREE, a LUN that never appears, a command that hangs (the runner's time-out kills
it), a slow ``delete``.

After every attach / detach / cleanup step, with a before/after observation of the host:

1. **Nothing of another volume or of the admin changed.** The step's scope comes from the fuzzer's own model: the
   (target, LUN, iface, portals) it names, and the WWID it asks for (a cleanup action: the orphan devices and
   sessions it was made for). Outside the scope, sessions (sid, state), devices (sysfs identity, WWID, state,
   partitions), the multipath maps that carry them (name, their paths and path states), node/discovery record files
   (bytes), by-path and by-id links, mounts and open handles must be as before, and nothing new may appear there.
   Inside the scope, a device whose WWID is not the one asked for, and a session or record that another volume's
   device still uses, are not ours either. The admin's record files never change.
2. **Every ``changed`` is the truth.** ``changed`` of a run that returns equals "the host tree differs"
   (``SimHost.snapshot()``); check mode changes nothing and its ``changed`` equals the real run's, made right after
   on the same state.
3. **An attach that succeeded returns the volume**: its WWID is the array's current WWID of the LUN (and the one
   asked for), every path it lists and its map serve that WWID.
4. Any exception other than a ``BrickError`` is a bug.

The commands run in this process (``InProcessRunner`` over ``SimHost.run``; a ``hang`` fault counts as the runner's
time-out), which makes a step cost milliseconds. The admin's records come from ``iscsiadm -o new`` (a static record) or
a SendTargets discovery on one iface (the only way to reach one portal through two ifaces: open-iscsi keeps one static
record per portal).

Known bugs not fixed yet are stepped over (``KNOWN_BUGS``, each with its xfail test in ``test_fuzz_regressions.py``);
``BRICK_FUZZ_STRICT=1`` turns that off.

Default run: bounded (60 examples of up to 20 steps, derandomized so CI runs the same cases every time, no hypothesis
database: nothing is written into the repository; about 30-45 s on a busy 2-core machine). Soak run::

    BRICK_FUZZ_LONG=1 [BRICK_FUZZ_SECONDS=480] .venv/bin/python -m pytest tests/unit/fuzz -q -p no:cacheprovider -s

runs random (not derandomized) examples until BRICK_FUZZ_SECONDS (default 480) have passed and prints the number of
steps run. Bugs it found are kept as plain tests in ``test_fuzz_regressions.py``.
"""
from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile
import time

import pytest
from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from connector import iscsi, paths as paths_mod
from connector.errors import BrickError
from connector.failures import read_state
from connector.runner import Runner
from sim import SimHost
from sim.core import SimError

TA = "iqn.2003-01.org.example.fuzz:a"
TB = "iqn.2003-01.org.example.fuzz:b"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
NAME = "array-a.example"  # resolves to P1's address
LUNS = {TA: {0: 64, 1: 32, 2: 16}, TB: {0: 48, 1: 24}}
IFACES = ("default", "eth1")
LONG = os.environ.get("BRICK_FUZZ_LONG") == "1"
# Bugs the fuzzer found that are not fixed yet, each with its xfail test in test_fuzz_regressions.py: the fuzzer steps
# over them (so that it can look for others) unless BRICK_FUZZ_STRICT=1. Remove a tag when its bug is fixed.
KNOWN_BUGS = set() if os.environ.get("BRICK_FUZZ_STRICT") == "1" else {
    "check-mode-no-rescan",  # check mode of a re-run after a re-map (another size): false; the real run: true
    "admin-scan-auto",  # an attach through the admin's record (node.session.scan=auto) brings every LUN
}
LEDGER = "/var/lib/brick-storage/iscsi-records.json"
# Not a bug but the limit of any prediction: a portal that went dark since its last login attempt. Check mode knows
# only the failure log (a portal whose last login failed is predicted to fail again), so the first re-run after a
# portal goes dark is predicted as a change and then changes nothing.
STEPS = {"count": 0, "checked": 0}  # every rule run / the attach, detach and cleanup steps checked


def resolver(host, port, family=0, kind=0):
    table = {NAME: ["10.0.0.1"]}
    if host not in table:
        raise socket.gaierror(-2, "Name or service not known")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]


class InProcessRunner(Runner):
    """The connector's Runner, but each fake command runs in this process (``SimHost.run``): no process start-up.
    A command a ``hang`` fault matches counts as timed out (the real runner kills it at its time-out)."""

    def __init__(self, host: SimHost):
        super().__init__(env=host.env())
        self.host = host

    def _once(self, argv, timeout, stdin):
        try:
            rc, out, err = self.host.run(os.path.basename(argv[0]), *argv[1:])
        except SimError:
            return None, "", "", True
        return rc, out, err, False


# -- observing the host ----------------------------------------------------------------------------------------
def _walk(root, sub):
    out = {}
    base = os.path.join(root, sub)
    for dirpath, dirnames, filenames in os.walk(base):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = full[len(root):]
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            else:
                with open(full, "rb") as fh:
                    out[rel] = ("file", fh.read())
    return out


def record_key(rel: str, content) -> tuple | None:
    """(iqn, "addr:port", iface) of a node record file (flat ``nodes/IQN/ADDR,PORT`` or ``.../ADDR,PORT,TPGT/IFACE``)."""
    parts = rel.split("/")  # "", etc, iscsi, nodes, IQN, NAME[, IFACE]
    if len(parts) < 6 or parts[3] != "nodes":
        return None
    fields = parts[5].split(",")
    if len(fields) < 2:
        return None
    portal = "%s:%s" % (fields[0], fields[1])
    if len(parts) >= 7:
        return (parts[4], portal, parts[6])
    iface = "default"
    text = content[1] if isinstance(content[1], str) else content[1].decode("utf-8", "replace")
    for line in text.splitlines():
        if line.strip().startswith("iface.iscsi_ifacename"):
            iface = line.split("=", 1)[1].strip()
    return (parts[4], portal, iface)


def kernel_wwid(disk: dict) -> str | None:
    """The WWID the kernel shows in ``device/wwid`` (udev form); the sim's ``wwid`` is udev's, which a same-size
    re-map does not change."""
    raw = disk.get("sysfs_wwid") or ""
    return "3" + raw[4:] if raw.startswith("naa.") else disk.get("wwid")


def discovered_on(rel: str, iface: str) -> bool:
    """A discovered node record (``nodes/IQN/ADDR,PORT,TPGT/IFACE`` with a real tpgt) of ``iface``."""
    parts = rel.split("/")
    return (len(parts) == 7 and parts[3] == "nodes" and parts[6] == iface and len(parts[5].split(",")) == 3
            and parts[5].split(",")[2] != "-1")


def observe(host: SimHost) -> dict:
    state = host.state()
    sessions = {}
    for sid, sess in state["sessions"].items():
        sessions[(sess["iqn"], sess["portal"], sess["iface"])] = {"sid": int(sid), "state": sess["state"]}
    by_sid = dict((int(sid), sess) for sid, sess in state["sessions"].items())
    devices = {}
    for name, disk in state["disks"].items():
        sess = by_sid.get(disk.get("sid"))
        key = (disk.get("sid"), disk["hctl"])
        devices[key] = {"name": name, "iqn": disk.get("iqn"), "portal": disk.get("portal"), "lun": disk.get("lun"),
                        "iface": sess["iface"] if sess else None, "wwid": kernel_wwid(disk),
                        "udev_wwid": disk.get("wwid"), "state": disk.get("state"),
                        "parts": sorted(disk.get("parts") or {}), "size_mb": disk.get("size_mb")}
    maps = {}
    for dm, m in state["maps"].items():
        if m.get("kind") != "mpath":
            continue
        maps[m["uuid"]] = {"dm": dm, "name": m["name"], "wwid": m["wwid"], "paths": dict(m.get("paths") or {})}
    root = host.root
    return {"sessions": sessions, "devices": devices, "maps": maps,
            "records": dict(list(_walk(root, "etc/iscsi/nodes").items()) + list(_walk(root, "etc/iscsi/send_targets").items())),
            "links": _walk(root, "dev/disk"), "mounts": state.get("mounts"), "procs": state.get("procs")}


def link_wwid(rel: str) -> str | None:
    base = rel.rsplit("/", 1)[-1]
    if "-part" in base:
        base = base.rsplit("-part", 1)[0]
    for prefix, add in (("scsi-", ""), ("wwn-0x", "3"), ("dm-uuid-mpath-", ""), ("dm-name-", "")):
        if base.startswith(prefix):
            return add + base[len(prefix):]
    return None


def bypath_key(rel: str) -> tuple | None:
    """(iqn, lun, "addr:port") of a by-path link name ``ip-ADDR:PORT-iscsi-IQN-lun-L[-partK]``."""
    base = rel.rsplit("/", 1)[-1]
    if not base.startswith("ip-") or "-iscsi-" not in base or "-lun-" not in base:
        return None
    portal, rest = base[3:].split("-iscsi-", 1)
    iqn, lun = rest.rsplit("-lun-", 1)
    lun = lun.split("-part")[0]
    try:
        return (iqn, int(lun, 0), portal)
    except ValueError:
        return None


class Scope(object):
    """What one step may touch: a volume (iqn, LUN, iface, portal addresses, WWID asked for) or, for a cleanup
    action, the orphan devices and sessions it was made for."""

    def __init__(self, iqn=None, lun=None, iface=None, portals=(), wwid=None, devices=None, sessions=None,
                 bypath=()):
        self.iqn, self.lun, self.iface, self.portals, self.wwid = iqn, lun, iface, set(portals), wwid
        self.device_keys = devices  # set of (sid, hctl) or None
        self.session_keys = sessions  # set of (iqn, portal, iface) or None
        self.bypath_keys = set(bypath)  # (iqn, lun, portal) of the devices of a cleanup action

    def session_in(self, key) -> bool:
        if self.session_keys is not None:
            return key in self.session_keys
        return key[0] == self.iqn and key[1] in self.portals and key[2] == self.iface

    def device_in(self, key, dev) -> bool:
        if self.device_keys is not None:
            return key in self.device_keys
        return (dev["iqn"] == self.iqn and dev["lun"] == self.lun and dev["iface"] == self.iface
                and dev["portal"] in self.portals)

    def device_ours(self, key, dev) -> bool:
        """In scope, and the volume asked for (a device whose WWID differs is another volume's)."""
        return self.device_in(key, dev) and (self.wwid is None or dev["wwid"] == self.wwid)

    def bypath_in(self, key) -> bool:
        if self.device_keys is not None:
            return key in self.bypath_keys
        return key[0] == self.iqn and key[1] == self.lun and key[2] in self.portals


def ownership_problems(before: dict, after: dict, scope: Scope, admin: dict) -> list[str]:
    """Everything outside ``scope`` (and every admin record) that the step changed."""
    problems = []
    frozen = dict((k, d) for k, d in before["devices"].items() if not scope.device_in(k, d))
    # a path of a map of the asked WWID serves that WWID, whatever its own device/wwid says now (the detach plan's
    # rule, proven on the lab: after a same-size re-map the old map's paths report the new WWID, and the detach by
    # the old WWID removes them with the map)
    asked_map_paths = set(path for m in before["maps"].values() if scope.wwid and m["wwid"] == scope.wwid
                          for path in m["paths"])
    protected = dict((k, d) for k, d in before["devices"].items() if scope.device_in(k, d)
                     and not scope.device_ours(k, d) and d["name"] not in asked_map_paths)
    for key, dev in frozen.items():
        if after["devices"].get(key) != dev:
            problems.append("another volume's device %s %s changed: %s -> %s"
                            % (key, dev["name"], dev, after["devices"].get(key)))
    for key, dev in protected.items():
        now = after["devices"].get(key)
        if now is None or now["name"] != dev["name"]:
            problems.append("device %s %s (WWID %s, not the asked %s) was removed"
                            % (key, dev["name"], dev["wwid"], scope.wwid))
    for key, dev in after["devices"].items():
        if key not in before["devices"] and not scope.device_in(key, dev):
            problems.append("a device outside the step appeared: %s %s" % (key, dev))
    # sessions: outside the scope, or carrying a device that is not ours
    shared = set((d["iqn"], d["portal"], d["iface"]) for d in list(frozen.values()) + list(protected.values()))
    for key, sess in before["sessions"].items():
        if not scope.session_in(key) or key in shared:
            if after["sessions"].get(key) != sess:
                problems.append("session %s %s changed to %s" % (key, sess, after["sessions"].get(key)))
    for key in after["sessions"]:
        if key not in before["sessions"] and not scope.session_in(key):
            problems.append("a session outside the step appeared: %s" % (key,))
    problems += _map_problems(before, after, frozen, protected)
    problems += _record_problems(before, after, scope, shared, admin)
    problems += _link_problems(before, after, scope, frozen, protected)
    for what in ("mounts", "procs"):
        if before[what] != after[what]:
            problems.append("%s changed: %s -> %s" % (what, before[what], after[what]))
    return problems


def _names(devices):
    return dict((d["name"], k) for k, d in devices.items())


def _map_problems(before, after, frozen, protected):
    problems = []
    name_before, name_after = _names(before["devices"]), _names(after["devices"])
    kept = set(frozen) | set(protected)
    for uuid, m in before["maps"].items():
        theirs = dict((p, s) for p, s in m["paths"].items() if name_before.get(p) in frozen)
        held = [p for p in m["paths"] if name_before.get(p) in kept]
        if not held:
            continue
        now = after["maps"].get(uuid)
        if now is None or now["name"] != m["name"]:
            problems.append("map %s (%s) with another volume's paths %s is gone" % (m["name"], m["dm"], held))
            continue
        now_theirs = dict((p, s) for p, s in now["paths"].items() if name_after.get(p) in frozen)
        if now_theirs != theirs:
            problems.append("map %s: another volume's paths %s -> %s" % (m["name"], theirs, now_theirs))
        for p in held:
            dev = after["devices"].get(name_before[p])
            # a path the kernel now shows with another WWID (a rescan after a re-map) rightly leaves the map
            if p not in now["paths"] and dev is not None and dev["wwid"] == m["wwid"]:
                problems.append("map %s lost path %s, which is not ours" % (m["name"], p))
    for uuid, m in after["maps"].items():
        if uuid in before["maps"]:
            continue
        theirs = [p for p in m["paths"] if name_after.get(p) in frozen]
        ours = [p for p in m["paths"] if name_after.get(p) not in frozen]
        # our path and another iface's or portal's path of the same volume make a map: multipathd's doing, fine
        if theirs and not ours:
            problems.append("a new map %s took another volume's paths %s" % (m["name"], theirs))
    return problems


def _record_problems(before, after, scope, shared, admin):
    problems = []
    for rel, content in admin.items():
        if after["records"].get(rel) != content:
            problems.append("the admin's record %s changed (%s)" % (rel, "deleted" if rel not in after["records"]
                                                                    else "rewritten"))
    for rel, content in before["records"].items():
        if rel in admin:
            continue
        key = record_key(rel, content)
        if key is None or not scope.session_in(key) or key in shared:
            if after["records"].get(rel) != content:
                problems.append("record %s (not the step's) changed" % rel)
    for rel, content in after["records"].items():
        if rel not in before["records"]:
            key = record_key(rel, content)
            if key is None or not scope.session_in(key):
                problems.append("a record outside the step appeared: %s" % rel)
    return problems


def _link_problems(before, after, scope, frozen, protected):
    problems = []
    other = list(frozen.values()) + list(protected.values())
    still = [d for k, d in after["devices"].items() if k in frozen or k in protected]
    # a WWID that the step's own devices serve is the step's volume, reached on another iface or portal too: its
    # by-id links move when the step's path joins that volume's map (udev and multipathd's doing)
    mine = set(d["wwid"] for k, d in after["devices"].items() if scope.device_in(k, d) and k not in protected)
    for rel, target in before["links"].items():
        key = bypath_key(rel)
        if key is not None:
            if not scope.bypath_in(key) and after["links"].get(rel) != target:
                problems.append("by-path link %s (not the step's) changed: %s -> %s" % (
                    rel, target, after["links"].get(rel)))
            continue
        wwid = link_wwid(rel)
        if wwid is None:
            continue
        needs_part = "-part" in rel.rsplit("/", 1)[-1]
        if wwid not in mine and any(d["wwid"] == wwid for d in other) and any(d["wwid"] == wwid for d in still):
            if rel not in after["links"]:
                if needs_part and not any(d["wwid"] == wwid and d["parts"] for d in still):
                    continue
                problems.append("link %s of another volume's WWID %s is gone" % (rel, wwid))
    return problems


def logged(rule_function):
    """Keep each rule call in the machine's ``log``: a failure message shows the steps that led to it (the soak run
    does not shrink, so hypothesis prints no minimal case)."""
    @functools.wraps(rule_function)
    def wrapper(self, **kwargs):
        self.log.append("%s(%s)" % (rule_function.__name__, ", ".join("%s=%r" % kv for kv in sorted(kwargs.items()))))
        return rule_function(self, **kwargs)
    return wrapper


# -- the state machine -----------------------------------------------------------------------------------------
PORTAL_SETS = st.sampled_from([(P1,), (P2,), (P1, P2), (P2, P1)])


class OwnershipMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="brick-fuzz-")
        self.failure_log = os.path.join(self.tmp, "failed-portals.json")
        self.host = SimHost(os.path.join(self.tmp, "host"))
        self.host.set_fault("time_scale", 0.01)
        for iqn, luns in LUNS.items():
            self.host.add_target(iqn, portals=[P1, P2], luns=luns)
        ifaces = os.path.join(self.host.root, "etc/iscsi/ifaces")
        with open(os.path.join(ifaces, "eth1"), "w") as fh:
            fh.write("# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = eth1\niface.transport_name = tcp\n"
                     "iface.net_ifacename = eth1\n# END RECORD\n")
        self.admin = {}  # record files the admin made: rel path -> content
        self.old_wwids = {}  # (iqn, lun) -> WWIDs the LUN had before a remap
        self.once_faults = []  # fault names to clear after the next step
        self.last_attach = None
        self.log = []

    def teardown(self):
        for pid in list((self.host.state().get("procs") or {})):
            try:
                self.host.release(int(pid))
            except Exception:  # noqa: BLE001 - teardown of a temp host
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------------------
    def conn(self, iface, wwid=None):
        return iscsi.Connector(self.host.fs, InProcessRunner(self.host), iface=iface, wwid=wwid, poll=0.01,
                               sleep=lambda s: time.sleep(min(s, 0.01)), device_wait=0.5, multipath_wait=0.5,
                               login_timeout=1, command_timeout=1.0, rescan_timeout=1.0,
                               failure_log=self.failure_log)  # as the modules do: check mode reads it

    def logged_failures(self):
        """The portals (iface|address:port|iqn) whose last login failed, as the failure log says."""
        return set(read_state(self.failure_log))

    def current_wwid(self, iqn, lun):
        return self.host.state()["targets"][iqn]["luns"][str(lun)]["wwid"]

    def pick_wwid(self, iqn, lun, mode):
        if mode == "current":
            return self.current_wwid(iqn, lun)
        if mode == "stale":
            old = self.old_wwids.get((iqn, lun))
            other = [lun_ for lun_ in LUNS[iqn] if lun_ != lun][0]
            return old[-1] if old else self.current_wwid(iqn, other)
        return None

    def build(self, iqn, lun, portals, by_name):
        names = [("%s:3260" % NAME) if (by_name and p == P1) else p for p in portals]
        return iscsi.build_paths(names, [iqn], [lun], resolver=resolver)

    @invariant()
    def count_step(self):
        STEPS["count"] += 1

    def end_step(self):
        STEPS["checked"] += 1
        for name in self.once_faults:
            faults = self.host.faults()
            faults.pop(name, None)
            self.host.clear_faults()
            for k, v in faults.items():
                self.host.set_fault(k, v)
        self.once_faults = []

    def run_checked(self, scope, call, check_call):
        """Run check mode, then the real call; check invariants 1, 2 and 4.  Returns the real result or None."""
        try:
            return self._run_checked(scope, call, check_call)
        except AssertionError as err:
            raise AssertionError("%s\nsteps:\n  %s" % (err, "\n  ".join(self.log))) from None

    def _run_checked(self, scope, call, check_call):
        failures_before = self.logged_failures()
        full = self.host.snapshot()
        before = observe(self.host)
        predicted = None
        if check_call is not None:
            try:
                predicted = check_call()
            except BrickError:
                predicted = "error"
            after_check = self.host.snapshot()
            assert after_check == full, "check mode changed the host: %s" % self.host.diff(full, after_check)
        try:
            res = call()
        except BrickError as err:
            res, error = None, err
        else:
            error = None
        after = observe(self.host)
        problems = ownership_problems(before, after, scope, self.admin)
        if "admin-record" in KNOWN_BUGS:
            problems = [p for p in problems if not p.startswith("the admin's record")]
        assert not problems, "%s\nerror: %s\nresult: %s" % ("\n".join(problems), error, res)
        if res is not None:
            diff = self.host.diff(full, self.host.snapshot())
            # the ledger of the collection's records is its own bookkeeping: an entry dropped because the admin took
            # the record over (its bytes changed) is no change of the host's storage
            for kind in ("added", "removed", "changed"):
                diff[kind] = [p for p in diff[kind] if p != LEDGER]
            differs = bool(diff["added"] or diff["removed"] or diff["changed"])
            tolerated = tuple(suffix for tag, suffix in (("rescan-unreported", "/wwid"), ("rescan-unreported", "/size"),
                                                         ("records-state", "/iscsi-records.json"),
                                                         ("wwids-unreported", "/etc/multipath/wwids"))
                              if tag in KNOWN_BUGS)
            if not res["changed"] and not diff["added"] and not diff["removed"] \
                    and all(p.endswith(tolerated) for p in diff["changed"]) and tolerated \
                    or not res["changed"] and "rescan-unreported" in KNOWN_BUGS and self.old_wwids and all(
                        p.endswith(("/wwid", "/size")) or p.startswith("/dev/disk/by-id/")
                        for p in diff["added"] + diff["removed"] + diff["changed"]):
                differs = False
            assert res["changed"] == differs, "changed=%s but the host %s: %s (msg: %s)" % (
                res["changed"], "differs" if differs else "is as it was", diff, res.get("msg"))
            if isinstance(predicted, dict) and not (
                    "check-mode-no-rescan" in KNOWN_BUGS and not predicted["changed"] and res["changed"]
                    and predicted.get("wwid") != res.get("wwid")) and not (
                    predicted["changed"] and not res["changed"] and predicted.get("would_login")
                    and set(self.host.faults().get("portal_down") or {}) & set(predicted["would_login"])
                    and any(key.split("|")[1] in predicted["would_login"]
                            for key in self.logged_failures() - failures_before)):
                assert predicted["changed"] == res["changed"], "check mode said changed=%s (%s), the run %s (%s)" % (
                    predicted["changed"], predicted.get("msg"), res["changed"], res.get("msg"))
        return res

    # -- rules: the volume ------------------------------------------------------------------------------------
    @rule(iqn=st.sampled_from(sorted(LUNS)), lun=st.integers(0, 2), iface=st.sampled_from(IFACES),
          portals=PORTAL_SETS, by_name=st.booleans(), wwid_mode=st.sampled_from(["none", "current", "stale"]),
          check_first=st.booleans())
    @logged
    def attach(self, iqn, lun, iface, portals, by_name, wwid_mode, check_first):
        lun = lun % len(LUNS[iqn])
        self.do_attach((iqn, lun, iface, portals, by_name, wwid_mode, check_first))

    @precondition(lambda self: self.last_attach is not None)
    @rule()
    @logged
    def rerun(self):
        self.do_attach(self.last_attach)

    def do_attach(self, args):
        iqn, lun, iface, portals, by_name, wwid_mode, check_first = args
        wwid = self.pick_wwid(iqn, lun, wwid_mode)
        paths = self.build(iqn, lun, portals, by_name)
        scope = Scope(iqn, lun, iface, portals, wwid)
        res = self.run_checked(scope, lambda: self.conn(iface, wwid).connect(paths),
                               (lambda: self.conn(iface, wwid).connect(paths, check_mode=True)) if check_first else None)
        if res is not None:
            try:
                self.check_identity(res, iqn, lun, wwid)
            except AssertionError as err:
                raise AssertionError("%s\nsteps:\n  %s" % (err, "\n  ".join(self.log))) from None
            self.last_attach = args
        self.end_step()

    def check_identity(self, res, iqn, lun, wwid):
        want = self.current_wwid(iqn, lun)
        if any(s["state"] != "LOGGED_IN" for s in res["sessions"]):
            # a blocked device cannot be rescanned: the host cannot know of a re-map yet, the kernel's WWID is the truth
            want = kernel_wwid(self.host.disks()[res["paths"][0]["device"][5:]]) if res["paths"] else want
        assert res["wwid"] == want, "attach returned WWID %s, the array's LUN %d of %s is %s" % (res["wwid"], lun, iqn, want)
        assert wwid is None or res["wwid"] == wwid
        disks = self.host.disks()
        for path in res["paths"]:
            name = path["device"][5:]
            assert kernel_wwid(disks[name]) == want, "path %s is %s, not %s" % (name, kernel_wwid(disks[name]), want)
        if res["multipath"]:
            dm = res["device"][5:]
            assert self.host.maps()[dm]["wwid"] == want, "map %s is %s, not %s" % (dm, self.host.maps()[dm], want)

    @rule(iqn=st.sampled_from(sorted(LUNS)), lun=st.integers(0, 2), iface=st.sampled_from(IFACES),
          portals=PORTAL_SETS, by_name=st.booleans(), wwid_mode=st.sampled_from(["none", "current", "stale"]),
          force=st.booleans(), check_first=st.booleans())
    @logged
    def detach(self, iqn, lun, iface, portals, by_name, wwid_mode, force, check_first):
        lun = lun % len(LUNS[iqn])
        wwid = self.pick_wwid(iqn, lun, wwid_mode)
        paths = self.build(iqn, lun, portals, by_name)
        scope = Scope(iqn, lun, iface, portals, wwid)
        self.run_checked(scope, lambda: self.conn(iface, wwid).disconnect(paths, force=force),
                         (lambda: self.conn(iface, wwid).disconnect(paths, force=force, check_mode=True))
                         if check_first else None)
        self.end_step()

    @rule(with_expected=st.booleans(), index=st.integers(0, 7))
    @logged
    def audit_cleanup(self, with_expected, index):
        """One ``iscsi_volume`` action of the orphan audit's cleanup plan, run as the role would run it."""
        expected = None
        if with_expected:
            expected = [{"iqn": s["iqn"], "lun": d["lun"], "portal": s["portal"]}
                        for d in self.host.disks().values() for s in self.host.sessions()
                        if s["sid"] == d.get("sid") and s["state"] == "LOGGED_IN"]
        facts = paths_mod.gather(self.host.fs, expected=expected)
        actions = [a for a in facts["cleanup"] if a["action"] == "iscsi_volume"]
        if not actions:
            return
        action = actions[index % len(actions)]
        sessions = dict((s["sid"], s) for s in self.host.sessions())
        hit = [o for o in facts["orphans"] if o.get("portal") in action["portals"] and o.get("iqn") == action["iqn"]
               and (o.get("lun") == action["lun"] or action.get("session_only"))]
        devices = set((o["sid"], o["hctl"]) for o in hit if o.get("hctl"))
        keys = set((sessions[o["sid"]]["iqn"], sessions[o["sid"]]["portal"], sessions[o["sid"]]["iface"])
                   for o in hit if o.get("sid") in sessions)
        scope = Scope(devices=devices, sessions=keys,
                      bypath=[(o["iqn"], o["lun"], o["portal"]) for o in hit if o.get("hctl")])
        iface = action.get("iface") or "default"
        session_only = bool(action.get("session_only"))
        paths = iscsi.build_paths(action["portals"], [action["iqn"]], [None if session_only else action["lun"]],
                                  session_only=session_only)
        self.run_checked(scope, lambda: self.conn(iface, action.get("wwid")).disconnect(paths, session_only=session_only),
                         None)
        self.end_step()

    # -- rules: the array, the admin, the users ---------------------------------------------------------------
    @rule(iqn=st.sampled_from(sorted(LUNS)), lun=st.integers(0, 2), same_size=st.booleans())
    @logged
    def remap(self, iqn, lun, same_size):
        lun = lun % len(LUNS[iqn])
        self.old_wwids.setdefault((iqn, lun), []).append(self.current_wwid(iqn, lun))
        size = LUNS[iqn][lun] if same_size else LUNS[iqn][lun] + 8
        self.host.remap_lun(iqn, lun, size_mb=size)

    @rule(portal=st.sampled_from([P1, P2]), iface=st.sampled_from(IFACES))
    @logged
    def admin_discovery(self, portal, iface):
        """The admin discovers the portal on an iface (the way to reach one portal through two ifaces: open-iscsi
        keeps one static record per portal): node records of every target, with the tpgt, for that iface."""
        if any(s["portal"] == portal for s in self.host.sessions()):
            return  # discovery rewrites records in use (node.startup reset): not what this fuzzer looks at
        rc, _out, _err = self.host.run("iscsiadm", "-m", "discovery", "-t", "st", "-p", portal, "-I", iface)
        if rc != 0:  # the portal is dark: the admin gets an error and made nothing
            return
        for iqn in LUNS:  # SendTargets reports every portal of the target: records for P1 and P2
            for each in (P1, P2):
                if "admin-scan-auto" in KNOWN_BUGS:
                    self.host.run("iscsiadm", "-m", "node", "-o", "update", "-T", iqn, "-p", each, "-I", iface,
                                  "-n", "node.session.scan", "-v", "manual")
        self.admin = dict((rel, c) for rel, c in observe(self.host)["records"].items()
                          if rel in self.admin or discovered_on(rel, iface))

    @rule(iqn=st.sampled_from(sorted(LUNS)), portal=st.sampled_from([P1, P2]), iface=st.sampled_from(IFACES))
    @logged
    def admin_record(self, iqn, portal, iface):
        """The admin makes a static record (node.startup manual, a longer login timeout) before any attach."""
        key = (iqn, portal, iface)
        recs = observe(self.host)["records"]
        if any(record_key(rel, c) == key for rel, c in recs.items()):
            return
        rc, _out, err = self.host.run("iscsiadm", "-m", "node", "-o", "new", "-T", iqn, "-p", portal, "-I", iface)
        assert rc == 0, err
        rc, _out, err = self.host.run("iscsiadm", "-m", "node", "-o", "update", "-T", iqn, "-p", portal, "-I", iface,
                                      "-n", "node.startup", "-v", "manual",
                                      "-n", "node.conn[0].timeo.login_timeout", "-v", "40",
                                      *(["-n", "node.session.scan", "-v", "manual"]
                                        if "admin-scan-auto" in KNOWN_BUGS else []))
        assert rc == 0, err
        for rel, content in observe(self.host)["records"].items():
            if record_key(rel, content) == key:
                self.admin[rel] = content

    def use(self, index, how):
        maps = [dm for dm, m in self.host.maps().items() if m.get("kind", "mpath") == "mpath"]
        in_maps = set(p for m in self.host.maps().values() for p in m.get("paths") or {})
        disks = sorted(self.host.disks())
        free_disks = [d for d in disks if how == "hold" or d not in in_maps]
        candidates = ["/dev/" + dm for dm in sorted(maps)] + ["/dev/" + d for d in free_disks]
        if not candidates:
            return
        dev = candidates[index % len(candidates)]
        try:
            if how == "mount":
                self.host.mount(dev, "/mnt/fuzz%d" % index)
            elif how == "hold":
                self.host.hold_open(dev)
            elif how == "hold_exclusive":
                self.host.hold_open(dev, exclusive=True)
            else:
                self.host.add_partition(dev, 1, 8)
        except SimError:
            pass

    def release_all(self):
        for pid in list(self.host.state().get("procs") or {}):
            self.host.release(int(pid))
        for mount in list(self.host.state().get("mounts") or []):
            self.host.umount(mount.get("mountpoint") or mount.get("dev"))

    @rule(how=st.sampled_from(["mount", "hold", "hold_exclusive", "partition", "release"]), index=st.integers(0, 15))
    @logged
    def users(self, how, index):
        """A user mounts, opens (shared or exclusive) or partitions a device or map; or everything is released."""
        if how == "release":
            self.release_all()
        else:
            self.use(index, how)

    @rule(kind=st.sampled_from(["dark", "fail", "back", "next"]), portal=st.sampled_from([P1, P2]),
          how=st.sampled_from(["refuse", "blackhole"]), state=st.sampled_from(["FAILED", "FREE"]),
          iface=st.sampled_from([None, "default", "eth1"]),
          what=st.sampled_from(["logout", "flush", "delpath", "login", "never_appears", "slow_delete"]),
          iqn=st.sampled_from(sorted(LUNS)), lun=st.integers(0, 2))
    @logged
    def fault(self, kind, portal, how, state, iface, what, iqn, lun):
        """A portal goes dark, its sessions (or one iface's) go FAILED or FREE, it comes back; or a one-step fault."""
        if kind == "dark":
            self.portal_dark(portal, how)
        elif kind == "fail":
            self.path_fail(portal, state, iface)
        elif kind == "back":
            self.portal_back(portal)
        else:
            self.fault_next_step(what, iqn, lun)

    # -- faults ----------------------------------------------------------------------------------------
    def portal_dark(self, portal, how):
        down = dict(self.host.faults().get("portal_down") or {})
        down[portal] = how
        self.host.set_fault("portal_down", down)

    def path_fail(self, portal, state, iface):
        """The portal's sessions (or only one iface's: the target dropped one initiator name) FAILED or FREE."""
        self.host.path_fail(portal, session_state=state, iface=iface)

    def portal_back(self, portal):
        down = dict(self.host.faults().get("portal_down") or {})
        down.pop(portal, None)
        self.host.set_fault("portal_down", down)
        self.host.path_restore(portal)

    def fault_next_step(self, what, iqn, lun):
        """A fault for the next step only: a command that hangs (timed out), a LUN that never shows, a slow delete."""
        if what == "never_appears":
            self.host.set_fault("device_never_appears", ["%s:%d" % (iqn, lun % len(LUNS[iqn]))])
            self.once_faults.append("device_never_appears")
        elif what == "slow_delete":
            self.host.set_fault("slow_sysfs", {"delete": 0.05})
            self.once_faults.append("slow_sysfs")
        else:
            pattern = {"logout": "iscsiadm -m node ... --logout", "login": "iscsiadm -m node ... --login",
                       "flush": {"cmd": "multipath", "args_contain": "-f"},
                       "delpath": "multipathd del path"}[what]
            self.host.set_fault("hang", [pattern])
            self.once_faults.append("hang")


def fuzz_settings(**kw):
    base = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=True)
    base.update(kw)
    return settings(**base)


@pytest.mark.skipif(LONG, reason="BRICK_FUZZ_LONG=1: the soak run below replaces it")
def test_ownership_fuzz_default():
    run_state_machine_as_test(OwnershipMachine, settings=fuzz_settings(
        max_examples=int(os.environ.get("BRICK_FUZZ_EXAMPLES", "60")), stateful_step_count=20, derandomize=True))


@pytest.mark.skipif(not LONG, reason="the soak run: BRICK_FUZZ_LONG=1")
def test_ownership_fuzz_long():
    budget = float(os.environ.get("BRICK_FUZZ_SECONDS", "480"))
    start = time.monotonic()
    STEPS["count"] = STEPS["checked"] = 0
    runs = 0
    failures = []
    try:
        while time.monotonic() - start < budget:
            runs += 1
            try:
                run_state_machine_as_test(OwnershipMachine, settings=fuzz_settings(
                    max_examples=int(os.environ.get("BRICK_FUZZ_EXAMPLES", "50")), stateful_step_count=50,
                    derandomize=False, phases=[Phase.explicit, Phase.generate]))  # no shrinking: the budget is time
            except Exception as err:  # noqa: BLE001 - a soak run reports every failure, then goes on
                failures.append(str(err))
                print("\n--- failure %d ---\n%s" % (len(failures), err))
    finally:
        print("\nbrick fuzz: %d steps (%d attach/detach/cleanup steps checked) in %d runs, %.0f s, %d failures" % (
            STEPS["count"], STEPS["checked"], runs, time.monotonic() - start, len(failures)))
    assert not failures, "\n\n".join(failures)
