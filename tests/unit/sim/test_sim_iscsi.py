# -*- coding: utf-8 -*-
"""iscsiadm behaviour of the simulated host: node records, login/logout, auto scan, IPv6, big LUNs,
CHAP, discovery.  Most calls run in-process (host.run); a few as real subprocesses."""
import errno

import pytest

from sim import SimError
from sim.core import bypath_lun, sd_devt, sd_name
from simtest_util import IQN, IQN2, P1, P2, links, node, sh


def ia(h, *args):
    return h.run("iscsiadm", *args)


def test_new_record_defaults_and_show_masks_secrets(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    rc, out, err = ia(host, *node(IQN, P1, "--op", "new")[1:])
    assert rc == 0
    text = host.fs.read("/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN)  # the flat file of --op new
    lines = text.splitlines()
    assert lines[0] == "# BEGIN RECORD 2.1.8" and lines[-1] == "# END RECORD"
    for kv in ("node.startup = automatic", "node.session.scan = auto", "node.session.auth.authmethod = None",
               "node.conn[0].timeo.login_timeout = 15", "node.session.initial_login_retry_max = 8",
               "node.session.timeo.replacement_timeout = 120", "node.name = %s" % IQN, "node.tpgt = -1",
               "node.conn[0].address = 10.0.0.1", "node.conn[0].port = 3260"):
        assert kv in lines
    ia(host, *node(IQN, P1, "--op", "update", "-n", "node.session.auth.authmethod", "-v", "CHAP",
                   "-n", "node.session.auth.username", "-v", "u", "-n", "node.session.auth.password", "-v", "s3cret")[1:])
    rc, out, err = ia(host, *node(IQN, P1, "--op", "show")[1:])
    assert "node.session.auth.password = ********" in out.splitlines() and "s3cret" not in out
    assert "node.session.auth.username_in = <empty>" in out.splitlines()
    rc, out, err = ia(host, "-m", "node")
    assert (rc, out) == (0, "10.0.0.1:3260,4294967295 %s\n" % IQN)
    # lookup without op = show; unknown record = 21
    assert ia(host, *node(IQN, P1)[1:])[0] == 0
    assert ia(host, *node(IQN, P2)[1:])[:3] == (21, "", "iscsiadm: No records found\n")
    # bad update
    assert ia(host, *node(IQN, P1, "--op", "update", "-n", "node.session.scan")[1:])[0] == 7
    assert ia(host, *node(IQN, P1, "--op", "update", "-n", "bogus", "-v", "1")[1:])[0] == 7


def test_node_listing_empty_and_delete_cleans_directories(host):
    assert ia(host, "-m", "node") == (21, "", "iscsiadm: No records found\n")
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    ia(host, *node(IQN, P1, "--op", "new")[1:])
    ia(host, *node(IQN, P2, "--op", "new")[1:])
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260", "10.0.0.2,3260"]
    # -T without -p applies to all portals of the target
    assert ia(host, "-m", "node", "-T", IQN, "--op", "update", "-n", "node.startup", "-v", "manual")[0] == 0
    for p in ("10.0.0.1", "10.0.0.2"):
        assert "node.startup = manual" in host.fs.read("/etc/iscsi/nodes/%s/%s,3260" % (IQN, p))
    assert ia(host, "-m", "node", "-T", IQN, "--op", "delete")[0] == 0
    assert host.snapshot() == before
    assert ia(host, "-m", "node", "-T", IQN, "--op", "delete")[0] == 21


def test_login_errors_exist_norecord_nosession(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    assert ia(host, *node(IQN, P1, "--login")[1:]) == (21, "", "iscsiadm: No records found\n")
    ia(host, *node(IQN, P1, "--op", "new")[1:])
    assert ia(host, *node(IQN, P1, "--login")[1:])[0] == 0
    rc, out, err = ia(host, *node(IQN, P1, "--login")[1:])
    assert rc == 15 and "1 session requested, but 1 already present" in err
    # a record with a session cannot be deleted
    rc, out, err = ia(host, *node(IQN, P1, "--op", "delete")[1:])
    assert rc == 15 and "a session is using it" in err
    assert ia(host, *node(IQN, P1, "--logout")[1:])[0] == 0
    assert ia(host, *node(IQN, P1, "--logout")[1:]) == (21, "", "iscsiadm: No matching sessions found\n")
    assert ia(host, "-m", "session", "-r", "7", "--logout")[0] == 21
    # portal with no array behind it: refused -> 8; target not on that portal -> 19
    ia(host, *node(IQN, "10.9.9.9:3260", "--op", "new")[1:])
    assert ia(host, *node(IQN, "10.9.9.9:3260", "--login")[1:])[0] == 8
    host.add_target(IQN2, portals=[P2], luns={0: 8})
    ia(host, *node(IQN, P2, "--op", "new")[1:])
    rc, out, err = ia(host, *node(IQN, P2, "--login")[1:])
    assert rc == 19 and "non-retryable" in err


def test_auto_scan_on_login_creates_every_lun(host):
    t = host.add_target(IQN, portals=[P1], luns={0: 64, 1: 32, 2: 16})
    r = sh(host, *node(IQN, P1, "--op", "new"))
    assert r.rc == 0
    r = sh(host, *node(IQN, P1, "--login"))  # new record: node.session.scan = auto
    assert r.rc == 0
    d = host.disks()
    assert sorted((x["hctl"], n) for n, x in d.items()) == [
        ("2:0:0:0", "sda"), ("2:0:0:1", "sdb"), ("2:0:0:2", "sdc")]
    assert host.fs.read("/sys/block/sdc/size") == str(16 * 2048)
    assert host.fs.read("/sys/block/sdb/device/wwid") == t["luns"][1]["sysfs_wwid"]
    # manual scan on a second target: nothing until a scan
    host.add_target(IQN2, portals=[P1], luns={5: 8})
    host.login(IQN2, P1, scan="manual")
    assert len(host.disks()) == 3
    s = host.sessions(iqn=IQN2)[0]
    # a scan of an unmapped LUN creates nothing; "- - -" creates the mapped one
    assert host.scan(s["host"], lun=4) == []
    assert host.scan(s["host"]) == ["sdd"]
    assert host.disks()["sdd"]["hctl"] == "%d:0:0:5" % s["host"]
    # iscsiadm rescan of a session is idempotent
    assert ia(host, "-m", "session", "-r", str(s["sid"]), "--rescan")[0] == 0
    assert len(host.disks()) == 4
    assert host.check() == []


def test_ipv6_portal(host):
    p6 = "[fd00::1]:3260"
    host.add_target(IQN, portals=[p6], luns={0: 64})
    r = sh(host, *node(IQN, p6, "--op", "new"))
    assert r.stdout == "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] fd00::1,3260,-1 %s] added\n" % IQN
    assert host.fs.is_private_file("/etc/iscsi/nodes/%s/fd00::1,3260" % IQN)
    r = sh(host, *node(IQN, p6, "--login"))
    assert r.rc == 0 and "portal: fd00::1,3260]" in r.stdout
    assert sh(host, "iscsiadm", "-m", "session").stdout == "tcp: [1] [fd00::1]:3260,1 %s (non-flash)\n" % IQN
    assert sh(host, "iscsiadm", "-m", "node").stdout == "[fd00::1]:3260,4294967295 %s\n" % IQN
    assert host.fs.read("/sys/class/iscsi_connection/connection1:0/persistent_address") == "fd00::1"
    assert links(host, "/dev/disk/by-path")["ip-fd00::1:3260-iscsi-%s-lun-0" % IQN] == "../../sda"
    # the unbracketed form finds the same record/session
    assert ia(host, *node(IQN, "fd00::1", "--logout")[1:])[0] == 0


def test_lun_300_hctl_and_udev_bypath_format(host):
    t = host.add_target(IQN, portals=[P1], luns={300: 16})
    s = host.login(IQN, P1, scan="manual")
    host.fs.write("/sys/class/scsi_host/host%d/scan" % s["host"], "0 0 300")
    d = host.disks()["sda"]
    assert d["hctl"] == "2:0:0:300"
    assert host.fs.read("/sys/block/sda/size") == str(16 * 2048)
    # udev path_id: LUNs >= 256 are written as 0x%04x%04x00000000
    assert bypath_lun(300) == "lun-0x012c000000000000" and bypath_lun(255) == "lun-255"
    assert links(host, "/dev/disk/by-path")["ip-10.0.0.1:3260-iscsi-%s-lun-0x012c000000000000" % IQN] == "../../sda"
    assert host.fs.read("/sys/block/sda/device/wwid") == t["luns"][300]["sysfs_wwid"]


def test_chap_ok_wrong_missing_and_mutual(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", "right"), mutual_chap=("array", "back"))
    before = host.snapshot()
    ia(host, *node(IQN, P1, "--op", "new")[1:])
    # missing CHAP
    rc, out, err = ia(host, *node(IQN, P1, "--login")[1:])
    assert rc == 24
    assert err.splitlines() == [
        "iscsiadm: Could not login to [iface: default, target: %s, portal: 10.0.0.1,3260]." % IQN,
        "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)",
        "iscsiadm: Could not log into all portals"]
    auth = ["-n", "node.session.auth.authmethod", "-v", "CHAP", "-n", "node.session.auth.username", "-v", "alice"]
    # wrong secret
    ia(host, *node(IQN, P1, "--op", "update", *(auth + ["-n", "node.session.auth.password", "-v", "wrong"]))[1:])
    assert ia(host, *node(IQN, P1, "--login")[1:])[0] == 24
    # right one-way secret but the target also wants to authenticate itself: initiator must accept it
    ia(host, *node(IQN, P1, "--op", "update", "-n", "node.session.auth.password", "-v", "right")[1:])
    assert ia(host, *node(IQN, P1, "--login")[1:])[0] == 24
    # wrong mutual secret
    ia(host, *node(IQN, P1, "--op", "update", "-n", "node.session.auth.username_in", "-v", "array",
                   "-n", "node.session.auth.password_in", "-v", "nope")[1:])
    assert ia(host, *node(IQN, P1, "--login")[1:])[0] == 24
    assert host.fs.listdir("/sys/class/iscsi_session") == []
    # all right
    ia(host, *node(IQN, P1, "--op", "update", "-n", "node.session.auth.password_in", "-v", "back")[1:])
    assert ia(host, *node(IQN, P1, "--login")[1:])[0] == 0
    assert host.fs.read("/sys/class/iscsi_session/session1/username") == "alice"
    assert host.fs.read("/sys/class/iscsi_session/session1/username_in") == "array"
    ia(host, *node(IQN, P1, "--logout")[1:])
    ia(host, *node(IQN, P1, "--op", "delete")[1:])
    assert host.snapshot() == before


def test_one_way_chap_and_acl(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("u", "pw"))
    s = host.login(IQN, P1, node_params={"node.session.auth.authmethod": "CHAP",
                                         "node.session.auth.username": "u", "node.session.auth.password": "pw"})
    assert s["state"] == "LOGGED_IN"
    assert host.fs.read("/sys/class/iscsi_session/session1/username_in") == "(null)"
    host.add_target(IQN2, portals=[P2], luns={0: 8}, acl=["iqn.1994-05.com.example:someone-else"])
    with pytest.raises(SimError) as ei:
        host.login(IQN2, P2)
    assert "rc 24" in str(ei.value)


def test_discovery_sendtargets_persistent_and_nonpersistent(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.add_target(IQN2, portals=[P2], luns={0: 8}, tpgt=2)
    before = host.snapshot()
    rc, out, err = ia(host, "-m", "discovery", "-t", "st", "-p", P1, "--op", "nonpersistent")
    assert rc == 0 and out == "10.0.0.1:3260,1 %s\n10.0.0.2:3260,1 %s\n" % (IQN, IQN)
    assert host.snapshot() == before
    r = sh(host, "iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", P2)
    assert r.rc == 0
    assert sorted(r.stdout.splitlines()) == sorted(["10.0.0.1:3260,1 " + IQN, "10.0.0.2:3260,1 " + IQN,
                                                    "10.0.0.2:3260,2 " + IQN2])
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260,1", "10.0.0.2,3260,1"]
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN2) == ["10.0.0.2,3260,2"]
    assert "st_config" in host.fs.listdir("/etc/iscsi/send_targets/10.0.0.2,3260")
    rec = "/etc/iscsi/nodes/%s/10.0.0.1,3260,1/default" % IQN
    assert "node.discovery_address = 10.0.0.2" in host.fs.read(rec)
    # a re-discovery rewrites existing records with the defaults (open-iscsi#58: node.startup reset)
    ia(host, *node(IQN, P1, "--op", "update", "-n", "node.startup", "-v", "manual")[1:])
    ia(host, "-m", "discovery", "-t", "st", "-p", P2)
    assert "node.startup = automatic" in host.fs.read(rec)
    rc, out, err = ia(host, "-m", "discoverydb", "-o", "show", "-P", "1")
    assert "DiscoveryAddress: 10.0.0.2,3260" in out and "\tPortal: 10.0.0.2:3260,2" in out
    # deleting the discovery record deletes the node records found through it
    assert ia(host, "-m", "discoverydb", "-t", "st", "-p", P2, "--op", "delete")[0] == 0
    assert host.snapshot() == before


def test_discovery_chap(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, discovery_chap=("disc", "dsecret"))
    rc, out, err = ia(host, "-m", "discovery", "-t", "st", "-p", P1)
    assert rc == 24 and "authorization failure" in err and out == ""
    # discovery mode writes its discovery record before it contacts the portal
    assert host.fs.listdir("/etc/iscsi/send_targets") == ["10.0.0.1,3260"]
    assert host.fs.listdir("/etc/iscsi/nodes") == []
    base = ["-m", "discoverydb", "-t", "sendtargets", "-p", P2, "-I", "default"]
    assert ia(host, *(base + ["--op", "update", "-n", "discovery.sendtargets.auth.authmethod", "-v", "CHAP"]))[0] == 6
    assert ia(host, *(base + ["--op", "new"]))[0] == 0
    assert ia(host, *(base + ["--op", "new"]))[0] == 15
    assert ia(host, *(base + ["--op", "update", "-n", "discovery.sendtargets.auth.authmethod", "-v", "CHAP",
                              "-n", "discovery.sendtargets.auth.username", "-v", "disc",
                              "-n", "discovery.sendtargets.auth.password", "-v", "wrong"]))[0] == 0
    assert ia(host, *(base + ["--discover"]))[0] == 24
    ia(host, *(base + ["--op", "update", "-n", "discovery.sendtargets.auth.password", "-v", "dsecret"]))
    rc, out, err = ia(host, *(base + ["--discover", "--op", "nonpersistent"]))
    assert rc == 0 and sorted(out.splitlines()) == ["10.0.0.1:3260,1 " + IQN, "10.0.0.2:3260,1 " + IQN]
    assert host.fs.listdir("/etc/iscsi/nodes") == []
    rc, out, err = ia(host, *(base + ["--op", "show"]))
    assert "discovery.sendtargets.auth.password = ********" in out.splitlines()
    assert ia(host, *(base + ["--discover"]))[0] == 0
    assert host.fs.listdir("/etc/iscsi/nodes") == [IQN]
    assert ia(host, *(base + ["--op", "delete"]))[0] == 0
    assert host.fs.listdir("/etc/iscsi/send_targets") == ["10.0.0.1,3260"]
    assert host.fs.listdir("/etc/iscsi/nodes") == []


def test_logout_of_a_map_path_and_last_path(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    w = t["luns"][0]["wwid"]
    host.login(IQN, P1)
    host.login(IQN, P2)
    assert list(host.maps()) == ["dm-0"]
    host.logout(IQN, P1)
    m = host.maps()["dm-0"]
    assert list(m["paths"]) == ["sdb"] and host.fs.listdir("/sys/block/dm-0/slaves") == ["sdb"]
    # last path gone while the map is open: the map stays, without slaves (queue_if_no_path)
    pid = host.hold_open("/dev/mapper/" + w)
    host.logout(IQN, P2)
    assert host.fs.listdir("/sys/block/dm-0/slaves") == [] and host.fs.read("/sys/block/dm-0/dm/uuid") == "mpath-" + w
    assert host.fs.readlink("/dev/disk/by-id/scsi-" + w) == "../../dm-0"
    host.release(pid)
    assert host.run("multipath", "-f", w)[0] == 0
    assert host.fs.listdir("/dev/disk/by-id") == [] and host.maps() == {}
    # last path gone and nobody holds the map: multipathd removes it
    host.login(IQN, P1)
    host.login(IQN, P2)
    host.logout(IQN)
    assert host.maps() == {} and host.fs.listdir("/sys/block") == ["vda"]
    assert host.check() == []


def test_sd_names_major_minor_and_reuse(host):
    assert [sd_name(i) for i in (0, 25, 26, 27, 701, 702)] == ["sda", "sdz", "sdaa", "sdab", "sdzz", "sdaaa"]
    assert sd_devt(0) == (8, 0) and sd_devt(1) == (8, 16) and sd_devt(15) == (8, 240)
    assert sd_devt(16) == (65, 0) and sd_devt(128) == (128, 0) and sd_devt(26) == (65, 160)
    host.add_target(IQN, portals=[P1], luns={0: 8, 1: 8, 2: 8})
    host.login(IQN, P1)
    assert sorted(host.disks()) == ["sda", "sdb", "sdc"]
    host.delete_device("sdb")
    host.delete_device("/dev/sda")
    host.add_target(IQN2, portals=[P1], luns={0: 8})
    host.login(IQN2, P1)
    assert sorted(host.disks()) == ["sda", "sdc"]  # lowest freed letter first
    s = host.sessions(iqn=IQN)[0]
    host.scan(s["host"], lun=1)
    assert host.disks()["sdb"]["hctl"] == "2:0:0:1"
    # SCSI host numbers are reused lowest-first too (ida), session ids are not
    host.logout(IQN, P1)
    host.login(IQN, P1)
    s = host.sessions(iqn=IQN)[0]
    assert (s["host"], s["sid"]) == (2, 3)


def test_kernel_hook_errors_like_sysfs(host):
    host.add_target(IQN, portals=[P1], luns={0: 8})
    host.login(IQN, P1)
    with pytest.raises(IOError) as ei:
        host.fs.write("/sys/class/scsi_host/host2/scan", "0 0")
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(IOError) as ei:
        host.fs.write("/sys/block/sdz/device/delete", "1")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(IOError) as ei:
        host.fs.write("/sys/block/sda/device/state", "transport-offline")
    assert ei.value.errno == errno.EINVAL
    host.fs.write("/sys/block/sda/device/state", "offline")
    assert host.fs.read("/sys/block/sda/device/state") == "offline"
    host.fs.write("/sys/block/sda/device/state", "running")
    # a scan on the ata host does nothing; an unknown existing file is just written
    host.fs.write("/sys/class/scsi_host/host0/scan", "- - -")
    host.fs.write("/sys/block/sda/device/timeout", "60")
    assert host.fs.read("/sys/block/sda/device/timeout") == "60"
    # rescan picks up a resized LUN
    host.resize_lun(IQN, 0, 16)
    host.fs.write("/sys/block/sda/device/rescan", "1")
    assert host.fs.read("/sys/block/sda/size") == str(16 * 2048)
    assert host.run("blockdev", "--getsize64", "/dev/sda") == (0, "%d\n" % (16 << 20), "")
