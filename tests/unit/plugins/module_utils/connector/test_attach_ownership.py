"""An attach touches only what it created (issue 21, items 2, 3 and 9), on the simulated host.

* A failed attach's rollback takes the devices it scanned out of a map that was there before and deletes them; it
  never flushes that map.
* A map whose WWID is not the volume's is never returned: a LUN the array reused behind an old map is refused,
  and the old map is left as it was.
* Portals attached in parallel threads share the modules' node lock (one HostLock object, not re-entrant): they
  wait for each other instead of failing with "already held by this object".
"""
import socket
import time

import pytest

from connector import iscsi
from connector.errors import VolumeMismatch
from connector.lock import HostLock

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2, P3, P4 = "10.0.0.1:3260", "10.0.0.2:3260", "10.0.0.3:3260", "10.0.0.4:3260"
WRONG = "36001405" + "0" * 25


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0, **kw):
    return iscsi.build_paths(portals, [IQN], [lun], **kw)


def sd_of(h, portal, lun=0):
    return [name for name, disk in h.disks().items() if disk["portal"] == portal and disk["lun"] == lun]


def slaves(h, dm):
    return sorted(h.fs.listdir("/sys/block/%s/slaves" % dm))


def argvs(c):
    return [entry["argv"] for entry in c.runner.history]


def map_on_p1(h):
    """The volume's map on P1 only (multipath=required makes one for a single path): (dm, its path, result)."""
    res = conn(h, multipath="required").connect(paths([P1]))
    assert res["multipath"], res
    keep, = sd_of(h, P1)
    return res["device"][5:], keep, res


# -- item 2: the rollback never flushes a map that was there before -------------------------------------------
@pytest.mark.parametrize("held_open", [False, True], ids=["idle-map", "open-map"])
def test_a_failed_attach_takes_its_path_out_of_the_map_that_was_there_and_keeps_it(host, held_open):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    dm, keep, first = map_on_p1(host)
    if held_open:
        host.hold_open(first["device"], pid=4242, comm="qemu")
    c = conn(host, wwid=WRONG)
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert WRONG in str(ei.value) and first["wwid"] in str(ei.value)
    # the map of the other volume is still there, with its path, serving; it was never flushed
    assert host.fs.exists("/sys/block/%s" % dm) and slaves(host, dm) == [keep]
    assert host.maps()[dm]["paths"] == {keep: "active"}
    assert not any(argv[:2] == ["multipath", "-f"] for argv in argvs(c)), argvs(c)
    # what the attach made is gone: the P2 device (taken out of the map first), its session, its record
    assert sd_of(host, P2) == [] and [s["portal"] for s in host.sessions(IQN)] == [P1]
    dels = [argv for argv in argvs(c) if argv[:3] == ["multipathd", "del", "path"]]
    assert len(dels) == 1 and dels[0][3] != "/dev/" + keep, argvs(c)
    assert "leftovers" not in ei.value.details
    # a re-run with the right WWID finds the volume as it was, with no command
    again = conn(host, wwid=first["wwid"])
    res = again.connect(paths([P1]))
    assert res["changed"] is False and res["device"] == first["device"] and again.runner.history == []


def test_a_failed_attach_still_flushes_the_map_it_made_itself(host):
    """The other side of the rule: a map that only this attach's devices formed is the attach's to remove."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    c = conn(host, wwid=WRONG)
    with pytest.raises(VolumeMismatch):
        c.connect(paths([P1, P2]))
    assert ["multipath", "-f"] in [argv[:2] for argv in argvs(c)]
    assert host.maps() == {} and host.disks() == {} and host.sessions(IQN) == []


# -- item 3: a reused LUN behind an old map, and a new portal ---------------------------------------------------
def test_a_reused_lun_with_a_new_portal_is_refused_and_the_old_map_is_left_alone(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    dm, keep, first = map_on_p1(host)
    new = host.remap_lun(IQN, 0)   # same size: no uevent, the old map keeps its path
    c = conn(host, wwid=new["wwid"])
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    text = str(ei.value)
    assert first["wwid"] in text and new["wwid"] in text and first["multipath_map"] in text
    assert ei.value.details["map_wwid"] == first["wwid"]
    # the old map is as it was, and nothing of the attach is left (the P2 device, session and record)
    assert slaves(host, dm) == [keep] and host.maps()[dm]["paths"] == {keep: "active"}
    assert not any(argv[:2] == ["multipath", "-f"] for argv in argvs(c)), argvs(c)
    assert sd_of(host, P2) == [] and [s["portal"] for s in host.sessions(IQN)] == [P1]
    assert "leftovers" not in ei.value.details


def test_a_reused_lun_without_a_wwid_is_refused_when_the_paths_disagree_with_their_map(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    dm, keep, first = map_on_p1(host)
    host.remap_lun(IQN, 0)
    c = conn(host)
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert first["multipath_map"] in str(ei.value)
    assert slaves(host, dm) == [keep] and sd_of(host, P2) == []


def test_the_map_wait_never_returns_a_map_of_another_wwid(host):
    """Below the identity check: the map wait itself accepts only a map that serves the volume's WWID."""
    from connector import attach
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    dm, keep, first = map_on_p1(host)
    new = host.remap_lun(IQN, 0)
    c = conn(host, wwid=new["wwid"], multipath_wait=0.3)
    host.fs.write("/sys/block/%s/device/rescan" % keep, "1")
    dev = [d for d in iscsi.scsi.session_devices(host.fs, c.sessions_for(paths([P1])[0])[0]) if d.name == keep][0]
    assert dev.wwid == new["wwid"]
    waiter = attach.Attacher(c, c.db, paths([P1]), True, attach.AttachJournal())
    assert waiter._wait_map([dev], 1) is None
    assert slaves(host, dm) == [keep]


# -- item 9: parallel threads and the one node-lock object --------------------------------------------------------
def fake_resolver(table):
    def resolve(name, port, family=0, kind=0):
        if name not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port)) for addr in table[name]]
    return resolve


class SlowHostLock(HostLock):
    """The modules' node lock, held 0.3 s each time: two threads that need it at once overlap a holder."""

    def acquire(self):
        waited = super().acquire()
        time.sleep(0.3)
        return waited


def test_parallel_host_name_portals_whose_first_address_is_dead_wait_for_the_node_lock(host, tmp_path):
    host.add_target(IQN, portals=[P3, P4], luns={0: 64})   # nothing listens on P1 and P2
    names = fake_resolver({"array-a.example": ["10.0.0.1", "10.0.0.3"],
                           "array-b.example": ["10.0.0.2", "10.0.0.4"]})
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    node_lock = SlowHostLock("iscsi-node-db", lock_dir=str(lock_dir), timeout=10)
    c = conn(host, node_lock=node_lock, login_timeout=1)
    res = c.connect(paths(["array-a.example", "array-b.example"], resolver=names))
    assert not any("already held" in w for w in c.warnings), c.warnings
    assert res["failed_paths"] == [] and res["multipath"], res
    assert sorted(s["portal"] for s in host.sessions(IQN)) == [P3, P4]
    assert len(slaves(host, res["device"][5:])) == 2
    assert not node_lock.locked


def test_the_node_lock_wait_of_a_thread_is_bounded(tmp_path):
    from connector import attach
    from connector.errors import LockTimeout
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    inner = HostLock("iscsi-node-db", lock_dir=str(lock_dir), timeout=0)
    assert attach.ThreadSharedLock(inner).timeout == attach.ThreadSharedLock.MIN_WAIT   # lock_timeout 0: threads wait
    assert attach.ThreadSharedLock(HostLock("x", lock_dir=str(lock_dir), timeout=None)).timeout == 300
    shared = attach.ThreadSharedLock(inner, timeout=0.2)
    shared.acquire()
    try:
        errors = []

        def other():
            try:
                shared.acquire()
            except LockTimeout as err:
                errors.append(err)
        started = time.monotonic()
        import threading
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
        assert errors and time.monotonic() - started < 3
        assert "iscsi-node-db" in str(errors[0])
    finally:
        shared.release()
    shared.acquire()   # free again: the next one gets it at once
    shared.release()


def test_a_rerun_refuses_a_path_that_sits_in_the_old_map_of_a_reused_lun(host):
    """The re-run (nothing to do?) looks at the map of every path, not only the first one's."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = conn(host, multipath="required").connect(paths([P2]))
    dm, stale = res["device"][5:], sd_of(host, P2)[0]
    new = host.remap_lun(IQN, 0)
    conn(host, multipath="off", wwid=new["wwid"]).connect(paths([P1]))   # the new volume on P1, no map
    snap = host.snapshot()
    c = conn(host, wwid=new["wwid"])
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert res["multipath_map"] in str(ei.value) and res["wwid"] in str(ei.value)
    assert c.runner.history == [] and slaves(host, dm) == [stale]
    assert {k: v for k, v in host.snapshot().items() if not k.endswith("/wwid")} == \
        {k: v for k, v in snap.items() if not k.endswith("/wwid")}


def test_an_attach_with_a_new_wwid_refuses_the_old_map_before_any_rescan(host):
    """The fuzzer's case: a map of W0 over both paths, the array re-maps the LUN (another size) to X, an attach with
    wwid X.  Its paths sit in W0's map: another volume's, refused before the rescan.  A rescan would read the new
    capacity and WWID, and multipathd would take both paths out of W0's map and flush it (kernel 6.1, 0.9.4)."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = conn(host).connect(paths([P1, P2]))
    dm = first["device"][5:]
    before = slaves(host, dm)
    new = host.remap_lun(IQN, 0, size_mb=128)
    c = conn(host, wwid=new["wwid"])
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert "another volume's map" in str(ei.value) and first["wwid"] in str(ei.value)
    assert host.fs.exists("/sys/block/%s" % dm) and slaves(host, dm) == before
    assert c.runner.history == []
    # the kernel still shows the old identity: nothing was rescanned
    assert all(disk["wwid"] == first["wwid"] for disk in host.disks().values())
