# -*- coding: utf-8 -*-
"""queue_if_no_path on the multipath maps: multipathd disablequeueing/restorequeueing, dmsetup message,
and what it means for I/O on a map without a usable path (blockdev --flushbufs hangs or fails)."""
import subprocess
import threading
import time

import pytest

from connector.errors import CommandTimeout
from sim import SimError
from simtest_util import IQN, P1, P2, sh

EIO = "blockdev: ioctl error on BLKFLSBUF: Input/output error\n"


def _mp(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.login(IQN, P1)
    host.login(IQN, P2)
    return t["luns"][0]["wwid"]


def test_features_default_and_multipathd_queueing_commands(host):
    wwid = _mp(host)
    assert host.map_features(wwid) == host.map_features("dm-0") == "1 queue_if_no_path"
    assert host.run("multipath", "-ll")[1].splitlines()[1] == \
        "size=64M features='1 queue_if_no_path' hwhandler='1 alua' wp=rw"
    assert host.run("multipathd", "show", "maps", "raw", "format", "%n %Q")[1] == "%s 12 chk\n" % wwid
    r = sh(host, "multipathd", "disablequeueing", "map", wwid)
    assert (r.rc, r.stdout) == (0, "ok\n")
    assert host.map_features(wwid) == "0"
    assert host.run("multipath", "-ll", wwid)[1].splitlines()[1] == "size=64M features='0' hwhandler='1 alua' wp=rw"
    assert host.run("multipathd", "show", "maps", "raw", "format", "%n %Q")[1] == "%s off\n" % wwid
    # multipathd's own reloads (a path leaves, a path joins) turn it back on, as on the lab's 0.9.4
    # ("reload [... 1 queue_if_no_path ...]", "Entering recovery mode")
    assert host.run("multipathd", "del", "path", "/dev/sdb")[0] == 0
    assert host.map_features(wwid) == "1 queue_if_no_path"
    assert host.run("multipathd", "show", "maps", "raw", "format", "%n %Q")[1] == "%s 12 chk\n" % wwid
    assert host.run("multipathd", "disablequeueing", "map", wwid)[0] == 0
    assert host.run("multipathd", "add", "path", "/dev/sdb")[0] == 0
    assert host.map_features(wwid) == "1 queue_if_no_path"
    assert host.run("multipathd", "disablequeueing", "map", wwid)[0] == 0
    assert host.map_features(wwid) == "0"
    assert host.run("multipathd", "restorequeueing", "map", wwid) == (0, "ok\n", "")
    assert host.map_features(wwid) == "1 queue_if_no_path"
    assert host.run("multipathd", "disablequeueing", "maps") == (0, "ok\n", "")
    assert host.map_features(wwid) == "0"
    assert host.run("multipathd", "restorequeueing", "maps") == (0, "ok\n", "")
    assert host.map_features(wwid) == "1 queue_if_no_path"
    assert host.run("multipathd", "disablequeueing", "map", "nosuchmap") == (1, "fail\n", "")
    with pytest.raises(SimError):
        host.map_features("nosuchmap")


def test_enablequeueing_is_not_a_multipathd_verb(host):
    """0.9.4 has restorequeueing; an unknown verb gets the help text, and the client still exits 0."""
    wwid = _mp(host)
    host.run("multipathd", "disablequeueing", "map", wwid)
    r = sh(host, "multipathd", "enablequeueing", "map", wwid)
    assert r.rc == 0
    out = r.stdout.splitlines()
    assert out[0] == "enablequeueing map %s: not found" % wwid and out[2] == "CLI commands reference:"
    assert " restorequeueing map|multipath $map" in out
    assert host.map_features(wwid) == "0"


def test_dmsetup_message_table_info_ls(host):
    wwid = _mp(host)
    assert host.run("dmsetup", "table", wwid) == \
        (0, "0 131072 multipath 1 queue_if_no_path 1 alua 1 1 service-time 0 2 1 8:0 1 8:16 1\n", "")
    r = sh(host, "dmsetup", "message", wwid, "0", "fail_if_no_path")
    assert (r.rc, r.stdout, r.stderr) == (0, "", "")
    assert host.map_features(wwid) == "0"
    assert host.run("dmsetup", "table", "/dev/mapper/" + wwid)[1] == \
        "0 131072 multipath 0 1 alua 1 1 service-time 0 2 1 8:0 1 8:16 1\n"
    # multipathd does not know: its next reload of the map turns queueing back on
    assert host.run("multipathd", "show", "maps", "raw", "format", "%Q")[1] == "12 chk\n"
    assert host.run("multipathd", "del", "path", "/dev/sdb")[0] == 0
    assert host.map_features(wwid) == "1 queue_if_no_path"
    assert host.run("dmsetup", "message", wwid, "0", "queue_if_no_path")[0] == 0
    rc, out, err = host.run("dmsetup", "message", wwid, "0", "frobnicate")
    assert rc == 1 and "Invalid argument" in err
    assert host.run("dmsetup", "message", "nosuchmap", "0", "fail_if_no_path")[0] == 1
    assert host.run("dmsetup", "table", "nosuchmap") == (1, "", "Device does not exist.\nCommand failed.\n")
    host.add_partition("/dev/mapper/" + wwid, 1, 16)
    host.mount("/dev/mapper/%s-part1" % wwid, "/data")
    info = host.run("dmsetup", "info", wwid)[1].splitlines()
    assert info[0] == "Name:              " + wwid
    assert "Open count:        1" in info and "Major, minor:      253, 0" in info
    assert "UUID: mpath-" + wwid in info
    assert host.run("dmsetup", "table", wwid + "-part1")[1] == "0 32768 linear 253:0 2048\n"
    assert host.run("dmsetup", "ls")[1] == "%s\t(253:0)\n%s-part1\t(253:1)\n" % (wwid, wwid)
    assert host.run("dmsetup", "message", wwid + "-part1", "0", "fail_if_no_path")[0] == 1
    host.umount("/data")
    host.run("multipath", "-f", wwid)
    assert host.run("dmsetup", "ls")[1] == "No devices found\n"


def test_io_on_a_map_without_path_hangs_while_queueing_and_fails_when_not(host):
    wwid = _mp(host)
    dev = "/dev/mapper/" + wwid
    host.path_fail(P1, session_state="FREE")
    assert sh(host, "blockdev", "--flushbufs", dev).rc == 0  # one path left: fine
    host.path_fail(P2, session_state="FAILED")
    r = host.runner()
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        r.run(["blockdev", "--flushbufs", dev], timeout=0.5)
    assert time.monotonic() - t0 < 10
    with pytest.raises(SimError):
        host.run("blockdev", "--flushbufs", dev)  # in-process cannot block: it says so
    # the kpartx partition's I/O goes to the map
    host.add_partition(dev, 1, 16)
    with pytest.raises(CommandTimeout):
        r.run(["blockdev", "--flushbufs", dev + "-part1"], timeout=0.3)
    assert sh(host, "blockdev", "--flushbufs", "/dev/sda").rc == 0  # path devices: no queueing model
    # queueing off: EIO at once
    host.run("multipathd", "disablequeueing", "map", wwid)
    res = sh(host, "blockdev", "--flushbufs", dev)
    assert (res.rc, res.stderr) == (1, EIO)
    assert sh(host, "blockdev", "--flushbufs", dev + "-part1").rc == 1
    assert host.run("blockdev", "--flushbufs", "/dev/dm-0") == (1, "", EIO)


def test_queued_io_completes_when_a_path_returns_or_fails_when_queueing_stops(host):
    wwid = _mp(host)
    dev = "/dev/mapper/" + wwid
    host.path_fail(P1, session_state="FREE")
    host.path_fail(P2, session_state="FREE")

    def flush():
        return subprocess.Popen(["blockdev", "--flushbufs", dev], env=host.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
    p = flush()
    time.sleep(0.3)
    assert p.poll() is None  # queued
    threading.Timer(0.1, host.path_restore, (P2,)).start()
    out, err = p.communicate(timeout=20)
    assert (p.returncode, err) == (0, "")
    host.path_fail(P2, session_state="FREE")
    p = flush()
    time.sleep(0.3)
    assert p.poll() is None
    assert sh(host, "dmsetup", "message", wwid, "0", "fail_if_no_path").rc == 0
    out, err = p.communicate(timeout=20)
    assert (p.returncode, err) == (1, EIO)
