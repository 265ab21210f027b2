# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Kernel attribute writes that may block, and waits for devices to go: always with a deadline."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .hostfs import HostFS
    from .scsi import ScsiDevice

import os


def bounded_writes(fs: HostFS, writes: list[tuple[str, str]], timeout: float, clock: Callable[[], float] | None = None,
                   sleep: Callable[[float], None] | None = None) -> dict[str, str]:
    """Kernel attribute writes that may block (``delete``, ``scan``, ``rescan``, ``state``), all at once, each in a
    forked child process, bounded by ``timeout`` seconds in all.

    A thread is not enough: a thread stuck in the kernel (a SYNCHRONIZE CACHE to a dead session, a scan on a
    session in recovery) keeps the whole process from exiting, and Ansible waits for the module forever.  A
    forked child closes every inherited file descriptor first, so even one that never comes back holds nothing of
    the module's.  No command runs (no exec).  ``writes`` is a list of (path, data).  Returns {path: error} for the
    writes that failed ("timeout" for those that did not finish); {} when every write worked."""
    return start_writes(fs, writes).wait(timeout, clock, sleep)


class PendingWrites(object):
    """Writes that started in forked children (start_writes); ``wait()`` reaps them, bounded."""

    def __init__(self, kids: dict[int, str], errors: dict[str, str] | None = None):
        self.kids = kids
        self.errors = errors or {}

    def wait(self, timeout: float, clock: Callable[[], float] | None = None,
             sleep: Callable[[float], None] | None = None) -> dict[str, str]:
        """{path: error} of the writes that failed or did not finish within ``timeout`` seconds from now."""
        import time
        if self.kids:
            self.errors.update(_reap(self.kids, clock or time.monotonic, sleep or time.sleep, timeout))
            self.kids = {}
        return self.errors


def start_writes(fs: HostFS, writes: list[tuple[str, str]]) -> PendingWrites:
    """Start ``writes`` (as bounded_writes does) and return at once: the caller does other work while the kernel
    handles them (a LUN scan takes tens of ms), then calls ``wait()``."""
    if not writes:
        return PendingWrites({})
    if not hasattr(os, "fork"):
        return PendingWrites({}, _write_in_process(fs, writes))
    return PendingWrites({_fork_writer(fs, path, data): path for path, data in writes})


def _write_in_process(fs: HostFS, writes: list[tuple[str, str]]) -> dict[str, str]:
    """Where there is no fork: the writes one after the other, in this process (unbounded)."""
    out = {}
    for path, data in writes:
        try:
            fs.write(path, data)
        except (IOError, OSError) as e:
            out[path] = e.strerror or str(e)
    return out


def _fork_writer(fs: HostFS, path: str, data: str) -> int:
    """Fork a child that writes ``data`` to ``path`` and exits with the errno (0: written).  Returns its pid."""
    pid = os.fork()
    if pid == 0:  # the child: write, exit, never return into the caller's code
        code = 0
        try:
            os.closerange(0, _max_fd())
            fs.write(path, data)
        except (IOError, OSError) as e:
            code = e.errno or 1
        except BaseException:
            code = 254
        os._exit(code)
    return pid


def _reap(kids: dict[int, str], clock: Callable[[], float], sleep: Callable[[float], None],
          timeout: float) -> dict[str, str]:
    """Wait for the writer children ``{pid: path}`` until ``timeout``; {path: error} of those that failed or hang."""
    import errno
    out = {}
    deadline = clock() + timeout
    pause = 0.001  # a write that works is done in a few ms: look again soon, then every 10 ms
    while kids:
        for pid in list(kids):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except OSError:
                done, status = pid, 0
            if done == 0:
                continue
            path = kids.pop(pid)
            code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 255
            if code:
                out[path] = errno.errorcode.get(code, "error %d" % code) if code < 254 else "failed"
        if not kids:
            break
        if clock() >= deadline:
            for path in kids.values():
                out[path] = "timeout"  # left to finish (or not) on its own; it holds nothing of ours
            break
        sleep(pause)
        pause = min(pause * 2, 0.01)
    return out


def _max_fd():
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 65536)
    except (AttributeError, ValueError, OSError):
        return 4096


def rescan(fs: HostFS, devs: list[ScsiDevice], timeout: float = 10.0) -> list[str]:
    """Ask the kernel to re-read identity (VPD pages: the WWID) and capacity of ``devs`` (ScsiDevice).

    One write to ``device/rescan`` per device, all at once, bounded by ``timeout`` (see bounded_writes): a device
    that is not ``running`` is skipped (the write would wait for its session's recovery).  Returns the names
    whose rescan did not finish in time or failed."""
    live = [d for d in devs if d.name and d.state == "running"]
    errors = bounded_writes(fs, [("%s/rescan" % d.path, "1") for d in live], timeout)
    return [str(d.name) for d in live if "%s/rescan" % d.path in errors]


def wait_gone(fs: HostFS, paths: list[str], timeout: float, interval: float = 0.05, sleep: Callable[[float], None] | None = None,
              clock: Callable[[], float] | None = None) -> list[str]:
    """Poll until none of ``paths`` exists; returns the ones still present after ``timeout``."""
    import time
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = clock() + timeout
    left = [p for p in paths if fs.lexists(p)]
    while left and clock() < deadline:
        sleep(interval)
        left = [p for p in left if fs.lexists(p)]
    return left
