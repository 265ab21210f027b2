"""Issue 21, the detach side: only what is provably ours goes, and the report says exactly what went.

- item 8: a partial detach without a map keeps the partition links of the path that stays (a partition has no
  ``device/wwid`` in sysfs: it is judged by its disk);
- item 13: ``changed`` and ``removed`` say what really happened, and check mode predicts the real run;
- item 14: a full detach refuses a path of the flushed map that a process holds open.
"""
import os
import time

import pytest

from sim import SimHost
from connector import iscsi
from connector.errors import DeviceBusy

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
BYID = "/dev/disk/by-id"


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0):
    return iscsi.build_paths(portals, [IQN], [lun])


def byid_links(h):
    """{link name: device it points at} of /dev/disk/by-id."""
    return {name: h.fs.basename_of_link("%s/%s" % (BYID, name)) for name in h.fs.listdir(BYID)}


@pytest.fixture
def nomap_host(tmp_path):
    """A simulated host without multipathd: two paths of one volume stay two plain disks."""
    h = SimHost(str(tmp_path / "host"), multipathd=False)
    h.set_fault("time_scale", 0.01)
    return h


# -- item 8: partition links of the path that stays --------------------------------------------------
def test_sim_partition_has_no_device_wwid(nomap_host):
    """As on the real kernel: sdb1 has no device/ link, so no device/wwid (its disk has one)."""
    nomap_host.add_target(IQN, portals=[P1], luns={0: 64})
    dev = conn(nomap_host, multipath="off").connect(paths([P1]))["device"]
    part = nomap_host.add_partition(dev, 1, 16)
    name = os.path.basename(part)
    assert not nomap_host.fs.exists("/sys/class/block/%s/device/wwid" % name)
    assert nomap_host.fs.exists("/sys/class/block/%s/device/wwid" % os.path.basename(dev))


def test_partial_detach_without_map_keeps_partition_links_of_the_staying_path(nomap_host):
    h = nomap_host
    h.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = conn(h, multipath="off").connect(paths([P1]))
    second = conn(h, multipath="off").connect(paths([P2]))
    for dev in (first["device"], second["device"]):
        h.add_partition(dev, 1, 16)
    wwid = first["wwid"]
    assert byid_links(h)["scsi-%s-part1" % wwid] == os.path.basename(first["device"]) + "1"

    out = conn(h, multipath="off").disconnect(paths([P1]))

    staying = os.path.basename(second["device"])
    links = byid_links(h)
    # udev moved every by-id link to the path that stays: they are valid and must stay
    assert links.get("scsi-%s" % wwid) == staying
    assert links.get("scsi-%s-part1" % wwid) == staying + "1", links
    assert links.get("wwn-0x%s-part1" % wwid[1:]) == staying + "1", links
    assert out["removed"]["links"] == []
    assert out["leftovers"] == []


# -- item 14: a process holding a path of the map being flushed ---------------------------------------
def test_full_detach_refuses_a_path_of_the_flushed_map_held_open(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = conn(host).connect(paths([P1, P2]))
    path_dev = res["paths"][1]["device"]
    host.hold_open(path_dev, pid=4242, comm="dd")
    snap = host.snapshot()
    c = conn(host)
    with pytest.raises(DeviceBusy) as err:
        c.disconnect(paths([P1, P2]))
    assert "4242" in str(err.value) and "dd" in str(err.value) and path_dev in str(err.value)
    assert err.value.details["device"] == path_dev
    assert c.runner.history == []          # refused before any command: no flush, no delete, no logout
    assert host.snapshot() == snap


def test_full_detach_with_force_goes_on_past_a_held_path_and_says_so(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = conn(host).connect(paths([P1, P2]))
    path_dev = res["paths"][0]["device"]
    host.hold_open(path_dev, pid=4243, comm="dd")
    out = conn(host).disconnect(paths([P1, P2]), force=True)
    assert out["leftovers"] == []
    assert any("4243" in problem and path_dev in problem for problem in out["problems"]), out["problems"]


def test_multipathd_holding_the_paths_does_not_block_a_full_detach(host):
    """multipathd's path checker keeps every path open: that is not a user of the volume."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = conn(host).connect(paths([P1, P2]))
    daemon = int(host.fs.read("/run/multipathd.pid"))
    for path in res["paths"]:
        host.hold_open(path["device"], pid=daemon, comm="multipathd")
    out = conn(host).disconnect(paths([P1, P2]))
    assert out["leftovers"] == [] and out["problems"] == []
    assert sorted(out["deleted"]) == sorted(path["device"] for path in res["paths"])


# -- item 13: the report says what really happened --------------------------------------------------------
def _lun_appears_before_the_logout(monkeypatch, h, lun):
    """Another attach (or the array's REPORTED LUNS DATA CHANGED) scans ``lun`` on the session between the
    deletes and the logouts: the last step before the logouts is where it lands."""
    from connector import detach
    original = detach.Detacher._drop_failed_maps

    def drop_then_scan(self, plan):
        original(self, plan)
        for session in h.sessions(iqn=IQN):
            h.scan(session["host"], lun=lun)
    monkeypatch.setattr(detach.Detacher, "_drop_failed_maps", drop_then_scan)


def record_names(h):
    return sorted(h.fs.listdir("/etc/iscsi/nodes/%s" % IQN))


def test_lun_appears_before_the_logout_of_a_session_that_carried_nothing(monkeypatch, host):
    """Nothing but the logout and the record were planned; a LUN appears first: nothing is done, and the
    report says so (no change, no record listed as deleted)."""
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    dev = conn(host, multipath="off").connect(paths([P1]))["device"]
    host.delete_device(dev)                 # the volume's device is gone already: the session carries nothing
    records = record_names(host)
    _lun_appears_before_the_logout(monkeypatch, host, 1)
    c = conn(host, multipath="off")
    out = c.disconnect(paths([P1]))
    assert c.runner.history == []           # no logout, no record delete: the session now carries LUN 1
    assert out["changed"] is False, out
    assert out["removed"]["logout"] == [] and out["removed"]["node_records"] == [], out["removed"]
    assert any("appeared" in kept for kept in out["removed"]["kept_sessions"])
    assert record_names(host) == records and len(host.sessions(iqn=IQN)) == 1


def test_lun_appears_before_the_logout_the_record_is_not_listed_as_deleted(monkeypatch, host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    dev = conn(host, multipath="off").connect(paths([P1]))["device"]
    records = record_names(host)
    _lun_appears_before_the_logout(monkeypatch, host, 1)
    out = conn(host, multipath="off").disconnect(paths([P1]))
    assert out["changed"] is True and out["deleted"] == [dev]      # the device did go
    assert out["removed"]["logout"] == [] and out["removed"]["node_records"] == [], out["removed"]
    assert record_names(host) == records


def test_changed_means_a_command_or_a_write_happened(host):
    """The plain detach still reports what it removed."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    out = conn(host, multipath="off").disconnect(paths([P1]))
    assert out["changed"] is True
    assert out["removed"]["logout"] == ["%s %s" % (P1, IQN)] and out["removed"]["node_records"] == ["%s %s" % (P1, IQN)]
    assert not host.fs.exists("/etc/iscsi/nodes/%s" % IQN) or record_names(host) == []
