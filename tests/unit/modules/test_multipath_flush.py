# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.multipath_flush through its main(), on the simulated host."""

import time

import pytest

from connector import iscsi
from sim import SimHost
from conftest import import_collection_module  # tests/unit/modules/conftest.py

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture(scope="module")
def mod():
    pytest.importorskip("ansible")
    return import_collection_module("multipath_flush")


@pytest.fixture
def host(tmp_path, monkeypatch, mod):
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    monkeypatch.setattr(mod, "HostFS", lambda *a, **kw: h.fs)
    monkeypatch.setattr(mod, "Runner", lambda *a, **kw: h.runner())
    h.lock_dir = str(tmp_path / "locks")
    return h


@pytest.fixture
def volume(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    c = iscsi.Connector(host.fs, host.runner(), poll=0.01, device_wait=2, multipath_wait=2,
                        sleep=lambda s: time.sleep(min(s, 0.02)))
    res = c.connect(iscsi.build_paths([P1, P2], [IQN], [0]))
    res["sysfs_wwid"] = t["luns"][0]["sysfs_wwid"]
    return res


@pytest.mark.parametrize("ref", ["name", "wwid", "dev", "mapper"])
def test_flush_by_any_reference(mod, host, volume, run_module, ref):
    m = volume["multipath_map"]
    value = {"name": m, "wwid": volume["wwid"], "dev": volume["device"], "mapper": "/dev/mapper/" + m}[ref]
    failed, res = run_module(mod, {"map": value, "lock_dir": host.lock_dir, "delay": 0})
    assert not failed and res["changed"] and res["map"] == m, res
    assert not host.fs.exists("/sys/block/%s" % volume["device"][5:])
    # the paths stay (a flush is not a detach)
    assert len([d for d in host.disks().values() if d["lun"] == 0]) == 2


def test_absent_map_is_no_change(mod, host, run_module):
    failed, res = run_module(mod, {"map": "36001405" + "0" * 25, "lock_dir": host.lock_dir})
    assert not failed and res["changed"] is False and res["map"] is None


def test_in_use_map_is_refused_and_kept(mod, host, volume, run_module):
    host.mount(volume["device"], "/srv/data")
    snap = host.snapshot()
    failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir})
    assert failed and "in use" in res["msg"] and "/srv/data" in res["msg"]
    assert host.snapshot() == snap


def test_check_mode_flushes_nothing(mod, host, volume, run_module):
    snap = host.snapshot()
    failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir}, check_mode=True)
    assert not failed and res["changed"] and "would flush" in res["msg"]
    assert host.snapshot() == snap


@pytest.mark.parametrize("form", ["udev", "sysfs"])
def test_expected_wwid_matches(mod, host, volume, run_module, form):
    w = volume["wwid"] if form == "udev" else volume["sysfs_wwid"]
    failed, res = run_module(mod, {"map": volume["device"], "wwid": w, "lock_dir": host.lock_dir, "delay": 0})
    assert not failed and res["changed"]


def test_a_map_of_another_wwid_is_not_flushed(mod, host, volume, run_module):
    snap = host.snapshot()
    other = "36001405" + "7" * 25
    failed, res = run_module(mod, {"map": volume["device"], "wwid": other, "lock_dir": host.lock_dir})
    assert failed and other in res["msg"] and volume["wwid"] in res["msg"]
    assert host.snapshot() == snap


def test_the_flush_takes_the_target_lock_of_the_maps_paths(mod, host, volume, run_module):
    from connector.lock import HostLock, target_lock_name
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0, info="an attach of LUN 1")
    held.acquire()
    try:
        failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir,
                                       "lock_timeout": 0})
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    assert host.fs.exists("/sys/block/%s" % volume["device"][5:])


@pytest.mark.parametrize("bad,needle", [
    ({"map": "bad;name"}, "not allowed"),
    ({"map": "/dev/../etc/passwd"}, "normalised"),
    ({"map": "x", "wwid": "not a wwid"}, "not a WWID"),
    ({"map": "x", "retries": -1}, "retries"),
    ({"map": "x", "lock_timeout": "later"}, "lock_timeout"),
], ids=["meta", "traversal", "wwid", "retries", "lock_timeout"])
def test_bad_input_fails_before_anything(mod, host, run_module, bad, needle):
    failed, res = run_module(mod, dict(bad, lock_dir=host.lock_dir))
    assert failed and needle in res["msg"], res
