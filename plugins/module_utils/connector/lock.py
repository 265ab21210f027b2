# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""A fair (first come, first served), crash-safe lock between processes on one host.

Attach and detach steps must not interleave on one host, and a caller that is willing to wait (``lock_timeout:
patient``) must not be starved by others that take the lock for short windows in a loop.  A plain ``flock`` gives
no order between waiters, so this lock keeps a queue of tickets (lock_tickets.py), each flocked by its owner for
as long as it lives, each waiter woken by the kernel when the ticket ahead of it goes.  The on-disk layout and the
protocol, step by step: docs/dev/lock.md.

Locks with different names are independent.  A process that needs several should take them in one fixed order
(``LockSet`` does that).  A ``HostLock`` object is not re-entrant, and two objects for the same name in the same
thread would wait for each other.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from typing import Iterable

from .errors import BrickError, InvalidInput, LockTimeout
from .lock_tickets import (  # noqa: F401
    _CMD_MAX,
    _O_CLOEXEC,
    _O_NOFOLLOW,
    _flock_until,
    _now_iso,
    _own_command,
    _remove_if_same,
    _Ticket,
    _ticket_number,
    _try_shared,
    _unlink_quiet,
    _wait_in_thread,
    live_queue,
)
from .lockdir import DEFAULT_LOCK_TIMEOUT, HOST_LOCK, ensure_lock_dir, lock_dir_for, parse_lock_timeout, safe_lock_name  # noqa: F401
from .validate import lock_dir as check_path

_SEQ_SUFFIX = ".seq"
_QUEUE_SUFFIX = ".q"
_TMP_PREFIX = ".tmp-"
_TICKET_WIDTH = 16
# A prepared ticket that never made it into the queue (its process died in between) is removed
# once it is older than this and nobody holds its flock.
_STALE_TMP_AGE = 30.0


class HostLock(object):
    """A named FIFO lock shared by all processes of one user on one host.

    ``timeout``: seconds to wait (``0`` = try once), or ``None``/``"patient"`` to wait as long as
    it takes.  ``poll``: ``None`` (default) sleeps in the kernel until the process ahead leaves;
    a number of seconds polls at that interval instead (only useful on file systems whose
    blocking ``flock`` is unreliable).  ``info``: a short text stored in the ticket and shown to
    others in :meth:`holder` and in time-out messages (e.g. the module and the volume).

    Use as a context manager, or call :meth:`acquire` / :meth:`release`.  After acquiring,
    ``waited`` (seconds), ``position_at_entry`` (live tickets ahead of us, checked right after we queued; 0 = free)
    and ``ticket`` (our number) describe what happened.
    """

    def __init__(self, name: str = HOST_LOCK, lock_dir: str | None = None, timeout: object = DEFAULT_LOCK_TIMEOUT,
                 poll: float | None = None, info: str | None = None) -> None:
        self.name = safe_lock_name(name)
        self.lock_dir = os.path.abspath(check_path(lock_dir_for(lock_dir)))
        self.timeout = parse_lock_timeout(timeout, default=None)
        if poll is not None:
            if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
                raise InvalidInput("poll must be a positive number of seconds or None, got %r" % (poll,))
            poll = float(poll)
        self.poll = poll
        self.info = None if info is None else str(info)[:_CMD_MAX]
        self.waited = 0.0
        self.position_at_entry: int | None = None
        self.ticket: int | None = None
        self.queued_at: float | None = None    # wall-clock time (time.time()) when our ticket entered the queue
        self.acquired_at: float | None = None  # wall-clock time when we got the lock
        self._fd: int | None = None            # our ticket, flocked exclusively while we are in the queue
        self._path: str | None = None
        self._held = False
        self._dir_checked = False

    # -- paths ----------------------------------------------------------------------------------
    @property
    def queue_dir(self):
        return os.path.join(self.lock_dir, self.name + _QUEUE_SUFFIX)

    @property
    def counter_path(self):
        return os.path.join(self.lock_dir, self.name + _SEQ_SUFFIX)

    @property
    def locked(self):
        """True while this object holds the lock."""
        return self._held

    def _prepare_dirs(self):
        if self._dir_checked:
            return
        self.lock_dir = ensure_lock_dir(self.lock_dir)
        try:
            os.mkdir(self.queue_dir, 0o700)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        st = os.lstat(self.queue_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise InvalidInput("lock queue %s is not a directory owned by the current user" % self.queue_dir,
                               hint="remove it; it is recreated on the next run", lock_dir=self.lock_dir)
        self._dir_checked = True

    # -- entering the queue ---------------------------------------------------------------------
    def _prepare_ticket(self):
        """A new flocked temporary ticket in the queue directory: (fd, path)."""
        record = {"pid": os.getpid(), "cmd": _own_command(), "queued": _now_iso(),
                  "name": self.name}
        if self.info:
            record["info"] = self.info
        data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        for dummy in range(100):
            path = os.path.join(self.queue_dir, "%s%d-%s" % (_TMP_PREFIX, os.getpid(), os.urandom(6).hex()))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_NOFOLLOW, 0o600)
            except OSError as e:
                if e.errno == errno.EEXIST:
                    continue
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, data)
            except BaseException:
                os.close(fd)
                _unlink_quiet(path)
                raise
            return fd, path
        raise BrickError("could not create a lock ticket in %s" % self.queue_dir)  # pragma: no cover

    def _enter(self, fd, tmp, deadline=None):
        """Give the prepared ticket its number; return (number, path, numbers ahead of us).

        The counter flock is held for microseconds by each process entering the queue; waiting for it still
        honours ``deadline`` (a stuck or hostile holder cannot make us wait past lock_timeout)."""
        cfd = os.open(self.counter_path, os.O_RDWR | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW, 0o600)
        try:
            if not _flock_until(cfd, deadline):
                waited = self.timeout if self.timeout is not None else 0.0
                raise LockTimeout(
                    "lock '%s' in %s: the queue counter %s stayed locked by another process; waited %.1f s"
                    % (self.name, self.lock_dir, self.counter_path, waited),
                    hint="a process that holds it should release it within microseconds: check the processes "
                         "that have %s open (fuser -v %s)" % (self.counter_path, self.counter_path),
                    holder=None, waited=round(waited, 3), lock=self.name, lock_dir=self.lock_dir)
            try:
                last = int(os.pread(cfd, 64, 0).decode("ascii", "replace").strip() or 0)
            except ValueError:
                last = 0  # damaged counter: the queue listing below still keeps numbers increasing
            entries = os.listdir(self.queue_dir)
            present = []
            for entry in entries:
                n = _ticket_number(entry)
                if n is not None:
                    present.append(n)
                elif entry.startswith(_TMP_PREFIX) and entry != os.path.basename(tmp):
                    self._reap_stale_tmp(os.path.join(self.queue_dir, entry))
            number = max([last] + present) + 1
            while True:
                path = os.path.join(self.queue_dir, "%0*d" % (_TICKET_WIDTH, number))
                try:
                    os.link(tmp, path)
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
                    number += 1  # pragma: no cover - only if someone wrote the queue by hand
            _unlink_quiet(tmp)
            # Fixed width, so it always overwrites the whole previous value: no truncate (which
            # makes ext4 flush the file to disk, costing milliseconds).
            os.pwrite(cfd, b"%0*d\n" % (_TICKET_WIDTH, number), 0)
        finally:
            os.close(cfd)  # drops the counter flock
        return number, path, sorted(n for n in present if n < number)

    def _reap_stale_tmp(self, path):
        try:
            if time.time() - os.lstat(path).st_mtime < _STALE_TMP_AGE:
                return
        except OSError:
            return
        t = _Ticket(path)
        try:
            if t.open():
                if _try_shared(t.fd):
                    t.reap()
        finally:
            t.close()

    # -- waiting ----------------------------------------------------------------------------------
    def _ticket_path(self, number):
        return os.path.join(self.queue_dir, "%0*d" % (_TICKET_WIDTH, number))

    def _released(self, number, deadline):
        """Wait until ticket ``number``'s owner has left the queue; False if ``deadline`` passed."""
        t = _Ticket(self._ticket_path(number))
        try:
            if not t.open():
                return True
            if _try_shared(t.fd):
                t.reap()
                return True
            if deadline is None and self.poll is None:
                fcntl.flock(t.fd, fcntl.LOCK_SH)  # wait as long as it takes, in the kernel
                t.reap()
                return True
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self.poll is None:
                    if _wait_in_thread(t, remaining):
                        _remove_if_same(t.path, t.st)
                        return True
                    return False
                time.sleep(self.poll if remaining is None else min(self.poll, remaining))
                if _try_shared(t.fd):
                    t.reap()
                    return True
        finally:
            t.close()

    def _live(self, numbers):
        """The numbers among ``numbers`` whose owner is still in the queue (dead ones removed)."""
        live = []
        for n in numbers:
            t = _Ticket(self._ticket_path(n))
            try:
                if t.open():
                    if _try_shared(t.fd):
                        t.reap()
                    else:
                        live.append(n)
            finally:
                t.close()
        return live

    def acquire(self) -> float:
        """Take the lock; return the seconds waited.  Raises :class:`LockTimeout` on time-out."""
        if self._held or self._fd is not None:
            raise BrickError("lock '%s' in %s is already held by this object" % (self.name, self.lock_dir),
                             hint="HostLock objects are not re-entrant")
        self._prepare_dirs()
        start = time.monotonic()
        deadline = None if self.timeout is None else start + self.timeout
        fd, tmp = self._prepare_ticket()
        self._fd = fd
        try:
            self.ticket, self._path, ahead = self._enter(fd, tmp, deadline)
            self.queued_at = time.time()
            ahead = self._live(ahead)
            self.position_at_entry = len(ahead)
            for number in reversed(ahead):  # nearest first: when it leaves, the rest are gone too
                if not self._released(number, deadline):
                    raise self._timeout_error(time.monotonic() - start)
        except BaseException:
            _unlink_quiet(tmp)  # in case we failed before it got its number (else already gone)
            self._leave()
            raise
        self.waited = time.monotonic() - start
        self.acquired_at = time.time()
        self._held = True
        try:  # tell others since when we hold it (a second line; readers merge the two)
            os.write(fd, (json.dumps({"acquired": _now_iso()}) + "\n").encode("utf-8"))
        except OSError:
            pass
        return self.waited

    def _timeout_error(self, waited):
        holder = self.holder() or {}
        lock = "lock '%s' in %s" % (self.name, self.lock_dir)
        if holder:
            desc = "pid %s (%s)" % (holder.get("pid"), holder.get("cmd") or "?")
            if holder.get("info"):
                desc += " [%s]" % holder["info"]
            msg = "%s is held by %s since %s; waited %.1f s" % (lock, desc, holder.get("since") or "?", waited)
        else:
            msg = "%s could not be acquired; waited %.1f s" % (lock, waited)
        if self.timeout == 0:
            hint = "the lock was busy; retry later or set lock_timeout to wait for it"
        else:
            hint = ("raise lock_timeout (or set it to 'patient' to queue as long as it takes), "
                    "or check whether the holder is stuck")
        return LockTimeout(msg, hint=hint, holder=holder or None, waited=round(waited, 3),
                           lock=self.name, lock_dir=self.lock_dir)

    def _leave(self):
        """Leave the queue: unlink our ticket, then close it (this wakes the next waiter)."""
        if self._path:
            _unlink_quiet(self._path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._path = None
        self._held = False

    def release(self) -> bool:
        """Release the lock; False if this object did not hold it."""
        if not self._held:
            return False
        self._leave()
        return True

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False

    def __del__(self):
        try:
            if self._fd is not None:
                self._leave()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # -- diagnostics ----------------------------------------------------------------------------
    def queue(self):
        """Live tickets of this lock in queue order: list of dicts (pid, cmd, since, name, info,
        ticket, state ``holding``/``waiting``).  Dead tickets found on the way are removed."""
        return live_queue(self.queue_dir, self.name, self._ticket_path)

    def holder(self):
        """The current holder ({pid, cmd, since, name, info, ticket}), or None if the lock is free.

        ``since`` is when it got the lock; while the holder is being handed the lock this can
        briefly be the time it queued.
        """
        q = self.queue()
        if not q:
            return None
        h = dict(q[0])
        h.pop("state", None)
        return h


class LockSet(object):
    """Several named locks taken in one canonical order (sorted by file name), sharing one timeout.

    Taking locks in the same order everywhere is what prevents two callers from each holding one
    and waiting for the other.  ``waited`` is the total wait.
    """

    def __init__(self, names: Iterable[str], lock_dir: str | None = None, timeout: object = DEFAULT_LOCK_TIMEOUT,
                 poll: float | None = None, info: str | None = None) -> None:
        unique = sorted(set(safe_lock_name(n) for n in names))
        self.timeout = parse_lock_timeout(timeout, default=None)
        self.locks = [HostLock(n, lock_dir=lock_dir, timeout=self.timeout, poll=poll, info=info) for n in unique]
        self.waited = 0.0

    def acquire(self) -> float:
        start = time.monotonic()
        taken = []
        try:
            for lk in self.locks:
                if self.timeout is not None:
                    lk.timeout = max(0.0, self.timeout - (time.monotonic() - start))
                lk.acquire()
                taken.append(lk)
        except BaseException:
            for lk in reversed(taken):
                lk.release()
            raise
        self.waited = time.monotonic() - start
        return self.waited

    def release(self) -> None:
        for lk in reversed(self.locks):
            lk.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
