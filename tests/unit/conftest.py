# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The hosts the unit tests run against, shared by every directory below this one.

``host`` is the simulated host (tests/sim) whose timeouts (login, discovery, session recovery) are scaled by
0.01.  A directory or file that needs more overrides it by requesting it: ``def host(host, ...)``
(plugins/modules/conftest.py adds a lock directory and ``wire(module)``; test_volume_life.py a state directory).
``minihost`` is the small host tree of the idle and holders checks (plugins/module_utils/connector/minihost.py),
a different object, hence a different name.

The suite never touches the machine it runs on: ``machine_dirs_untouched`` (session, autouse) fails the run when the
machine's own /run/brick-storage (locks) or /var/lib/brick-storage was created, changed or removed while it ran.  A module
under test takes its locks in ``host.lock_dir`` or, with the default lock_dir, below the simulated host's root
(BRICK_STORAGE_ROOT: connector.lockdir.lock_dir_for).
"""

import os

import pytest

from sim import SimHost
from unit.plugins.module_utils.connector.minihost import MiniHost


@pytest.fixture
def host(tmp_path):
    """A SimHost in ``tmp_path/host``; its simulated timeouts take 1/100 of their configured seconds."""
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    return h


@pytest.fixture
def minihost(tmp_path):
    """A MiniHost in ``tmp_path/root``; the holders it was told to release later are stopped at teardown."""
    h = MiniHost(tmp_path / "root")
    yield h
    for t in h._timers:
        t.cancel()


# The product's own directories on the machine: the lock directory (connector.lockdir.DEFAULT_LOCK_DIR) and the
# state directory (records ledger, boot LUNs: written through HostFS, below the simulated host's root in tests).
MACHINE_DIRS = ("/run/brick-storage", "/var/lib/brick-storage")


def _tree_state(top):
    """What ``top`` holds, to tell whether anything changed it: (name, inode, mode, size, mtime) of it and of every
    entry below it, or None when it does not exist."""
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return None
    out = [(".", st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns)]
    for dirpath, dirnames, filenames in os.walk(top):
        for entry in sorted(dirnames + filenames):
            full = os.path.join(dirpath, entry)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            out.append((os.path.relpath(full, top), st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns))
    return out


@pytest.fixture(scope="session", autouse=True)
def machine_dirs_untouched():
    """Fail the run when the tests created, changed or removed the machine's own /run/brick-storage or
    /var/lib/brick-storage."""
    before = dict((top, _tree_state(top)) for top in MACHINE_DIRS)
    yield
    changed = [top for top in MACHINE_DIRS if _tree_state(top) != before[top]]
    if changed:
        pytest.fail("the unit tests touched the machine's own %s: a test ran a module or a lock with the default "
                    "lock_dir (or HostFS) and no BRICK_STORAGE_ROOT; give it host.lock_dir or a simulated host's "
                    "environment (unless another process on this machine used it meanwhile)" % " and ".join(changed),
                    pytrace=False)
