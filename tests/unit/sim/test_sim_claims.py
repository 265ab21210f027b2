# -*- coding: utf-8 -*-
"""A path device that is claimed (mounted, swap, a busy partition, an exclusive open) cannot be loaded into a
dm-multipath table: a new map that would include it is not made at all, an existing map does not take it
(both as on the lab).  And `multipathd del path` takes exactly one path out of its map."""
from simtest_util import IQN, P1, P2, links, sh

BYID = "/dev/disk/by-id"


def _two_paths(host, luns=None):
    t = host.add_target(IQN, portals=[P1, P2], luns=luns or {0: 64})
    host.login(IQN, P1, scan="manual")
    host.login(IQN, P2, scan="manual")
    return t["luns"][0]["wwid"]


def test_a_mounted_path_keeps_a_new_map_from_forming(host):
    """Lab (multipath-tools 0.9.4): LUN 1 mounted through P1, then P2's path appears: multipathd's table load
    of both paths fails with EBUSY ("failed in domap for addition of new path sdb"), no map is made, both
    paths stay plain sd devices ("orphan"), and the WWID is not recorded."""
    wwid = _two_paths(host)
    fs = host.fs
    assert host.scan(2, lun=0) == ["sda"]
    host.mount("/dev/sda", "/mnt/direct")
    assert host.scan(3, lun=0) == ["sdb"]
    assert host.maps() == {}
    assert fs.listdir("/sys/block/sda/holders") == [] and fs.listdir("/sys/block/sdb/holders") == []
    assert "/%s/" % wwid not in (fs.read("/etc/multipath/wwids") or "")
    assert any("failed in domap for addition of new path" in ln and "Device or resource busy" in ln
               for ln in host.multipathd_log())
    assert host.run("multipathd", "show", "paths", "raw", "format", "%d %m")[1] == "sda [orphan]\nsdb [orphan]\n"
    # multipathd add path of the free path fails too (the map would take both), as on the lab
    assert sh(host, "multipathd", "add", "path", "/dev/sdb").stdout == "fail\n"
    assert sh(host, "multipathd", "add", "path", "/dev/sda").rc == 1
    # once unmounted, adding a path builds the map of both
    host.umount("/mnt/direct")
    assert host.run("multipathd", "add", "path", "/dev/sda") == (0, "ok\n", "")
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    assert links(host, BYID)["scsi-" + wwid] == "../../dm-0"
    assert host.check() == []


def test_exclusive_open_and_swap_claim_a_path_too(host):
    wwid = _two_paths(host)
    host.scan(2, lun=0)
    host.swapon("/dev/sda")
    pid = host.hold_open("/dev/sda", exclusive=True)
    assert host.scan(3, lun=0) == ["sdb"]
    assert host.maps() == {}
    assert host.run("multipathd", "reconfigure")[0] == 0
    assert host.maps() == {} and "/%s/" % wwid not in (host.fs.read("/etc/multipath/wwids") or "")
    host.swapoff("/dev/sda")
    assert host.run("multipathd", "add", "path", "/dev/sdb") == (1, "fail\n", "")  # still held O_EXCL
    host.release(pid)
    assert host.run("multipathd", "add", "path", "/dev/sdb") == (0, "ok\n", "")
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    assert host.check() == []


def test_busy_partition_claims_the_disk_and_a_plain_open_does_not(host):
    wwid = _two_paths(host)
    host.scan(2, lun=0)
    host.add_partition("/dev/sda", 1, 16)
    host.mount("/dev/sda1", "/boot")
    host.hold_open("/dev/sda", comm="cat")  # not exclusive: does not prevent joining
    assert host.fs.open_exclusive("/dev/sda") == "EBUSY"
    host.scan(3, lun=0)
    assert host.maps() == {}
    host.umount("/boot")
    assert host.fs.open_exclusive("/dev/sda") is None
    assert host.run("multipathd", "add", "path", "/dev/sda") == (0, "ok\n", "")
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    # a claimed third path of a volume that has a map does not join it (the map stays as it is)
    host.add_target(IQN, portals=[P1, P2, "10.0.0.3:3260"], luns={0: 64})
    host.login(IQN, "10.0.0.3:3260", scan="manual")
    host.scan(4, lun=0)  # sdc: free, joins at once
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb", "sdc"]
    assert host.run("multipathd", "del", "path", "/dev/sdc")[0] == 0
    host.hold_open("/dev/sdc", exclusive=True)
    assert host.run("multipathd", "add", "path", "/dev/sdc") == (1, "fail\n", "")
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    assert links(host, BYID)["scsi-" + wwid] == "../../dm-0"
    assert host.check() == []


def test_del_path_takes_out_exactly_that_path_even_from_an_open_map(host):
    wwid = _two_paths(host)
    host.scan(2, lun=0)
    host.scan(3, lun=0)
    fs = host.fs
    host.mount("/dev/mapper/" + wwid, "/data")
    r = sh(host, "multipathd", "del", "path", "/dev/sdb")
    assert (r.rc, r.stdout) == (0, "ok\n")
    m = host.maps()["dm-0"]
    assert m["paths"] == {"sda": "active"} and fs.listdir("/sys/block/dm-0/slaves") == ["sda"]
    assert fs.listdir("/sys/block/sdb/holders") == [] and "sdb" in host.disks()
    assert links(host, BYID)["scsi-" + wwid] == "../../dm-0"
    snap = host.snapshot()
    # the device's delete afterwards does not touch the map
    fs.write("/sys/block/sdb/device/delete", "1")
    d = host.diff(snap, host.snapshot())
    assert not [p for p in d["added"] + d["removed"] + d["changed"] if "dm-0" in p or "/dev/mapper" in p], str(d)
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
    # the last path of an open map: the map stays, without slaves; deleting the device then changes nothing
    assert host.run("multipathd", "del", "path", "/dev/sda") == (0, "ok\n", "")
    assert host.maps()["dm-0"]["paths"] == {} and fs.listdir("/sys/block/dm-0/slaves") == []
    host.delete_device("sda")
    assert "dm-0" in host.maps() and fs.readlink("/dev/mapper/" + wwid) == "../dm-0"
    assert host.check() == []
    # unmounted, the empty map is flushed by `multipath -f`
    host.umount("/data")
    assert host.run("multipath", "-f", wwid)[0] == 0 and host.maps() == {}


def test_del_path_of_the_last_path_of_an_unused_map_flushes_it(host):
    wwid = _two_paths(host)
    host.scan(2, lun=0)
    host.scan(3, lun=0)
    assert host.run("multipathd", "del", "path", "/dev/sda")[0] == 0
    assert host.run("multipathd", "del", "path", "/dev/sdb")[0] == 0
    assert host.maps() == {} and sorted(host.disks()) == ["sda", "sdb"]
    assert links(host, BYID)["scsi-" + wwid] == "../../sda"
    # multipathd forgot both: not listed, a second del fails; reconfigure finds them again
    assert host.run("multipathd", "show", "paths", "raw", "format", "%d")[1] == ""
    assert host.run("multipathd", "del", "path", "/dev/sda") == (1, "fail\n", "")
    assert host.run("multipathd", "reconfigure")[0] == 0
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    assert host.check() == []
