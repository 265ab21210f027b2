"""Issue 21, the attach side, on the real kernel: a failed attach removes only what it made.

- item 2: the volume's map on portal 1; an attach on both portals with a wrong ``wwid`` scans the portal-2 device,
  which multipathd puts into that map; the attach fails with a mismatch, and its rollback takes that device out of
  the map and deletes it. The map that was there before is never flushed: it keeps its portal-1 path and its data,
  and a process that holds it open keeps reading.
"""
import pytest

from guestrun import sh

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
WRONG = "36001405" + "0" * 25


def maps(lab):
    """{name: [slave, ...]} of every dm-multipath map (sysfs)."""
    out = sh(lab, "for d in /sys/block/dm-*; do [ -e $d/dm/uuid ] || continue; "
                  "case $(cat $d/dm/uuid) in mpath-*) echo $(cat $d/dm/name) $(ls $d/slaves);; esac; done")
    return dict((f[0], sorted(f[1:])) for f in (line.split() for line in out.splitlines()) if f)


def portals(lab):
    """The persistent portal of every iSCSI session (sysfs), sorted."""
    out = sh(lab, "for s in /sys/class/iscsi_session/session*; do [ -e $s ] || continue; "
                  "c=$(ls -d $s/device/connection*/iscsi_connection/connection* | head -1); "
                  "echo $(cat $c/persistent_address):$(cat $c/persistent_port); done")
    return sorted(out.split())


def write_pattern(lab, dev):
    sh(lab, "dd if=/dev/urandom of=/tmp/pattern bs=1M count=1 status=none")
    sh(lab, "dd if=/tmp/pattern of=%s bs=1M oflag=direct conv=fsync status=none" % dev)
    return sh(lab, "sha256sum < /tmp/pattern").split()[0]


def read_sha(lab, dev, timeout=60):
    return sh(lab, "timeout %d dd if=%s bs=1M count=1 iflag=direct status=none | sha256sum" % (timeout, dev),
              timeout=timeout + 30).split()[0]


def slow_portal(lab, portal, delay_ms=1500):
    """Delay every packet the initiator sends to ``portal`` by ``delay_ms`` (tc netem on lo; undo with
    ``tc qdisc del dev lo root``)."""
    addr, port = portal.rsplit(":", 1)
    sh(lab, "modprobe sch_netem && tc qdisc add dev lo root handle 1: prio && "
            "tc qdisc add dev lo parent 1:3 handle 30: netem delay %dms && "
            "tc filter add dev lo parent 1:0 protocol ip prio 1 u32 match ip dst %s/32 match ip dport %s 0xffff "
            "flowid 1:3" % (delay_ms, addr, port))


@pytest.mark.parametrize("held_open", [False, True], ids=["idle-map", "open-map"])
def test_a_failed_attach_never_flushes_the_map_that_was_there(lab, gm, held_open):
    first = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "required"})
    dm, name = first["device"], first["multipath_map"]
    assert first["multipath"] and len(first["paths"]) == 1
    p1dev = first["paths"][0]["device"][5:]
    sha = write_pattern(lab, dm)
    holder = None
    if held_open:
        holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                         ">/dev/null 2>&1 & echo $!" % dm).strip()
    # portal 1 slowed down (netem on the guest's lo, packets to 127.0.0.1:3260 only): the attach's re-read of the
    # portal-1 device takes seconds, and multipathd has put the new portal-2 device into the map before the attach
    # finds the mismatch (without it the attach fails before multipathd gets to the device, and a rollback that
    # flushes every map its devices are in is not seen on the real kernel)
    slow_portal(lab, P1)
    try:
        out = gm.run("iscsi_volume", {"portals": [P1, P2], "iqn": [T], "lun": [0], "wwid": WRONG},
                     expect_fail=True)
    finally:
        sh(lab, "tc qdisc del dev lo root")
    assert out["error"] == "VolumeMismatch" and WRONG in out["msg"] and first["wwid"] in out["msg"], out
    assert not out.get("leftovers"), out
    # the map is there with its portal-1 path, serving the data; the portal-2 session the attach made is gone
    assert maps(lab) == {name: [p1dev]}
    assert portals(lab) == [P1]
    assert read_sha(lab, dm) == sha
    if holder:
        assert sh(lab, "kill -0 %s && echo alive" % holder).strip() == "alive"
        sh(lab, "kill %s" % holder)
    gone = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "state": "absent",
                                   "wwid": first["wwid"]})
    assert gone["changed"] and maps(lab) == {} and portals(lab) == []
