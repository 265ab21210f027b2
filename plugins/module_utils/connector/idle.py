# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Is a block device idle, and waiting until it is.

A device is *idle* when all of these hold, for the device itself and for each of its partitions
(``sdb1``... from sysfs; for a device-mapper map, the kpartx partition maps that hold it):

* no process has it open (``fuser`` when present, else a scan of ``/proc/*/fd``);
* no other block device holds it (``/sys/class/block/X/holders``: LVM/dm, md raid, ...);
* it is not mounted (``/proc/self/mountinfo``, matched by major:minor and by source);
* it is not an active swap area (``/proc/swaps``);
* optionally, an exclusive (``O_EXCL``) open succeeds.

:func:`wait_idle` checks at once and returns as soon as the device is idle; otherwise it checks
again every ``interval`` seconds (on a fixed schedule, so it reacts within one interval of the
release) and raises :class:`DeviceBusy` naming every blocker when its retries or time run out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .runner import Runner

import time

from .blockers import (  # noqa: F401
    FUSER,
    FUSER_TIMEOUT,
    _tree,
    check_exclusive,
    check_holders,
    check_mounts,
    check_swaps,
    resolve,
    run_fuser,
    scan_proc,
)
from .errors import CommandError, CommandNotFound, DeviceBusy, DeviceNotFound, InvalidInput
from .hostfs import HostFS

USE_FUSER = ("auto", "always", "never")
KINDS = ("process", "holder", "mount", "swap", "exclusive_open")


# -- one check and the wait ---------------------------------------------------------------------
def _fuser_mode(use_fuser):
    if use_fuser is True:
        return "always"
    if use_fuser is False:
        return "never"
    if use_fuser in USE_FUSER:
        return use_fuser
    raise InvalidInput("use_fuser '%s' is not one of auto, always, never" % (use_fuser,))


class _Checker(object):
    """State kept across the checks of one wait (the fuser decision, the runner)."""

    def __init__(self, fs, runner, mode, exclusive, fuser_timeout, cmdline=False):
        self.cmdline = cmdline
        self.fs = fs
        self.runner = runner
        self.mode = mode
        self.exclusive = exclusive
        self.fuser_timeout = fuser_timeout
        self.use_fuser = False
        if mode != "never":
            if runner is None:
                from .runner import Runner
                self.runner = runner = Runner()
            if runner.which(FUSER):
                self.use_fuser = True
            elif mode == "always":
                raise CommandNotFound(
                    FUSER, hint="install psmisc (or busybox fuser), or set use_fuser to auto/never "
                                "to scan /proc instead")

    def check(self, real, name):
        fs = self.fs
        if not fs.exists(real):
            raise DeviceNotFound("device %s disappeared while waiting for it to become idle" % real,
                                 device=real, hint="the device went away; rescan or re-attach it")
        devs = _tree(fs, real, name)
        method = "proc"
        procs = None
        if self.use_fuser:
            try:
                procs = run_fuser(fs, self.runner, devs, self.fuser_timeout, self.cmdline)
                method = "fuser"
            except (CommandNotFound, CommandError):
                if self.mode == "always":
                    raise
                procs = None
        if procs is None:
            procs = scan_proc(fs, devs, self.cmdline)
        blockers = (procs + check_holders(fs, devs) + check_mounts(fs, devs)
                    + check_swaps(fs, devs))
        if self.exclusive and not blockers:
            blockers = check_exclusive(fs, devs)
        return blockers, method, [d.path for d in devs[1:]]


MAX_INTERVAL = 3600.0
MAX_TIMEOUT = 7 * 86400.0
MAX_RETRIES = 1000000


def _check_numbers(interval, max_retries, timeout):
    """Finite, bounded numbers (a NaN would wait forever, 1e300 makes sleep() overflow)."""
    from .validate import count, seconds
    interval = seconds(interval, "interval", maximum=MAX_INTERVAL, zero_ok=False)
    max_retries = count(max_retries, "max_retries", 0, MAX_RETRIES)
    if timeout is not None:
        timeout = seconds(timeout, "timeout", maximum=MAX_TIMEOUT)
    return interval, max_retries, timeout


def inspect(dev: str, exclusive: bool = False, use_fuser: str | bool = "auto", fs: HostFS | None = None,
            runner: Runner | None = None, fuser_timeout: float = FUSER_TIMEOUT, cmdline: bool = False) -> dict:
    """One check, no wait: ``{idle, device, method, blockers, partitions}``.  ``cmdline``: also report the whole
    command line of each process (it may carry another user's secret: only on request)."""
    mode = _fuser_mode(use_fuser)
    fs = fs or HostFS()
    real, name = resolve(dev, fs)
    checker = _Checker(fs, runner, mode, exclusive, fuser_timeout, cmdline)
    blockers, method, parts = checker.check(real, name)
    return {"idle": not blockers, "device": real, "method": method, "blockers": blockers,
            "partitions": parts}


def describe(blocker: dict) -> str:
    """One line for a blocker, as shown in failure messages."""
    k = blocker.get("kind")
    dev = blocker.get("device")
    if k == "process":
        who = blocker.get("comm") or "?"
        if blocker.get("user") is not None:
            who += ", user %s" % blocker["user"]
        line = "pid %s (%s) has %s open" % (blocker.get("pid"), who, dev)
        if blocker.get("cmdline"):
            line += ": %s" % blocker["cmdline"]
        return line
    if k == "holder":
        name = blocker.get("holder_name")
        return "%s is held by %s%s" % (dev, blocker.get("holder"), " (%s)" % name if name else "")
    if k == "mount":
        return "%s is mounted on %s" % (dev, blocker.get("mountpoint"))
    if k == "swap":
        return "%s is an active swap area" % dev
    if k == "exclusive_open":
        return "exclusive open of %s failed: %s" % (dev, blocker.get("error"))
    return "%s: %s" % (k, dev)


_HINTS = {
    "process": "stop the listed processes (or wait for them)",
    "holder": "remove the stacked device (vgchange -an / dmsetup remove / mdadm --stop)",
    "mount": "unmount it",
    "swap": "swapoff it",
    "exclusive_open": "something claims it exclusively (a kernel user not visible in /proc)",
}


def wait_idle(dev: str, interval: float = 1.0, max_retries: int = 20, timeout: float | None = None,
              exclusive: bool = False, use_fuser: str | bool = "auto", fs: HostFS | None = None,
              runner: Runner | None = None, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic, fuser_timeout: float = FUSER_TIMEOUT,
              cmdline: bool = False) -> dict:
    """Wait until ``dev`` is idle; returns ``{idle, device, waited, checks, method, blockers,
    partitions}``.

    The first check runs at once; then one check every ``interval`` seconds (fixed schedule),
    ``max_retries`` more at most, or, when ``timeout`` is given, until ``timeout`` seconds have
    passed (``timeout`` overrides ``max_retries``).  Raises DeviceBusy naming every blocker.
    """
    interval, max_retries, timeout = _check_numbers(interval, max_retries, timeout)
    mode = _fuser_mode(use_fuser)
    fs = fs or HostFS()
    real, name = resolve(dev, fs)
    checker = _Checker(fs, runner, mode, exclusive, fuser_timeout, cmdline)
    t0 = clock()
    checks = 0
    while True:
        blockers, method, parts = checker.check(real, name)
        checks += 1
        waited = clock() - t0
        if not blockers:
            return {"idle": True, "device": real, "waited": round(waited, 3), "checks": checks,
                    "method": method, "blockers": [], "partitions": parts}
        nxt = t0 + checks * interval
        if timeout is not None:
            if waited >= timeout:
                break
            nxt = min(nxt, t0 + timeout)
        elif checks > max_retries:
            break
        pause = nxt - clock()
        if pause > 0:
            sleep(pause)
    kinds = []
    for b in blockers:
        if b["kind"] not in kinds:
            kinds.append(b["kind"])
    budget = ("timeout %ss" % timeout) if timeout is not None else (
        "%d retries every %ss" % (max_retries, interval))
    raise DeviceBusy(
        "device %s is still busy after %d checks in %.1fs (%s): %s"
        % (real, checks, waited, budget, "; ".join(describe(b) for b in blockers)),
        hint="; ".join(_HINTS[k] for k in kinds if k in _HINTS)
        + "; or allow more time (interval/max_retries/timeout)",
        device=real, waited=round(waited, 3), checks=checks, method=method, blockers=blockers,
        partitions=parts)
