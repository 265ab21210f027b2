# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The lock directory and lock names: only root may write there, and a planted path is refused.

/run/lock is writable by every local user, who could pre-create the directory (or a link) and make every module
fail; so the default lives under /run, is made with one mkdir at 0700, and anything that is not a directory of
ours that nobody else can change is refused with a message naming it and saying how to fix it.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import stat

from .errors import InvalidInput
from .hostfs import ROOT_ENV
from .validate import lock_dir as check_path, show

# Under /run (root's, mode 0755), not /run/lock: /run/lock is writable by every user, who could pre-create it.
DEFAULT_LOCK_DIR = "/run/brick-storage"
DEFAULT_LOCK_TIMEOUT = 300.0
# The longest lock_timeout in seconds (7 days): longer waits are what ``patient`` is for, and every wait of the lock
# (threading waits, sleep) must be able to take it (threading.TIMEOUT_MAX is about 292 years, but 1e10 is more).
MAX_LOCK_TIMEOUT = 7 * 86400.0
PATIENT = "patient"
HOST_LOCK = "host"

_MAX_NAME = 96
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")


# -- input helpers --------------------------------------------------------------------------
def lock_dir_for(value: str | None = None) -> str:
    """The lock directory to use for the option value ``value`` (None or the default: DEFAULT_LOCK_DIR).

    On a host whose tree is below another root (the environment variable BRICK_STORAGE_ROOT of hostfs.py: the
    simulated hosts of the tests, or a host's tree mounted in a container), the default is that root's
    ``/run/brick-storage``, the same directory as for every other process that sees that host: so a test suite
    never creates lock files in the machine's own /run.  Any other value is used as it is."""
    if value and value != DEFAULT_LOCK_DIR:
        return value
    root = os.environ.get(ROOT_ENV) or "/"
    if os.path.abspath(root) == "/":
        return DEFAULT_LOCK_DIR
    return os.path.join(os.path.abspath(root), DEFAULT_LOCK_DIR.lstrip("/"))


def parse_lock_timeout(value: object, default: float | None = DEFAULT_LOCK_TIMEOUT) -> float | None:
    """Turn a module's ``lock_timeout`` option into seconds (float) or None (= wait forever).

    Accepts a number, a numeric string or ``patient``; ``None`` gives ``default``.  Booleans,
    negative, infinite, non-numeric values and values over ``MAX_LOCK_TIMEOUT`` (which no wait of the lock could
    take: ``threading`` waits overflow past ``threading.TIMEOUT_MAX``) raise :class:`InvalidInput`.
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
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float: too long, said below
            seconds = MAX_LOCK_TIMEOUT + 1
    else:
        seconds = None
    if seconds is None or math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidInput("lock_timeout %r is invalid: expected a number of seconds >= 0 or 'patient'" % (value,),
                           hint="use e.g. lock_timeout: 300, 0 to try once, or patient to wait as long as it takes")
    if seconds > MAX_LOCK_TIMEOUT:
        raise InvalidInput("lock_timeout %s is too long: at most %d seconds (7 days), or 'patient' to wait as long as "
                           "it takes" % (show(value, 40), MAX_LOCK_TIMEOUT),
                           hint="use lock_timeout: patient to queue without a limit")
    return seconds


def safe_lock_name(name: object) -> str:
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


def target_lock_name(target: object) -> str:
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
            raise InvalidInput("cannot use lock directory %s: %s: %s" % (path, d, e.strerror), lock_dir=path) from None
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


def ensure_lock_dir(lock_dir: str | None = None) -> str:
    """Create ``lock_dir`` (mode 0700, atomically: one mkdir) if missing and refuse one that others could
    tamper with.

    Returns the absolute path.  Raises :class:`InvalidInput` (naming the path and the fix) when the path is a
    symbolic link, is not a directory, is not owned by the current user, is writable by group or others, or
    when a parent directory could be changed by someone else.  Nothing is followed: a link planted at the
    path by another local user is refused, never used.
    """
    path = os.path.abspath(check_path(lock_dir_for(lock_dir)))
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
                               lock_dir=path) from None
    try:
        st = os.lstat(path)
    except OSError as e:
        raise InvalidInput("cannot use lock directory %s: %s" % (path, e.strerror), lock_dir=path) from None
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
