# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""SimHost: the test author's handle on a simulated iSCSI initiator host.  See README.md."""

import errno
import json
import os
import re
import sys
import threading
import time

from . import cli
from .core import FAULT_NAMES, WWID_CHANGE_POLICIES, Sim, SimError, portal_key, split_portal

_HERE = os.path.dirname(os.path.abspath(__file__))
BIN_DIR = os.path.join(_HERE, "bin")
_MODULE_UTILS = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "plugins", "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from connector.hostfs import HostFS  # noqa: E402  (after the sys.path insert)

_HCTL_DIR = re.compile(r"^/sys/devices/platform/host\d+/session\d+/target\d+:\d+:\d+/(\d+):(\d+):(\d+):(\d+)/"
                       r"(delete|state|rescan)$")
_SCAN = re.compile(r"^/sys/devices/(?:platform|pci[^/]*/[^/]+/[^/]+)/host(\d+)/scsi_host/host\d+/scan$")


class SimHostFS(HostFS):
    """HostFS whose writes to kernel attribute files act like write(2) on real sysfs."""

    def __init__(self, sim):
        super(SimHostFS, self).__init__(sim.root)
        self._sim = sim

    def write(self, p, data):
        sim = self._sim
        real = self.realpath(p)
        m = _SCAN.match(real) if real.endswith("/scan") else None
        h = _HCTL_DIR.match(real) if m is None else None
        if m is None and h is None:
            if real.startswith("/sys/") and not os.path.exists(self.path(real)):
                raise IOError(errno.ENOENT, "No such file or directory (sysfs)", p)
            return super(SimHostFS, self).write(p, data)
        slow = sim.fault("slow_sysfs", None) or {}
        attr = "scan" if m is not None else h.group(5)
        delay = slow.get(attr, slow.get("*")) if isinstance(slow, dict) else None
        if delay:
            # a kernel write that blocks (a SYNCHRONIZE CACHE to a dead session, a scan during recovery): the
            # write(2) returns only after this many (real) seconds, then takes effect
            import time
            time.sleep(float(delay))
        with sim.locked() as st:
            if not os.path.exists(self.path(real)):
                raise IOError(errno.ENOENT, "No such file or directory", p)
            if m is not None:
                parts = data.split()
                if len(parts) != 3 or not all(x == "-" or x.isdigit() for x in parts):
                    raise IOError(errno.EINVAL, "Invalid argument", p)
                sim.scan(int(m.group(1)), parts[0], parts[1], parts[2])
                return
            hctl = ":".join(h.group(i) for i in range(1, 5))
            name = None
            for n, d in st["disks"].items():
                if d["hctl"] == hctl:
                    name = n
            what = h.group(5)
            if name is None:
                return
            if what == "delete":
                sim.remove_disk(name)
            elif what == "rescan":
                sim.rescan_disk(name)
            else:
                v = data.strip()
                if v not in ("running", "offline"):
                    raise IOError(errno.EINVAL, "Invalid argument", p)
                if st["disks"][name]["state"] == "blocked" and v == "offline":
                    # lab (kernel 6.1): a device in session recovery refuses to be set offline
                    raise IOError(errno.EINVAL, "Invalid argument", p)
                sim.set_disk_state(name, v)

    def open_exclusive(self, p):
        """O_EXCL open of a block device: EBUSY when mounted, swapped on, claimed by a holder
        (dm/kpartx), a partition of it is busy, or a SimHost.hold_open(exclusive=True) holds it."""
        sim = self._sim
        if not self.lexists(p):
            return "ENOENT"
        name = os.path.basename(self.realpath(p))
        if not os.path.exists(self.path("/sys/class/block/" + name)):
            return super(SimHostFS, self).open_exclusive(p)
        with sim.locked():
            if sim.claimed(name):
                return "EBUSY"
        return None


class SimDiff(dict):
    """{"added": [...], "removed": [...], "changed": [...]} (host paths); str() shows the values."""

    def __init__(self, a, b):
        ka, kb = set(a), set(b)
        super(SimDiff, self).__init__(added=sorted(kb - ka), removed=sorted(ka - kb),
                                      changed=sorted(k for k in ka & kb if a[k] != b[k]))
        self.details = dict((k, (a[k], b[k])) for k in self["changed"])
        self.values = dict((k, b[k]) for k in self["added"])
        self.values.update((k, a[k]) for k in self["removed"])

    def __str__(self):
        lines = []
        for k in self["added"]:
            lines.append("+ %s %r" % (k, self.values[k]))
        for k in self["removed"]:
            lines.append("- %s %r" % (k, self.values[k]))
        for k in self["changed"]:
            lines.append("~ %s %r -> %r" % (k, self.details[k][0], self.details[k][1]))
        return "\n".join(lines) or "(no difference)"


class SimHost(object):
    """A simulated Debian initiator host (open-iscsi 2.1.8, multipath-tools 0.9.4, LIO array).

    ``SimHost(root)`` builds the tree under ``root`` (or attaches to an existing sim host there)."""

    bin_dir = BIN_DIR

    def __init__(self, root, multipathd=True, initiator="iqn.1994-05.com.example:sim-host", seed=0):
        self.root = os.path.abspath(str(root))
        self.sim = Sim(self.root)
        self.sim.ensure(multipathd=multipathd, initiator=initiator, seed=seed)
        self._fs = SimHostFS(self.sim)
        self._timers = []
        self._recovery_timers = {}    # portal key -> [threading.Timer]

    # -- handles ------------------------------------------------------------------------------
    @property
    def fs(self):
        return self._fs

    def runner(self, **kw):
        from connector.runner import Runner
        env = dict(kw.pop("env", None) or {})
        env["BRICK_SIM_ROOT"] = self.root
        return Runner(env=env, path_prefix=BIN_DIR, **kw)

    def env(self):
        """Environment for running the fake commands yourself (subprocess)."""
        e = dict(os.environ)
        e["BRICK_SIM_ROOT"] = self.root
        e["PATH"] = BIN_DIR + os.pathsep + e.get("PATH", os.defpath)
        return e

    def run(self, tool, *args):
        """Run a fake command in-process (no subprocess): returns (rc, stdout, stderr).
        Latency, logging and blackhole delays apply; a matching "hang" fault raises SimError."""
        args = [str(a) for a in args]
        if cli.prologue(self.sim, tool, args):
            raise SimError("hang fault matches %s %s (only a subprocess can hang)" % (tool, " ".join(args)))
        rc, out, err, sleep = cli.run(self.sim, tool, args)
        if sleep >= cli.HANG_SECONDS:
            raise SimError("%s %s would block (I/O queued on a map without a usable path; only a subprocess "
                           "can hang)" % (tool, " ".join(args)))
        if sleep:
            time.sleep(sleep)
        return rc, out, err

    # -- the array --------------------------------------------------------------------------------
    def add_target(self, iqn, portals=("10.0.0.1:3260",), luns=None, tpgt=1, chap=None, mutual_chap=None,
                   discovery_chap=None, vendor="LIO-ORG", model="FILEIO", acl=None, lun_addressing="peripheral"):
        """Export ``iqn`` on ``portals`` (one TPG) with ``luns`` {lun: size_mb}.  Returns
        {"iqn", "portals", "tpgt", "luns": {lun: {"size_mb", "sysfs_wwid", "wwid"}}}.  With
        ``lun_addressing="flat"`` the target reports its LUNs in SAM flat space: the kernel sees LUN n as
        16384 + n (H:C:T:L and the by-path name), as with arrays that use flat addressing."""
        return self.sim.add_target(iqn, list(portals), luns if luns is not None else {0: 64}, tpgt=tpgt,
                                   chap=chap, mutual_chap=mutual_chap, discovery_chap=discovery_chap,
                                   vendor=vendor, model=model, acl=acl, lun_addressing=lun_addressing)

    def unmap_lun(self, iqn, lun):
        """Array side: the LUN is no longer mapped.  Existing devices stay (stale, state running),
        as on the lab after `lab-target unmap-lun` + rescan."""
        with self.sim.locked() as st:
            st["targets"][iqn]["luns"].pop(str(lun), None)

    def remap_lun(self, iqn, lun, size_mb=None):
        """Array side: LUN ``lun`` now serves another volume: a new deterministic WWID (from seed, iqn, lun
        and how many times the LUN was remapped) and ``size_mb`` (default: the old size; required when
        the LUN is not mapped).  Returns {"size_mb", "sysfs_wwid", "wwid"}.  Existing devices keep the old
        identity until a write to their device/rescan; then the ``wwid_change`` knob says what udev and
        multipathd do.  A new scan creates a device with the new WWID."""
        return self.sim.remap_lun(iqn, lun, size_mb)

    def resize_lun(self, iqn, lun, size_mb):
        """Array side: grow a LUN.  Hosts see it after a rescan (device/rescan, iscsiadm -R)."""
        with self.sim.locked() as st:
            st["targets"][iqn]["luns"][str(lun)]["size_mb"] = size_mb

    # -- convenience (in-process, through the same code as the fake iscsiadm) ----------------------
    def login(self, iqn, portal, scan="auto", iface="default", node_params=None):
        """Create the node record (if missing), set node.session.scan and ``node_params``, log in.
        Returns the new session dict; raises SimError with iscsiadm's message on failure."""
        base = ["-m", "node", "-T", iqn, "-p", portal, "-I", iface]
        rc, out, err = self.run("iscsiadm", *base)
        if rc == 21:
            self.run("iscsiadm", *(base + ["--op", "new"]))
        upd = base + ["--op", "update", "-n", "node.session.scan", "-v", scan]
        for k, v in (node_params or {}).items():
            upd += ["-n", k, "-v", str(v)]
        self.run("iscsiadm", *upd)
        rc, out, err = self.run("iscsiadm", *(base + ["--login"]))
        if rc != 0:
            raise SimError("login failed (rc %d): %s" % (rc, err.strip()))
        return self.sessions(iqn=iqn, portal=portal)[-1]

    def logout(self, iqn, portal=None, delete_record=True):
        args = ["-m", "node", "-T", iqn] + (["-p", portal] if portal else [])
        rc, out, err = self.run("iscsiadm", *(args + ["--logout"]))
        if delete_record:
            self.run("iscsiadm", *(args + ["--op", "delete"]))
        return rc

    def scan(self, host, lun="-", channel="-", target="-"):
        """Write "C T L" to /sys/class/scsi_host/hostH/scan; returns the new sd names."""
        before = set(self.disks())
        self.fs.write("/sys/class/scsi_host/host%d/scan" % host, "%s %s %s" % (channel, target, lun))
        return sorted(set(self.disks()) - before, key=lambda n: (len(n), n))

    def delete_device(self, dev):
        name = os.path.basename(self.fs.realpath(dev if dev.startswith("/") else "/dev/" + dev))
        self.fs.write("/sys/block/%s/device/delete" % name, "1")

    # -- views of the state -------------------------------------------------------------------------
    def state(self):
        return self.sim.read_state()

    def sessions(self, iqn=None, portal=None):
        st = self.state()
        out = []
        key = None
        if portal:
            a, p = split_portal(portal)
            key = "%s:%d" % (a, p)
        for s in sorted(st["sessions"].values(), key=lambda s: s["sid"]):
            if (iqn is None or s["iqn"] == iqn) and (key is None or s["portal"] == key):
                out.append(s)
        return out

    def disks(self):
        """{sdX: {hctl, sid, lun, iqn, portal, wwid, devt, size_mb, state, ...}}"""
        return self.state()["disks"]

    def maps(self):
        """{dm-N: {name, uuid, wwid, kind (mpath|part), paths: {sdX: active|failed}, ...}}"""
        return self.state()["maps"]

    # -- faults -----------------------------------------------------------------------------------
    def faults(self):
        return self.sim.faults()

    def set_fault(self, name, value):
        if name not in FAULT_NAMES:
            raise ValueError("unknown fault knob '%s' (known: %s)" % (name, ", ".join(FAULT_NAMES)))
        if name == "wwid_change" and value not in (None, False) and value not in WWID_CHANGE_POLICIES:
            raise ValueError("wwid_change must be one of %s" % ", ".join(WWID_CHANGE_POLICIES))
        with self.sim.locked() as st:
            f = self.sim.faults()
            was_down = bool(f.get("multipathd_down"))
            if value is None or value is False:
                f.pop(name, None)
            else:
                f[name] = value
            self.sim.write_faults(f)
            if name == "multipathd_down" and st["multipathd"]:
                self._daemon_transition(was_down, bool(value))

    def clear_faults(self):
        with self.sim.locked() as st:
            was_down = bool(self.sim.faults().get("multipathd_down"))
            self.sim.write_faults({})
            if st["multipathd"]:
                self._daemon_transition(was_down, False)

    def _daemon_transition(self, was_down, down):
        if was_down == down:
            return
        self.sim._multipathd_proc(not down)
        if not down:
            self.sim.mpathd_reconfigure()

    # -- paths --------------------------------------------------------------------------------------
    def path_fail(self, portal, session_state=None, wait=False, iface=None):
        """The portal stops answering.  Default: its sessions go FAILED and their disks ``blocked`` (the
        recovery window), then FREE and ``transport-offline`` once the session's recovery_tmo x time_scale
        has run out (sysfs ``recovery_tmo``: 120 from the node record, 5 once multipathd put a path of the
        session in a map).  A timer in this process and a lazy check in every fake command (and every
        sim lock) make it happen; ``wait=True`` blocks until then.  ``session_state="FAILED"`` stays in
        the recovery window (no timer); ``"FREE"`` skips it.  Map paths -> failed in every case.
        ``iface``: only the sessions of that iface (the target dropped one initiator name's session, as the
        lab's ACL change does).  Returns the session ids."""
        if session_state not in (None, "FAILED", "FREE"):
            raise ValueError("session_state must be None, 'FAILED' or 'FREE'")
        if wait and session_state == "FAILED":
            raise ValueError("wait=True with session_state='FAILED' would never return")
        sim = self.sim
        with sim.locked() as st:
            sids = sim.set_portal_state(portal, False, session_state or "FAILED", recovery=session_state is None,
                                        iface=iface)
            dues = sorted(set(st["sessions"][str(i)]["free_at"] for i in sids
                              if st["sessions"][str(i)].get("free_at") is not None))
        if session_state is None:
            timers = self._recovery_timers.setdefault(portal_key(portal), [])
            for due in dues:
                t = threading.Timer(max(0.0, due - time.time()) + 0.001, sim.tick)
                t.daemon = True
                t.start()
                timers.append(t)
            if wait:
                for due in dues:
                    while time.time() < due:
                        time.sleep(min(0.05, max(0.0, due - time.time()) + 0.001))
                sim.tick()
        return sids

    def name_session(self, sid, name):
        """Session ``sid`` as if it had been logged in with ``iscsiadm -p NAME`` (a host name of its address):
        persistent_address NAME, address numeric, by-path links ``ip-NAME:PORT-...`` (as on the lab)."""
        with self.sim.locked():
            self.sim.name_session(sid, name)

    def path_restore(self, portal):
        """The portal answers again: its sessions LOGGED_IN, disks running, map paths active; a pending
        recovery timer is cancelled."""
        for t in self._recovery_timers.pop(portal_key(portal), []):
            t.cancel()
        with self.sim.locked():
            return self.sim.set_portal_state(portal, True)

    def reboot(self):
        """A cold reboot: power off (sessions, devices, maps, mounts, swaps and open handles are gone; records,
        /etc/multipath/wwids and the array stay), then the boot's logins as open-iscsi.service makes them:
        ``iscsiadm -m node --loginall=automatic``, every record with ``node.startup = automatic``, each scanned
        as its ``node.session.scan`` says (auto: every LUN the target maps; manual: none).  multipathd makes a
        map for a path whose WWID is in /etc/multipath/wwids.  Returns iscsiadm's (rc, stdout, stderr)."""
        for timers in self._recovery_timers.values():
            for t in timers:
                t.cancel()
        self._recovery_timers.clear()
        for t in self._timers:
            t.cancel()
        with self.sim.locked():
            self.sim.power_cycle()
        return self.run("iscsiadm", "-m", "node", "--loginall=automatic")

    # -- multipath maps -----------------------------------------------------------------------------
    def map_features(self, dm_or_name):
        """The map's dm-multipath features, as `multipath -ll` shows them: '1 queue_if_no_path' (the
        default, LIO-ORG) or '0' (queueing disabled: multipathd disablequeueing, dmsetup message)."""
        sim = self.sim
        with sim.locked() as st:
            dm = sim.find_map(dm_or_name)
            if dm is None or st["maps"][dm].get("kind") != "mpath":
                raise SimError("no multipath map %s" % dm_or_name)
            return sim.features(st["maps"][dm])

    def multipathd_log(self):
        """multipathd's log lines (e.g. "sdb: path wwid changed from 'A' to 'B'")."""
        try:
            with open(self.sim.mpathd_log_path) as f:
                return [ln.rstrip("\n") for ln in f]
        except (IOError, OSError):
            return []

    # -- usage: open, mount, swap, partitions --------------------------------------------------------
    def _name(self, dev):
        p = dev if dev.startswith("/") else "/dev/" + dev
        if not self.fs.lexists(p):
            raise SimError("no such device %s" % dev)
        real = self.fs.realpath(p)
        return real, os.path.basename(real)

    def hold_open(self, dev, pid=None, comm="holder", seconds=None, exclusive=False):
        """A process holding ``dev`` open: /proc/<pid>/fd/<n> -> /dev/X (absolute, resolved as the
        kernel shows it), comm, cmdline.  ``seconds``: released by a background timer.  Returns pid."""
        real, name = self._name(dev)
        sim = self.sim
        with sim.locked() as st:
            if pid is None:
                pid = st["next"]["pid"]
                st["next"]["pid"] += 1
            key = str(pid)
            p = st["procs"].setdefault(key, {"comm": comm, "fds": {}, "exclusive": False})
            p["exclusive"] = p["exclusive"] or bool(exclusive)
            fd = 3
            while str(fd) in p["fds"]:
                fd += 1
            p["fds"][str(fd)] = real
            sim.mkdir("/proc/%s/fd" % key)
            sim.wfile("/proc/%s/comm" % key, p["comm"] + "\n")
            sim.wfile("/proc/%s/cmdline" % key, "%s\x00%s\x00" % (p["comm"], real))
            sim.link("/proc/%s/fd/%d" % (key, fd), real, relative=False)
        if seconds is not None:
            t = threading.Timer(seconds, self.release, (pid,))
            t.daemon = True
            t.start()
            self._timers.append(t)
        return pid

    def release(self, pid):
        sim = self.sim
        with sim.locked() as st:
            if st["procs"].pop(str(pid), None) is None:
                return False
            sim.rmtree("/proc/%s" % pid)
            return True

    def mount(self, dev, mountpoint, fstype="ext4"):
        real, name = self._name(dev)
        sim = self.sim
        with sim.locked() as st:
            majmin = (sim.rfile("/sys/class/block/%s/dev" % name, "") or "").strip()
            mid = st["next"]["mnt"]
            st["next"]["mnt"] += 1
            st["mounts"].append({"id": mid, "source": dev if dev.startswith("/") else real, "mnt": mountpoint,
                                 "fstype": fstype, "majmin": majmin, "dev": real})
            sim.render_proc()
        return mid

    def umount(self, what):
        sim = self.sim
        with sim.locked() as st:
            keep = []
            gone = False
            for m in st["mounts"]:
                if not gone and what in (m["mnt"], m["source"], m["dev"]):
                    gone = True
                    continue
                keep.append(m)
            st["mounts"] = keep
            sim.render_proc()
            return gone

    def swapon(self, dev):
        real, name = self._name(dev)
        with self.sim.locked() as st:
            if real not in st["swaps"]:
                st["swaps"].append(real)
            self.sim.render_proc()

    def swapoff(self, dev):
        real, name = self._name(dev)
        with self.sim.locked() as st:
            st["swaps"] = [s for s in st["swaps"] if s != real]
            self.sim.render_proc()

    def add_partition(self, dev, k, size_mb):
        """Partition ``k`` of an sd disk (sdXk + by-path -partK) or of a multipath map
        (kpartx: /dev/mapper/<name>-partK, dm uuid partK-mpath-<WWID>).  Returns /dev path."""
        real, name = self._name(dev)
        sim = self.sim
        with sim.locked() as st:
            if name in st["disks"]:
                return "/dev/" + sim.add_sd_partition(name, int(k), size_mb)
            if name in st["maps"] and st["maps"][name].get("kind") == "mpath":
                p = sim.add_map_partition(name, int(k), size_mb)
                return "/dev/mapper/" + st["maps"][p]["name"]
        raise SimError("%s is neither an sd disk nor a multipath map" % dev)

    def add_nvme_map(self, wwid, controllers=("nvme0", "nvme1"), size_mb=64):
        """A dm-multipath map over NVMe/TCP namespaces (native NVMe multipath off, nvme_core.multipath=N): per
        controller ``/sys/devices/virtual/nvme-fabrics/ctl/nvmeN`` (``state`` live, ``transport`` tcp) with the
        namespace ``nvmeNn1`` (major 259; ``device`` -> the controller, so ``device/state`` is the controller's),
        and a map ``mpath-<WWID>`` whose slaves they are.  Only the sysfs side: the fake multipath commands do not
        model NVMe (the map's kind is ``nvme-mpath``).  Returns the map's dm-N."""
        sim = self.sim
        with sim.locked() as st:
            names = []
            for index, ctrl in enumerate(controllers):
                cd = "/sys/devices/virtual/nvme-fabrics/ctl/" + ctrl
                name = ctrl + "n1"
                bd = "%s/%s" % (cd, name)
                sim.mkdir(bd + "/holders")
                sim.mkdir(bd + "/slaves")
                for key, value in (("state", "live"), ("transport", "tcp"), ("cntlid", index + 1)):
                    sim.attr("%s/%s" % (cd, key), value)
                for key, value in (("dev", "259:%d" % index), ("size", size_mb * 2048), ("wwid", wwid), ("ro", 0)):
                    sim.attr("%s/%s" % (bd, key), value)
                sim.link(bd + "/device", cd)
                sim.mkdir("/sys/class/nvme")
                sim.link("/sys/class/nvme/" + ctrl, cd)
                sim.link("/sys/block/" + name, bd)
                sim.link("/sys/class/block/" + name, bd)
                sim.wfile("/dev/" + name, "")
                names.append(name)
            dm = sim._make_dm(wwid, "mpath-" + wwid, size_mb * 2048, "nvme-mpath", wwid)
            for name in names:
                sim._slave_link(dm, name)
                st["maps"][dm]["paths"][name] = "active"
            return dm

    def set_nvme_state(self, controller, state):
        """The NVMe controller's state (``live``, ``connecting``, ``resetting``, ``deleting``, ``dead``...)."""
        with self.sim.locked():
            self.sim.attr("/sys/devices/virtual/nvme-fabrics/ctl/%s/state" % controller, state)

    # -- snapshots, commands ---------------------------------------------------------------------------
    def snapshot(self):
        """{host path: ("dir", None) | ("file", content) | ("link", target)} for the whole tree,
        without .sim/ (state, lock, faults, commands.log).  Compare with == or diff()."""
        root = self.root
        n = len(root)
        out = {}
        with self.sim.locked():
            for dirpath, dirnames, filenames in os.walk(root):
                rel = dirpath[n:] or "/"
                if rel == "/":
                    dirnames[:] = [d for d in dirnames if d != ".sim"]
                for d in list(dirnames):
                    full = os.path.join(dirpath, d)
                    hp = (rel.rstrip("/") + "/" + d)
                    if os.path.islink(full):
                        out[hp] = ("link", os.readlink(full))
                        dirnames.remove(d)
                    else:
                        out[hp] = ("dir", None)
                for f in filenames:
                    full = os.path.join(dirpath, f)
                    hp = rel.rstrip("/") + "/" + f
                    if os.path.islink(full):
                        out[hp] = ("link", os.readlink(full))
                    else:
                        with open(full, "rb") as fh:
                            data = fh.read()
                        try:
                            out[hp] = ("file", data.decode())
                        except UnicodeDecodeError:
                            out[hp] = ("file", data)
        return dict(sorted(out.items()))

    @staticmethod
    def diff(a, b):
        """SimDiff {"added", "removed", "changed"}: sorted host paths; str(diff) shows values."""
        return SimDiff(a, b)

    def commands(self):
        """argv lists of every fake command run, in order (argv[0] = tool base name)."""
        try:
            with open(self.sim.log_path) as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except (IOError, OSError):
            return []

    def reset_commands(self):
        try:
            os.unlink(self.sim.log_path)
        except OSError:
            pass

    # -- invariants ------------------------------------------------------------------------------------
    def check(self):
        """Consistency problems of the tree (empty list = consistent): every link resolves, sd names
        are unique, state and sysfs agree, holders/slaves are symmetric."""
        probs = []
        fs = self.fs
        with self.sim.locked() as st:
            snap = self.snapshot()
            for p, (kind, val) in snap.items():
                if kind != "link":
                    continue
                if p.startswith("/proc/") and "/fd/" in p:
                    target = val
                else:
                    target = fs.realpath(p)
                if not os.path.lexists(fs.path(target)):
                    probs.append("dangling link %s -> %s" % (p, val))
            names = [d["name"] for d in st["disks"].values()]
            if len(names) != len(set(names)):
                probs.append("duplicate sd names: %s" % names)
            hctls = [d["hctl"] for d in st["disks"].values()]
            if len(hctls) != len(set(hctls)):
                probs.append("duplicate HCTL: %s" % hctls)
            blocks = set(x for x in fs.listdir("/sys/block") if x.startswith("sd"))
            if blocks != set(names):
                probs.append("/sys/block sd entries %s != state %s" % (sorted(blocks), sorted(names)))
            for name, d in st["disks"].items():
                if not fs.exists("/dev/" + name):
                    probs.append("missing /dev/%s" % name)
                if fs.read("/sys/block/%s/dev" % name) != d["devt"]:
                    probs.append("%s dev mismatch" % name)
            for dm, m in st["maps"].items():
                for s in fs.listdir("/sys/block/%s/slaves" % dm):
                    if dm not in fs.listdir("/sys/class/block/%s/holders" % s):
                        probs.append("%s slave %s has no holder link back" % (dm, s))
                if m.get("kind") == "mpath" and sorted(fs.listdir("/sys/block/%s/slaves" % dm)) != sorted(m["paths"]):
                    probs.append("%s slaves != state paths" % dm)
            sids = set(int(x[7:]) for x in fs.listdir("/sys/class/iscsi_session"))
            if sids != set(int(k) for k in st["sessions"]):
                probs.append("sessions in sysfs %s != state %s" % (sorted(sids), sorted(st["sessions"])))
        return probs
