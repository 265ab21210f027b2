# -*- coding: utf-8 -*-
"""Holders, open files, mounts, swap, partitions; fuser and `multipath -f` against them;
snapshot/diff helpers; the package's import weight."""
import os
import subprocess
import sys
import time

from simtest_util import IQN, P1, P2, sh


def _mp(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    host.login(IQN, P1, scan="manual")
    host.login(IQN, P2, scan="manual")
    host.scan(2, lun=0)
    host.scan(3, lun=0)
    return t["luns"][0]["wwid"]


def test_local_disk_and_base_tree(host):
    fs = host.fs
    assert fs.readlink("/sys/block/vda") == "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda"
    assert not fs.exists("/sys/block/vda/device/wwid")
    assert fs.read("/proc/mounts").splitlines()[-1] == "/dev/vda / ext4 rw,relatime,errors=remount-ro 0 0"
    assert "26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro" in fs.lines("/proc/self/mountinfo")
    assert fs.read("/etc/iscsi/initiatorname.iscsi").splitlines()[-1] == "InitiatorName=iqn.1994-05.com.example:sim-host"
    assert fs.listdir("/sys/class/scsi_host") == ["host0", "host1"] and fs.listdir("/sys/class/iscsi_host") == []
    assert fs.read("/sys/class/scsi_host/host0/proc_name") == "ata_piix"
    for d in ("/sys/class/iscsi_session", "/sys/class/iscsi_connection", "/sys/class/scsi_device",
              "/sys/bus/scsi/devices", "/sys/devices/platform", "/sys/devices/virtual/block", "/dev/disk/by-path",
              "/dev/disk/by-id", "/dev/mapper", "/etc/iscsi/nodes", "/etc/iscsi/send_targets", "/etc/multipath"):
        assert fs.isdir(d), d
    assert fs.read("/proc/swaps").startswith("Filename")
    assert host.check() == []


def test_hold_open_fuser_and_multipath_flush(host):
    wwid = _mp(host)
    pid = host.hold_open("/dev/mapper/" + wwid, pid=4242, comm="qemu-img")
    assert pid == 4242
    assert host.fs.readlink("/proc/4242/fd/3") == "/dev/dm-0"  # absolute, resolved like the kernel shows it
    assert host.fs.read("/proc/4242/comm") == "qemu-img"
    r = sh(host, "fuser", "/dev/mapper/" + wwid)
    assert (r.rc, r.stdout, r.stderr) == (0, " 4242", "/dev/mapper/%s:\n" % wwid)
    r = sh(host, "fuser", "-v", "/dev/dm-0")
    assert r.rc == 0 and "qemu-img" in r.stderr and "4242" in r.stderr
    r = sh(host, "fuser", "/dev/sda")
    assert (r.rc, r.stdout, r.stderr) == (1, "", "")
    r = sh(host, "fuser", "/dev/sdz")
    assert (r.rc, r.stdout, r.stderr) == (1, "", "Specified filename /dev/sdz does not exist.\n")
    r = sh(host, "multipath", "-f", wwid)
    assert (r.rc, r.stderr) == (1, "%s: map in use\n" % wwid)
    assert host.fs.open_exclusive("/dev/dm-0") is None  # a plain open does not claim the device
    host.release(4242)
    assert not host.fs.exists("/proc/4242")
    assert sh(host, "fuser", "/dev/dm-0").rc == 1
    assert sh(host, "multipath", "-f", wwid).rc == 0


def test_hold_open_with_timer_and_exclusive(host):
    host.add_target(IQN, portals=[P1], luns={0: 8})
    host.login(IQN, P1)
    pid = host.hold_open("/dev/sda", seconds=0.2, exclusive=True)
    assert pid == 40000 and host.fs.open_exclusive("/dev/sda") == "EBUSY"
    assert host.run("fuser", "/dev/sda")[1] == " 40000"
    deadline = time.monotonic() + 5
    while host.fs.exists("/proc/%d" % pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not host.fs.exists("/proc/%d" % pid)
    assert host.fs.open_exclusive("/dev/sda") is None
    assert host.fs.open_exclusive("/dev/sdq") == "ENOENT"


def test_mount_swap_and_multipath_flush(host):
    wwid = _mp(host)
    host.mount("/dev/mapper/" + wwid, "/mnt/data")
    assert "/dev/mapper/%s /mnt/data ext4 rw,relatime 0 0" % wwid in host.fs.lines("/proc/mounts")
    info = [ln for ln in host.fs.lines("/proc/self/mountinfo") if " /mnt/data " in ln][0]
    assert info.split()[2] == "253:0" and info.split()[-2] == "/dev/mapper/" + wwid
    assert host.fs.open_exclusive("/dev/dm-0") == "EBUSY"
    assert host.run("multipath", "-f", wwid)[0] == 1
    assert host.run("fuser", "/dev/dm-0")[0] == 1  # a mount is not a process
    assert host.umount("/mnt/data") is True
    assert not any("/mnt/data" in ln for ln in host.fs.lines("/proc/mounts"))
    host.swapon("/dev/disk/by-id/dm-uuid-mpath-" + wwid)
    assert host.fs.lines("/proc/swaps")[1].startswith("/dev/dm-0 ")
    assert host.run("multipath", "-f", wwid)[0] == 1
    host.swapoff("/dev/dm-0")
    assert len(host.fs.lines("/proc/swaps")) == 1
    host.mount("/dev/sdc" if host.fs.exists("/dev/sdc") else "/dev/vda", "/srv")
    assert host.run("multipath", "-f", wwid)[0] == 0


def test_sd_partition(host):
    t = host.add_target(IQN, portals=[P1], luns={0: 64})
    host.login(IQN, P1)
    assert host.add_partition("/dev/sda", 1, 10) == "/dev/sda1"
    fs = host.fs
    assert fs.read("/sys/block/sda/sda1/partition") == "1" and fs.read("/sys/block/sda/sda1/dev") == "8:1"
    assert fs.readlink("/sys/class/block/sda1") == \
        "../../devices/platform/host2/session1/target2:0:0/2:0:0:0/block/sda/sda1"
    assert fs.readlink("/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-%s-lun-0-part1" % IQN) == "../../sda1"
    assert fs.readlink("/dev/disk/by-id/scsi-%s-part1" % t["luns"][0]["wwid"]) == "../../sda1"
    host.mount("/dev/sda1", "/boot")
    assert fs.open_exclusive("/dev/sda") == "EBUSY"  # a mounted partition claims the whole disk
    assert host.run("partprobe", "/dev/sda")[0] == 0
    host.delete_device("sda")
    assert fs.listdir("/dev/disk/by-path") == ["pci-0000:00:04.0", "virtio-pci-0000:00:04.0"]
    assert fs.listdir("/dev/disk/by-id") == [] and not fs.lexists("/dev/sda1")
    assert host.check() == []


def test_kpartx_partition_of_a_map(host):
    wwid = _mp(host)
    p = host.add_partition("/dev/mapper/" + wwid, 1, 20)
    assert p == "/dev/mapper/%s-part1" % wwid
    fs = host.fs
    assert fs.readlink(p) == "../dm-1"
    assert fs.read("/sys/block/dm-1/dm/uuid") == "part1-mpath-" + wwid
    assert fs.read("/sys/block/dm-1/dm/name") == wwid + "-part1"
    assert fs.listdir("/sys/block/dm-1/slaves") == ["dm-0"] and fs.listdir("/sys/block/dm-0/holders") == ["dm-1"]
    assert fs.readlink("/dev/disk/by-id/dm-uuid-part1-mpath-" + wwid) == "../../dm-1"
    # an unused kpartx partition does not make the map busy: multipath -f removes both
    host.mount(p, "/data")
    assert host.run("multipath", "-f", wwid)[:3] == (1, "", "%s: map in use\n" % wwid)
    host.umount("/data")
    assert host.run("multipath", "-f", wwid)[0] == 0
    assert host.maps() == {} and not fs.lexists(p) and fs.listdir("/dev/mapper") == ["control"]
    assert fs.listdir("/sys/devices/virtual/block") == []
    assert host.check() == []


def test_multipath_commands(host):
    wwid = _mp(host)
    assert host.run("multipath", "-a", "360014050000000000000000000000000") == \
        (0, "wwid '360014050000000000000000000000000' added\n", "")
    assert "/360014050000000000000000000000000/" in host.fs.read("/etc/multipath/wwids")
    assert host.run("multipath", "-w", "360014050000000000000000000000000")[0] == 0
    assert "/360014050000000000000000000000000/" not in host.fs.read("/etc/multipath/wwids")
    # del path / add path
    assert host.run("multipathd", "del", "path", "/dev/sdb") == (0, "ok\n", "")
    assert host.fs.listdir("/sys/block/dm-0/slaves") == ["sda"] and host.fs.listdir("/sys/block/sdb/holders") == []
    # the path left multipathd's list too (cli_del_path frees it): not shown, a second del fails
    assert host.run("multipathd", "show", "paths", "raw", "format", "%d %m")[1] == "sda %s\n" % wwid
    assert host.run("multipathd", "del", "path", "/dev/sdb") == (1, "fail\n", "")
    assert host.run("multipathd", "add", "path", "/dev/sdb") == (0, "ok\n", "")
    assert sorted(host.maps()["dm-0"]["paths"]) == ["sda", "sdb"]
    # a single path whose WWID is known: multipath -a + add path make the map (os-brick's forcing)
    host.scan(2, lun=1)
    w1 = host.disks()["sdc"]["wwid"]
    assert host.run("multipathd", "add", "path", "/dev/sdc") == (1, "fail\n", "")
    host.run("multipath", "-a", w1)
    assert host.run("multipathd", "add", "path", "/dev/sdc")[0] == 0
    assert host.maps()["dm-1"]["paths"] == {"sdc": "active"}
    assert host.run("multipath", "-C", "dm-1")[0] == 0
    # del map
    assert host.run("multipathd", "del", "map", w1) == (0, "ok\n", "")
    assert "dm-1" not in host.maps()
    out = host.run("multipathd", "show", "maps")[1].splitlines()
    assert out == ["name sysfs uuid", "%s dm-0 %s" % (wwid, wwid)]
    assert host.run("multipathd", "show", "status")[1].startswith("path checker states:")
    assert host.run("multipath", "-c", "/dev/sda")[0] == 0
    assert host.check() == []


def test_snapshot_and_diff(host):
    a = host.snapshot()
    assert not any(p.startswith("/.sim") for p in a)
    assert a["/sys/block/vda"] == ("link", "../devices/pci0000:00/0000:00:04.0/virtio1/block/vda")
    assert a["/dev/disk"] == ("dir", None) and a["/sys/devices/pci0000:00/0000:00:04.0/virtio1/block/vda/size"] == ("file", "6291456\n")
    host.add_target(IQN, portals=[P1], luns={0: 8})
    assert host.snapshot() == a  # the array is not part of the host's tree
    host.login(IQN, P1)
    b = host.snapshot()
    d = host.diff(a, b)
    assert "/sys/block/sda" in d["added"] and d["removed"] == [] and d["changed"] == []
    assert "+ /sys/block/sda ('link'" in str(d)
    assert host.diff(a, a) == {"added": [], "removed": [], "changed": []}
    assert str(host.diff(a, a)) == "(no difference)"
    host.run("udevadm", "settle")
    assert host.commands()[-1] == ["udevadm", "settle"]
    host.reset_commands()
    assert host.commands() == []


def test_fake_commands_are_thin_executables_and_light_to_import(host):
    bindir = host.bin_dir
    for tool in ("iscsiadm", "multipath", "multipathd", "blockdev", "fuser", "udevadm", "partprobe", "dmsetup"):
        p = os.path.join(bindir, tool)
        assert os.stat(p).st_mode & 0o777 == 0o755
        with open(p) as f:
            assert f.readline() == "#!/bin/sh\n"  # a wrapper that execs python3 on bin/_tool.py
            assert 'exec python3 "$here/_tool.py" %s "$@"\n' % tool in f.read()
    code = ("import sys; sys.path.insert(0, %r); import sim.cli; "
            "print(sorted(m for m in sys.modules if m.startswith(('connector', 'hashlib', 'subprocess', 'sim.host'))))"
            % os.path.dirname(os.path.dirname(host.bin_dir)))
    out = subprocess.check_output([sys.executable, "-c", code], universal_newlines=True)
    assert out.strip() == "[]"
    # BRICK_SIM_ROOT missing: clear message, rc 127
    env = dict(os.environ)
    env.pop("BRICK_SIM_ROOT", None)
    r = subprocess.run([os.path.join(bindir, "iscsiadm"), "-m", "session"], env=env, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 127 and "BRICK_SIM_ROOT" in r.stderr
    # several processes may open the same sim host: a second SimHost on the root attaches to it
    from sim import SimHost
    other = SimHost(host.root)
    other.add_target(IQN, portals=[P1], luns={0: 8})
    assert host.login(IQN, P1)["sid"] == 1
