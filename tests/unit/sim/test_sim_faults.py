# -*- coding: utf-8 -*-
"""Every fault knob of the simulated host."""
import json
import time

import pytest

from connector.errors import CommandTimeout
from sim import SimError
from simtest_util import IQN, P1, P2, node, sh


def _mp_host(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.login(IQN, P1)
    host.login(IQN, P2)
    return t["luns"][0]["wwid"]


def test_unknown_knob_is_refused_and_faults_live_in_a_file(host):
    with pytest.raises(ValueError):
        host.set_fault("portal_dwon", {})
    host.set_fault("latency", 0.01)
    with open(host.sim.faults_path) as f:
        assert json.load(f) == {"time_scale": 0.01, "latency": 0.01}
    host.clear_faults()
    assert host.faults() == {}


def test_portal_down_blackhole_takes_the_record_login_time(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "blackhole"})
    host.set_fault("time_scale", 0.05)
    ia = host.run
    ia("iscsiadm", *node(IQN, P2, "--op", "new")[1:])
    ia("iscsiadm", *node(IQN, P2, "--op", "update", "-n", "node.conn[0].timeo.login_timeout", "-v", "4",
                         "-n", "node.session.initial_login_retry_max", "-v", "2")[1:])
    t0 = time.monotonic()
    r = sh(host, *node(IQN, P2, "--login"))
    took = time.monotonic() - t0
    assert r.rc == 8
    assert "iscsiadm: initiator reported error (8 - connection timed out)" in r.stderr.splitlines()
    assert took >= 4 * 2 * 0.05
    assert host.sessions() == []
    # the default record: 15 s x 8 tries, scaled
    host.set_fault("time_scale", 0.001)
    ia("iscsiadm", *node(IQN, P2, "--op", "new")[1:])
    t0 = time.monotonic()
    assert ia("iscsiadm", *node(IQN, P2, "--login")[1:])[0] == 8
    assert time.monotonic() - t0 >= 0.12
    # the other portal works
    assert host.login(IQN, P1)["state"] == "LOGGED_IN"


def test_portal_down_refuse_is_immediate_for_login_and_discovery(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.set_fault("time_scale", 1.0)
    host.set_fault("portal_down", {P1: "refuse"})
    host.run("iscsiadm", *node(IQN, P1, "--op", "new")[1:])
    t0 = time.monotonic()
    rc, out, err = host.run("iscsiadm", *node(IQN, P1, "--login")[1:])
    assert rc == 8 and time.monotonic() - t0 < 1
    rc, out, err = host.run("iscsiadm", "-m", "discovery", "-t", "st", "-p", P1, "-o", "nonpersistent")
    assert rc == 4 and "Connection refused" in err and out == ""


def test_login_fail_knob(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("login_fail", {P1: 24, P2: 19})
    for p, rc in ((P1, 24), (P2, 19)):
        host.run("iscsiadm", *node(IQN, p, "--op", "new")[1:])
        assert host.run("iscsiadm", *node(IQN, p, "--login")[1:])[0] == rc
    host.clear_faults()
    assert host.login(IQN, P1)["sid"] == 1


def test_hang_is_killed_by_the_runner_timeout(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.login(IQN, P1)
    host.set_fault("hang", ["iscsiadm -m node ... --logout", {"cmd": "multipath", "args_contain": "-f"}])
    r = host.runner()
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        r.run(node(IQN, P1, "--logout"), timeout=0.5)
    with pytest.raises(CommandTimeout):
        r.run(["multipath", "-f", "x"], timeout=0.5)
    assert time.monotonic() - t0 < 10
    # nothing happened, the commands were logged, others do not hang
    assert len(host.sessions()) == 1
    assert [c[0] for c in host.commands()][-2:] == ["iscsiadm", "multipath"]
    assert r.run(["iscsiadm", "-m", "session"], timeout=30).rc == 0
    assert r.run(["multipath", "-ll"], timeout=30).rc == 0
    with pytest.raises(SimError):
        host.run("multipath", "-f", "x")  # in-process cannot hang: it says so


def test_flush_fail_in_use_and_io_error(host):
    wwid = _mp_host(host)
    host.set_fault("flush_fail", {wwid: "in_use"})
    r = sh(host, "multipath", "-f", wwid)
    assert (r.rc, r.stderr) == (1, "%s: map in use\n" % wwid)
    host.set_fault("flush_fail", {"/dev/dm-0": "io_error"})
    r = sh(host, "multipath", "-f", "/dev/mapper/" + wwid)
    assert r.rc == 1 and "Input/output error" in r.stderr
    r = sh(host, "blockdev", "--flushbufs", "/dev/dm-0")
    assert (r.rc, r.stderr) == (1, "blockdev: ioctl error on BLKFLSBUF: Input/output error\n")
    assert sh(host, "blockdev", "--flushbufs", "/dev/sda").rc == 0
    assert "dm-0" in host.maps()
    host.clear_faults()
    assert sh(host, "multipath", "-f", "/dev/dm-0").rc == 0
    assert host.maps() == {}
    r = sh(host, "multipath", "-f", wwid)
    assert (r.rc, r.stderr) == (1, "%s is not a multipath device\n" % wwid)
    assert sh(host, "blockdev", "--flushbufs", "/dev/nonexistent").rc == 1


def test_device_never_appears(host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 8})
    host.set_fault("device_never_appears", ["%s:0" % IQN])
    s = host.login(IQN, P1)  # auto scan: only LUN 1
    assert [d["lun"] for d in host.disks().values()] == [1]
    host.fs.write("/sys/class/scsi_host/host%d/scan" % s["host"], "0 0 0")
    assert [d["lun"] for d in host.disks().values()] == [1]
    host.clear_faults()
    host.fs.write("/sys/class/scsi_host/host%d/scan" % s["host"], "0 0 0")
    assert sorted(d["lun"] for d in host.disks().values()) == [0, 1]


def test_latency_applies_to_every_fake_command(host):
    host.set_fault("latency", 0.2)
    t0 = time.monotonic()
    assert host.run("udevadm", "settle")[0] == 0
    assert host.run("partprobe", "/dev/vda")[0] == 0
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert sh(host, "udevadm", "settle", "-t", "5").rc == 0
    assert time.monotonic() - t0 >= 0.2


def test_multipathd_down_and_back(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    assert host.fs.read("/run/multipathd.pid") == "612"
    assert host.fs.read("/proc/612/comm") == "multipathd"
    host.set_fault("multipathd_down", True)
    assert not host.fs.exists("/run/multipathd.pid") and not host.fs.exists("/proc/612")
    r = sh(host, "multipathd", "show", "status")
    assert r.rc != 0 and "error receiving packet" in r.stdout
    host.login(IQN, P1)
    host.login(IQN, P2)
    assert host.maps() == {}  # nobody builds the map
    assert sh(host, "multipathd", "add", "path", "/dev/sda").rc == 1
    host.set_fault("multipathd_down", "rc0")  # LP#1789699: exit 0 with the error text
    r = sh(host, "multipathd", "show", "status")
    assert r.rc == 0 and "error receiving packet" in r.stdout
    host.clear_faults()
    # the daemon is back: it picks the paths up
    assert host.fs.read("/run/multipathd.pid") == "612"
    m = host.maps()["dm-0"]
    assert m["wwid"] == t["luns"][0]["wwid"] and sorted(m["paths"]) == ["sda", "sdb"]
    assert sh(host, "multipathd", "show", "status").rc == 0
    assert host.check() == []


def test_host_without_multipathd(tmp_path):
    from sim import SimHost
    h = SimHost(str(tmp_path / "h"), multipathd=False)
    h.add_target(IQN, portals=[P1, P2], luns={0: 64})
    h.login(IQN, P1)
    h.login(IQN, P2)
    assert h.maps() == {} and not h.fs.exists("/run/multipathd.pid")
    assert h.run("multipathd", "show", "status")[0] == 1


def test_time_scale_default(tmp_path):
    from sim import SimHost
    h = SimHost(str(tmp_path / "h"))
    assert h.sim.time_scale() == 1.0 and h.faults() == {}


def test_path_fail_and_restore(host):
    wwid = _mp_host(host)
    assert host.path_fail(P2, session_state="FREE") == [2]
    fs = host.fs
    assert fs.read("/sys/class/iscsi_session/session2/state") == "FREE"
    assert fs.read("/sys/block/sdb/device/state") == "transport-offline"
    assert fs.read("/sys/block/sda/device/state") == "running"
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "failed"}
    assert host.run("multipathd", "show", "paths", "raw", "format", "%d %t %o")[1] == \
        "sda active running\nsdb failed offline\n"
    assert host.run("multipath", "-ll")[1].splitlines()[-1].endswith("sdb 8:16  failed faulty running")
    assert host.run("multipath", "-C", "dm-0")[0] == 0
    host.path_fail(P1, session_state="FREE")
    assert host.run("multipath", "-C", "dm-0")[0] == 1
    # a scan on a failed session creates nothing
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 8})
    assert host.scan(2, lun=1) == []
    host.path_restore(P1)
    host.path_restore(P2)
    assert fs.read("/sys/class/iscsi_session/session2/state") == "LOGGED_IN"
    assert fs.read("/sys/block/sdb/device/state") == "running"
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "active"}
    assert wwid in host.run("multipath", "-ll", wwid)[1]
