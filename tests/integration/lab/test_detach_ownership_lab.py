"""Issue 21, the detach side, on the real kernel: only what is provably ours goes.

- item 8: a partial detach without a map keeps the by-id partition links of the path that stays (the kernel
  gives a partition no ``device/wwid``: the links must be judged by the partition's disk);
- item 14: a full detach refuses while a process holds a path device of the map open (the map flush checks the
  map only), names the holder and removes nothing; multipathd's own fds on the paths do not count.
"""
import os

from guestrun import sh

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
MP = {"portals": [P1, P2], "iqn": [T], "lun": [0]}


def sessions(lab):
    return sorted(sh(lab, "ls /sys/class/iscsi_session 2>/dev/null || true").split())


def disks(lab):
    return sorted(sh(lab, "ls /sys/block | grep '^sd' || true").split())


def maps(lab):
    out = sh(lab, "for d in /sys/block/dm-*; do [ -e $d/dm/uuid ] || continue; "
                  "case $(cat $d/dm/uuid) in mpath-*) echo $(cat $d/dm/name) $(ls $d/slaves);; esac; done")
    return dict((f[0], sorted(f[1:])) for f in (line.split() for line in out.splitlines()) if f)


def byid_target(lab, name):
    """The device a /dev/disk/by-id link resolves to ("" when the link is missing or dangling)."""
    return sh(lab, "readlink -e /dev/disk/by-id/%s || true" % name).strip()


# -- item 8 ----------------------------------------------------------------------------------------------------
def test_partial_detach_without_a_map_keeps_the_partition_links_of_the_path_that_stays(lab, gm):
    single = {"iqn": [T], "lun": [0], "multipath": "off"}
    # two plain paths of one LUN, no map: multipathd is stopped (it would build one)
    sh(lab, "systemctl stop multipathd.socket multipathd")
    try:
        first = gm.run("iscsi_volume", dict(single, portals=[P1]))
        second = gm.run("iscsi_volume", dict(single, portals=[P2]))
        sdx, sdy = first["device"], second["device"]
        assert sdx != sdy and maps(lab) == {}
        wwid = first["wwid"]
        # one partition, seen through both paths (fstab would name it by-id)
        # (parted: the guest image has no sfdisk; sectors 2048-18431, as sfdisk's start=2048, size=16384)
        sh(lab, "parted -s %s mklabel msdos mkpart primary 2048s 18431s" % sdx)
        sh(lab, "blockdev --flushbufs %s; blockdev --rereadpt %s; udevadm settle -t 30" % (sdy, sdy))
        assert sh(lab, "test -b %s1 && test -b %s1 && echo ok" % (sdx, sdy)).strip() == "ok"
        links = ["scsi-%s-part1" % wwid, "wwn-0x%s-part1" % wwid[1:]]
        assert all(byid_target(lab, link) in (sdx + "1", sdy + "1") for link in links)

        out = gm.run("iscsi_volume", dict(single, portals=[P1], state="absent"))
        sh(lab, "udevadm settle -t 30")
        assert out["leftovers"] == [] and disks(lab) == [os.path.basename(sdy)]
        assert not [link for link in out["removed"]["links"] if "-part" in link], out["removed"]["links"]
        # the links of the partition that stays are there and point at it
        for link in links:
            assert byid_target(lab, link) == sdy + "1", (link, sh(lab, "ls -l /dev/disk/by-id/"))
        assert byid_target(lab, "scsi-%s" % wwid) == sdy
        gm.run("iscsi_volume", dict(single, portals=[P2], state="absent"))
    finally:
        sh(lab, "systemctl start multipathd")


# -- item 14 ---------------------------------------------------------------------------------------------------
def test_full_detach_refuses_while_a_path_of_the_map_is_held_open(lab, gm):
    res = gm.run("iscsi_volume", MP)
    name = res["multipath_map"]
    sdx = res["paths"][1]["device"]
    holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                     ">/dev/null 2>&1 & echo $!" % sdx).strip()
    before = (sessions(lab), disks(lab), maps(lab))
    assert len(before[1]) == 2 and len(before[2][name]) == 2
    try:
        out = gm.run("iscsi_volume", dict(MP, state="absent"), expect_fail=True)
        assert out["error"] == "DeviceBusy", out
        assert "in use" in out["msg"] and sdx in out["msg"] and "pid %s" % holder in out["msg"], out["msg"]
        assert out["commands"] == 0
        # nothing was removed: not the map (no flush), not a path, not a session
        assert (sessions(lab), disks(lab), maps(lab)) == before
        assert sh(lab, "kill -0 %s && echo alive" % holder).strip() == "alive"
    finally:
        sh(lab, "kill %s" % holder, ok=(0, 1))
    # multipathd keeps every path open: once the reader is gone the same detach goes through
    out = gm.run("iscsi_volume", dict(MP, state="absent"))
    assert out["leftovers"] == [] and sessions(lab) == [] and disks(lab) == [] and maps(lab) == {}
