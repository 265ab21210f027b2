# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 21, items 10-12 through the modules' main(): a LUN list without portals, lock_timeout values no wait can
take, lun_addressing auto beside a flat-space LUN, on the simulated host."""

import os
import time

import pytest

from connector import iscsi
from connector.lock import HostLock
from connector.lockdir import HOST_LOCK, MAX_LOCK_TIMEOUT, target_lock_name
from unit.plugins.modules.modtest_util import import_collection_module

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
HUGE = [1e10, "1e10", 10 ** 12, 10 ** 400, MAX_LOCK_TIMEOUT + 1]
HUGE_IDS = ["1e10", "text-1e10", "10**12", "10**400", "max+1"]


@pytest.fixture(scope="module")
def mods():
    pytest.importorskip("ansible")
    return dict((name, import_collection_module(name)) for name in ("iscsi_volume", "multipath_flush"))


@pytest.fixture
def host(host, mods):
    for module in mods.values():
        host.wire(module)
    return host


def vol(h, **kw):
    a = {"portals": [P1, P2], "iqn": [IQN], "lun": [0], "lock_dir": h.lock_dir,
         "device_wait_timeout": 3, "multipath_wait_timeout": 3}
    a.update(kw)
    return a


def luns_on(h):
    return sorted(int(d["hctl"].split(":")[3]) for d in h.disks().values())


# -- item 11 --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
@pytest.mark.parametrize("state", ["present", "absent"])
def test_iscsi_volume_huge_lock_timeout_while_the_lock_is_held_is_an_input_error(mods, host, run_module, value, state):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    holder = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0)
    holder.acquire()
    try:
        failed, res = run_module(mods["iscsi_volume"], vol(host, state=state, lock_timeout=value))
    finally:
        holder.release()
    assert failed and res["error"] == "InvalidInput", res
    assert "lock_timeout" in res["msg"] and "at most 604800 seconds" in res["msg"] and "patient" in res["msg"]
    assert res["commands"] == 0 and host.commands() == [] and host.snapshot() == before


@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
def test_multipath_flush_huge_lock_timeout_while_the_lock_is_held_is_an_input_error(mods, host, run_module, value):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    c = iscsi.Connector(host.fs, host.runner(), poll=0.01, device_wait=2, multipath_wait=2,
                        sleep=lambda s: time.sleep(min(s, 0.02)))
    dm_map = c.connect(iscsi.build_paths([P1, P2], [IQN], [0]))["multipath_map"]
    before = host.snapshot()
    holders = [HostLock(name, lock_dir=host.lock_dir, timeout=0) for name in (target_lock_name(IQN), HOST_LOCK)]
    for lock in holders:
        lock.acquire()
    try:
        failed, res = run_module(mods["multipath_flush"], {"map": dm_map, "lock_dir": host.lock_dir,
                                                           "lock_timeout": value})
    finally:
        for lock in holders:
            lock.release()
    assert failed and res["error"] == "InvalidInput", res
    assert "lock_timeout" in res["msg"] and "patient" in res["msg"]
    assert host.snapshot() == before


def test_the_maximum_lock_timeout_works_like_a_long_one(mods, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mods["iscsi_volume"], vol(host, lock_timeout=MAX_LOCK_TIMEOUT))
    assert not failed and res["changed"], res


# -- item 10 --------------------------------------------------------------------------------------------------------
def _one_volume_at_luns_1_and_2(h):
    h.add_target(IQN, portals=[P1], luns={1: 32, 2: 32, 3: 8})
    with h.sim.locked() as st:
        lun1 = st["targets"][IQN]["luns"]["1"]
        st["targets"][IQN]["luns"]["2"].update(sysfs_wwid=lun1["sysfs_wwid"], wwid=lun1["wwid"])
    h.login(IQN, P1)


def test_detach_without_portals_of_two_luns_removes_both(mods, host, run_module):
    _one_volume_at_luns_1_and_2(host)
    assert luns_on(host) == [1, 2, 3]
    args = {"state": "absent", "iqn": [IQN], "lun": [1, 2], "lock_dir": host.lock_dir}
    failed, predicted = run_module(mods["iscsi_volume"], args, check_mode=True)
    assert not failed and len(predicted["removed"]["devices"]) == 2, predicted
    failed, res = run_module(mods["iscsi_volume"], args)
    assert not failed and res["changed"] and res["leftovers"] == [], res
    assert luns_on(host) == [3]


def test_detach_without_portals_of_two_volumes_is_refused_and_touches_nothing(mods, host, run_module):
    host.add_target(IQN, portals=[P1], luns={1: 32, 2: 16})
    host.login(IQN, P1)
    before = host.snapshot()
    failed, res = run_module(mods["iscsi_volume"], {"state": "absent", "iqn": [IQN], "lun": [1, 2],
                                                    "lock_dir": host.lock_dir})
    assert failed and res["error"] == "VolumeMismatch" and "wwid" in res["msg"], res
    assert host.snapshot() == before


# -- item 12 --------------------------------------------------------------------------------------------------------
def test_auto_addressing_detach_of_lun_1_beside_a_flat_space_lun(mods, host, run_module):
    host.add_target(IQN, portals=[P1], luns={1: 32, 16684: 16})
    host.login(IQN, P1)
    failed, res = run_module(mods["iscsi_volume"], vol(host, portals=[P1], lun=[1], state="absent",
                                                       lun_addressing="auto"))
    assert not failed and res["changed"] is True and res["leftovers"] == [], res
    assert luns_on(host) == [16684]


# -- item 18: the suite never touches the machine's own /run/brick-storage -------------------------------------------
def test_the_default_lock_dir_of_a_simulated_host_is_below_its_root(mods, host, run_module):
    """BRICK_STORAGE_ROOT (set by the host fixture) is the host's tree: the default lock directory is its
    /run/brick-storage, so a module run with the default lock_dir leaves the machine's /run alone."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    args = vol(host, portals=[P1])
    del args["lock_dir"]
    failed, res = run_module(mods["iscsi_volume"], args)
    assert not failed and res["changed"], res
    locks = os.path.join(host.root, "run", "brick-storage")
    assert target_lock_name(IQN) + ".seq" in os.listdir(locks)
    assert oct(os.stat(locks).st_mode & 0o777) == "0o700"
