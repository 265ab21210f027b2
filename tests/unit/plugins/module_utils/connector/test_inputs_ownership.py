"""Issue 21, items 10-12: the inputs that say which LUNs are ours (a LUN list without portals, the LUN's
addressing) and a lock_timeout no wait can take, on the simulated host."""
import threading
import time

import pytest

from connector import iscsi, luns, paths as volume_paths
from connector.errors import InvalidInput, VolumeMismatch
from connector.lock import HostLock, LockSet, parse_lock_timeout
from connector.lockdir import DEFAULT_LOCK_DIR, MAX_LOCK_TIMEOUT, ensure_lock_dir, lock_dir_for

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def luns_on(h):
    return sorted(int(d["hctl"].split(":")[3]) for d in h.disks().values())


# -- item 10: lun: [1, 2] without portals ----------------------------------------------------------------------
def test_several_luns_without_portals_are_one_path_each():
    built = iscsi.build_paths(None, [IQN], [1, 2])
    assert [(p.portal, p.iqn, p.lun) for p in built] == [(None, IQN, 1), (None, IQN, 2)]
    # a LUN given twice is one path
    assert [p.lun for p in iscsi.build_paths(None, [IQN], [2, 2, 1])] == [2, 1]
    assert [p.lun for p in iscsi.build_paths(None, [IQN], [3])] == [3]


def test_a_detach_of_two_luns_of_one_volume_without_portals_removes_both(host):
    """One volume the array shows at two LUN numbers (1 and 2, same WWID): lun [1, 2] without portals names both
    on every session of the target; today LUN 2 stayed and the detach said it was done."""
    host.add_target(IQN, portals=[P1], luns={1: 32, 2: 32, 3: 8})
    with host.sim.locked() as st:
        lun1 = st["targets"][IQN]["luns"]["1"]
        st["targets"][IQN]["luns"]["2"].update(sysfs_wwid=lun1["sysfs_wwid"], wwid=lun1["wwid"])
    host.login(IQN, P1)
    assert luns_on(host) == [1, 2, 3]
    res = conn(host).disconnect(iscsi.build_paths(None, [IQN], [1, 2]))
    assert res["changed"] and res["leftovers"] == [], res
    assert luns_on(host) == [3]


def test_a_detach_of_two_luns_without_portals_detaches_both_or_neither(host):
    """Two LUNs of one target are two volumes: without a WWID the detach refuses (they disagree on the WWID) and
    touches nothing; it never detaches LUN 1 alone and reports success."""
    host.add_target(IQN, portals=[P1], luns={1: 32, 2: 16, 3: 8})
    host.login(IQN, P1)
    assert luns_on(host) == [1, 2, 3]
    before = host.snapshot()
    with pytest.raises(VolumeMismatch):
        conn(host).disconnect(iscsi.build_paths(None, [IQN], [1, 2]))
    assert host.snapshot() == before


def test_a_detach_of_two_luns_without_portals_and_a_wwid_removes_only_that_volume(host):
    target = host.add_target(IQN, portals=[P1], luns={1: 32, 2: 16, 3: 8})
    host.login(IQN, P1)
    wwid = target["luns"][2]["wwid"]
    res = conn(host, wwid=wwid).disconnect(iscsi.build_paths(None, [IQN], [1, 2]))
    assert res["changed"] and luns_on(host) == [1, 3]


# -- item 12: lun_addressing auto: the form of THAT LUN, never another LUN's -----------------------------------
def test_auto_addressing_prefers_the_form_the_session_shows_for_that_lun():
    assert luns.kernel_lun(1, "auto", [1, 16684]) == 1          # peripheral LUN 1 beside a flat-space LUN
    assert luns.kernel_lun(1, "auto", [16385, 2]) == 16385      # flat-space LUN 1 beside a peripheral LUN
    assert luns.kernel_lun(300, "auto", [1, 16684]) == 16684
    assert luns.kernel_lun(5, "auto", [5, 16389]) == 5          # both forms: the array's own number
    # a LUN that is not there in either form: the session's addressing is the best guess for the scan
    assert luns.kernel_lun(3, "auto", [16384]) == 16387
    assert luns.kernel_lun(3, "auto", [0, 1]) == 3
    # explicit modes are not guesses
    assert luns.kernel_lun(1, "flat", [1]) == 16385 and luns.kernel_lun(1, "peripheral", [16385]) == 1


def test_auto_addressing_detach_finds_a_peripheral_lun_beside_a_flat_space_lun(host):
    """sda is LUN 1 (peripheral); the same session shows a LUN in flat space (16684: LUN 300 of a SAM-2 array)."""
    host.add_target(IQN, portals=[P1], luns={1: 32, 16684: 16})
    host.login(IQN, P1)
    assert luns_on(host) == [1, 16684]
    c = conn(host, multipath="off")
    path = iscsi.build_paths([P1], [IQN], [1])
    assert [d.lun for entry in c.state(path) for d in entry["devices"]] == [1]
    res = c.disconnect(path)
    assert res["changed"] is True and res["leftovers"] == [], res
    assert luns_on(host) == [16684]


def test_auto_addressing_attach_rerun_finds_the_lun_beside_a_flat_space_lun(host):
    host.add_target(IQN, portals=[P1], luns={1: 32, 16684: 16})
    host.login(IQN, P1)
    c = conn(host, multipath="off")
    res = c.connect(iscsi.build_paths([P1], [IQN], [1]))
    assert res["changed"] is False and c.runner.history == [] and res["paths"][0]["lun"] == 1
    assert luns_on(host) == [1, 16684]


def test_auto_addressing_facts_and_detach_agree_on_the_lun(host):
    """The volume query of the facts (paths.py) and the detach plan name the same device for LUN 1."""
    host.add_target(IQN, portals=[P1], luns={1: 32, 16684: 16})
    host.login(IQN, P1)
    c = conn(host, multipath="off")
    path = iscsi.build_paths([P1], [IQN], [1])
    facts = volume_paths.gather(host.fs, volume={"portals": [P1], "iqn": IQN, "lun": 1}, orphans=False)
    planned = c.plan_disconnect(path).to_dict()["devices"]
    assert planned and sorted(row["device"] for row in facts["volume"]["devices"]) == sorted(planned)


# -- item 11: a lock_timeout no wait can take -------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e10, "1e10", 10 ** 12, 10 ** 400, 1e300, threading.TIMEOUT_MAX, MAX_LOCK_TIMEOUT + 1],
                         ids=["1e10", "text-1e10", "10**12", "10**400", "1e300", "TIMEOUT_MAX", "max+1"])
def test_a_lock_timeout_over_the_maximum_is_refused_with_a_message(value):
    with pytest.raises(InvalidInput) as ei:
        parse_lock_timeout(value)
    assert "at most" in str(ei.value) and "patient" in str(ei.value)


def test_the_maximum_lock_timeout_is_accepted_and_every_wait_can_take_it():
    assert parse_lock_timeout(MAX_LOCK_TIMEOUT) == MAX_LOCK_TIMEOUT
    assert MAX_LOCK_TIMEOUT < threading.TIMEOUT_MAX


def test_a_held_lock_with_a_huge_timeout_is_an_input_error_not_an_overflow(tmp_path):
    holder = HostLock("t", lock_dir=str(tmp_path), timeout=0)
    holder.acquire()
    try:
        for make in (lambda: HostLock("t", lock_dir=str(tmp_path), timeout=1e10),
                     lambda: LockSet(["t"], lock_dir=str(tmp_path), timeout=1e10)):
            with pytest.raises(InvalidInput):
                make()
    finally:
        holder.release()


# -- item 18: the default lock directory of a host below another root -------------------------------------------
def test_the_default_lock_dir_follows_the_hosts_root(tmp_path, monkeypatch):
    monkeypatch.delenv("BRICK_STORAGE_ROOT", raising=False)
    assert lock_dir_for(None) == lock_dir_for(DEFAULT_LOCK_DIR) == DEFAULT_LOCK_DIR == "/run/brick-storage"
    monkeypatch.setenv("BRICK_STORAGE_ROOT", "/")
    assert lock_dir_for(None) == DEFAULT_LOCK_DIR
    root = tmp_path / "host"
    (root / "run").mkdir(parents=True)
    monkeypatch.setenv("BRICK_STORAGE_ROOT", str(root))
    below = str(root / "run" / "brick-storage")
    assert lock_dir_for(None) == lock_dir_for(DEFAULT_LOCK_DIR) == below
    assert lock_dir_for("/srv/locks") == "/srv/locks"  # a directory given is used as it is
    assert HostLock("x").lock_dir == below and ensure_lock_dir() == below
    with HostLock("x", timeout=0):
        assert "x.seq" in [p.name for p in (root / "run" / "brick-storage").iterdir()]
