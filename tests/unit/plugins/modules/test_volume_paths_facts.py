# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""volume_paths_facts through the module's main(), against the simulated host (BRICK_STORAGE_ROOT)."""

import subprocess
import time

import pytest

ansible = pytest.importorskip("ansible")
from unit.plugins.modules.modtest_util import call_module as run_module, import_collection_module  # noqa: E402

from connector import iscsi  # noqa: E402

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture(scope="module")
def module():
    return import_collection_module("volume_paths_facts")


@pytest.fixture
def attached(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    c = iscsi.Connector(host.fs, host.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)),
                        device_wait=2.0, multipath_wait=2.0)
    for lun in (0, 1):
        c.connect(iscsi.build_paths([P1, P2], [IQN], [lun]))
    return host


@pytest.fixture
def no_commands(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("the module ran a command: %r" % (a,))
    monkeypatch.setattr(subprocess, "Popen", boom)


def test_facts_of_a_healthy_host(module, capsys, attached, no_commands):
    failed, res = run_module(module, capsys, {})
    assert not failed and res["changed"] is False
    vp = res["ansible_facts"]["volume_paths"]
    assert vp["root"] == attached.root
    assert vp["summary"]["luns"] == 4 and vp["summary"]["maps"] == 2 and vp["summary"]["orphans"] == 0
    assert vp["orphans"] == [] and vp["cleanup"] == [] and "volume" not in vp


def test_volume_query_and_check_mode(module, capsys, attached, no_commands):
    args = {"volume": {"portals": [P1, "10.0.0.2"], "iqn": IQN, "lun": 1}, "gather_orphans": False}
    failed, res = run_module(module, capsys, args, check_mode=True)
    assert not failed and res["changed"] is False
    vp = res["ansible_facts"]["volume_paths"]
    assert "orphans" not in vp and "cleanup" not in vp and vp["summary"]["orphans"] is None
    v = vp["volume"]
    assert v["portals"] == [P1, P2] and v["active_paths"] == 2 and len(v["paths"]) == 2 and v["map"]


def test_expected_set_from_inventory(module, capsys, attached):
    failed, res = run_module(module, capsys, {"expected": [{"iqn": IQN, "lun": 0}]})
    assert not failed
    vp = res["ansible_facts"]["volume_paths"]
    assert vp["summary"]["counts"]["unexpected_lun"] == 2
    assert [a["action"] for a in vp["cleanup"]] == ["iscsi_volume"] and vp["cleanup"][0]["lun"] == 1


def test_orphans_after_a_path_failure(module, capsys, attached):
    attached.path_fail(P2, session_state="FREE")
    failed, res = run_module(module, capsys, {})
    vp = res["ansible_facts"]["volume_paths"]
    assert vp["summary"]["counts"]["device_on_failed_session"] == 2
    assert all(o["portal"] == P2 for o in vp["orphans"])


# Bad input: "invalid input: ..." before sysfs is read. The first column is the id.
BAD_INPUT = [
    ("port-out-of-range", {"volume": {"portals": ["10.0.0.1:99999"], "iqn": IQN, "lun": 0}}, "out of range"),
    ("malformed-iqn", {"volume": {"portals": [P1], "iqn": "iqn.bad", "lun": 0}}, "malformed"),
    ("no-portals", {"volume": {"portals": [], "iqn": IQN, "lun": 0}}, "portals is empty"),
    ("negative-lun", {"volume": {"portals": [P1], "iqn": IQN, "lun": -4}}, "out of range"),
    ("expected-without-iqn", {"expected": [{"lun": 0}]}, "needs iqn and lun"),
    ("expected-list-in-list", {"expected": [["x"]]}, "WWID string or a dictionary"),
]


@pytest.mark.parametrize("args, msg", [pytest.param(args, msg, id=name) for name, args, msg in BAD_INPUT])
def test_bad_input_fails_before_reading(module, capsys, monkeypatch, tmp_path, args, msg):
    # the root has no sysfs at all: a read would fail differently
    monkeypatch.setenv("BRICK_STORAGE_ROOT", str(tmp_path))
    failed, res = run_module(module, capsys, args)
    assert failed and res["changed"] is False
    assert res["msg"].startswith("invalid input: ") and msg in res["msg"], res["msg"]
    assert res["error"] == "InvalidInput"


def test_type_errors_are_caught_by_the_argument_spec(module, capsys, host):
    failed, res = run_module(module, capsys, {"volume": {"portals": [P1], "iqn": IQN, "lun": "zero"}})
    assert failed and "lun" in res["msg"]
    failed, res = run_module(module, capsys, {"volume": {"portals": [P1], "lun": 0}})
    assert failed and "iqn" in res["msg"]


def test_no_sysfs_is_a_clear_failure(module, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("BRICK_STORAGE_ROOT", str(tmp_path))
    failed, res = run_module(module, capsys, {})
    assert failed and "sysfs is not readable" in res["msg"] and "BRICK_STORAGE_ROOT" in res["msg"]


def test_documentation_is_valid_yaml_and_matches_the_spec(module):
    import yaml
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert set(doc["options"]) == {"volume", "expected", "gather_orphans"}
    assert set(doc["attributes"]) >= {"check_mode", "diff_mode", "platform"}
    assert yaml.safe_load(module.EXAMPLES) and yaml.safe_load(module.RETURN)
