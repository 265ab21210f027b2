"""Issue 14: the lock directory cannot be taken over or blocked by an unprivileged local user, and every flock
of the lock path honours lock_timeout.

An unprivileged user (``nobody``, through ``os.setuid`` in a forked child) prepares the attack exactly as it
would on a host; then root runs the lock code.
"""
import fcntl
import os
import pathlib
import pwd
import shutil
import stat
import tempfile
import threading
import time

import pytest

from connector.errors import InvalidInput, LockTimeout
from connector.lock import HostLock, ensure_lock_dir
from connector.lockdir import DEFAULT_LOCK_DIR

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def as_nobody(fn):
    """Run ``fn()`` in a forked child as user nobody; raise if it failed."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    status = os.waitpid(pid, 0)[1]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "the unprivileged step failed"


@pytest.fixture
def reachable():
    """A directory every user can reach (pytest's own tmp_path is private to root)."""
    top = tempfile.mkdtemp(prefix="brick-lockdir-", dir="/tmp")
    os.chmod(top, 0o755)
    yield pathlib.Path(top)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def public(reachable):
    """A directory like /run/lock: world-writable and sticky."""
    d = reachable / "lock"
    d.mkdir()
    os.chmod(str(d), 0o1777)
    return d


def test_default_lock_dir_is_where_only_root_can_write():
    assert DEFAULT_LOCK_DIR == "/run/brick-storage"
    st = os.stat(os.path.dirname(DEFAULT_LOCK_DIR))
    assert st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


@root_only
@pytest.mark.parametrize("plant", ["dir", "symlink", "file", "dangling"])
def test_path_planted_by_another_user_is_refused_with_the_fix(public, reachable, plant):
    target = public / "brick-storage"
    victim = reachable / "victim"
    victim.mkdir(mode=0o700)

    def attack():
        if plant == "dir":
            os.mkdir(str(target), 0o777)
        elif plant == "symlink":
            os.symlink(str(victim), str(target))
        elif plant == "dangling":
            os.symlink(str(reachable / "nothing"), str(target))
        else:
            with open(str(target), "w") as f:
                f.write("x")
    as_nobody(attack)
    t0 = time.monotonic()
    with pytest.raises(InvalidInput) as ei:
        HostLock("host", lock_dir=str(target), timeout=5).acquire()
    assert time.monotonic() - t0 < 1.0
    msg = str(ei.value)
    assert str(target) in msg
    assert "rm -rf %s" % target in msg and "/run/brick-storage" in msg  # how to fix it
    assert ei.value.details["lock_dir"] == str(target)
    assert os.listdir(str(victim)) == []  # nothing was created through the link
    if plant == "symlink":
        assert "symbolic link" in msg


@root_only
def test_fresh_dir_in_a_public_parent_is_created_private(public):
    d = public / "brick-storage"
    old = os.umask(0)
    try:
        with HostLock("host", lock_dir=str(d), timeout=1):
            st = os.lstat(str(d))
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0
    finally:
        os.umask(old)

    # the unprivileged user can neither list it nor plant anything in it
    def probe():
        for fn in (lambda: os.listdir(str(d)), lambda: open(str(d / "host.seq"), "w")):
            try:
                fn()
            except PermissionError:
                continue
            raise AssertionError("nobody could use the lock directory")
    as_nobody(probe)


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_parent_others_can_replace_is_refused(tmp_path, mode):
    parent = tmp_path / "open"
    parent.mkdir()
    os.chmod(str(parent), mode)
    with pytest.raises(InvalidInput) as ei:
        ensure_lock_dir(str(parent / "locks"))
    assert "parent directory %s is writable by" % parent in str(ei.value)


@root_only
def test_parent_owned_by_another_user_is_refused(tmp_path):
    parent = tmp_path / "theirs"
    parent.mkdir(mode=0o755)
    os.chown(str(parent), pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(InvalidInput) as ei:
        ensure_lock_dir(str(parent / "locks"))
    assert "parent directory %s is owned by uid" % parent in str(ei.value)


@pytest.mark.parametrize("bad", ["relative/dir", "/run/x\x00y", "/run/brick\nstorage", "/run/../tmp/x", 7, ["/run"]])
def test_bad_lock_dir_is_a_message(bad):
    with pytest.raises(InvalidInput):
        ensure_lock_dir(bad)
    with pytest.raises(InvalidInput):
        HostLock("host", lock_dir=bad).acquire()


def test_queue_counter_flock_honours_lock_timeout(tmp_path):
    """Whoever holds the counter's flock (a stuck process) costs us lock_timeout, not forever."""
    d = str(tmp_path / "locks")
    lk = HostLock("host", lock_dir=d, timeout=0.5)
    ensure_lock_dir(d)
    fd = os.open(lk.counter_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    box = {}

    def take():
        t0 = time.monotonic()
        try:
            lk.acquire()
            box["got"] = True
        except LockTimeout as e:
            box["error"] = e
        box["took"] = time.monotonic() - t0
    t = threading.Thread(target=take)
    t.daemon = True
    t.start()
    t.join(5)
    try:
        assert not t.is_alive(), "the counter flock blocked past lock_timeout"
        assert "error" in box and 0.5 <= box["took"] < 1.5, box
        assert lk.counter_path in str(box["error"])
        assert not os.listdir(lk.queue_dir)  # our prepared ticket is gone again
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # released: the next try is immediate
    with HostLock("host", lock_dir=d, timeout=0.5) as again:
        assert again.locked
