# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Fixtures for module tests: run a module's main(), and the simulated host wired to it (helpers in modtest_util.py)."""

import pytest

from unit.plugins.modules.modtest_util import call_module


@pytest.fixture
def run_module(capsys):
    """run_module(module, args, check_mode=False, diff=False) -> (failed, result)."""
    pytest.importorskip("ansible")

    def run(module, args, check_mode=False, diff=False):
        return call_module(module, capsys, args, check_mode, diff)
    return run


@pytest.fixture
def host(tmp_path, monkeypatch, host):
    """The shared simulated host (tests/unit/conftest.py) that the modules see.

    ``BRICK_STORAGE_ROOT`` points at it (for what a module reads through its own HostFS), ``lock_dir`` is a lock
    directory of the test's own, and ``wire(module)`` hands a module that builds a HostFS and a Runner the host's
    (every runner it made is in ``runners``) and returns the host.  A test file that always wires its module overrides this fixture
    with one that calls ``wire``."""
    h = host
    h.lock_dir = str(tmp_path / "locks")
    h.runners = []
    monkeypatch.setenv("BRICK_STORAGE_ROOT", h.root)

    def make_runner(*_args, **_kwargs):
        runner = h.runner()
        h.runners.append(runner)
        return runner

    def wire(module):
        monkeypatch.setattr(module, "HostFS", lambda *_args, **_kwargs: h.fs)
        monkeypatch.setattr(module, "Runner", make_runner)
        return h
    h.wire = wire
    return h
