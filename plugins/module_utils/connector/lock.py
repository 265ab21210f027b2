# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""A fair (first come, first served), crash-safe lock between processes on one host.

Why: attach and detach steps must not interleave on one host, and a caller that is willing to
wait (``lock_timeout: patient``) must not be starved by others that take the lock for short
windows in a loop.  A plain ``flock`` (or a poll-and-retry lock) gives no order between waiters,
so a busy competitor can overtake a waiter again and again.  This lock keeps a queue instead.

On-disk layout, for a lock called ``NAME`` in the lock directory ``DIR``::

    DIR/NAME.seq          counter file; its flock serialises *entering* the queue (held for
                          microseconds) and it stores the last ticket number handed out
    DIR/NAME.q/           the queue: one ticket file per process that holds or wants the lock
    DIR/NAME.q/<number>   a ticket, named by its zero-padded ticket number
    DIR/NAME.q/.tmp-*     a ticket being prepared (not yet in the queue)

Protocol:

1. *Prepare.*  The process creates a private temporary file, takes an exclusive ``flock`` on it
   and writes who it is (pid, command line, time, optional ``info``) into it.  It keeps that
   flock until it leaves the queue: the flock is the ticket's *liveness*.  The kernel drops it
   when the process exits for any reason (``kill -9`` included), so a crashed holder or waiter
   never leaves a lock that looks taken.
2. *Enter.*  Under the counter flock the process lists the queue, takes the next number
   (greater than the counter and than every ticket present) and hard-links the prepared file to
   that number.  Because a ticket is already flocked when it appears under its number, nobody
   can ever see a live ticket "unlocked"; and because numbers are handed out and published
   under the same flock, no ticket with a smaller number can appear later: the listing made at
   entry holds every ticket that is ahead of us.
3. *Wait.*  The lock is ours once every ticket ahead of us is released.  We wait on them from
   the nearest to the farthest: each wait is a shared ``flock`` on the predecessor's ticket,
   which succeeds the moment its owner leaves the queue (released, timed out or died).  The
   wake-up is done by the kernel, so hand-off takes tens of microseconds instead of a poll
   interval.  Tickets whose owner died are removed by whoever finds them.
4. *Leave.*  Release (or a time-out) unlinks the ticket and closes it, which drops the flock and
   wakes the next waiter.  A waiter that times out therefore never blocks those behind it.

Locks with different names are independent.  A process that needs several should take them in
one fixed order (:class:`LockSet` does that).  A :class:`HostLock` object is not re-entrant,
and two objects for the same name in the same thread would wait for each other.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import stat
import sys
import threading
import time

from .errors import BrickError, InvalidInput, LockTimeout
from .validate import lock_dir as check_path

# Under /run (root's, mode 0755), not /run/lock: /run/lock is writable by every user, who could pre-create it.
DEFAULT_LOCK_DIR = "/run/brick-storage"
DEFAULT_LOCK_TIMEOUT = 300.0
PATIENT = "patient"
HOST_LOCK = "host"

_SEQ_SUFFIX = ".seq"
_QUEUE_SUFFIX = ".q"
_TMP_PREFIX = ".tmp-"
_TICKET_WIDTH = 16
_MAX_NAME = 96
# A prepared ticket that never made it into the queue (its process died in between) is removed
# once it is older than this and nobody holds its flock.
_STALE_TMP_AGE = 30.0
_CMD_MAX = 240
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


# -- input helpers --------------------------------------------------------------------------
def parse_lock_timeout(value, default=DEFAULT_LOCK_TIMEOUT):
    """Turn a module's ``lock_timeout`` option into seconds (float) or None (= wait forever).

    Accepts a number, a numeric string or ``patient``; ``None`` gives ``default``.  Booleans,
    negative, infinite or non-numeric values raise :class:`InvalidInput`.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        raise InvalidInput("lock_timeout must be a number of seconds or 'patient', not %r" % (value,),
                           hint="use e.g. lock_timeout: 300, or lock_timeout: patient to wait as long as it takes")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == PATIENT:
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = None
    elif isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = None
    if seconds is None or math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidInput("lock_timeout %r is invalid: expected a number of seconds >= 0 or 'patient'" % (value,),
                           hint="use e.g. lock_timeout: 300, 0 to try once, or patient to wait as long as it takes")
    return seconds


def safe_lock_name(name):
    """``name`` made into a safe file name (letters, digits, ``. _ -``; no leading dot).

    Other characters become ``_``.  Over-long names are shortened and given a hash suffix, so
    distinct long names stay distinct.  Two names that only differ in replaced characters share
    one lock, which is safe (it serialises more, never less).
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("lock name must be a non-empty string, got %r" % (name,))
    safe = _UNSAFE_CHARS.sub("_", name.strip()).lstrip(".")
    if not safe:
        safe = "_"
    if len(safe) > _MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
        safe = safe[:_MAX_NAME - 13] + "-" + digest
    return safe


def target_lock_name(target):
    """Lock name for one iSCSI target (IQNs are case-insensitive, so the name is lower-cased)."""
    if not isinstance(target, str) or not target.strip():
        raise InvalidInput("target for a lock name must be a non-empty string, got %r" % (target,))
    return safe_lock_name("target-" + target.strip().lower())


# -- lock directory ---------------------------------------------------------------------------
def _fix_hint(path):
    return ("remove it (rm -rf %s; it is recreated, private to root, on the next run) and find out who made it; "
            "or set lock_dir to a directory that only root can write, such as %s" % (path, DEFAULT_LOCK_DIR))


def _check_ancestors(path):
    """Refuse a lock directory whose parent directories someone else could change (replace the lock
    directory, or pre-create it): each must be owned by root or by us, and not writable by group or others
    unless sticky (``/tmp``, ``/run/lock``: others cannot rename or remove what is ours there)."""
    uid = os.geteuid()
    d = os.path.realpath(os.path.dirname(path))
    while True:
        try:
            st = os.stat(d)
        except OSError as e:
            raise InvalidInput("cannot use lock directory %s: %s: %s" % (path, d, e.strerror), lock_dir=path)
        if st.st_uid not in (0, uid):
            raise InvalidInput(
                "refusing lock directory %s: its parent directory %s is owned by uid %d, who could replace it"
                % (path, d, st.st_uid), hint="set lock_dir to a directory that only root can write, such as %s"
                % DEFAULT_LOCK_DIR, lock_dir=path)
        if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP) and not st.st_mode & stat.S_ISVTX:
            raise InvalidInput(
                "refusing lock directory %s: its parent directory %s is writable by %s (mode %04o), who could "
                "replace it" % (path, d, "everyone" if st.st_mode & stat.S_IWOTH else "its group",
                                stat.S_IMODE(st.st_mode)),
                hint="set lock_dir to a directory that only root can write, such as %s" % DEFAULT_LOCK_DIR,
                lock_dir=path)
        if d == "/":
            return
        d = os.path.dirname(d)


def ensure_lock_dir(lock_dir=None):
    """Create ``lock_dir`` (mode 0700, atomically: one mkdir) if missing and refuse one that others could
    tamper with.

    Returns the absolute path.  Raises :class:`InvalidInput` (naming the path and the fix) when the path is a
    symbolic link, is not a directory, is not owned by the current user, is writable by group or others, or
    when a parent directory could be changed by someone else.  Nothing is followed: a link planted at the
    path by another local user is refused, never used.
    """
    path = os.path.abspath(check_path(lock_dir or DEFAULT_LOCK_DIR))
    parent = os.path.dirname(path)
    try:
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        os.mkdir(path, 0o700)  # atomic: either we made it (0700 & ~umask) or it was there already
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_NOFOLLOW | _O_CLOEXEC)
        try:
            os.fchmod(fd, 0o700)  # the umask may have taken bits away; set exactly 0700 (on what we made)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise InvalidInput("cannot create lock directory %s: %s" % (path, e.strerror),
                               hint="set lock_dir to a directory the user running the task can create",
                               lock_dir=path)
    try:
        st = os.lstat(path)
    except OSError as e:
        raise InvalidInput("cannot use lock directory %s: %s" % (path, e.strerror), lock_dir=path)
    if stat.S_ISLNK(st.st_mode):
        raise InvalidInput("refusing lock directory %s: it is a symbolic link (to %s), which another user may have "
                           "planted" % (path, _readlink(path)), hint=_fix_hint(path), lock_dir=path)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput("lock directory %s is not a directory" % path, hint=_fix_hint(path), lock_dir=path)
    uid = os.geteuid()
    if st.st_uid != uid:
        raise InvalidInput(
            "refusing lock directory %s: it is owned by uid %d, not by the current user (uid %d)"
            % (path, st.st_uid, uid),
            hint="another user could fake or remove lock tickets; " + _fix_hint(path), lock_dir=path)
    if st.st_mode & (stat.S_IWOTH | stat.S_IWGRP):
        raise InvalidInput(
            "refusing lock directory %s: it is writable by %s (mode %04o)"
            % (path, "everyone" if st.st_mode & stat.S_IWOTH else "its group", stat.S_IMODE(st.st_mode)),
            hint="others could fake or remove lock tickets; run 'chmod 0700 %s' or choose another lock_dir" % path,
            lock_dir=path)
    _check_ancestors(path)
    return path


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return "?"


# -- small file helpers --------------------------------------------------------------------------
def _now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


_CMD_CACHE = {}


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

    def __init__(self, name=HOST_LOCK, lock_dir=None, timeout=DEFAULT_LOCK_TIMEOUT, poll=None, info=None):
        self.name = safe_lock_name(name)
        self.lock_dir = os.path.abspath(check_path(lock_dir or DEFAULT_LOCK_DIR))
        self.timeout = parse_lock_timeout(timeout, default=None)
        if poll is not None:
            if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
                raise InvalidInput("poll must be a positive number of seconds or None, got %r" % (poll,))
            poll = float(poll)
        self.poll = poll
        self.info = None if info is None else str(info)[:_CMD_MAX]
        self.waited = 0.0
        self.position_at_entry = None
        self.ticket = None
        self.queued_at = None      # wall-clock time (time.time()) when our ticket entered the queue
        self.acquired_at = None    # wall-clock time when we got the lock
        self._fd = None            # our ticket, flocked exclusively while we are in the queue
        self._path = None
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

    def acquire(self):
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

    def release(self):
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
        try:
            entries = os.listdir(self.queue_dir)
        except OSError:
            return []
        out = []
        for n in sorted(n for n in (_ticket_number(e) for e in entries) if n is not None):
            path = self._ticket_path(n)
            t = _Ticket(path)
            try:
                if not t.open():
                    continue
                if _try_shared(t.fd):
                    t.reap()
                    continue
                data = _read_ticket(path) or {}
            finally:
                t.close()
            out.append({
                "pid": data.get("pid"),
                "cmd": data.get("cmd"),
                "since": data.get("acquired") or data.get("queued"),
                "queued": data.get("queued"),
                "name": data.get("name", self.name),
                "info": data.get("info"),
                "ticket": n,
                "state": "holding" if not out else "waiting",
            })
        return out

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


def _unlink_quiet(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class LockSet(object):
    """Several named locks taken in one canonical order (sorted by file name), sharing one timeout.

    Taking locks in the same order everywhere is what prevents two callers from each holding one
    and waiting for the other.  ``waited`` is the total wait.
    """

    def __init__(self, names, lock_dir=None, timeout=DEFAULT_LOCK_TIMEOUT, poll=None, info=None):
        unique = sorted(set(safe_lock_name(n) for n in names))
        self.timeout = parse_lock_timeout(timeout, default=None)
        self.locks = [HostLock(n, lock_dir=lock_dir, timeout=self.timeout, poll=poll, info=info) for n in unique]
        self.waited = 0.0

    def acquire(self):
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

    def release(self):
        for lk in reversed(self.locks):
            lk.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
