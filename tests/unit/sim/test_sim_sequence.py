# -*- coding: utf-8 -*-
"""A full attach/detach cycle through the fake commands (subprocesses) and the SimHostFS hook,
asserting exact paths and link targets at each step, and that the tree returns to where it was."""
from simtest_util import IQN, P1, P2, links, node, sh

BYID = "/dev/disk/by-id"
BYPATH = "/dev/disk/by-path"


def test_scripted_multipath_cycle_returns_to_the_initial_tree(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    wwid = t["luns"][1]["wwid"]
    assert wwid == "3" + t["luns"][1]["sysfs_wwid"][4:] and wwid.startswith("36001405") and len(wwid) == 33
    wwn = "wwn-0x" + wwid[1:]
    fs = host.fs
    before = host.snapshot()

    # -- node record (static), scan manual, startup manual: several -n/-v pairs in ONE call
    r = sh(host, *node(IQN, P1, "--op", "new"))
    assert r.rc == 0
    assert r.stdout == "New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] 10.0.0.1,3260,-1 %s] added\n" % IQN
    rec = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN
    assert "node.session.scan = auto" in fs.read(rec).splitlines()
    r = sh(host, *node(IQN, P1, "--op", "update", "-n", "node.session.scan", "-v", "manual",
                       "-n", "node.startup", "-v", "manual"))
    assert r.rc == 0
    lines = fs.read(rec).splitlines()
    assert "node.session.scan = manual" in lines and "node.startup = manual" in lines

    # -- login: a session, a host, a target dir, no device (manual scan)
    r = sh(host, *node(IQN, P1, "--login"))
    assert r.rc == 0, r.stderr
    where = "[iface: default, target: %s, portal: 10.0.0.1,3260]" % IQN
    assert r.stdout == "Logging in to %s\nLogin to %s successful.\n" % (where, where)
    assert fs.listdir("/sys/class/iscsi_session") == ["session1"]
    assert fs.readlink("/sys/class/iscsi_session/session1") == \
        "../../devices/platform/host2/session1/iscsi_session/session1"
    assert fs.readlink("/sys/class/iscsi_host/host2") == "../../devices/platform/host2/iscsi_host/host2"
    assert fs.listdir("/sys/class/scsi_host") == ["host0", "host1", "host2"]
    assert fs.listdir("/sys/class/iscsi_host") == ["host2"]
    assert fs.read("/sys/class/iscsi_session/session1/state") == "LOGGED_IN"
    assert fs.read("/sys/class/iscsi_session/session1/targetname") == IQN
    assert fs.read("/sys/class/iscsi_connection/connection1:0/persistent_address") == "10.0.0.1"
    assert fs.read("/sys/class/iscsi_connection/connection1:0/persistent_port") == "3260"
    assert fs.listdir("/sys/devices/platform/host2/session1/target2:0:0") == []
    assert fs.listdir("/sys/block") == ["vda"]
    assert sh(host, "iscsiadm", "-m", "session").stdout == "tcp: [1] 10.0.0.1:3260,1 %s (non-flash)\n" % IQN

    # -- targeted scan through the kernel hook: exactly LUN 1
    fs.write("/sys/class/scsi_host/host2/scan", "0 0 1")
    assert fs.listdir("/sys/block") == ["sda", "vda"]
    assert fs.readlink("/sys/block/sda") == "../devices/platform/host2/session1/target2:0:0/2:0:0:1/block/sda"
    assert fs.readlink("/sys/class/block/sda") == \
        "../../devices/platform/host2/session1/target2:0:0/2:0:0:1/block/sda"
    assert fs.readlink("/sys/bus/scsi/devices/2:0:0:1") == \
        "../../../devices/platform/host2/session1/target2:0:0/2:0:0:1"
    assert fs.readlink("/sys/block/sda/device") == "../../../2:0:0:1"
    assert not fs.lexists("/sys/bus/scsi/devices/2:0:0:0")
    assert fs.read("/sys/block/sda/size") == str(32 * 2048)
    assert fs.read("/sys/block/sda/dev") == "8:0"
    assert fs.read("/sys/block/sda/device/wwid") == t["luns"][1]["sysfs_wwid"]
    assert fs.read("/sys/block/sda/device/vendor") == "LIO-ORG"
    assert fs.read("/sys/block/sda/device/state") == "running"
    assert fs.exists("/dev/sda")
    bp1 = "ip-10.0.0.1:3260-iscsi-%s-lun-1" % IQN
    assert links(host, BYPATH) == {bp1: "../../sda", "pci-0000:00:04.0": "../../vda",
                                   "virtio-pci-0000:00:04.0": "../../vda"}
    assert links(host, BYID) == {"scsi-" + wwid: "../../sda", wwn: "../../sda"}
    assert host.maps() == {}  # find_multipaths yes: one path, unknown WWID -> no map

    # -- second portal: map with 2 slaves and holders
    assert sh(host, *node(IQN, P2, "--op", "new")).rc == 0
    assert sh(host, *node(IQN, P2, "--op", "update", "-n", "node.session.scan", "-v", "manual")).rc == 0
    assert sh(host, *node(IQN, P2, "--login")).rc == 0
    assert fs.listdir("/sys/class/iscsi_host") == ["host2", "host3"]
    fs.write("/sys/class/scsi_host/host3/scan", "- - 1")
    assert fs.readlink("/sys/block/sdb") == "../devices/platform/host3/session2/target3:0:0/3:0:0:1/block/sdb"
    assert fs.read("/sys/block/sdb/dev") == "8:16"
    assert fs.listdir("/sys/block/dm-0/slaves") == ["sda", "sdb"]
    assert fs.readlink("/sys/block/dm-0/slaves/sda") == \
        "../../../../platform/host2/session1/target2:0:0/2:0:0:1/block/sda"
    assert fs.listdir("/sys/block/sda/holders") == ["dm-0"] and fs.listdir("/sys/block/sdb/holders") == ["dm-0"]
    assert fs.readlink("/sys/block/sda/holders/dm-0") == "../../../../../../../../virtual/block/dm-0"
    assert fs.read("/sys/block/dm-0/dm/name") == wwid
    assert fs.read("/sys/block/dm-0/dm/uuid") == "mpath-" + wwid
    assert fs.read("/sys/block/dm-0/size") == str(32 * 2048)
    assert fs.readlink("/sys/block/dm-0") == "../devices/virtual/block/dm-0"
    assert fs.readlink("/dev/mapper/" + wwid) == "../dm-0"
    assert links(host, BYID) == {"scsi-" + wwid: "../../dm-0", wwn: "../../dm-0",
                                 "dm-name-" + wwid: "../../dm-0", "dm-uuid-mpath-" + wwid: "../../dm-0"}
    assert "/%s/" % wwid in fs.read("/etc/multipath/wwids")
    ll = sh(host, "multipath", "-ll").stdout.splitlines()
    assert ll[0] == "%s dm-0 LIO-ORG,FILEIO" % wwid
    assert ll[3].split()[1:3] == ["2:0:0:1", "sda"] and ll[3].endswith("active ready running")
    r = sh(host, "multipathd", "show", "maps", "raw", "format", "%n %w %d")
    assert r.rc == 0 and r.stdout == "%s %s dm-0\n" % (wwid, wwid)
    assert sh(host, "multipathd", "show", "paths", "raw", "format", "%d").stdout == "sda\nsdb\n"
    assert sh(host, "multipath", "-C", "dm-0").rc == 0
    assert host.check() == []

    # -- flush the map: map gone, paths stay, by-id back on the first path
    r = sh(host, "multipath", "-f", wwid)
    assert r.rc == 0, r.stderr
    assert not fs.lexists("/sys/block/dm-0") and not fs.lexists("/dev/mapper/" + wwid)
    assert not fs.lexists("/dev/dm-0") and not fs.lexists("/sys/devices/virtual/block/dm-0")
    assert fs.listdir("/sys/block/sda/holders") == [] and fs.listdir("/sys/block/sdb/holders") == []
    assert links(host, BYID) == {"scsi-" + wwid: "../../sda", wwn: "../../sda"}
    assert sorted(host.disks()) == ["sda", "sdb"]

    # -- delete both devices (two spellings of the delete attribute)
    fs.write("/sys/block/sda/device/delete", "1")
    fs.write("/sys/class/scsi_device/3:0:0:1/device/delete", "1")
    assert fs.listdir("/sys/block") == ["vda"]
    assert links(host, BYID) == {}
    assert sorted(links(host, BYPATH)) == ["pci-0000:00:04.0", "virtio-pci-0000:00:04.0"]
    assert not fs.lexists("/dev/sda") and not fs.lexists("/dev/sdb")
    assert fs.listdir("/sys/bus/scsi/devices") == [
        "host0", "host1", "host2", "host3", "target2:0:0", "target3:0:0"]
    assert fs.listdir("/sys/class/scsi_device") == []

    # -- logout both: sessions and hosts gone
    r = sh(host, *node(IQN, P1, "--logout"))
    assert r.rc == 0
    assert r.stdout == ("Logging out of session [sid: 1, target: %s, portal: 10.0.0.1,3260]\n"
                        "Logout of [sid: 1, target: %s, portal: 10.0.0.1,3260] successful.\n" % (IQN, IQN))
    assert sh(host, "iscsiadm", "-m", "session", "-r", "2", "--logout").rc == 0
    assert fs.listdir("/sys/class/iscsi_session") == [] and fs.listdir("/sys/class/iscsi_host") == []
    assert fs.listdir("/sys/class/scsi_host") == ["host0", "host1"]
    assert fs.listdir("/sys/devices/platform") == []
    r = sh(host, "iscsiadm", "-m", "session")
    assert (r.rc, r.stderr) == (21, "iscsiadm: No active sessions.\n")

    # -- delete the node records -> the tree is what it was, except multipathd's WWID memory
    assert sh(host, "iscsiadm", "-m", "node", "-T", IQN, "--op", "delete").rc == 0
    after = host.snapshot()
    d = host.diff(before, after)
    assert d == {"added": [], "removed": [], "changed": ["/etc/multipath/wwids"]}, str(d)
    assert after["/etc/multipath/wwids"][1].endswith("/%s/\n" % wwid)
    assert host.check() == []

    # the command log saw every fake command, in order
    cmds = host.commands()
    assert [c[0] for c in cmds] == ["iscsiadm"] * 7 + ["multipath", "multipathd", "multipathd", "multipath",
                                                       "multipath"] + ["iscsiadm"] * 4
    assert cmds[1][-4:] == ["-n", "node.startup", "-v", "manual"]
