# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Helpers for module tests: import a module of the collection and run its main().

``from unit.plugins.modules.modtest_util import REPO, call_module, import_collection_module`` (the fixtures
``run_module`` and ``host`` are in conftest.py next to this file).
"""

import importlib
import json
import os
import sys
import tempfile

import pytest

# tests/unit/plugins/modules/modtest_util.py -> the repository (the collection's root)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


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
