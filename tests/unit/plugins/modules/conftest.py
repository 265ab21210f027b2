# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Helpers for module tests: import a module of the collection, run its main(), and the simulated host."""

import importlib
import json
import os
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def import_collection_module(short):
    """Import ``brick.storage``'s module ``short`` (the repo is linked as ansible_collections/brick/storage)."""
    name = "ansible_collections.brick.storage.plugins.modules.%s" % short
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    top = tempfile.mkdtemp(prefix="brick-coll-")
    os.makedirs(os.path.join(top, "ansible_collections", "brick"))
    os.symlink(REPO, os.path.join(top, "ansible_collections", "brick", "storage"))
    sys.path.insert(0, top)
    importlib.invalidate_caches()
    for mod in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        if not getattr(sys.modules[mod], "__file__", None) and mod.count(".") < 3:
            del sys.modules[mod]
    return importlib.import_module(name)


def call_module(module, capsys, args, check_mode=False, diff=False):
    """Run ``module.main()`` with ``args`` (in check mode, in diff mode); returns (failed, result dict)."""
    from ansible.module_utils.testing import patch_module_args
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            module.main()
    out = json.loads(capsys.readouterr().out)
    return exc.value.code != 0, out


@pytest.fixture
def run_module(capsys):
    """run_module(module, args, check_mode=False, diff=False) -> (failed, result)."""
    pytest.importorskip("ansible")

    def run(module, args, check_mode=False, diff=False):
        return call_module(module, capsys, args, check_mode, diff)
    return run


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A simulated host (tests/sim) that the modules see.

    ``BRICK_STORAGE_ROOT`` points at it (for what a module reads through its own HostFS), ``lock_dir`` is a lock
    directory of the test's own, and ``wire(module)`` hands a module that builds a HostFS and a Runner the host's
    (every runner it made is in ``runners``) and returns the host.  A test file that always wires its module overrides this fixture
    with one that calls ``wire``."""
    from sim import SimHost
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
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
