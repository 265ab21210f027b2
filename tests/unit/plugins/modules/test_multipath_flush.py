# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.multipath_flush through its main(), on the simulated host."""

import time

import pytest

from connector import iscsi
from unit.plugins.modules.modtest_util import import_collection_module

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture(scope="module")
def mod():
    pytest.importorskip("ansible")
    return import_collection_module("multipath_flush")


@pytest.fixture
def host(host, mod):
    """The simulated host (conftest.py), wired to the module: it builds its HostFS and Runner from it."""
    return host.wire(mod)


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
    from connector.lock import HostLock
    from connector.lockdir import target_lock_name
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0, info="an attach of LUN 1")
    held.acquire()
    try:
        failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir,
                                       "lock_timeout": 0})
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    assert host.fs.exists("/sys/block/%s" % volume["device"][5:])


# Bad input: a message before anything runs. The first column is the id.
BAD_INPUT = [
    ("meta", {"map": "bad;name"}, "not allowed"),
    ("traversal", {"map": "/dev/../etc/passwd"}, "normalised"),
    ("wwid", {"map": "x", "wwid": "not a wwid"}, "not a WWID"),
    ("retries", {"map": "x", "retries": -1}, "retries"),
    ("lock_timeout", {"map": "x", "lock_timeout": "later"}, "lock_timeout"),
    ("no-map", {}, "missing required arguments: map"),
    ("empty-map", {"map": ""}, "map"),
    ("negative-delay", {"map": "x", "delay": -1}, "retries and delay must be >= 0 and timeout > 0"),
    ("zero-timeout", {"map": "x", "timeout": 0}, "timeout > 0"),
    ("relative-lock-dir", {"map": "x", "lock_dir": "locks"}, "absolute"),
]


@pytest.mark.parametrize("bad,needle", [pytest.param(bad, needle, id=name) for name, bad, needle in BAD_INPUT])
def test_bad_input_fails_before_anything(mod, host, run_module, bad, needle):
    failed, res = run_module(mod, dict({"lock_dir": host.lock_dir}, **bad))
    assert failed and needle in res["msg"], res
    assert host.commands() == []


# -- argv shapes ---------------------------------------------------------------------------------------------------
# id, the map reference (from the attached volume), more arguments, check mode, the commands the run starts
ARGV = [
    ("flush-by-name", "name", {}, False, ["multipath -f {map}"]),
    ("flush-by-device", "dev", {}, False, ["multipath -f {map}"]),
    ("check-mode", "name", {}, True, []),
    ("absent-map", "other", {}, False, []),
    ("force", "name", {"force": True}, False, ["multipath -f {map}"]),
]


@pytest.mark.parametrize("ref,more,check_mode,expected", [pytest.param(*case[1:], id=case[0]) for case in ARGV])
def test_argv_shapes(mod, host, volume, run_module, ref, more, check_mode, expected):
    value = {"name": volume["multipath_map"], "dev": volume["device"], "other": "36001405" + "0" * 25}[ref]
    host.reset_commands()
    failed, res = run_module(mod, dict({"map": value, "lock_dir": host.lock_dir, "delay": 0}, **more),
                             check_mode=check_mode)
    assert not failed, res
    assert [" ".join(argv) for argv in host.commands()] == [e.format(map=volume["multipath_map"]) for e in expected]


def test_refusals_name_the_error(mod, host, volume, run_module):
    """A map in use and a map of another WWID fail as the connector's errors do: ``error`` names the kind."""
    host.mount(volume["device"], "/srv/data")
    failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir})
    assert failed and res["error"] == "DeviceBusy" and res["map"] == volume["multipath_map"] and res["blockers"]
    assert res["lock_wait"] >= 0 and res["changed"] is False
    failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir}, check_mode=True)
    assert failed and res["error"] == "DeviceBusy" and "lock_wait" not in res
    other = "36001405" + "7" * 25
    failed, res = run_module(mod, {"map": volume["device"], "wwid": other, "lock_dir": host.lock_dir})
    assert failed and res["error"] == "VolumeMismatch" and res["expected_wwid"] == other
    assert res["map_wwid"] == volume["wwid"]


# -- diff mode -----------------------------------------------------------------------------------------------------
def map_view(host, volume):
    dm = volume["device"][5:]
    paths = sorted("/dev/" + name for name in host.maps()[dm]["paths"])
    assert len(paths) == 2
    return {"maps": ["%s (%s)" % (volume["multipath_map"], volume["device"])], "devices": paths}


def test_no_diff_unless_asked(mod, host, volume, run_module):
    failed, res = run_module(mod, {"map": volume["multipath_map"], "lock_dir": host.lock_dir}, check_mode=True)
    assert not failed and "diff" not in res


def test_check_mode_diff_is_what_the_flush_does(mod, host, volume, run_module):
    before = map_view(host, volume)
    snap = host.snapshot()
    a = {"map": volume["wwid"], "lock_dir": host.lock_dir, "delay": 0}
    failed, predicted = run_module(mod, a, check_mode=True, diff=True)
    assert not failed and predicted["changed"] and host.snapshot() == snap
    assert predicted["diff"]["before"] == before
    assert predicted["diff"]["after"] == {"maps": [], "devices": before["devices"]}  # the paths stay
    assert predicted["diff"]["before_header"] == "multipath map %s (before)" % volume["multipath_map"]
    failed, done = run_module(mod, a, diff=True)
    assert not failed and done["changed"] and done["diff"] == predicted["diff"]
    failed, again = run_module(mod, a, diff=True)
    assert not failed and not again["changed"]
    assert again["diff"]["before"] == again["diff"]["after"] == {"maps": [], "devices": []}
