"""Never touch another volume, proven on the real kernel (issue 13).

Every test drives the real modules inside the guest (guestrun.py: the same code, locks and argument specs
that Ansible runs) and then checks the kernel itself: sessions in /sys/class/iscsi_session, devices in
/sys/block, maps with dmsetup, and data read back through the device.
"""
import json
import time

import pytest

from guestrun import sh

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
MP = {"portals": [P1, P2], "iqn": [T], "lun": [0]}


def sessions(lab):
    """{sid: "addr:port"} of every iSCSI session (sysfs)."""
    out = sh(lab, "for s in /sys/class/iscsi_session/session*; do [ -e $s ] || continue; "
                  "c=$(ls -d $s/device/connection*/iscsi_connection/connection* | head -1); "
                  "echo ${s##*session} $(cat $c/persistent_address):$(cat $c/persistent_port) $(cat $s/state); done")
    return dict((int(line.split()[0]), line.split()[1]) for line in out.splitlines() if line.strip())


def disks(lab):
    """{sdX: (hctl, wwid)} of every SCSI disk (sysfs)."""
    out = sh(lab, "for d in /sys/block/sd*; do [ -e $d ] || continue; "
                  "echo ${d##*/} $(basename $(readlink -f $d/device)) $(cat $d/device/wwid); done")
    return dict((f[0], (f[1], f[2])) for f in (line.split() for line in out.splitlines()) if len(f) == 3)


def maps(lab):
    """{name: [slave, ...]} of every dm-multipath map (dmsetup + sysfs)."""
    out = sh(lab, "for d in /sys/block/dm-*; do [ -e $d/dm/uuid ] || continue; "
                  "case $(cat $d/dm/uuid) in mpath-*) echo $(cat $d/dm/name) $(ls $d/slaves);; esac; done")
    return dict((f[0], sorted(f[1:])) for f in (line.split() for line in out.splitlines()) if f)


def udev_wwid(sysfs):
    return "3" + sysfs[len("naa."):] if sysfs.startswith("naa.") else sysfs


def write_pattern(lab, dev, mib=1):
    """Write random data to the start of ``dev`` (direct I/O) and return its sha256."""
    sh(lab, "dd if=/dev/urandom of=/tmp/pattern bs=1M count=%d status=none" % mib)
    sh(lab, "dd if=/tmp/pattern of=%s bs=1M oflag=direct conv=fsync status=none" % dev)
    return sh(lab, "sha256sum < /tmp/pattern").split()[0]


def read_sha(lab, dev, mib=1, timeout=60):
    return sh(lab, "timeout %d dd if=%s bs=1M count=%d iflag=direct status=none | sha256sum" % (timeout, dev, mib),
              timeout=timeout + 30).split()[0]


def wait_for(fn, timeout=60, every=0.5, what="condition"):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < end, "timed out after %ss waiting for %s" % (timeout, what)
        time.sleep(every)


# -- a reused LUN number ------------------------------------------------------------------------------------
def test_reused_lun_rerun_with_the_old_wwid_fails_and_touches_nothing(lab, gm):
    res = gm.run("iscsi_volume", MP)
    wa = res["wwid"]
    assert res["multipath"] and len(res["paths"]) == 2
    sids, sds = sessions(lab), sorted(disks(lab))
    lab.target("remap-lun", "0")   # the array maps ANOTHER volume at LUN 0, sessions stay up
    again = gm.run("iscsi_volume", dict(MP, wwid=wa), expect_fail=True)
    new = [w for w in again["wwids"].values() if w != wa]
    assert new and new[0] in again["msg"] and wa in again["msg"], again["msg"]
    assert again["commands"] == 0
    # nothing was logged in or out, nothing deleted: the same sessions and SCSI devices
    assert sessions(lab) == sids and sorted(disks(lab)) == sds
    # the kernel now knows what each path really is (the check rescanned them): no path still claims A,
    # while map A itself was left alone (a same-size remap raises no uevent: multipathd does not notice)
    assert all(udev_wwid(w) != wa for _h, w in disks(lab).values())
    assert sorted(maps(lab).get(wa, [])) == sorted(sds)
    # the hint's way out works: a detach with the old WWID removes map A and its stale paths
    out = gm.run("iscsi_volume", dict(MP, state="absent", wwid=wa))
    assert out["changed"] and out["leftovers"] == [] and out["removed"]["maps"] == [wa]
    assert maps(lab) == {} and disks(lab) == {} and sessions(lab) == {}
    again = gm.run("iscsi_volume", MP)
    assert again["wwid"] == new[0] and again["multipath"]


# lab_slow: the test above ends with the same detach by the old WWID on the lab (map and stale paths go); this one
# adds a second target and a path the kernel already met again, which the simulator's tests cover in the default run
@pytest.mark.lab_slow
def test_reused_lun_detach_with_the_old_wwid_removes_only_the_stale_paths(lab, gm):
    # a second target on the same portals, attached beside: the detach of target1 must not touch it
    t2 = T + "-b"
    lab.target("add-target", "--iqn", t2, "--luns", "1")
    other = gm.run("iscsi_volume", {"portals": [P1], "iqn": [t2], "lun": [0], "multipath": "off"})
    sha2 = write_pattern(lab, other["device"])
    sid_other = list(sessions(lab))
    res = gm.run("iscsi_volume", MP)
    wa = res["wwid"]
    sd = dict((p["portal"], p["device"][5:]) for p in res["paths"])
    lab.target("remap-lun", "0")
    # the kernel has met the new volume on P2 only: P2's path was deleted and LUN 0 scanned again there
    # (say, by someone's `iscsiadm -m session -R`); P1's path still claims A and is still in map A
    host2 = sh(lab, "basename $(readlink -f /sys/block/%s/device)" % sd[P2]).split(":")[0]
    sh(lab, "echo 1 > /sys/block/%s/device/delete" % sd[P2])
    wait_for(lambda: maps(lab).get(wa) == [sd[P1]], what="the deleted path to leave map A")
    sh(lab, "echo '0 0 0' > /sys/class/scsi_host/host%s/scan" % host2)
    new = wait_for(lambda: [n for n, (h, _w) in disks(lab).items() if h.startswith(host2 + ":")],
                   what="LUN 0 to appear again on P2")
    sd[P2] = new[0]
    wb = udev_wwid(disks(lab)[sd[P2]][1])
    assert wb != wa and maps(lab).get(wa) == [sd[P1]]
    sid2 = [s for s, p in sessions(lab).items() if p == P2]
    out = gm.run("iscsi_volume", dict(MP, state="absent", wwid=wa))
    assert out["changed"] and out["leftovers"] == []
    assert any(sd[P2] in k and wb in k for k in out["removed"]["kept_devices"]), out["removed"]
    # kernel side: map A and its stale path are gone, B's path and its session stay, B is readable
    assert wa not in maps(lab)
    assert sorted(disks(lab)) == sorted([sd[P2], other["device"][5:]]) and udev_wwid(disks(lab)[sd[P2]][1]) == wb
    assert [s for s, p in sessions(lab).items() if p == P2] == sid2
    # target1's P1 session is logged out; target2's session on the same portal stays, with its data
    assert sorted(s for s, p in sessions(lab).items() if p == P1) == sid_other
    assert read_sha(lab, other["device"]) == sha2
    read_sha(lab, "/dev/" + sd[P2])


# -- partial detach ----------------------------------------------------------------------------------------
def test_partial_detach_keeps_the_map_readable_with_the_same_data(lab, gm):
    res = gm.run("iscsi_volume", MP)
    dm, name = res["device"], res["multipath_map"]
    sha = write_pattern(lab, dm)
    p1dev = [p["device"][5:] for p in res["paths"] if p["portal"] == P1]
    # the plain call an operator makes to drain one portal (no wwid needed: the paths agree on it)
    out = gm.run("iscsi_volume", dict(MP, portals=[P2], state="absent"))
    assert out["changed"] and out["leftovers"] == [] and out["removed"]["maps"] == []
    assert maps(lab) == {name: p1dev}
    assert list(sessions(lab).values()) == [P1]
    assert read_sha(lab, dm) == sha
    sh(lab, "dmsetup table %s | grep -q multipath" % name)


# -- a LUN 0 detach racing a LUN 1 attach on the same target ---------------------------------------------------
def test_lun0_detach_racing_a_lun1_attach_never_loses_lun1(lab, gm):
    single0 = {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "off"}
    # the attach finds the target by discovery: it must still lock the target, not the portal
    disc1 = {"portals": [P1], "lun": [1], "multipath": "off"}
    for delay in (0.0, 0.5, 1.2):
        gm.run("iscsi_volume", single0)
        det, att = gm.race([("iscsi_volume", dict(single0, state="absent"), 0.0),
                            ("iscsi_volume", disc1, delay)])
        assert not det.get("failed"), det
        assert not att.get("failed"), (delay, att)
        dev = att["device"]
        # LUN 1 is there, on a live session, and readable
        d = disks(lab)
        assert dev[5:] in d and d[dev[5:]][0].endswith(":1"), (delay, d)
        assert list(sessions(lab).values()) == [P1], (delay, sessions(lab))
        read_sha(lab, dev)
        gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [1], "state": "absent"})
        assert sessions(lab) == {} and disks(lab) == {}


# -- the audit's cleanup of a dead path of a map that is held open -------------------------------------------
def test_audit_cleanup_removes_the_dead_path_and_keeps_the_open_map(lab, gm, ansible_lab, tmp_path):
    res = gm.run("iscsi_volume", MP)
    dm, name = res["device"], res["multipath_map"]
    sha = write_pattern(lab, dm)
    p1dev = [p["device"][5:] for p in res["paths"] if p["portal"] == P1]
    holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                     ">/dev/null 2>&1 & echo $!" % dm).strip()
    lab.target("block-portal", "127.0.0.2")
    # the real kernel: FAILED while recovering, FREE once recovery_tmo (5 s under multipathd) is over
    wait_for(lambda: "FREE" in sh(lab, "cat /sys/class/iscsi_session/session*/state"), timeout=90,
             what="the P2 session to become FREE")
    r = ansible_lab.playbook(
        "playbooks/orphan_audit.yml",
        extra_vars={"brick_orphan_audit_cleanup": True, "brick_hosts": "iscsi_lab",
                    "brick_orphan_audit_report_dir": str(tmp_path)},
        timeout=900)
    report = json.loads((tmp_path / "orphan-report.json").read_text())
    entry = report["hosts"]["lab"]
    assert r.rc == 0, r.stdout[-4000:]
    assert entry["orphans"] >= 1 and entry["orphans_left"] == 0, entry
    # the map and its live path stay, the holder still has it open, the data is intact
    assert maps(lab) == {name: p1dev}
    assert list(sessions(lab).values()) == [P1]
    assert sh(lab, "kill -0 %s && echo alive" % holder).strip() == "alive"
    assert read_sha(lab, dm) == sha
    lab.target("unblock-portal", "127.0.0.2")


# -- a path device outside the map that is in use --------------------------------------------------------------
def test_an_open_path_outside_the_map_is_refused_and_nothing_removed(lab, gm):
    res = gm.run("iscsi_volume", MP)
    name = res["multipath_map"]
    sdy = [p["device"] for p in res["paths"] if p["portal"] == P2][0]
    # the admin took P2's path out of the map (maintenance), and a backup tool reads it directly
    sh(lab, "multipathd del path %s" % sdy)
    wait_for(lambda: sdy[5:] not in maps(lab).get(name, []), what="the path to leave the map")
    holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                     ">/dev/null 2>&1 & echo $!" % sdy).strip()
    before = (sessions(lab), sorted(disks(lab)), maps(lab))
    assert len(before[1]) == 2 and len(before[2][name]) == 1
    out = gm.run("iscsi_volume", dict(MP, state="absent"), expect_fail=True)
    assert "in use" in out["msg"] and sdy in out["msg"] and "pid %s" % holder in out["msg"], out["msg"]
    assert out["commands"] == 0
    # nothing was removed: not the map (no flush), not a path, not a session
    assert (sessions(lab), sorted(disks(lab)), maps(lab)) == before
    sh(lab, "kill %s" % holder)
    # once the reader is gone, the detach removes the map, both paths and both sessions
    out = gm.run("iscsi_volume", dict(MP, state="absent"))
    assert out["leftovers"] == [] and sessions(lab) == {} and disks(lab) == {} and maps(lab) == {}


# -- force on a map that is in use ---------------------------------------------------------------------------
def test_force_on_an_open_map_makes_io_fail_instead_of_hanging(lab, gm):
    res = gm.run("iscsi_volume", MP)
    dm, name = res["device"], res["multipath_map"]
    holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                     ">/dev/null 2>&1 & echo $!" % dm).strip()
    out = gm.run("iscsi_volume", dict(MP, state="absent", force=True, ignore_errors=True))
    text = " ".join(out["problems"])
    assert "queueing disabled" in text and "pid %s" % holder in text and "data may be lost" in text, text
    # every path and session is gone; the map stays while it is held, and its I/O fails at once
    assert sessions(lab) == {} and disks(lab) == {}
    assert any(name in x for x in out["leftovers"])
    t0 = time.monotonic()
    rc, _o, _e = lab.ssh("timeout 60 dd if=%s of=/dev/null bs=4k count=1 iflag=direct" % dm, timeout=120)
    assert rc not in (0, 124) and time.monotonic() - t0 < 40, (rc, time.monotonic() - t0)
    sh(lab, "kill %s" % holder)


# -- a portal given by host name --------------------------------------------------------------------------
def test_a_portal_given_as_a_host_name_is_found_again(lab, gm):
    by_name = {"portals": ["localhost:3260"], "iqn": [T], "lun": [1], "multipath": "off"}
    res = gm.run("iscsi_volume", by_name)
    assert list(sessions(lab).values()) == [P1]
    again = gm.run("iscsi_volume", by_name)
    assert again["changed"] is False and again["commands"] == 0 and again["device"] == res["device"]
    out = gm.run("iscsi_volume", dict(by_name, state="absent"))
    assert out["changed"] and out["leftovers"] == []
    assert sessions(lab) == {} and disks(lab) == {}
    assert sh(lab, "ls /etc/iscsi/nodes 2>/dev/null || true").strip() == ""
