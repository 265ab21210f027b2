# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.iscsi_volume through its main(), on the simulated host."""

import json

import pytest

from sim import SimHost
from conftest import import_collection_module  # tests/unit/modules/conftest.py

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture(scope="module")
def mod():
    pytest.importorskip("ansible")
    return import_collection_module("iscsi_volume")


@pytest.fixture
def host(tmp_path, monkeypatch, mod):
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    runners = []

    def make_runner(*a, **kw):
        r = h.runner()
        runners.append(r)
        return r
    # the module builds its own HostFS/Runner: hand it the simulated host's
    monkeypatch.setattr(mod, "HostFS", lambda *a, **kw: h.fs)
    monkeypatch.setattr(mod, "Runner", make_runner)
    h.runners = runners
    h.lock_dir = str(tmp_path / "locks")
    return h


def args(h, **kw):
    a = {"portals": [P1, P2], "iqn": [IQN], "lun": [0], "lock_dir": h.lock_dir,
         "device_wait_timeout": 3, "multipath_wait_timeout": 3}
    a.update(kw)
    return a


def test_attach_rerun_detach(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host))
    assert not failed, res
    assert res["changed"] and res["device"].startswith("/dev/dm-") and res["commands"] == 6
    assert res["lock_wait"] >= 0
    failed, again = run_module(mod, args(host))
    assert not again["changed"] and again["device"] == res["device"] and again["commands"] == 0
    failed, gone = run_module(mod, args(host, state="absent"))
    assert not failed and gone["changed"] and gone["leftovers"] == []
    failed, again = run_module(mod, args(host, state="absent"))
    assert not failed and again["changed"] is False and again["commands"] == 0
    # multipathd remembers the WWID of every map it built (/etc/multipath/wwids), as on a real host
    after = host.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}


def test_check_mode_attach_runs_nothing(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host), check_mode=True)
    assert not failed and res["changed"] is True and res["commands"] == 0
    assert host.snapshot() == before


def test_check_mode_detach_runs_nothing(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    run_module(mod, args(host))
    snap = host.snapshot()
    failed, res = run_module(mod, args(host, state="absent"), check_mode=True)
    assert not failed and res["changed"] and res["removed"]["devices"]
    assert host.snapshot() == snap


@pytest.mark.parametrize("bad,needle", [
    (dict(portals=["10.0.0.1:99999"]), "out of range"),
    (dict(iqn=["iqn.bad"]), "malformed"),
    (dict(lun=[-3]), "out of range"),
    (dict(chap_password="only-a-secret"), "without a user name"),
    (dict(chap_username_in="u", chap_password_in="p"), "mutual CHAP needs session CHAP"),
    (dict(iface="bad iface;reboot"), "not allowed"),
    (dict(lock_timeout="soon"), "lock_timeout"),
    (dict(portals=[]), "at least one portal"),
])
def test_bad_input_fails_before_any_command(mod, host, run_module, bad, needle):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host, **bad))
    assert failed and needle in res["msg"], res
    assert all(len(r.history) == 0 for r in host.runners)
    assert host.snapshot() == before


def test_secrets_never_in_results(mod, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", "right-secret"))
    failed, res = run_module(mod, args(host, portals=[P1], chap_username="alice", chap_password="wrong-secret"))
    assert failed and "authentication failed" in res["msg"]
    assert "wrong-secret" not in json.dumps(res)
    failed, res = run_module(mod, args(host, portals=[P1], chap_username="alice", chap_password="right-secret"))
    assert not failed, res
    assert "right-secret" not in json.dumps(res)


def test_discovery_when_iqn_is_not_given(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mod, {"portals": [P1], "lock_dir": host.lock_dir, "discover": "always",
                                   "device_wait_timeout": 3, "multipath_wait_timeout": 3})
    assert not failed, res
    assert sorted(s["portal"] for s in res["sessions"]) == [P1, P2]
    assert res["multipath"] is True


# -- issue 13: identity, lock scope, session-only logout, host names --------------------------------------
def test_discovery_based_attach_locks_the_target_not_the_portal(mod, host, run_module):
    """The IQN is resolved first, then the target is locked: a detach of the same target (which holds the
    target lock) must keep a discovery-based attach out."""
    from connector.lock import HostLock, target_lock_name
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0, info="a detach of LUN 0")
    held.acquire()
    try:
        failed, res = run_module(mod, {"portals": [P1], "lun": [1], "lock_dir": host.lock_dir, "lock_timeout": 0,
                                       "multipath": "off", "device_wait_timeout": 3})
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    assert host.disks() == {}


def test_every_target_of_a_volume_is_locked(mod, host, run_module):
    from connector.lock import HostLock, target_lock_name
    iqn2 = "iqn.2003-01.org.example.array:vol1-b"
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.add_target(iqn2, portals=[P2], luns={0: 64})
    held = HostLock(target_lock_name(iqn2), lock_dir=host.lock_dir, timeout=0)
    held.acquire()
    try:
        failed, res = run_module(mod, args(host, iqn=[IQN, iqn2], lock_timeout=0, multipath="off"))
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res


def test_session_only_through_the_module(mod, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    host.login(IQN, P1, scan="manual")
    failed, res = run_module(mod, {"state": "absent", "portals": [P1], "iqn": [IQN], "session_only": True,
                                   "lock_dir": host.lock_dir})
    assert not failed and res["changed"] and host.sessions(IQN) == []
    assert host.snapshot() == before
    failed, res = run_module(mod, {"state": "absent", "portals": [P1], "iqn": [IQN], "session_only": True,
                                   "lun": [0], "lock_dir": host.lock_dir})
    assert failed and "session_only touches no LUN" in res["msg"]


def test_wwid_through_the_module(mod, host, run_module):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    w = t["luns"][0]["wwid"]
    failed, res = run_module(mod, args(host, wwid=t["luns"][0]["sysfs_wwid"]))
    assert not failed and res["wwid"] == w
    snap = host.snapshot()
    failed, res = run_module(mod, args(host, wwid="36001405" + "9" * 25))
    assert failed and w in res["msg"] and res["wwids"], res
    assert host.snapshot() == snap
    failed, res = run_module(mod, args(host, state="absent", portals=[P2], wwid=w))
    assert not failed and res["removed"]["paths_out_of_map"] and res["removed"]["maps"] == []
    assert [s["portal"] for s in host.sessions(IQN)] == [P1]


def test_a_portal_host_name_is_resolved(mod, host, run_module):
    host.add_target(IQN, portals=["127.0.0.1:3260"], luns={0: 64})
    failed, res = run_module(mod, args(host, portals=["127.0.0.1"], multipath="off"))
    assert not failed, res
    failed, res = run_module(mod, args(host, state="absent", portals=["localhost:3260"], multipath="off"))
    assert not failed and res["changed"] and res["leftovers"] == [], res
    assert host.sessions(IQN) == []


# -- issue 15: growth and dead portals through the module -------------------------------------------------
def test_a_grown_map_is_resized_under_the_target_lock(mod, host, run_module):
    from connector.lock import HostLock, target_lock_name
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, first = run_module(mod, args(host))
    host.resize_lun(IQN, 0, 128)
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0)
    held.acquire()
    try:  # the resize is a command: it waits for the target lock (the rescan alone did not)
        failed, res = run_module(mod, args(host, lock_timeout=0))
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    failed, res = run_module(mod, args(host))
    assert not failed and res["changed"] and res["resized"]["new_size"] == 128 << 20 and res["commands"] == 1
    failed, res = run_module(mod, args(host))
    assert not failed and not res["changed"] and res["commands"] == 0


def test_skip_failed_portals_for_through_the_module(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    failed, first = run_module(mod, args(host, skip_failed_portals_for=600))
    assert not failed and first["changed"] and first["failed_paths"][0]["portal"] == P2
    for _round in range(2):
        failed, again = run_module(mod, args(host, skip_failed_portals_for=600))
        assert not failed and again["changed"] is False and again["commands"] == 0, again
        assert again["failed_paths"][0]["skipped"] is True


@pytest.mark.parametrize("mode", ["flat", "SAM3-flat", "auto"])
def test_lun_addressing_through_the_module(mod, host, run_module, mode):
    host.add_target(IQN, portals=[P1, P2], luns={3: 32}, lun_addressing="flat")
    failed, res = run_module(mod, args(host, lun=[3], lun_addressing=mode))
    assert not failed and res["multipath"] and {p["lun"] for p in res["paths"]} == {16387}, res
    failed, res = run_module(mod, args(host, lun=[3], lun_addressing=mode, state="absent"))
    assert not failed and res["changed"] and res["leftovers"] == []
