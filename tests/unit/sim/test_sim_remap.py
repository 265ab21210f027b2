# -*- coding: utf-8 -*-
"""A LUN number the array reuses for another volume (remap_lun): the kernel keeps the old identity until
device/rescan, then udev and multipathd see a path whose WWID changed."""
import pytest

from sim import SimError, SimHost
from simtest_util import IQN, P1, P2, links, node, sh

BYID = "/dev/disk/by-id"


def _mp(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.login(IQN, P1)
    host.login(IQN, P2)
    return t["luns"][0]


def test_remap_lun_gives_a_new_deterministic_wwid(host, tmp_path):
    old = host.add_target(IQN, portals=[P1], luns={0: 64})["luns"][0]
    new = host.remap_lun(IQN, 0)
    assert new["wwid"] != old["wwid"] and new["size_mb"] == 64
    assert new["wwid"] == "3" + new["sysfs_wwid"][4:] and new["sysfs_wwid"].startswith("naa.6001405")
    again = host.remap_lun(IQN, 0, size_mb=32)
    assert again["size_mb"] == 32 and again["wwid"] not in (old["wwid"], new["wwid"])
    # same seed, iqn, lun and generation: same WWIDs on another host
    other = SimHost(str(tmp_path / "other"))
    assert other.add_target(IQN, portals=[P1], luns={0: 64})["luns"][0] == old
    assert other.remap_lun(IQN, 0) == new
    # an unmapped LUN can be mapped again with a new volume, but needs a size
    host.unmap_lun(IQN, 0)
    with pytest.raises(SimError):
        host.remap_lun(IQN, 0)
    assert host.remap_lun(IQN, 0, size_mb=8)["wwid"] not in (old["wwid"], new["wwid"], again["wwid"])


def test_existing_devices_keep_the_old_identity_until_rescan(host):
    """Another size: the rescan's capacity change sends a uevent, and multipathd re-adds the path (lab)."""
    old = _mp(host)
    fs = host.fs
    before = host.snapshot()
    new = host.remap_lun(IQN, 0, size_mb=128)
    # the array changed, the host did not
    assert host.snapshot() == before
    assert fs.read("/sys/block/sdb/device/wwid") == old["sysfs_wwid"]
    assert fs.read("/sys/block/sdb/size") == str(64 * 2048)
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "active"}

    # device/rescan re-reads the VPD pages and the capacity
    fs.write("/sys/block/sdb/device/rescan", "1")
    assert fs.read("/sys/block/sdb/device/wwid") == new["sysfs_wwid"]
    assert fs.read("/sys/block/sdb/size") == str(128 * 2048)
    d = host.disks()["sdb"]
    assert (d["wwid"], d["sysfs_wwid"], d["size_mb"]) == (new["wwid"], new["sysfs_wwid"], 128)
    # multipathd (lab: "path wwid changed", "path removed from map"): the path leaves the old map and comes
    # back as a new path of the new WWID, which is alone (find_multipaths): no map for it
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    assert fs.listdir("/sys/block/dm-0/slaves") == ["sda"]
    assert len(host.maps()) == 1
    assert "sdb: path wwid changed from '%s' to '%s'" % (old["wwid"], new["wwid"]) in host.multipathd_log()
    # udev: the by-id links of the new WWID point at the path, the old ones at the map
    assert links(host, BYID) == {
        "scsi-" + old["wwid"]: "../../dm-0", "wwn-0x" + old["wwid"][1:]: "../../dm-0",
        "dm-name-" + old["wwid"]: "../../dm-0", "dm-uuid-mpath-" + old["wwid"]: "../../dm-0",
        "scsi-" + new["wwid"]: "../../sdb", "wwn-0x" + new["wwid"][1:]: "../../sdb"}
    # the map itself keeps its size; the other path keeps the old identity
    assert fs.read("/sys/block/dm-0/size") == str(64 * 2048)
    assert fs.read("/sys/block/sda/device/wwid") == old["sysfs_wwid"]
    # the other path, rescanned too: the unused old map is flushed, the new volume gets a map of both paths
    fs.write("/sys/block/sda/device/rescan", "1")
    (m,) = host.maps().values()
    assert m["wwid"] == new["wwid"] and sorted(m["paths"]) == ["sda", "sdb"]
    assert host.check() == []


def test_a_same_size_remap_goes_unnoticed_until_someone_looks(host):
    """The same size: no uevent after the rescan (lab), so udev and multipathd notice nothing; only
    device/wwid tells, and the map keeps routing I/O to the new volume."""
    old = _mp(host)
    new = host.remap_lun(IQN, 0)
    # iscsiadm -m session -R rescans every device of the session
    assert sh(host, "iscsiadm", "-m", "session", "-r", "1", "-R").rc == 0
    assert host.fs.read("/sys/block/sda/device/wwid") == new["sysfs_wwid"]
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "active"}
    assert host.maps()["dm-0"]["wwid"] == old["wwid"]
    assert "wwid changed" not in host.multipathd_log()
    # the other path goes away; a new scan makes a device with the new WWID that does not join the old map
    host.delete_device("sdb")
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    assert host.scan(3, lun=0) == ["sdb"]
    assert host.disks()["sdb"]["wwid"] == new["wwid"]
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    assert host.maps()["dm-0"]["wwid"] == old["wwid"] and len(host.maps()) == 1
    assert host.check() == []


def test_wwid_change_knob_readd_and_ignore(host):
    old = _mp(host)
    host.set_fault("wwid_change", "readd")
    new = host.remap_lun(IQN, 0)
    host.fs.write("/sys/block/sdb/device/rescan", "1")
    # readd: out of the old map, added again as a new path: one path, unknown WWID -> no map
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    assert host.fs.listdir("/sys/block/sdb/holders") == []
    assert host.run("multipathd", "show", "paths", "raw", "format", "%d %m")[1] == \
        "sda %s\nsdb [orphan]\n" % old["wwid"]
    assert links(host, BYID)["scsi-" + new["wwid"]] == "../../sdb"
    # ignore: no uevent reaches udev or multipathd; only sysfs changes
    host.set_fault("wwid_change", "ignore")
    host.fs.write("/sys/block/sda/device/rescan", "1")
    assert host.fs.read("/sys/block/sda/device/wwid") == new["sysfs_wwid"]
    assert host.disks()["sda"]["wwid"] == old["wwid"]
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    with pytest.raises(ValueError):
        host.set_fault("wwid_change", "explode")
    assert host.check() == []


def test_remap_without_rescan_via_the_fake_commands(host):
    old = _mp(host)
    host.remap_lun(IQN, 0)
    # what a caller sees before anyone rescans: nothing changed
    r = sh(host, "multipathd", "show", "paths", "raw", "format", "%d %w")
    assert r.stdout == "sda {0}\nsdb {0}\n".format(old["wwid"])
    assert sh(host, *node(IQN, P1, "--logout")).rc == 0
    assert host.maps()["dm-0"]["paths"] == {"sdb": "active"}
