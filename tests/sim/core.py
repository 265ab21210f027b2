# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The simulated host's engine: state, lock, "kernel", "array" (LIO target) and "multipathd".

Everything here works on the on-disk tree below ``root`` (host-absolute paths such as
``/sys/block/sda`` are mapped to ``root + path``).  State lives in ``<root>/.sim/state.json``;
every mutation runs under an exclusive ``flock`` of ``<root>/.sim/lock`` (re-entrant within one
thread), so the fake commands (other processes), the in-process kernel hook (SimHostFS) and
concurrent connector threads can share one simulated host.

Stdlib only, and deliberately light to import: the fake commands import this module on every call.
"""

import contextlib
import errno
import fcntl
import json
import os
import threading
import time

SIM_DIR = ".sim"
FAULT_NAMES = ("portal_down", "hang", "flush_fail", "device_never_appears", "latency",
               "time_scale", "multipathd_down", "login_fail", "wwid_change", "slow_sysfs")
# What udev + multipathd do when a path's WWID changes under them (a remapped LUN, then a rescan).
# "fail": the path stays in its map, failed (the default; to confirm on the lab); "readd": multipathd
# removes the path from its map and adds it again as a new path (multipath-tools >= 0.8.6 source);
# "ignore": no uevent reaches udev/multipathd (only device/wwid changes).
WWID_CHANGE_POLICIES = ("fail", "readd", "ignore")
SD_MAJORS = [8, 65, 66, 67, 68, 69, 70, 71, 128, 129, 130, 131, 132, 133, 134, 135]
DM_MAJOR = 253          # dynamic major: virtio_blk (initramfs) got 254, dm_mod the next one
VDA_MAJMIN = "254:0"
MULTIPATHD_PID = 612
FAST_IO_FAIL_TMO = 5    # multipathd writes it to recovery_tmo of every iSCSI session with a path in a map
NO_PATH_RETRY = 12      # the LIO-ORG hwtable entry: "12 chk" in `show maps format %Q`
FIRST_HOLDER_PID = 40000
LOCAL_IPV4 = "10.0.0.100"
LOCAL_IPV6 = "fd00::100"

WWIDS_HEADER = ("# Multipath wwids, Version : 1.0\n"
                "# NOTE: This file is automatically maintained by multipath and multipathd.\n"
                "# You should not need to edit this file in normal circumstances.\n"
                "#\n"
                "# Valid WWIDs:\n")

_tls = threading.local()


# ----------------------------------------------------------------------------------------- helpers
def split_portal(portal, default_port=3260):
    """'10.0.0.1:3260' / '[fd00::1]:3260' / 'fd00::1' / '10.0.0.1' / 'a:p,tpgt' -> (addr, port)."""
    p = str(portal).strip()
    if "," in p.rsplit("]", 1)[-1]:
        p = p[:p.rindex(",")]
    if p.startswith("["):
        end = p.index("]")
        addr, rest = p[1:end], p[end + 1:]
        port = int(rest[1:]) if rest.startswith(":") and rest[1:] else default_port
        return addr.lower(), port
    if p.count(":") > 1:
        return p.lower(), default_port
    addr, _sep, port = p.partition(":")
    return addr.lower(), int(port) if port else default_port


def portal_key(portal):
    addr, port = split_portal(portal)
    return "%s:%d" % (addr, port)


def fmt_portal(addr, port):
    """iscsiadm's form: [addr]:port for IPv6."""
    return "[%s]:%d" % (addr, port) if ":" in addr else "%s:%d" % (addr, port)


def sd_name(index):
    """Kernel sd naming: 0 -> sda, 25 -> sdz, 26 -> sdaa ..."""
    s = ""
    i = index
    while True:
        s = chr(ord("a") + i % 26) + s
        i = i // 26 - 1
        if i < 0:
            break
    return "sd" + s


def sd_devt(index):
    major = SD_MAJORS[(index & 0xf0) >> 4] if index < 256 else 259
    minor = ((index & 0xf) << 4) | (index & 0xfff00)
    return major, minor


def bypath_lun(lun):
    """udev path_id's LUN format."""
    if lun < 256:
        return "lun-%d" % lun
    return "lun-0x%04x%04x00000000" % (lun & 0xffff, (lun >> 16) & 0xffff)


def udev_wwid(sysfs_wwid):
    for prefix, digit in (("naa.", "3"), ("eui.", "2"), ("t10.", "1")):
        if sysfs_wwid.startswith(prefix):
            return digit + sysfs_wwid[len(prefix):]
    return "8" + sysfs_wwid


def lun_wwid(seed, iqn, lun, gen=0):
    """The sysfs WWID of the volume behind ``iqn``/``lun``; ``gen`` > 0: the gen-th volume the array
    put at that LUN number since (remap_lun)."""
    import hashlib
    key = "%s|%s|%d" % (seed, iqn, lun) + ("|%d" % gen if gen else "")
    h = hashlib.sha256(key.encode()).hexdigest()[:25]
    return "naa.6001405" + h


def relpath(link, target):
    """Relative link text for host-absolute ``link`` -> ``target``, as sysfs (kernfs) and udev write
    it: climb to the first common ancestor of the link's directory and the target's *parent*, then
    descend (so a link to an ancestor reads ``../../../host2``, not ``../..``)."""
    ld = os.path.dirname(link).split("/")
    tp = target.split("/")
    i = 0
    while i < len(ld) and i < len(tp) - 1 and ld[i] == tp[i]:
        i += 1
    return "../" * (len(ld) - i) + "/".join(tp[i:])


class SimError(Exception):
    pass


# ----------------------------------------------------------------------------------------- engine
class Sim(object):
    """One simulated host, addressed by its root.  Cheap to construct (no I/O)."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.simdir = os.path.join(self.root, SIM_DIR)
        self.state_path = os.path.join(self.simdir, "state.json")
        self.lock_path = os.path.join(self.simdir, "lock")
        self.faults_path = os.path.join(self.simdir, "faults.json")
        self.log_path = os.path.join(self.simdir, "commands.log")
        self.due_path = os.path.join(self.simdir, "recovery_due")
        self.mpathd_log_path = os.path.join(self.simdir, "multipathd.log")

    # -- lock + state ----------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, initial=None):
        """Exclusive flock on <root>/.sim/lock; re-entrant in one thread.  Yields the state
        (``initial``: a brand-new state, written when the outermost hold ends)."""
        held = getattr(_tls, "held", None)
        if held is None:
            held = _tls.held = {}
        ent = held.get(self.root)
        if ent is not None:
            ent[1] += 1
            try:
                yield ent[2]
            finally:
                ent[1] -= 1
            return
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if initial is not None:
                raw, st = "", initial
            else:
                with open(self.state_path) as f:
                    raw = f.read()
                st = json.loads(raw)
            held[self.root] = [fd, 1, st, None]   # [fd, depth, state, cached faults]
            try:
                if initial is None and self.recovery_due():
                    self.expire_recovery()
                yield st
            finally:
                del held[self.root]
                new = json.dumps(st, indent=1, sort_keys=True)
                if new != raw:
                    self._write_state(new)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def st(self):
        ent = getattr(_tls, "held", {}).get(self.root)
        if ent is None:
            raise SimError("state accessed outside the sim lock")
        return ent[2]

    def _load(self):
        with open(self.state_path) as f:
            return json.load(f)

    def _save(self, st):
        self._write_state(json.dumps(st, indent=1, sort_keys=True))

    def _write_state(self, text):
        tmp = "%s.%d.%d" % (self.state_path, os.getpid(), threading.get_ident())
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.state_path)

    def read_state(self):
        """A consistent copy of the state (takes the lock)."""
        with self.locked() as st:
            return json.loads(json.dumps(st))

    # -- faults ----------------------------------------------------------------------------
    def faults(self):
        """The fault knobs (read once per lock hold; a fresh read outside the lock)."""
        ent = getattr(_tls, "held", {}).get(self.root)
        if ent is not None:
            if ent[3] is None:
                ent[3] = self._read_faults()
            return ent[3]
        return self._read_faults()

    def _read_faults(self):
        try:
            with open(self.faults_path) as f:
                return json.load(f)
        except (IOError, OSError, ValueError):
            return {}

    def fault(self, name, default=None):
        v = self.faults().get(name)
        return default if v is None else v

    def write_faults(self, faults):
        ent = getattr(_tls, "held", {}).get(self.root)
        if ent is not None:
            ent[3] = dict(faults)
        tmp = "%s.%d.%d" % (self.faults_path, os.getpid(), threading.get_ident())
        with open(tmp, "w") as f:
            json.dump(faults, f, indent=1, sort_keys=True)
        os.replace(tmp, self.faults_path)

    def time_scale(self):
        try:
            return float(self.fault("time_scale", 1.0))
        except (TypeError, ValueError):
            return 1.0

    def log_command(self, argv):
        line = json.dumps(list(argv)) + "\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def mpathd_log(self, msg):
        """A line of multipathd's log (the journal on a real host): ``<root>/.sim/multipathd.log``."""
        fd = os.open(self.mpathd_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (msg + "\n").encode())
        finally:
            os.close(fd)

    # -- session recovery timers (seen by every process: the deadline lives in a file) -------------
    def recovery_due(self):
        """True when a FAILED session's recovery_tmo has expired and nobody has noticed yet (cheap:
        one small file read, no lock)."""
        try:
            with open(self.due_path) as f:
                due = float(f.read().strip() or "0")
        except (IOError, OSError, ValueError):
            return False
        return time.time() >= due

    def tick(self):
        """Expire the recovery timers that are due (the lazy check of the fake commands)."""
        if self.recovery_due():
            with self.locked():
                pass  # locked() expires them

    def expire_recovery(self):
        """Under the lock: every FAILED session whose recovery_tmo has run out becomes FREE and its
        devices transport-offline (the kernel's session_recovery_timedout)."""
        now = time.time()
        for s in sorted(self.st["sessions"].values(), key=lambda s: s["sid"]):
            due = s.get("free_at")
            if due is not None and now >= due:
                del s["free_at"]
                if s["state"] == "FAILED":
                    self.set_session_state(s, "FREE")
        self._sync_due()

    def _sync_due(self):
        dues = [s["free_at"] for s in self.st["sessions"].values() if s.get("free_at") is not None]
        if dues:
            tmp = "%s.%d.%d" % (self.due_path, os.getpid(), threading.get_ident())
            with open(tmp, "w") as f:
                f.write(repr(min(dues)))
            os.replace(tmp, self.due_path)
        else:
            try:
                os.unlink(self.due_path)
            except OSError:
                pass

    # -- tree primitives (host-absolute paths) -------------------------------------------------
    def P(self, p):
        return self.root + p

    def mkdir(self, p):
        os.makedirs(self.root + p, exist_ok=True)

    def wfile(self, p, content=""):
        with open(self.root + p, "w") as f:
            f.write(content)

    def rfile(self, p, default=None):
        try:
            with open(self.root + p) as f:
                return f.read()
        except (IOError, OSError):
            return default

    def attr(self, p, value):
        """A sysfs attribute: value + newline."""
        self.wfile(p, "%s\n" % (value,))

    def link(self, p, target, relative=True):
        """Symlink ``p`` -> ``target`` (host paths); relative link text unless ``relative`` is False."""
        real = self.root + p
        try:
            os.unlink(real)
        except OSError:
            pass
        os.symlink(relpath(p, target) if relative else target, real)

    def rm(self, p):
        try:
            os.unlink(self.root + p)
            return True
        except OSError as e:
            if e.errno in (errno.ENOENT,):
                return False
            if e.errno in (errno.EISDIR, errno.EPERM):
                self.rmtree(p)
                return True
            raise

    def rmdir_if_empty(self, p):
        try:
            os.rmdir(self.root + p)
        except OSError:
            pass

    def rmtree(self, p):
        real = self.root + p
        if os.path.islink(real) or not os.path.isdir(real):
            try:
                os.unlink(real)
            except OSError:
                pass
            return
        for dirpath, dirnames, filenames in os.walk(real, topdown=False):
            for n in filenames:
                os.unlink(os.path.join(dirpath, n))
            for n in dirnames:
                full = os.path.join(dirpath, n)
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
        os.rmdir(real)

    def lexists(self, p):
        return os.path.lexists(self.root + p)

    def resolve(self, p):
        """Resolve every link of host path ``p`` inside the root; returns a host path."""
        parts = [x for x in p.split("/") if x]
        resolved = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                resolved = os.path.dirname(resolved) or "/"
                continue
            cand = os.path.join(resolved, part)
            real = self.root + cand
            if os.path.islink(real):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many links", p)
                t = os.readlink(real)
                if t.startswith("/"):
                    resolved = "/"
                parts = [x for x in t.split("/") if x] + parts
            else:
                resolved = cand
        return resolved

    # -- creation of the base tree --------------------------------------------------------------
    def ensure(self, **kw):
        """Create the host unless it exists (safe when several processes race to create it)."""
        if os.path.exists(self.state_path):
            return False
        os.makedirs(self.simdir, exist_ok=True)
        fd = os.open(os.path.join(self.simdir, "create.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.exists(self.state_path):
                return False
            self.create(**kw)
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def create(self, multipathd=True, initiator="iqn.1994-05.com.example:sim-host", seed=0):
        os.makedirs(self.simdir, exist_ok=True)
        st = {"version": 1, "initiator": initiator, "multipathd": bool(multipathd), "seed": seed,
              "next": {"sid": 1, "pid": FIRST_HOLDER_PID, "mnt": 40},
              "hosts": [0, 1], "targets": {}, "sessions": {}, "disks": {}, "maps": {},
              "procs": {}, "mounts": [], "swaps": []}
        if not os.path.exists(self.faults_path):
            self.write_faults({})
        # the state file appears (atomically) only once the whole tree is built
        with self.locked(initial=st):
            for d in ("/sys/class/iscsi_host", "/sys/class/iscsi_session", "/sys/class/iscsi_connection",
                      "/sys/class/scsi_host", "/sys/class/scsi_device", "/sys/class/block",
                      "/sys/block", "/sys/bus/scsi/devices", "/sys/bus/scsi/drivers/sd",
                      "/sys/devices/platform", "/sys/devices/virtual/block",
                      "/dev/disk/by-path", "/dev/disk/by-id", "/dev/mapper",
                      "/etc/iscsi/nodes", "/etc/iscsi/send_targets", "/etc/iscsi/ifaces",
                      "/etc/multipath", "/proc/self", "/run", "/var/lib"):
                self.mkdir(d)
            self.wfile("/etc/iscsi/initiatorname.iscsi",
                       "## DO NOT EDIT OR REMOVE THIS FILE!\n"
                       "## If you remove this file, the iSCSI daemon will not start.\n"
                       "InitiatorName=%s\n" % initiator)
            self.wfile("/etc/multipath/wwids", WWIDS_HEADER)
            self.wfile("/etc/multipath.conf", "defaults {\n\tfind_multipaths yes\n\tuser_friendly_names no\n}\n")
            self.wfile("/dev/mapper/control", "")
            # host0/host1: the ata_piix controller (SCSI hosts without iscsi_host, no disks)
            for h, ata in ((0, "ata1"), (1, "ata2")):
                hd = "/sys/devices/pci0000:00/0000:00:01.1/%s/host%d" % (ata, h)
                self.mkdir(hd + "/scsi_host/host%d" % h)
                self.attr(hd + "/scsi_host/host%d/proc_name" % h, "ata_piix")
                self.attr(hd + "/scsi_host/host%d/state" % h, "running")
                self.wfile(hd + "/scsi_host/host%d/scan" % h, "")
                self.link(hd + "/scsi_host/host%d/device" % h, hd)
                self.link("/sys/class/scsi_host/host%d" % h, hd + "/scsi_host/host%d" % h)
                self.link("/sys/bus/scsi/devices/host%d" % h, hd)
            # the local virtio disk /dev/vda (not SCSI), mounted on /
            vd = "/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda"
            self.mkdir(vd + "/holders")
            self.mkdir(vd + "/slaves")
            self.mkdir(vd + "/queue")
            self.attr(vd + "/dev", VDA_MAJMIN)
            self.attr(vd + "/size", 3 * 1024 * 2048)
            self.attr(vd + "/ro", 0)
            self.attr(vd + "/removable", 0)
            self.attr(vd + "/queue/logical_block_size", 512)
            self.link("/sys/block/vda", vd)
            self.link("/sys/class/block/vda", vd)
            self.wfile("/dev/vda", "")
            self.link("/dev/disk/by-path/pci-0000:00:04.0", "/dev/vda")
            self.link("/dev/disk/by-path/virtio-pci-0000:00:04.0", "/dev/vda")
            if multipathd:
                self._multipathd_proc(True)
            self.render_proc()

    def _multipathd_proc(self, up):
        if up:
            self.wfile("/run/multipathd.pid", "%d\n" % MULTIPATHD_PID)
            self.mkdir("/proc/%d" % MULTIPATHD_PID)
            self.wfile("/proc/%d/comm" % MULTIPATHD_PID, "multipathd\n")
            self.wfile("/proc/%d/cmdline" % MULTIPATHD_PID, "/sbin/multipathd\x00-d\x00-s\x00")
        else:
            self.rm("/run/multipathd.pid")
            self.rmtree("/proc/%d" % MULTIPATHD_PID)

    # -- the array (LIO target) ----------------------------------------------------------------
    def add_target(self, iqn, portals, luns, tpgt=1, chap=None, mutual_chap=None, discovery_chap=None,
                   vendor="LIO-ORG", model="FILEIO", acl=None, lun_addressing="peripheral"):
        if lun_addressing not in ("peripheral", "flat"):
            raise SimError("lun_addressing is peripheral or flat, not %r" % (lun_addressing,))
        with self.locked() as st:
            out = {"iqn": iqn, "portals": list(portals), "tpgt": tpgt, "luns": {}}
            t = {"portals": [portal_key(p) for p in portals], "tpgt": tpgt, "luns": {},
                 "chap": list(chap) if chap else None,
                 "mutual_chap": list(mutual_chap) if mutual_chap else None,
                 "discovery_chap": list(discovery_chap) if discovery_chap else None,
                 "vendor": vendor, "model": model, "acl": list(acl) if acl else None,
                 "lun_addressing": lun_addressing}
            for lun, size_mb in sorted(luns.items()):
                lun = int(lun)
                sw = lun_wwid(st["seed"], iqn, lun)
                t["luns"][str(lun)] = {"size_mb": size_mb, "sysfs_wwid": sw, "wwid": udev_wwid(sw)}
                out["luns"][lun] = dict(t["luns"][str(lun)])
            st["targets"][iqn] = t
            return out

    def remap_lun(self, iqn, lun, size_mb=None):
        """Array side: a new volume (new WWID, optionally a new size) behind LUN ``lun`` of ``iqn``.
        The WWID is derived from seed/iqn/lun and the LUN's generation, so it is deterministic."""
        with self.locked() as st:
            t = st["targets"].get(iqn)
            if t is None:
                raise SimError("no target %s" % iqn)
            key = str(int(lun))
            old = t["luns"].get(key)
            if size_mb is None:
                if old is None:
                    raise SimError("LUN %s of %s is not mapped: give size_mb" % (lun, iqn))
                size_mb = old["size_mb"]
            gens = t.setdefault("lun_gen", {})
            gen = gens.get(key, 0) + 1
            gens[key] = gen
            sw = lun_wwid(st["seed"], iqn, int(lun), gen)
            t["luns"][key] = {"size_mb": size_mb, "sysfs_wwid": sw, "wwid": udev_wwid(sw)}
            return dict(t["luns"][key])

    def targets_on_portal(self, portal):
        key = portal_key(portal)
        return sorted(i for i, t in self.st["targets"].items() if key in t["portals"])

    # -- sessions -----------------------------------------------------------------------------
    def session_by_id(self, sid):
        return self.st["sessions"].get(str(sid))

    def find_sessions(self, iqn=None, portal=None, iface=None):
        key = portal_key(portal) if portal else None
        out = []
        for s in self.st["sessions"].values():
            if iqn is not None and s["iqn"] != iqn:
                continue
            if key is not None and s["portal"] != key:
                continue
            if iface is not None and s["iface"] != iface:
                continue
            out.append(s)
        return sorted(out, key=lambda s: s["sid"])

    def create_session(self, iqn, portal, iface, rec):
        """The kernel side of a successful login."""
        st = self.st
        addr, port = split_portal(portal)
        t = st["targets"][iqn]
        h = 0
        while h in st["hosts"]:
            h += 1
        st["hosts"].append(h)
        st["hosts"].sort()
        sid = st["next"]["sid"]
        st["next"]["sid"] += 1
        hd = "/sys/devices/platform/host%d" % h
        sh = hd + "/scsi_host/host%d" % h
        ih = hd + "/iscsi_host/host%d" % h
        self.mkdir(sh)
        self.mkdir(ih)
        self.attr(sh + "/proc_name", "iscsi_tcp")
        self.attr(sh + "/state", "running")
        self.wfile(sh + "/scan", "")
        self.link(sh + "/device", hd)
        local = LOCAL_IPV6 if ":" in addr else LOCAL_IPV4
        self.attr(ih + "/ipaddress", local)
        self.attr(ih + "/initiatorname", rec.get("iface.initiatorname") or st["initiator"])
        self.attr(ih + "/netdev", "<NULL>")
        self.attr(ih + "/hwaddress", "<NULL>")
        self.link(ih + "/device", hd)
        self.link("/sys/class/scsi_host/host%d" % h, sh)
        self.link("/sys/class/iscsi_host/host%d" % h, ih)
        self.link("/sys/bus/scsi/devices/host%d" % h, hd)
        sd = "%s/session%d" % (hd, sid)
        sa = "%s/iscsi_session/session%d" % (sd, sid)
        self.mkdir(sa)

        def val(k):
            v = rec.get(k)
            return v if v not in (None, "", "<empty>") else "(null)"
        for k, v in (("targetname", iqn), ("state", "LOGGED_IN"), ("tpgt", t["tpgt"]),
                     ("ifacename", iface), ("recovery_tmo", rec.get("node.session.timeo.replacement_timeout", "120")),
                     ("username", val("node.session.auth.username")),
                     ("password", val("node.session.auth.password")),
                     ("username_in", val("node.session.auth.username_in")),
                     ("password_in", val("node.session.auth.password_in")),
                     ("initiatorname", st["initiator"]), ("target_id", 0),
                     ("abort_tmo", rec.get("node.session.err_timeo.abort_timeout", "15")),
                     ("lu_reset_tmo", rec.get("node.session.err_timeo.lu_reset_timeout", "30"))):
            self.attr("%s/%s" % (sa, k), v)
        self.link(sa + "/device", sd)
        self.link("/sys/class/iscsi_session/session%d" % sid, sa)
        cd = "%s/connection%d:0" % (sd, sid)
        ca = "%s/iscsi_connection/connection%d:0" % (cd, sid)
        self.mkdir(ca)
        for k, v in (("persistent_address", addr), ("persistent_port", port), ("address", addr),
                     ("port", port), ("state", "up")):
            self.attr("%s/%s" % (ca, k), v)
        self.link(ca + "/device", cd)
        self.link("/sys/class/iscsi_connection/connection%d:0" % sid, ca)
        td = "%s/target%d:0:0" % (sd, h)
        self.mkdir(td)
        self.link("/sys/bus/scsi/devices/target%d:0:0" % h, td)
        s = {"sid": sid, "host": h, "iqn": iqn, "portal": "%s:%d" % (addr, port), "addr": addr,
             "port": port, "tpgt": t["tpgt"], "iface": iface, "state": "LOGGED_IN"}
        st["sessions"][str(sid)] = s
        return s

    def remove_session(self, sid):
        """Logout, kernel side: every SCSI device of the session goes, then the session and host."""
        st = self.st
        s = st["sessions"].get(str(sid))
        if s is None:
            return False
        for name in sorted(n for n, d in st["disks"].items() if d["sid"] == s["sid"]):
            self.remove_disk(name)
        h = s["host"]
        hd = "/sys/devices/platform/host%d" % h
        self.rm("/sys/bus/scsi/devices/target%d:0:0" % h)
        self.rm("/sys/class/iscsi_session/session%d" % sid)
        self.rm("/sys/class/iscsi_connection/connection%d:0" % sid)
        self.rm("/sys/class/scsi_host/host%d" % h)
        self.rm("/sys/class/iscsi_host/host%d" % h)
        self.rm("/sys/bus/scsi/devices/host%d" % h)
        self.rmtree(hd)
        st["hosts"].remove(h)
        del st["sessions"][str(sid)]
        if s.get("free_at") is not None:
            self._sync_due()
        return True

    def session_attr_dir(self, s):
        return "/sys/devices/platform/host%d/session%d/iscsi_session/session%d" % (s["host"], s["sid"], s["sid"])

    def recovery_tmo(self, s):
        """The session's recovery_tmo (seconds) as sysfs shows it."""
        try:
            return float((self.rfile(self.session_attr_dir(s) + "/recovery_tmo", "120") or "120").strip())
        except ValueError:
            return 120.0

    def set_session_state(self, s, state):
        """Session state (LOGGED_IN / FAILED / FREE), its connection, and its devices as the kernel sets
        them: running / blocked (recovery in progress) / transport-offline (recovery_tmo expired)."""
        s["state"] = state
        sd = "/sys/devices/platform/host%d/session%d" % (s["host"], s["sid"])
        self.attr(self.session_attr_dir(s) + "/state", state)
        self.attr("%s/connection%d:0/iscsi_connection/connection%d:0/state" % (sd, s["sid"], s["sid"]),
                  "up" if state == "LOGGED_IN" else "failed")
        dev = {"LOGGED_IN": "running", "FAILED": "blocked"}.get(state, "transport-offline")
        for name in sorted(n for n, d in self.st["disks"].items() if d["sid"] == s["sid"]):
            self.set_disk_state(name, dev)

    def session_of_host(self, host):
        for s in self.st["sessions"].values():
            if s["host"] == host:
                return s
        return None

    # -- SCSI devices ---------------------------------------------------------------------------
    def disk_dir(self, d):
        s = self.st["sessions"][str(d["sid"])]
        return "/sys/devices/platform/host%d/session%d/target%d:0:0/%s" % (s["host"], s["sid"], s["host"], d["hctl"])

    def scan(self, host, channel="-", target="-", lun="-"):
        """Write of "C T L" to hostH/scan: create the devices the target maps there."""
        st = self.st
        s = self.session_of_host(host)
        if s is None or s["state"] != "LOGGED_IN":
            return []
        if str(channel) not in ("-", "0") or str(target) not in ("-", "0"):
            return []
        t = st["targets"].get(s["iqn"])
        if t is None or s["portal"] not in t["portals"]:
            return []
        never = set(self.fault("device_never_appears", []) or [])
        # the kernel's LUN numbers: the array's with peripheral addressing, 16384 + it with flat addressing
        # (SAM flat space: 0x40 in the first byte, as Linux's scsilun_to_int reads it)
        mapped = sorted(self.kernel_lun(t, int(x)) for x in t["luns"])
        wanted = mapped if str(lun) == "-" else [int(lun)]
        made = []
        for n in wanted:
            if n not in mapped or ("%s:%d" % (s["iqn"], self.array_lun(t, n))) in never:
                continue
            hctl = "%d:0:0:%d" % (host, n)
            if any(d["hctl"] == hctl for d in st["disks"].values()):
                continue
            made.append(self.add_disk(s, n))
        return made

    @staticmethod
    def kernel_lun(t, n):
        return 16384 + n if t.get("lun_addressing") == "flat" else n

    @staticmethod
    def array_lun(t, kl):
        if t.get("lun_addressing") == "flat" and 16384 <= kl < 32768:
            return kl - 16384
        return kl

    def add_disk(self, s, lun):
        """``lun``: the kernel's LUN number (H:C:T:L)."""
        st = self.st
        t = st["targets"][s["iqn"]]
        L = t["luns"][str(self.array_lun(t, lun))]
        used = set(d["index"] for d in st["disks"].values())
        index = 0
        while index in used:
            index += 1
        name = sd_name(index)
        major, minor = sd_devt(index)
        hctl = "%d:0:0:%d" % (s["host"], lun)
        d = {"name": name, "index": index, "hctl": hctl, "sid": s["sid"], "lun": lun, "iqn": s["iqn"],
             "portal": s["portal"], "wwid": L["wwid"], "sysfs_wwid": L["sysfs_wwid"],
             "devt": "%d:%d" % (major, minor), "size_mb": L["size_mb"], "state": "running", "parts": {}}
        st["disks"][name] = d
        dd = self.disk_dir(d)
        self.mkdir(dd + "/scsi_device/" + hctl)
        self.link(dd + "/scsi_device/%s/device" % hctl, dd)
        for k, v in (("state", "running"), ("vendor", "%-8s" % t["vendor"][:8]),
                     ("model", "%-16s" % t["model"][:16]), ("rev", "4.0 "), ("wwid", L["sysfs_wwid"]),
                     ("queue_depth", 128), ("type", 0), ("timeout", 30), ("device_blocked", 0),
                     ("scsi_level", 7)):
            self.attr("%s/%s" % (dd, k), v)
        self.wfile(dd + "/delete", "")
        self.wfile(dd + "/rescan", "")
        bd = "%s/block/%s" % (dd, name)
        self.mkdir(bd + "/holders")
        self.mkdir(bd + "/slaves")
        self.mkdir(bd + "/queue")
        self.attr(bd + "/dev", d["devt"])
        self.attr(bd + "/size", L["size_mb"] * 2048)
        self.attr(bd + "/ro", 0)
        self.attr(bd + "/removable", 0)
        self.attr(bd + "/queue/logical_block_size", 512)
        self.attr(bd + "/queue/rotational", 1)
        self.link(bd + "/device", dd)
        self.link("/sys/class/scsi_device/" + hctl, dd + "/scsi_device/" + hctl)
        self.link("/sys/bus/scsi/devices/" + hctl, dd)
        self.link("/sys/bus/scsi/drivers/sd/" + hctl, dd)
        self.link("/sys/block/" + name, bd)
        self.link("/sys/class/block/" + name, bd)
        self.wfile("/dev/" + name, "")
        self.link("/dev/disk/by-path/" + self.bypath(d), "/dev/" + name)
        self.udev_byid(d["wwid"])
        self.mpathd_path_added(name)
        return name

    def bypath(self, d, part=None):
        s = self.st["sessions"][str(d["sid"])]
        # udev names the link for the persistent address: a host name for a session made with -p NAME
        n = "ip-%s:%d-iscsi-%s-%s" % (s.get("persistent_name") or s["addr"], s["port"], s["iqn"],
                                      bypath_lun(d["lun"]))
        return n + ("-part%d" % part if part else "")

    def name_session(self, sid, name):
        """The session as ``iscsiadm -p NAME`` makes it (lab, real-sysfs-notes h.): persistent_address is the
        host name, address stays numeric, and the by-path links are ``ip-NAME:PORT-...``."""
        s = self.st["sessions"][str(sid)]
        disks = [d for d in self.st["disks"].values() if d["sid"] == s["sid"]]
        links = [(d, k) for d in disks for k in [None] + sorted(int(x) for x in d["parts"])]
        for d, k in links:
            self.rm("/dev/disk/by-path/" + self.bypath(d, k))
        s["persistent_name"] = name
        self.attr("/sys/devices/platform/host%d/session%d/connection%d:0/iscsi_connection/connection%d:0/"
                  "persistent_address" % (s["host"], sid, sid, sid), name)
        for d, k in links:
            node = d["name"] + ("%d" % k if k else "")
            self.link("/dev/disk/by-path/" + self.bypath(d, k), "/dev/" + node)

    def remove_disk(self, name):
        """SCSI device removal (write to device/delete, or logout)."""
        st = self.st
        d = st["disks"].get(name)
        if d is None:
            return False
        self.mpathd_path_removed(name)
        for k in sorted(d["parts"], key=int):
            self._remove_sd_part(d, int(k))
        dd = self.disk_dir(d)
        self._drop_bypath(d)
        self.rm("/dev/" + name)
        self.rm("/sys/block/" + name)
        self.rm("/sys/class/block/" + name)
        self.rm("/sys/class/scsi_device/" + d["hctl"])
        self.rm("/sys/bus/scsi/devices/" + d["hctl"])
        self.rm("/sys/bus/scsi/drivers/sd/" + d["hctl"])
        self.rmtree(dd)
        del st["disks"][name]
        self.udev_byid(d["wwid"])
        return True

    def set_disk_state(self, name, state):
        d = self.st["disks"].get(name)
        if d is None:
            return
        d["state"] = state
        self.attr(self.disk_dir(d) + "/state", state)
        self.mpathd_check(name)

    def rescan_disk(self, name):
        """Write to device/rescan (scsi_rescan_device): re-read the VPD pages (device/wwid) and the
        capacity from the array.  Until then a device keeps the identity it was scanned with."""
        st = self.st
        d = st["disks"].get(name)
        if d is None:
            return
        t = st["targets"].get(d["iqn"])
        L = t and t["luns"].get(str(self.array_lun(t, d["lun"])))
        if not L:
            return
        resized = d["size_mb"] != L["size_mb"]
        d["size_mb"] = L["size_mb"]
        self.attr("/sys/block/%s/size" % name, L["size_mb"] * 2048)
        if L["sysfs_wwid"] != d["sysfs_wwid"]:
            d["sysfs_wwid"] = L["sysfs_wwid"]
            self.attr(self.disk_dir(d) + "/wwid", L["sysfs_wwid"])
            self.path_wwid_changed(name, resized)

    def path_wwid_changed(self, name, resized=True):
        """A rescan found another volume behind the device.  Seen on the lab (kernel 6.1, multipath-tools
        0.9.4): the kernel sends a "change" uevent only when the capacity changed.  Then udev recomputes the
        by-id links and multipathd logs "path wwid changed", removes the path from its map (an unused map
        left without paths is flushed) and adds it again as a new path of the new WWID ("readd").  With the
        same capacity there is no uevent: only device/wwid changes, udev and multipathd notice nothing
        ("ignore").  The ``wwid_change`` knob forces a policy (readd, ignore, or fail: failed in its map)."""
        d = self.st["disks"][name]
        policy = self.fault("wwid_change", None) or ("readd" if resized else "ignore")
        if policy == "ignore":
            return
        old, new = d["wwid"], udev_wwid(d["sysfs_wwid"])
        if old == new:
            return
        d["wwid"] = new
        self.udev_byid(old)
        self.udev_byid(new)
        if not self.mpathd_up() or d.get("mpathd_forgot"):
            return
        self.mpathd_log("%s: path wwid changed from '%s' to '%s'" % (name, old, new))
        dm = self.map_of_path(name)
        if policy == "readd":
            if dm is not None:
                self.mpathd_path_removed(name)
            self.mpathd_path_added(name)
        elif dm is not None:
            self.mpathd_check(name)   # failed: its WWID is not the map's any more

    def disks_by_wwid(self, wwid):
        return sorted((d for d in self.st["disks"].values() if d["wwid"] == wwid), key=lambda d: d["index"])

    # -- partitions ------------------------------------------------------------------------------
    def add_sd_partition(self, name, k, size_mb):
        d = self.st["disks"][name]
        major, minor = (int(x) for x in d["devt"].split(":"))
        pn = "%s%d" % (name, k)
        pd = "%s/block/%s/%s" % (self.disk_dir(d), name, pn)
        self.mkdir(pd + "/holders")
        self.attr(pd + "/partition", k)
        self.attr(pd + "/dev", "%d:%d" % (major, minor + k))
        self.attr(pd + "/size", size_mb * 2048)
        self.attr(pd + "/start", 2048 * k)
        self.attr(pd + "/ro", 0)
        self.link("/sys/class/block/" + pn, pd)
        self.wfile("/dev/" + pn, "")
        self.link("/dev/disk/by-path/" + self.bypath(d, k), "/dev/" + pn)
        d["parts"][str(k)] = size_mb
        self.udev_byid(d["wwid"])
        return pn

    def _drop_bypath(self, d, part=None):
        """udev's by-path link of a device that goes.  Two devices can claim one name (sessions to one portal on
        two ifaces: the name has no iface); udev then points the link at the device that stays."""
        name = self.bypath(d, part)
        self.rm("/dev/disk/by-path/" + name)
        for other in sorted(self.st["disks"].values(), key=lambda x: x["index"]):
            if other["name"] != d["name"] and (part is None or str(part) in other["parts"]) \
                    and self.bypath(other, part) == name:
                self.link("/dev/disk/by-path/" + name, "/dev/%s%s" % (other["name"], part or ""))
                break

    def _remove_sd_part(self, d, k):
        pn = "%s%d" % (d["name"], k)
        self._drop_bypath(d, k)
        self.rm("/dev/" + pn)
        self.rm("/sys/class/block/" + pn)
        self.rmtree("/sys/block/%s/%s" % (d["name"], pn))
        d["parts"].pop(str(k), None)

    # -- udev by-id links ----------------------------------------------------------------------
    def udev_byid(self, wwid):
        """(Re)compute /dev/disk/by-id/{scsi-,wwn-0x}<WWID>[-partK]: the map when one exists, else
        the first path (lowest sd index), else nothing."""
        wwn = "wwn-0x" + wwid[1:]
        byid = "/dev/disk/by-id/"
        for e in os.listdir(self.P(byid)):
            if e.startswith("scsi-%s-part" % wwid) or e.startswith("%s-part" % wwn):
                self.rm(byid + e)
        m = self.map_for_wwid(wwid)
        if m is not None:
            for n in ("scsi-" + wwid, wwn):
                self.link(byid + n, "/dev/" + m["dm"])
            return
        paths = self.disks_by_wwid(wwid)
        if not paths:
            for n in ("scsi-" + wwid, wwn):
                self.rm(byid + n)
            return
        d = paths[0]
        for n in ("scsi-" + wwid, wwn):
            self.link(byid + n, "/dev/" + d["name"])
            for k in d["parts"]:
                self.link("%s%s-part%s" % (byid, n, k), "/dev/%s%s" % (d["name"], k))

    # -- device-mapper / multipathd --------------------------------------------------------------
    def mpathd_up(self):
        return bool(self.st["multipathd"]) and not self.fault("multipathd_down", False)

    def map_for_wwid(self, wwid):
        for dm, m in self.st["maps"].items():
            if m["wwid"] == wwid and m.get("kind") == "mpath":
                return dict(m, dm=dm)
        return None

    def map_of_path(self, name):
        for dm, m in self.st["maps"].items():
            if name in m.get("paths", {}):
                return dm
        return None

    def find_map(self, ref):
        """Map by name, WWID, dm-N, /dev/dm-N, /dev/mapper/NAME (or any link to them)."""
        st = self.st
        r = ref
        if r.startswith("/dev/"):
            if not self.lexists(r):
                return None
            r = os.path.basename(self.resolve(r))
        if r in st["maps"]:
            return r
        for dm, m in st["maps"].items():
            if r in (m["name"], m["wwid"]) and m.get("kind") == "mpath":
                return dm
        return None

    def _wwids(self):
        txt = self.rfile("/etc/multipath/wwids", "") or ""
        return [ln.strip().strip("/") for ln in txt.splitlines() if ln.startswith("/")]

    def wwid_add(self, wwid):
        if wwid in self._wwids():
            return False
        txt = self.rfile("/etc/multipath/wwids", None)
        if txt is None:
            txt = WWIDS_HEADER
        self.wfile("/etc/multipath/wwids", txt + "/%s/\n" % wwid)
        return True

    def wwid_remove(self, wwid):
        txt = self.rfile("/etc/multipath/wwids", "") or ""
        lines = [ln for ln in txt.splitlines(True) if ln.strip() != "/%s/" % wwid]
        self.wfile("/etc/multipath/wwids", "".join(lines))
        return len(lines) != len(txt.splitlines(True))

    def _free_dm(self):
        used = set(int(k[3:]) for k in self.st["maps"])
        n = 0
        while n in used:
            n += 1
        return "dm-%d" % n

    def _make_dm(self, name, uuid, size_sectors, kind, wwid):
        dm = self._free_dm()
        n = int(dm[3:])
        dd = "/sys/devices/virtual/block/" + dm
        self.mkdir(dd + "/dm")
        self.mkdir(dd + "/slaves")
        self.mkdir(dd + "/holders")
        self.mkdir(dd + "/queue")
        self.attr(dd + "/dev", "%d:%d" % (DM_MAJOR, n))
        self.attr(dd + "/size", size_sectors)
        self.attr(dd + "/ro", 0)
        self.attr(dd + "/removable", 0)
        self.attr(dd + "/dm/name", name)
        self.attr(dd + "/dm/uuid", uuid)
        self.attr(dd + "/dm/suspended", 0)
        self.attr(dd + "/queue/logical_block_size", 512)
        self.link("/sys/block/" + dm, dd)
        self.link("/sys/class/block/" + dm, dd)
        self.wfile("/dev/" + dm, "")
        self.link("/dev/mapper/" + name, "/dev/" + dm)
        self.link("/dev/disk/by-id/dm-name-" + name, "/dev/" + dm)
        self.link("/dev/disk/by-id/dm-uuid-" + uuid, "/dev/" + dm)
        self.st["maps"][dm] = {"name": name, "uuid": uuid, "wwid": wwid, "kind": kind,
                               "devt": "%d:%d" % (DM_MAJOR, n), "size": size_sectors, "paths": {}}
        if kind == "mpath":
            # LIO-ORG (hwtable: no_path_retry 12): the table starts with queue_if_no_path
            self.st["maps"][dm].update(queueing=True, no_queueing=False)
        return dm

    def _slave_link(self, dm, name):
        """dm-N/slaves/X -> X and X/holders/dm-N -> dm-N (relative, like sysfs)."""
        xd = self.resolve("/sys/class/block/" + name)
        dd = "/sys/devices/virtual/block/" + dm
        self.link("%s/slaves/%s" % (dd, name), xd)
        self.link("%s/holders/%s" % (xd, dm), dd)

    def _unslave(self, dm, name):
        dd = "/sys/devices/virtual/block/" + dm
        self.rm("%s/slaves/%s" % (dd, name))
        if self.lexists("/sys/class/block/" + name):
            self.rm("%s/holders/%s" % (self.resolve("/sys/class/block/" + name), dm))

    def create_map(self, wwid, names):
        d0 = self.st["disks"][names[0]]
        dm = self._make_dm(wwid, "mpath-" + wwid, d0["size_mb"] * 2048, "mpath", wwid)
        for n in names:
            self.add_map_path(dm, n)
        self.wwid_add(wwid)
        self.udev_byid(wwid)
        return dm

    def add_map_path(self, dm, name):
        """The path joins the map's table (a reload: the features are multipathd's again), and
        multipathd sets its session's recovery_tmo to fast_io_fail_tmo."""
        m = self.st["maps"][dm]
        self._slave_link(dm, name)
        m["paths"][name] = self._path_state(name, dm)
        # a reload: queueing comes from the config again (no_path_retry), even after disablequeueing (lab)
        m["queueing"], m["no_queueing"] = True, False
        s = self.st["sessions"].get(str(self.st["disks"][name]["sid"]))
        if s is not None:
            self.attr(self.session_attr_dir(s) + "/recovery_tmo", FAST_IO_FAIL_TMO)

    def _path_state(self, name, dm=None):
        d = self.st["disks"][name]
        s = self.st["sessions"].get(str(d["sid"]))
        ok = d["state"] == "running" and s is not None and s["state"] == "LOGGED_IN"
        if dm is not None and self.st["maps"][dm]["wwid"] != d["wwid"]:
            ok = False    # another volume behind the path now (remapped LUN + rescan)
        return "active" if ok else "failed"

    def claimed(self, name):
        """Why block device ``name`` cannot be opened exclusively (O_EXCL, or a dm table load): a
        reason string, or None.  Mounted, swap, a holder (dm, kpartx), a process holding it with
        hold_open(exclusive=True), or a partition of it claimed in one of these ways."""
        if os.listdir(self.P("/sys/class/block/%s/holders" % name)):
            return "held by %s" % ", ".join(sorted(os.listdir(self.P("/sys/class/block/%s/holders" % name))))
        for w in self.opened(name):
            if not w.startswith("pid "):
                return w
        for pid, pr in sorted(self.st["procs"].items()):
            if pr.get("exclusive") and any(os.path.basename(t) == name for t in pr["fds"].values()):
                return "opened exclusively by pid %s" % pid
        d = self.st["disks"].get(name)
        for k in sorted(d["parts"] if d else (), key=int):
            why = self.claimed("%s%s" % (name, k))
            if why:
                return "partition %s%s %s" % (name, k, why)
        return None

    def _joinable(self, name, alias):
        why = self.claimed(name)
        if why:
            self.mpathd_log("%s: failed in domap for addition of new path %s (%s: Device or resource busy)"
                            % (alias, name, why))
            return False
        return True

    def mpathd_path_added(self, name, force=False):
        """uevent "add" of a path (or `multipathd add path`): join or build a map (find_multipaths yes).
        A device that is claimed (mounted, swap, holders, exclusive open) cannot be in a dm table: it
        cannot join an existing map, and a NEW map that would include it is not created at all (seen on
        the lab: LUN 1 mounted through P1, then P2's path of it appears -> no map; multipathd's table load of
        both paths fails and it does not retry with the others)."""
        if not self.mpathd_up():
            return None
        st = self.st
        d = st["disks"][name]
        d.pop("mpathd_forgot", None)
        if self.map_of_path(name):
            return self.map_of_path(name)
        m = self.map_for_wwid(d["wwid"])
        if m is not None:
            if not self._joinable(name, m["name"]):
                return None
            self.add_map_path(m["dm"], name)
            return m["dm"]
        peers = [x["name"] for x in self.disks_by_wwid(d["wwid"])
                 if not self.map_of_path(x["name"]) and not x.get("mpathd_forgot")]
        if len(peers) >= 2 or d["wwid"] in self._wwids():
            ok = [p for p in peers if self._joinable(p, d["wwid"])]
            if len(ok) < len(peers):
                return None
            dm = self.create_map(d["wwid"], ok)
            return dm if name in ok else None
        return None

    def mpathd_path_removed(self, name, daemon_cmd=False):
        """A path went away (device deleted) or `multipathd del path`: leave the map (a reload of the
        remaining paths); a map left without paths is removed by multipathd unless it is open (then
        it stays, queueing)."""
        dm = self.map_of_path(name)
        if dm is None:
            return None
        m = self.st["maps"][dm]
        self._unslave(dm, name)
        del m["paths"][name]
        if not m["paths"] and (self.mpathd_up() or daemon_cmd) and not self.map_in_use(dm):
            self.remove_map(dm)
        elif self.mpathd_up() or daemon_cmd:
            # the reload without the path turns queueing back on, even after disablequeueing: on the lab
            # multipathd 0.9.4 logs "reload [... 1 queue_if_no_path ...]" and "Entering recovery mode"
            m["queueing"], m["no_queueing"] = True, False
        return dm

    def mpathd_check(self, name):
        """The path checker: follow the device/session state."""
        dm = self.map_of_path(name)
        if dm is not None and self.mpathd_up():
            self.st["maps"][dm]["paths"][name] = self._path_state(name, dm)

    def mpathd_reconfigure(self):
        """multipathd (re)started or reconfigured: it rediscovers every path, and picks up those that
        are not in a map yet."""
        for name in sorted(self.st["disks"], key=lambda n: self.st["disks"][n]["index"]):
            if name in self.st["disks"] and not self.map_of_path(name):
                self.mpathd_path_added(name)

    def map_active_paths(self, dm):
        """Active paths of mpath map ``dm`` (for a kpartx partition map: of its parent)."""
        m = self.st["maps"][dm]
        if m.get("kind") == "part" and m.get("parent") in self.st["maps"]:
            m = self.st["maps"][m["parent"]]
        return sorted(p for p, v in m.get("paths", {}).items() if v == "active")

    def map_queueing(self, dm):
        m = self.st["maps"][dm]
        if m.get("kind") == "part" and m.get("parent") in self.st["maps"]:
            m = self.st["maps"][m["parent"]]
        return bool(m.get("queueing"))

    @staticmethod
    def features(m):
        """The dm-multipath features as `multipath -ll` / `dmsetup table` show them."""
        return "1 queue_if_no_path" if m.get("queueing") else "0"

    def map_holders(self, dm):
        return sorted(os.listdir(self.P("/sys/devices/virtual/block/%s/holders" % dm)))

    def part_maps(self, dm):
        return sorted(k for k, m in self.st["maps"].items() if m.get("parent") == dm)

    def opened(self, devname):
        """Why block device ``devname`` (sdb, dm-0) is open: list of reasons (pids, mounts, swap)."""
        st = self.st
        why = []
        for pid, p in sorted(st["procs"].items()):
            if any(os.path.basename(t) == devname for t in p["fds"].values()):
                why.append("pid %s" % pid)
        devt = self._devt(devname)
        for m in st["mounts"]:
            if m["majmin"] == devt:
                why.append("mounted on %s" % m["mnt"])
        for s in st["swaps"]:
            if os.path.basename(s) == devname:
                why.append("swap")
        return why

    def _devt(self, devname):
        v = self.rfile("/sys/class/block/%s/dev" % devname)
        return v.strip() if v else None

    def map_in_use(self, dm):
        """multipath-tools' partmap_in_use: the map is open, or a non-partition holder exists, or a
        kpartx partition map is itself in use."""
        if self.opened(dm):
            return True
        parts = set(self.part_maps(dm))
        for h in self.map_holders(dm):
            if h not in parts:
                return True
        return any(self.opened(p) or self.map_holders(p) for p in parts)

    def remove_map(self, dm):
        """Remove a dm device (kpartx partition maps of it first)."""
        st = self.st
        for p in self.part_maps(dm):
            self.remove_map(p)
        m = st["maps"][dm]
        dd = "/sys/devices/virtual/block/" + dm
        for name in list(m.get("paths", {})):
            self._unslave(dm, name)
        if m.get("parent"):
            self._unslave(dm, m["parent"])
        self.rm("/dev/mapper/" + m["name"])
        self.rm("/dev/disk/by-id/dm-name-" + m["name"])
        self.rm("/dev/disk/by-id/dm-uuid-" + m["uuid"])
        self.rm("/dev/" + dm)
        self.rm("/sys/block/" + dm)
        self.rm("/sys/class/block/" + dm)
        self.rmtree(dd)
        del st["maps"][dm]
        if m.get("kind") == "mpath":
            self.udev_byid(m["wwid"])

    def add_map_partition(self, dm, k, size_mb):
        """kpartx: <name>-partK, uuid partK-mpath-<WWID>, holding the map."""
        m = self.st["maps"][dm]
        name = "%s-part%d" % (m["name"], k)
        p = self._make_dm(name, "part%d-%s" % (k, m["uuid"]), size_mb * 2048, "part", m["wwid"])
        self.st["maps"][p]["parent"] = dm
        self._slave_link(p, dm)
        return p

    # -- path failure --------------------------------------------------------------------------
    def set_portal_state(self, portal, ok, failed_state="FAILED", recovery=False, iface=None):
        """Every session on ``portal`` (of ``iface`` only, when given): back to LOGGED_IN (``ok``), or failed.
        With ``recovery``, a LOGGED_IN session becomes FAILED and FREE once its recovery_tmo x time_scale has run
        out (a session that is already failed keeps its state and timer); without, it goes to
        ``failed_state`` and stays there.  Returns the session ids."""
        key = portal_key(portal)
        changed = []
        now = time.time()
        for s in sorted(self.st["sessions"].values(), key=lambda s: s["sid"]):
            if s["portal"] != key or (iface is not None and s["iface"] != iface):
                continue
            if ok:
                s.pop("free_at", None)
                self.set_session_state(s, "LOGGED_IN")
            elif recovery:
                if s["state"] == "LOGGED_IN":
                    s["free_at"] = now + self.recovery_tmo(s) * self.time_scale()
                    self.set_session_state(s, "FAILED")
            else:
                s.pop("free_at", None)
                self.set_session_state(s, failed_state)
            changed.append(s["sid"])
        self._sync_due()
        return changed

    # -- power ---------------------------------------------------------------------------------
    def power_cycle(self):
        """Under the lock: a cold reboot's power-off.  What lives in the kernel and the daemons is gone (sessions,
        SCSI devices and their links, multipath maps, mounts, swaps, open handles, pending recoveries); what is on
        disk stays (/etc/iscsi, /etc/multipath/wwids, the array).  A new boot numbers SCSI hosts and session ids
        from the start again.  The boot logins are the caller's (iscsiadm --loginall=automatic)."""
        st = self.st
        for pid in sorted(st["procs"]):
            self.rmtree("/proc/%s" % pid)
        st["procs"] = {}
        st["mounts"] = []
        st["swaps"] = []
        for dm in sorted(dm for dm, m in st["maps"].items() if m.get("kind") == "mpath"):
            if dm in st["maps"]:
                self.remove_map(dm)
        for sid in sorted(st["sessions"], key=int):
            self.remove_session(int(sid))
        st["hosts"] = [0, 1]
        st["next"]["sid"] = 1
        self._sync_due()
        self.render_proc()

    # -- /proc ---------------------------------------------------------------------------------
    def render_proc(self):
        st = self.st
        mounts = ["sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
                  "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
                  "udev /dev devtmpfs rw,nosuid,relatime,size=741220k,nr_inodes=185305,mode=755 0 0",
                  "tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=151616k,mode=755 0 0",
                  "/dev/vda / ext4 rw,relatime,errors=remount-ro 0 0"]
        info = ["21 26 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
                "22 26 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw",
                "23 26 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=741220k,nr_inodes=185305,mode=755",
                "25 26 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=151616k,mode=755",
                "26 1 %s / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro" % VDA_MAJMIN]
        for m in st["mounts"]:
            mnt = m["mnt"].replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
            mounts.append("%s %s %s rw,relatime 0 0" % (m["source"], mnt, m["fstype"]))
            info.append("%d 26 %s / %s rw,relatime shared:%d - %s %s rw" % (
                m["id"], m["majmin"], mnt, m["id"], m["fstype"], m["source"]))
        self.wfile("/proc/mounts", "\n".join(mounts) + "\n")
        self.wfile("/proc/self/mountinfo", "\n".join(info) + "\n")
        swaps = ["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority"]
        for i, s in enumerate(st["swaps"]):
            name = os.path.basename(s)
            sectors = int((self.rfile("/sys/class/block/%s/size" % name, "0") or "0").strip() or 0)
            swaps.append("%-40s%s\t%d\t\t%d\t\t%d" % (s, "partition", max(sectors // 2 - 4, 0), 0, -2 - i))
        self.wfile("/proc/swaps", "\n".join(swaps) + "\n")
