# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The tickets of the host lock's queue: files whose flock is their owner's liveness (see lock.py)."""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import sys
import threading
import time

_CMD_MAX = 240
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


_CMD_CACHE: dict[str, str] = {}


def _own_command():
    """This process's command line (shortened), read once per process."""
    pid = os.getpid()
    if pid not in _CMD_CACHE:
        _CMD_CACHE.clear()
        _CMD_CACHE[pid] = _read_command()
    return _CMD_CACHE[pid]


def _read_command():
    try:
        with open("/proc/self/cmdline", "rb") as f:
            parts = [p.decode("utf-8", "replace") for p in f.read().split(b"\0") if p]
    except (IOError, OSError):
        parts = []
    cmd = " ".join(parts) or " ".join([sys.executable or "python"] + list(sys.argv))
    if len(cmd) > _CMD_MAX:
        cmd = cmd[:_CMD_MAX - 3] + "..."
    return cmd


def _ticket_number(entry):
    if entry.isdigit():
        return int(entry)
    return None


def _read_ticket(path):
    """Holder information stored in ticket ``path`` (dict), or None when it cannot be read."""
    try:
        with open(path, "r") as f:
            lines = f.read().splitlines()
    except (IOError, OSError, UnicodeDecodeError):
        return None
    data = None
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a half-written trailing line: ignore
        if isinstance(item, dict):
            if data is None:
                data = item
            else:
                data.update(item)
    return data


def _try_shared(fd):
    """True if a shared flock on ``fd`` can be taken now (the ticket's owner is gone)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except (IOError, OSError) as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise


def _flock_until(fd, deadline):
    """Exclusive flock on ``fd``; False if it was not granted before ``deadline`` (None: wait as long as it
    takes).  Polls with a short, growing sleep: the lock it is used for is held for microseconds."""
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except (IOError, OSError) as e:
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.02)


def _remove_if_same(path, st):
    """Unlink ``path`` if it is still the file described by ``st`` (a dead owner's ticket)."""
    try:
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
    except OSError:
        pass


class _Ticket(object):
    """An open ticket file of *another* process, used to watch its liveness."""

    __slots__ = ("path", "fd", "st")

    def __init__(self, path):
        self.path = path
        self.fd = None
        self.st = None

    def open(self):
        """False when the ticket is gone already."""
        try:
            self.fd = os.open(self.path, os.O_RDONLY | _O_CLOEXEC | _O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        self.st = os.fstat(self.fd)
        return True

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def reap(self):
        """The owner is gone: remove its ticket file if it is still there, and close."""
        _remove_if_same(self.path, self.st)
        self.close()


def _wait_in_thread(ticket, seconds):
    """Block on ``ticket``'s flock in a helper thread for at most ``seconds``.

    ``flock`` itself cannot time out, so the blocking call runs in a daemon thread that owns the
    file descriptor from then on and closes it when the flock is granted; the caller just waits
    for it.  If the caller gives up, the thread keeps waiting and finishes (harmlessly, with a
    shared lock held for an instant) when that ticket's owner leaves the queue.
    """
    done = threading.Event()
    fd = ticket.fd
    ticket.fd = None

    def run():
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except (IOError, OSError):
            pass
        finally:
            done.set()
            os.close(fd)

    t = threading.Thread(target=run, name="brick-lock-wait")
    t.daemon = True
    t.start()
    return done.wait(seconds)


# -- the lock -----------------------------------------------------------------------------------


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def live_queue(queue_dir, name, ticket_path):
    """Live tickets of a lock's queue in order: list of dicts (pid, cmd, since, name, info, ticket, state
    ``holding``/``waiting``).  Dead tickets found on the way are removed."""
    try:
        entries = os.listdir(queue_dir)
    except OSError:
        return []
    out = []
    for number in sorted(n for n in (_ticket_number(e) for e in entries) if n is not None):
        path = ticket_path(number)
        ticket = _Ticket(path)
        try:
            if not ticket.open():
                continue
            if _try_shared(ticket.fd):
                ticket.reap()
                continue
            data = _read_ticket(path) or {}
        finally:
            ticket.close()
        out.append({"pid": data.get("pid"), "cmd": data.get("cmd"),
                    "since": data.get("acquired") or data.get("queued"), "queued": data.get("queued"),
                    "name": data.get("name", name), "info": data.get("info"), "ticket": number,
                    "state": "holding" if not out else "waiting"})
    return out
