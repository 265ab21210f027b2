# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""dm-multipath: is multipathd up, make a map for a WWID, flush a map safely."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import scsi
from .errors import CommandError, CommandNotFound, FlushError

if TYPE_CHECKING:  # the types of the signatures only (nothing is imported at run time)
    from .hostfs import HostFS
    from .runner import Result, Runner
    from .scsi import DmMap

PIDFILE = "/run/multipathd.pid"
WWIDS = "/etc/multipath/wwids"
FLUSH_TIMEOUT = 60.0


def daemon_running(fs: HostFS, runner: Runner) -> bool:
    """True when multipathd runs.  Reads the pid file first (no command); asks the daemon only
    when the pid file says nothing (1 command)."""
    pid = fs.read(PIDFILE)
    if pid and pid.isdigit():
        comm = fs.read("/proc/%s/comm" % pid)
        if comm is not None:
            return comm.startswith("multipathd")
    try:
        r = runner.run(["multipathd", "show", "status"], timeout=5, check=False)
    except CommandNotFound:
        return False
    # multipathd answers "error receiving packet" with rc 0 when it is not there (LP#1789699).
    return r.rc == 0 and "error receiving packet" not in (r.stdout or "")


def wwid_known(fs: HostFS, wwid: str) -> bool:
    return ("/%s/" % wwid) in (fs.read(WWIDS) or "")


def ensure_map(fs, runner, wwid, paths):
    """Ask multipathd to build a map for ``wwid`` from ``paths`` (sd names) when
    find_multipaths would not on its own (a single live path).  Returns commands run."""
    n = 0
    if not wwid_known(fs, wwid):
        runner.run(["multipath", "-a", wwid], timeout=60, ok_codes=(0,))
        n += 1
    for p in paths:
        runner.run(["multipathd", "add", "path", "/dev/%s" % p], timeout=30, check=False)
        n += 1
    return n


def forget_wwid(runner, wwid):
    runner.run(["multipath", "-w", wwid], timeout=15, check=False)


def map_ready(fs, m):
    """A map is usable when it is not suspended, has a size, and at least one running path."""
    if fs.read("/sys/class/block/%s/dm/suspended" % m.dm, "0") != "0":
        return False
    if not m.size:
        return False
    for s in m.slaves:
        st = fs.read("/sys/class/block/%s/device/state" % s)
        if st == "running":
            return True
    return False


def _flush_reason(text):
    t = (text or "").lower()
    if "in use" in t or "busy" in t:
        return "in_use"
    if "input/output" in t or "i/o error" in t or "io error" in t:
        return "io_error"
    if "timeout" in t or "did not finish" in t:
        return "timeout"
    return "failed"


def flush(runner: Runner, name: str, retries: int = 3, delay: float = 1.0, timeout: float = FLUSH_TIMEOUT,
          sleep: object = None) -> Result:
    """``multipath -f NAME`` with exponential backoff.  Raises FlushError with ``reason``
    (in_use / io_error / timeout / failed) when every attempt failed.  Returns the Result.

    A map whose paths just changed is briefly held open by udev workers probing it (seen on the
    lab after a path loss): when the first attempt says "in use", wait once for udev to settle
    before the retries."""
    argv = ["multipath", "-f", name]
    last = runner.run(argv, timeout=timeout, check=False)
    attempts = 1
    if (last.rc != 0 or last.timed_out) and retries > 0:
        if "in use" in (last.stdout or "") + (last.stderr or ""):
            try:
                runner.run(["udevadm", "settle", "--timeout=30"], timeout=40, check=False)
            except CommandNotFound:
                pass
        last = runner.run(argv, timeout=timeout, retries=retries - 1, delay=delay, check=False)
        attempts += last.attempts
    last.attempts = attempts
    if last.rc == 0 and not last.timed_out:
        return last
    out = ((last.stderr or "") + " " + (last.stdout or "")).strip()
    reason = _flush_reason(out + (" timeout" if last.timed_out else ""))
    raise FlushError("flushing multipath map %s failed (%s); nothing was removed" % (name, reason.replace("_", " ")),
                     hint="stop what uses the map (unmount, close, deactivate LVM) and retry, "
                          "or use force to detach anyway and accept data loss",
                     reason=reason, map=name, attempts=attempts, output=out)


def flush_buffers(runner: Runner, dev: str, retries: int = 2, delay: float = 1.0, timeout: float = FLUSH_TIMEOUT) -> Result:
    try:
        return runner.run(["blockdev", "--flushbufs", dev], timeout=timeout, retries=retries, delay=delay)
    except CommandError as e:
        reason = _flush_reason(str(e) + " " + (e.stderr or ""))
        raise FlushError("flushing buffers of %s failed (%s); nothing was removed" % (dev, reason.replace("_", " ")),
                         hint="check the path state; use force to detach anyway and accept data loss",
                         reason=reason, device=dev, attempts=e.attempts,
                         output=(e.stderr or e.stdout or "").strip()) from None


def del_path(runner: Runner, name: str) -> Result:
    """``multipathd del path /dev/NAME``: take one path out of its map; the map keeps its other paths."""
    return runner.run(["multipathd", "del", "path", "/dev/%s" % name], timeout=30, check=False)


def resize_map(runner: Runner, name: str) -> Result:
    """``multipathd resize map NAME``: the map takes the size its paths report now (after a rescan)."""
    r = runner.run(["multipathd", "resize", "map", name], timeout=30, check=False)
    return r


def del_map(runner: Runner, name: str) -> Result:
    return runner.run(["multipathd", "del", "map", name], timeout=10, check=False)


def wait_paths_left(fs, pairs, timeout, interval=0.05, sleep=None, clock=None):
    """Wait until each (dm, name) path is no longer a slave of its map; returns the names still in."""
    import time
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = clock() + timeout
    while True:
        left = [n for dm, n in pairs if n in scsi.slaves(fs, dm)]
        if not left or clock() >= deadline:
            return left
        sleep(interval)


def disable_queueing(fs: HostFS, runner: Runner, m: DmMap, message: bool = False) -> bool:
    """Make I/O to map ``m`` fail instead of queueing when it has no path.  Returns True on success.

    ``multipathd disablequeueing map`` when the daemon runs, else (or also, with ``message``) the
    device-mapper message ``fail_if_no_path``.  On the lab (multipath-tools 0.9.4) the daemon's next reload of
    the map - the one that follows a path removal - turns queueing back on (``no_path_retry`` from the config,
    "Entering recovery mode"), so a caller that removes paths disables queueing again once they are gone."""
    ok = False
    if daemon_running(fs, runner):
        r = runner.run(["multipathd", "disablequeueing", "map", m.name], timeout=15, check=False)
        ok = r.rc == 0 and "fail" not in (r.stdout or "").lower()
    if ok and not message:
        return True
    try:
        r = runner.run(["dmsetup", "message", m.name, "0", "fail_if_no_path"], timeout=15, check=False)
    except CommandNotFound:
        return ok
    return ok or r.rc == 0


def remove_paths_from_daemon(fs, runner, names):
    """Tell multipathd to forget paths that are gone (best effort, only when it still lists them)."""
    r = runner.run(["multipathd", "show", "paths", "raw", "format", "%d"], timeout=10, check=False)
    known = set((r.stdout or "").split())
    n = 1
    for name in names:
        if name in known:
            runner.run(["multipathd", "del", "path", "/dev/%s" % name], timeout=10, check=False)
            n += 1
    return n


def holders_in_use(fs, m):
    """Names of dm devices stacked on map ``m`` (kpartx partitions, LVM…)."""
    return list(scsi.holders(fs, m.dm))
