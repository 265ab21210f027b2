# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The hosts the unit tests run against, shared by every directory below this one.

``host`` is the simulated host (tests/sim) whose timeouts (login, discovery, session recovery) are scaled by
0.01.  A directory or file that needs more overrides it by requesting it: ``def host(host, ...)``
(plugins/modules/conftest.py adds a lock directory and ``wire(module)``; test_volume_life.py a state directory).
``minihost`` is the small host tree of the idle and holders checks (plugins/module_utils/connector/minihost.py),
a different object, hence a different name.
"""

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
