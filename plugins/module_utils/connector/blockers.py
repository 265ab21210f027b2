# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""What keeps a block device busy: processes that hold it open, stacked devices, mounts, swap, exclusive claims.

Each check returns a list of *blockers* (dicts with a ``kind``: process, holder, mount, swap, exclusive_open).
A process is named by pid, process name and user, never by its command line unless asked (it may carry another
user's secret).  idle.py combines the checks into one inspection and a wait.
"""

from __future__ import annotations

import os

from .errors import CommandError, DeviceNotFound, InvalidInput
from .validate import device_path

FUSER = "fuser"
FUSER_TIMEOUT = 10.0
# psmisc prints access letters after a PID in some modes (c e f F r m); busybox prints PIDs only.
_ACCESS_LETTERS = "cefFrmM"
_MISSING_MARKERS = ("does not exist", "no such file")


# -- parsing ------------------------------------------------------------------------------------
def parse_fuser(stdout, stderr=""):
    """PIDs reported by one ``fuser <dev>`` call (psmisc or busybox output).

    psmisc writes ``<name>:`` (and access letters) to stderr and `` 1234 5678`` to stdout;
    busybox writes ``1234 5678`` to stdout.  A ``name:`` prefix on stdout is tolerated too.
    Returns a sorted list of unique ints.
    """
    pids = set()
    for line in (stdout or "").splitlines():
        if ":" in line:
            head, _sep, tail = line.rpartition(":")
            if not head.strip().isdigit():
                line = tail
        for tok in line.split():
            tok = tok.rstrip(_ACCESS_LETTERS)
            if tok.isdigit():
                pids.add(int(tok))
    return sorted(pids)


def fuser_says_missing(stderr, path):
    """True when fuser's stderr says that ``path`` itself does not exist (psmisc: "Specified
    filename X does not exist."; busybox: "can't stat 'X': No such file or directory").  Warnings
    about other files (a process exiting during the scan) do not count."""
    for line in (stderr or "").splitlines():
        low = line.lower()
        if path in line and "/proc/" not in line and any(m in low for m in _MISSING_MARKERS):
            return True
    return False


def _unescape_mount(field):
    """Undo the octal escapes of /proc/*/mountinfo (``\\040`` = space)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        digits = field[i + 1:i + 4]
        if c == "\\" and len(digits) == 3 and all(x in "01234567" for x in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo(text):
    """[(major:minor, mountpoint, source)] from /proc/self/mountinfo text."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        source = None
        if "-" in fields[6:]:
            sep = fields.index("-", 6)
            if len(fields) > sep + 2:
                source = _unescape_mount(fields[sep + 2])
        out.append((fields[2], _unescape_mount(fields[4]), source))
    return out


def parse_mounts(text):
    """[(None, mountpoint, source)] from /proc/mounts text (fallback when mountinfo is absent)."""
    out = []
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) >= 2:
            out.append((None, _unescape_mount(fields[1]), _unescape_mount(fields[0])))
    return out


def parse_swaps(text):
    """Swap area file names from /proc/swaps text."""
    out = []
    for line in (text or "").splitlines()[1:]:
        fields = line.split()
        if fields:
            out.append(_unescape_mount(fields[0]))
    return out


# -- the device and its partitions --------------------------------------------------------------
class _Dev(object):
    """One block device under inspection: its /dev path(s), sysfs name and major:minor."""

    __slots__ = ("path", "name", "majmin", "aliases")

    def __init__(self, path, name, majmin, aliases=()):
        self.path = path          # what we report (/dev/sdb1, /dev/mapper/mpatha-part1)
        self.name = name          # sysfs name (sdb1, dm-4)
        self.majmin = majmin      # "8:17" or None
        self.aliases = set(aliases) | {path, "/dev/" + name}


def _sysfs(name):
    return "/sys/class/block/" + name


def _dm_name(fs, name):
    return fs.read(_sysfs(name) + "/dm/name")


def _dm_uuid(fs, name):
    return fs.read(_sysfs(name) + "/dm/uuid") or ""


def resolve(dev, fs):
    """Validate ``dev`` and return ``(resolved /dev path, sysfs name)``; raises before any I/O
    on bad input and DeviceNotFound when the device does not exist."""
    path = device_path(dev)
    if path.strip() != path or "\n" in path:
        # validate's character class ends in ``$``, which also matches before a final newline.
        raise InvalidInput("device %r contains characters that are not allowed" % (dev,),
                           hint="give a path such as /dev/sdb or /dev/disk/by-id/...")
    if not fs.lexists(path):
        raise DeviceNotFound("device %s does not exist" % path,
                             hint="check the path; for a new LUN or partition wait until udev created it",
                             device=path)
    real = fs.realpath(path)
    if not fs.exists(real) or not real.startswith("/dev/"):
        raise DeviceNotFound("device %s is a dangling link (points to %s, which does not exist)"
                             % (path, real), hint="the device went away; rescan or re-attach it",
                             device=path)
    name = os.path.basename(real)
    if not fs.exists(_sysfs(name)):
        raise DeviceNotFound("%s (%s) is not a block device known to the kernel (no %s)"
                             % (path, real, _sysfs(name)),
                             hint="give a disk, partition or device-mapper path", device=path)
    return real, name


def _is_partition_holder(fs, holder):
    return _dm_uuid(fs, holder).startswith("part")


def partitions_of(fs, name):
    """[_Dev] for the partitions of block device ``name``: sysfs partitions (sdb1...) and, for a
    dm map, the kpartx maps holding it (dm uuid ``partN-...``), reported as /dev/mapper/<name>."""
    out = []
    base = _sysfs(name)
    for entry in fs.listdir(base):
        if fs.exists("%s/%s/partition" % (base, entry)):
            out.append(_Dev("/dev/" + entry, entry, fs.read("%s/%s/dev" % (base, entry))))
    for holder in fs.listdir(base + "/holders"):
        if holder.startswith("dm-") and _is_partition_holder(fs, holder):
            mname = _dm_name(fs, holder)
            path = "/dev/mapper/" + mname if mname else "/dev/" + holder
            out.append(_Dev(path, holder, fs.read(_sysfs(holder) + "/dev")))
    return out


def _tree(fs, real, name):
    """The device followed by its partitions (recursively, each once)."""
    root = _Dev(real, name, fs.read(_sysfs(name) + "/dev"))
    devs, seen, todo = [], set(), [root]
    while todo:
        d = todo.pop(0)
        if d.name in seen:
            continue
        seen.add(d.name)
        devs.append(d)
        todo.extend(partitions_of(fs, d.name))
    return devs


# -- the individual checks ----------------------------------------------------------------------
def _proc_uid(fs, pid):
    """Real uid of process ``pid`` (``Uid:`` of /proc/PID/status), or None."""
    for line in fs.lines("/proc/%d/status" % pid):
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) > 1 and fields[1].isdigit():
                return int(fields[1])
    return None


def _user_name(fs, uid):
    """Name of ``uid`` (the host's passwd; under another root, that root's /etc/passwd), else the number."""
    if fs.root == "/":
        try:
            import pwd
            return pwd.getpwuid(uid).pw_name
        except (ImportError, KeyError):
            return str(uid)
    for line in fs.lines("/etc/passwd"):
        f = line.split(":")
        if len(f) > 2 and f[2] == str(uid):
            return f[0]
    return str(uid)


def _process_blocker(fs, dev, pid, cmdline=False):
    """A process that has ``dev`` open: pid, process name (comm) and user.  Its whole command line may carry
    someone else's secret (``mysql -pSECRET``...), so it is added only when asked for (``cmdline=True``)."""
    comm = fs.read("/proc/%d/comm" % pid) or ""
    b = {"kind": "process", "device": dev.path, "pid": pid, "comm": comm}
    uid = _proc_uid(fs, pid)
    if uid is not None:
        b["uid"] = uid
        b["user"] = _user_name(fs, uid)
    if cmdline:
        raw = fs.read("/proc/%d/cmdline" % pid) or ""
        b["cmdline"] = " ".join(a for a in raw.split("\x00") if a) or comm
    return b


def scan_proc(fs, devs, cmdline=False):
    """Processes holding any of ``devs`` open, from /proc/<pid>/fd links: [blocker]."""
    want = {}
    for d in devs:
        for a in d.aliases:
            want[a] = d
    me = os.getpid() if fs.root == "/" else None
    out, seen = [], set()
    for entry in fs.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        fddir = "/proc/%s/fd" % entry
        for fd in fs.listdir(fddir):
            target = fs.readlink("%s/%s" % (fddir, fd))
            if not target or not target.startswith("/dev/"):
                continue
            if target.endswith(" (deleted)"):
                target = target[:-10]
            d = want.get(target)
            if d is None and (target.startswith("/dev/mapper/") or target.startswith("/dev/disk/")):
                d = want.get(fs.realpath(target))
            if d is not None and (pid, d.name) not in seen:
                seen.add((pid, d.name))
                out.append(_process_blocker(fs, d, pid, cmdline))
    return out


def run_fuser(fs, runner, devs, timeout=FUSER_TIMEOUT, cmdline=False):
    """Processes holding any of ``devs`` open, one ``fuser <dev>`` per device: [blocker].

    Raises CommandNotFound / CommandError / CommandTimeout (the caller decides on a fallback).
    """
    out = []
    for d in devs:
        node = "/dev/" + d.name  # the kernel node (a /dev/mapper name may be a link)
        res = runner.run([FUSER, node], ok_codes=(0, 1), timeout=timeout)
        pids = parse_fuser(res.stdout, res.stderr)
        if not pids and res.rc == 1 and fuser_says_missing(res.stderr, node):
            if fs.exists(node):
                # fuser looks at another /dev than we do (a real fuser under BRICK_STORAGE_ROOT):
                # its answer is worthless; "auto" falls back to the /proc scan.
                raise CommandError(res.argv, res.rc, res.stdout, res.stderr,
                                   hint="fuser does not see %s although it exists" % node)
            raise DeviceNotFound("device %s disappeared while checking it" % d.path, device=d.path,
                                 hint="the device or partition node went away; check udev and the path")
        for pid in pids:
            out.append(_process_blocker(fs, d, pid, cmdline))
    return out


def check_holders(fs, devs):
    """Block devices (dm, md, ...) stacked on any of ``devs``; kpartx partition maps are
    partitions (inspected themselves), not blockers."""
    out = []
    for d in devs:
        for holder in fs.listdir(_sysfs(d.name) + "/holders"):
            if holder.startswith("dm-") and _is_partition_holder(fs, holder):
                continue
            b = {"kind": "holder", "device": d.path, "holder": holder}
            hname = _dm_name(fs, holder)
            if hname:
                b["holder_name"] = hname
            out.append(b)
    return out


def check_mounts(fs, devs):
    text = fs.read("/proc/self/mountinfo")
    entries = parse_mountinfo(text) if text else parse_mounts(fs.read("/proc/mounts"))
    by_mm = dict((d.majmin, d) for d in devs if d.majmin)
    by_path = {}
    for d in devs:
        for a in d.aliases:
            by_path[a] = d
    out = []
    for majmin, mnt, source in entries:
        d = by_mm.get(majmin) if majmin else None
        if d is None and source and source.startswith("/dev/"):
            d = by_path.get(source)
            if d is None and fs.lexists(source):
                d = by_path.get(fs.realpath(source))
        if d is not None:
            out.append({"kind": "mount", "device": d.path, "mountpoint": mnt})
    return out


def check_swaps(fs, devs):
    by_path = {}
    for d in devs:
        for a in d.aliases:
            by_path[a] = d
    out = []
    for name in parse_swaps(fs.read("/proc/swaps")):
        d = by_path.get(name)
        if d is None and name.startswith("/dev/") and fs.lexists(name):
            d = by_path.get(fs.realpath(name))
        if d is not None:
            out.append({"kind": "swap", "device": d.path})
    return out


def check_exclusive(fs, devs):
    """Try an O_EXCL open of each device.  A dm map whose kpartx partitions exist is skipped:
    the partition maps claim it by design, and they are tried themselves."""
    out = []
    for d in devs:
        if d.name.startswith("dm-") and any(
                _is_partition_holder(fs, h) for h in fs.listdir(_sysfs(d.name) + "/holders")):
            continue
        err = fs.open_exclusive("/dev/" + d.name)
        if err:
            out.append({"kind": "exclusive_open", "device": d.path, "error": err})
    return out
