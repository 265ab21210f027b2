# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""plugins/module_utils/brick_module.py (what the modules share on the Ansible side), and what every module must
keep: its docs paired with its argument spec (doc fragments included), no function over 60 lines."""

import ast
import importlib
import os

import pytest
import yaml

from unit.plugins.modules.modtest_util import REPO, import_collection_module

pytest.importorskip("ansible")

MODULES = ("iscsi_volume", "multipath_flush", "block_device_idle", "volume_paths_facts")
PKG = "ansible_collections.brick.storage.plugins"
MAX_FUNCTION_LINES = 60


@pytest.fixture(scope="module")
def bm():
    import_collection_module("iscsi_volume")  # makes the collection importable
    return importlib.import_module(PKG + ".module_utils.brick_module")


@pytest.fixture(scope="module")
def errors():
    import_collection_module("iscsi_volume")
    return importlib.import_module(PKG + ".module_utils.connector.errors")


class Exited(Exception):
    pass


class FakeModule(object):
    """What ModuleErrors and fail_from_error use of an AnsibleModule."""

    def __init__(self, no_log_values=()):
        self.no_log_values = set(no_log_values)
        self.failed = None

    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise Exited()


class FakeRunner(object):
    def __init__(self, commands=0, secrets=()):
        self.history = [{}] * commands
        self.secrets = secrets

    def mask(self, text):
        for secret in self.secrets:
            text = text.replace(secret, "********")
        return text


# -- the argument specs -------------------------------------------------------------------------------------------
def test_options_merges_copies_and_refuses_a_name_twice(bm):
    spec = bm.options({"a": {"type": "str"}}, bm.LOCK_OPTIONS)
    assert sorted(spec) == ["a", "lock_dir", "lock_timeout"]
    spec["lock_dir"]["default"] = "/elsewhere"
    assert bm.LOCK_OPTIONS["lock_dir"]["default"] == "/run/brick-storage"
    with pytest.raises(ValueError, match="lock_dir is declared twice"):
        bm.options(bm.LOCK_OPTIONS, {"lock_dir": {"type": "path"}})


def test_lock_options_default_is_the_connectors(bm):
    from ansible_collections.brick.storage.plugins.module_utils.connector.lockdir import DEFAULT_LOCK_DIR
    assert bm.LOCK_OPTIONS["lock_dir"]["default"] == DEFAULT_LOCK_DIR


def test_unchecked_spec_keeps_names_aliases_and_no_log(bm):
    spec = {"password": {"type": "str", "no_log": True, "aliases": ["pass"]},
            "volume": {"type": "dict", "options": {"lun": {"type": "int"}}, "required": True}}
    assert bm.unchecked_spec(spec) == {"password": {"type": "raw", "no_log": True, "aliases": ["pass"]},
                                       "volume": {"type": "raw"}}


# -- errors -------------------------------------------------------------------------------------------------------
# id, the error, the runner's command count (None: no runner), extra, the failure result
ERRORS = [
    ("message-and-hint", ("InvalidInput", "bad lun", {"hint": "give 0-16383"}), None, {},
     {"msg": "bad lun (give 0-16383)", "error": "InvalidInput", "hint": "give 0-16383", "changed": False}),
    ("details-without-cmd", ("CommandError", None, {"argv": ["iscsiadm", "-m", "node"], "rc": 21}), 3, {},
     {"msg": "command 'iscsiadm -m node' failed with exit code 21 after 1 attempt(s): no output",
      "error": "CommandError", "rc": 21, "changed": False, "commands": 3}),
    ("extra-wins", ("DeviceBusy", "in use", {"blockers": [1]}), 0, {"msg": "x", "lock_wait": 0.5},
     {"msg": "x", "error": "DeviceBusy", "blockers": [1], "changed": False, "commands": 0, "lock_wait": 0.5}),
]


@pytest.mark.parametrize("error,commands,extra,expected", [pytest.param(*case[1:], id=case[0]) for case in ERRORS])
def test_fail_from_error(bm, errors, error, commands, extra, expected):
    cls, msg, kwargs = error
    exc = getattr(errors, cls)(msg, **kwargs) if msg is not None else getattr(errors, cls)(**kwargs)
    module = FakeModule()
    with pytest.raises(Exited):
        bm.fail_from_error(module, exc, FakeRunner(commands) if commands is not None else None, **extra)
    assert module.failed == expected


def test_module_errors_turns_a_bug_into_a_masked_internal_error(bm):
    module = FakeModule(no_log_values=["chap-secret"])
    with pytest.raises(Exited):
        with bm.ModuleErrors(module, commands=True) as guard:
            guard.runner = FakeRunner(2, secrets=["runner-secret"])
            raise KeyError("chap-secret and runner-secret")
    assert module.failed["error"] == "InternalError" and module.failed["commands"] == 2
    assert module.failed["msg"] == "internal error (KeyError): '******** and ********'"


@pytest.mark.parametrize("commands,expected", [(True, {"commands": 0}), (False, {})], ids=["counts", "no-count"])
def test_module_errors_before_there_is_a_runner(bm, errors, commands, expected):
    module = FakeModule()
    with pytest.raises(Exited):
        with bm.ModuleErrors(module, commands=commands, msg_prefix="invalid input: "):
            raise errors.InvalidInput("lun -1 is out of range")
    assert module.failed == dict(expected, msg="invalid input: lun -1 is out of range", error="InvalidInput",
                                 changed=False)


def test_module_errors_names_the_step_of_a_bug(bm):
    module = FakeModule()
    with pytest.raises(Exited):
        with bm.ModuleErrors(module, during="while checking the input", msg_prefix="invalid input: "):
            raise TypeError("boom")
    assert module.failed["msg"] == "internal error (TypeError) while checking the input: boom"


def test_module_errors_lets_exit_json_through(bm):
    module = FakeModule()
    with pytest.raises(SystemExit):
        with bm.ModuleErrors(module):
            raise SystemExit(0)
    assert module.failed is None


def test_diff(bm):
    assert bm.diff({"maps": ["a"]}, {"maps": []}, "map a") == {
        "before": {"maps": ["a"]}, "after": {"maps": []}, "before_header": "map a (before)",
        "after_header": "map a (after)"}


# -- every module -------------------------------------------------------------------------------------------------
class Sentinel(Exception):
    pass


@pytest.mark.parametrize("name", MODULES)
def test_the_module_class_is_looked_up_at_run_time(monkeypatch, name):
    """ansible-lint's args rule patches ansible.module_utils.basic.AnsibleModule to read a module's spec: every
    module must build its AnsibleModule through that name, when main() runs."""
    from ansible.module_utils import basic
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise Sentinel()
    monkeypatch.setattr(basic, "AnsibleModule", fake)
    mod = import_collection_module(name)
    with pytest.raises(Sentinel):
        mod.main()
    assert seen["argument_spec"] == mod.argument_spec() and seen["supports_check_mode"] is True


def _fragment(name):
    """The YAML of a doc fragment named as extends_documentation_fragment names it."""
    parts = name.split(".")[2:]
    cls = importlib.import_module(PKG + ".doc_fragments." + parts[0]).ModuleDocFragment
    return yaml.safe_load(getattr(cls, parts[1].upper() if len(parts) > 1 else "DOCUMENTATION"))


def merged_doc(mod):
    """The module's documentation with its fragments (the module's own keys win, as ansible-doc merges them)."""
    doc = yaml.safe_load(mod.DOCUMENTATION)
    for name in doc.get("extends_documentation_fragment", []):
        fragment = _fragment(name)
        for key in ("options", "attributes"):
            for item, value in (fragment.get(key) or {}).items():
                doc.setdefault(key, {})[item] = dict(value, **doc[key].get(item, {}))
    return doc


@pytest.mark.parametrize("name", MODULES)
def test_docs_pair_with_the_argument_spec(name):
    mod = import_collection_module(name)
    doc = merged_doc(mod)
    spec = mod.argument_spec()
    assert sorted(doc["options"]) == sorted(spec)
    for option, value in spec.items():
        assert doc["options"][option].get("default") == value.get("default"), option
        assert sorted(doc["options"][option].get("aliases", [])) == sorted(value.get("aliases", [])), option
    attributes = doc["attributes"]
    assert set(attributes) >= {"check_mode", "diff_mode", "platform"}
    for attribute, value in attributes.items():
        assert value.get("description") and value.get("support"), (attribute, value)
    assert attributes["platform"]["platforms"] == "linux"
    changes = name in ("iscsi_volume", "multipath_flush")
    assert (attributes["diff_mode"]["support"] in ("full", "partial")) if changes else \
        attributes["diff_mode"]["support"] == "N/A"


def _functions(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("name", MODULES)
def test_no_function_over_60_lines(name):
    path = os.path.join(REPO, "plugins", "modules", name + ".py")
    long = [(function, lines) for function, lines in _functions(path) if lines > MAX_FUNCTION_LINES]
    assert long == []


@pytest.mark.parametrize("path", ["plugins/modules/%s.py" % name for name in MODULES]
                         + ["plugins/doc_fragments/lock.py", "plugins/doc_fragments/attributes.py",
                            "plugins/module_utils/brick_module.py"])
def test_no_python2_boilerplate(path):
    src = open(os.path.join(REPO, path)).read()
    assert "__metaclass__" not in src and "from __future__ import absolute_import" not in src
