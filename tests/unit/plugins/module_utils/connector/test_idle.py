# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""connector.idle: parsing, validation, and the wait against the simulated host."""

import os
import threading
import time

import pytest

from connector import blockers, idle
from connector.errors import CommandNotFound, DeviceBusy, DeviceNotFound, InvalidInput
from connector.hostfs import HostFS
from connector.runner import Runner


# -- fuser output ---------------------------------------------------------------------------------
@pytest.mark.parametrize("stdout,stderr,pids", [
    # psmisc: the name (and access letters) on stderr, right-aligned PIDs on stdout
    ("  4242  4243", "/dev/sdb:          ", [4242, 4243]),
    (" 17", "/dev/sdb1:     ", [17]),
    # psmisc with access letters after the PIDs, if a build prints them on stdout
    (" 4242c 4243m", "/dev/sdb:", [4242, 4243]),
    # psmisc, nothing holds it: rc 1, no PIDs, the name alone on stderr
    ("", "", []),
    # psmisc warnings about other processes do not count
    (" 99", "Cannot stat file /proc/1/fd/3: Permission denied\n/dev/sdb:", [99]),
    # busybox: PIDs only, space separated, trailing space + newline
    ("4242 4243 \n", "", [4242, 4243]),
    ("1\n", "", [1]),
    # a "name:" prefix on stdout (other implementations)
    ("/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.2004-01.x:t-lun-1: 55 56", "", [55, 56]),
    # duplicates collapse
    ("7 7 8", "", [7, 8]),
])
def test_parse_fuser(stdout, stderr, pids):
    assert blockers.parse_fuser(stdout, stderr) == pids


def test_fuser_missing_detection_is_about_the_device_only():
    assert blockers.fuser_says_missing("Specified filename /dev/sdz does not exist.\n", "/dev/sdz")
    assert blockers.fuser_says_missing("fuser: can't stat '/dev/sdz': No such file or directory", "/dev/sdz")
    # a process that exited during the scan: not the device
    assert not blockers.fuser_says_missing("Cannot stat file /proc/77/fd/4: No such file or directory", "/dev/sdz")
    assert not blockers.fuser_says_missing("/dev/sdz:", "/dev/sdz")


def test_parse_mountinfo_and_swaps():
    text = ("22 1 8:17 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/sdb1 rw\n"
            "23 1 0:45 / /data rw - btrfs /dev/sdb2 rw\n"
            "24 1 0:22 / /proc rw - proc proc rw\n")
    assert blockers.parse_mountinfo(text) == [
        ("8:17", "/mnt/with space", "/dev/sdb1"), ("0:45", "/data", "/dev/sdb2"), ("0:22", "/proc", "proc")]
    assert blockers.parse_mounts("/dev/sdb1 /mnt ext4 rw 0 0\n") == [(None, "/mnt", "/dev/sdb1")]
    swaps = ("Filename\t\t\t\tType\t\tSize\tUsed\tPriority\n"
             "/dev/sdb2                               partition\t1048572\t0\t-2\n"
             "/swap\\040file                           file\t1024\t0\t-3\n")
    assert blockers.parse_swaps(swaps) == ["/dev/sdb2", "/swap file"]


def test_describe_each_kind():
    assert idle.describe({"kind": "process", "device": "/dev/sdb", "pid": 5, "comm": "dd",
                          "cmdline": "dd of=/dev/sdb"}) == "pid 5 (dd) has /dev/sdb open: dd of=/dev/sdb"
    assert "held by dm-3 (vg-lv)" in idle.describe(
        {"kind": "holder", "device": "/dev/sdb", "holder": "dm-3", "holder_name": "vg-lv"})
    assert "mounted on /srv" in idle.describe({"kind": "mount", "device": "/dev/sdb1", "mountpoint": "/srv"})
    assert "swap" in idle.describe({"kind": "swap", "device": "/dev/sdb2"})
    assert "EBUSY" in idle.describe({"kind": "exclusive_open", "device": "/dev/sdb", "error": "EBUSY"})


# -- bad input fails before anything runs ---------------------------------------------------------
BAD_PATHS = [
    "/etc/passwd",              # outside /dev
    "sdb",                      # relative
    "/dev/../etc/shadow",       # traversal
    "/dev/disk/../../etc",      # traversal inside /dev
    "/dev/./sdb",               # not normalised
    "/dev//sdb",
    "/dev/sdb;reboot",          # shell metacharacters
    "/dev/$(reboot)",
    "/dev/`id`",
    "/dev/sdb|cat",
    "/dev/sdb&",
    "/dev/sd b",                # white space
    "/dev/sdb\n",
    "/dev/sdb\x00",
    "",
    None,
]


@pytest.mark.parametrize("bad", BAD_PATHS)
@pytest.mark.parametrize("call", ["inspect", "wait_idle"])
def test_bad_path_fails_before_any_command(tmp_path, bad, call):
    runner = Runner()
    fs = HostFS(str(tmp_path))
    with pytest.raises(InvalidInput):
        if call == "inspect":
            idle.inspect(bad, fs=fs, runner=runner, use_fuser="always")
        else:
            idle.wait_idle(bad, fs=fs, runner=runner, use_fuser="always", interval=0.01, max_retries=1)
    assert runner.history == []


@pytest.mark.parametrize("kwargs", [
    {"interval": 0}, {"interval": -1}, {"interval": "x"}, {"max_retries": -1}, {"max_retries": True},
    {"max_retries": "many"}, {"timeout": -1}, {"timeout": "soon"}, {"use_fuser": "sometimes"},
])
def test_bad_numbers_fail_before_any_command(tmp_path, kwargs):
    runner = Runner()
    with pytest.raises(InvalidInput):
        idle.wait_idle("/dev/sdb", fs=HostFS(str(tmp_path)), runner=runner, **kwargs)
    assert runner.history == []


def test_missing_device_is_a_distinct_error(tmp_path):
    runner = Runner()
    with pytest.raises(DeviceNotFound) as e:
        idle.wait_idle("/dev/sdq", fs=HostFS(str(tmp_path)), runner=runner)
    assert "does not exist" in str(e.value)
    assert not isinstance(e.value, DeviceBusy)
    assert runner.history == []


# -- the wait -------------------------------------------------------------------------------------
def test_idle_device_returns_at_once_with_one_check(minihost):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    runner = minihost.runner()
    t0 = time.monotonic()
    res = idle.wait_idle("/dev/disk/by-id/scsi-36001405sdb", interval=1.0, fs=minihost.fs, runner=runner)
    assert time.monotonic() - t0 < 0.5
    assert res["idle"] and res["checks"] == 1 and res["blockers"] == []
    assert res["device"] == "/dev/sdb"
    assert res["partitions"] == ["/dev/sdb1"]
    assert res["method"] == "fuser"
    assert runner.count("fuser") == 2  # the disk and its partition


def test_holder_closing_after_2_5s_is_noticed_within_one_interval(minihost):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    t0 = time.monotonic()
    minihost.hold_open("/dev/sdb1", 4242, "dd", seconds=2.5, cmdline="dd if=/dev/zero of=/dev/sdb1")
    res = idle.wait_idle(dev, interval=0.5, max_retries=20, fs=minihost.fs, runner=minihost.runner())
    took = time.monotonic() - t0
    assert 2.5 <= took <= 3.1, took
    assert res["idle"] and 6 <= res["checks"] <= 7
    assert 2.4 <= res["waited"] <= 3.1


def test_holder_that_never_closes_fails_after_the_retries(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 4242, "qemu-img", cmdline="qemu-img convert -O raw img /dev/sdb")
    t0 = time.monotonic()
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(dev, interval=0.1, max_retries=5, fs=minihost.fs, runner=minihost.runner(), cmdline=True)
    took = time.monotonic() - t0
    assert 0.5 <= took < 1.0
    err = e.value
    assert err.details["checks"] == 6
    assert "pid 4242 (qemu-img)" in str(err) and "qemu-img convert -O raw img /dev/sdb" in str(err)
    assert err.details["blockers"] == [{"kind": "process", "device": "/dev/sdb", "pid": 4242,
                                        "comm": "qemu-img", "cmdline": "qemu-img convert -O raw img /dev/sdb"}]
    assert "stop the listed processes" in err.hint


def test_timeout_overrides_max_retries(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 7, "blkid")
    t0 = time.monotonic()
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(dev, interval=0.2, max_retries=1, timeout=1.0, fs=minihost.fs, runner=minihost.runner())
    assert 0.95 <= time.monotonic() - t0 < 1.4
    assert e.value.details["checks"] == 6  # 0, .2, .4, .6, .8, 1.0
    assert "timeout 1.0s" in str(e.value)


def test_no_fixed_sleep_with_fake_clock(minihost):
    """The schedule is t0 + k*interval: the sleeps add up to the wait, never a fixed pause first."""
    dev = minihost.add_disk()
    minihost.hold_open(dev, 9, "udisksd")
    now = [100.0]
    sleeps = []

    def sleep(s):
        sleeps.append(round(s, 6))
        now[0] += s
        if len(sleeps) == 3:
            minihost.release(9)

    res = idle.wait_idle(dev, interval=1.0, fs=minihost.fs, runner=minihost.runner(), sleep=sleep, clock=lambda: now[0])
    assert res["checks"] == 4 and sleeps == [1.0, 1.0, 1.0] and res["waited"] == 3.0


@pytest.mark.parametrize("use_fuser", ["auto", "never"])
def test_mounted_partition_is_busy(minihost, use_fuser):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    minihost.mount("/dev/sdb1", "/srv/data")
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner(), use_fuser=use_fuser)
    assert not res["idle"]
    assert res["blockers"] == [{"kind": "mount", "device": "/dev/sdb1", "mountpoint": "/srv/data"}]
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(dev, interval=0.05, max_retries=2, fs=minihost.fs, runner=minihost.runner(), use_fuser=use_fuser)
    assert "/dev/sdb1 is mounted on /srv/data" in str(e.value) and "unmount" in e.value.hint


def test_mount_by_source_link(minihost):
    """A mount whose major:minor is anonymous (btrfs) is matched by its source."""
    dev = minihost.add_disk()
    with open(minihost._p("/proc/self/mountinfo"), "a") as f:
        f.write("41 21 0:55 / /pool rw - btrfs /dev/disk/by-id/scsi-36001405sdb rw\n")
    res = idle.inspect(dev, fs=minihost.fs, use_fuser="never")
    assert res["blockers"] == [{"kind": "mount", "device": "/dev/sdb", "mountpoint": "/pool"}]


def test_swap_on_partition_is_busy(minihost):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 2)
    minihost.swapon("/dev/sdb2")
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner())
    assert res["blockers"] == [{"kind": "swap", "device": "/dev/sdb2"}]
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(dev, interval=0.05, max_retries=1, fs=minihost.fs, runner=minihost.runner())
    assert "/dev/sdb2 is an active swap area" in str(e.value) and "swapoff" in e.value.hint


def test_dm_holder_on_disk_and_on_partition(minihost):
    dev = minihost.add_disk()
    part = minihost.add_partition(dev, 1)
    minihost.add_dm("vg0-data", [part], uuid="LVM-abcdef")
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner())
    assert res["blockers"] == [{"kind": "holder", "device": "/dev/sdb1", "holder": "dm-0", "holder_name": "vg0-data"}]
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(dev, interval=0.05, max_retries=1, fs=minihost.fs, runner=minihost.runner())
    assert "/dev/sdb1 is held by dm-0 (vg0-data)" in str(e.value)


def test_multipath_map_with_kpartx_partitions(minihost):
    a, b = minihost.add_disk("sdb"), minihost.add_disk("sdc")
    mp = minihost.add_dm("mpatha", [a, b])
    p1 = minihost.add_kpartx("mpatha", 1)
    p2 = minihost.add_kpartx("mpatha", 2)
    runner = minihost.runner()
    # the paths are held by the map
    res = idle.inspect(a, fs=minihost.fs, runner=runner)
    assert res["blockers"] == [{"kind": "holder", "device": "/dev/sdb", "holder": "dm-0", "holder_name": "mpatha"}]
    # the map itself: its kpartx maps are partitions, not blockers
    res = idle.inspect(mp, fs=minihost.fs, runner=runner, exclusive=True)
    assert res["idle"], res
    assert res["device"] == "/dev/dm-0"
    assert res["partitions"] == [p1, p2] == ["/dev/mapper/mpatha-part1", "/dev/mapper/mpatha-part2"]
    # a busy kpartx partition makes the map busy
    minihost.hold_open("/dev/dm-2", 555, "mkfs.xfs", cmdline="mkfs.xfs /dev/mapper/mpatha-part2")
    res = idle.inspect(mp, fs=minihost.fs, runner=runner, cmdline=True)
    assert res["blockers"] == [{"kind": "process", "device": "/dev/mapper/mpatha-part2", "pid": 555,
                                "comm": "mkfs.xfs", "cmdline": "mkfs.xfs /dev/mapper/mpatha-part2"}]
    # ... and so does a mount of one, found by the /proc scan too
    minihost.release(555)
    minihost.mount("/dev/mapper/mpatha-part1", "/var/lib/data")
    res = idle.inspect(mp, fs=minihost.fs, use_fuser="never")
    assert res["method"] == "proc"
    assert res["blockers"] == [{"kind": "mount", "device": "/dev/mapper/mpatha-part1", "mountpoint": "/var/lib/data"}]


def test_proc_scan_matches_fuser(minihost):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    minihost.hold_open("/dev/sdb1", 31, "sgdisk", cmdline="sgdisk -v /dev/sdb")
    minihost.hold_open("/dev/sdb", 32, "blkid", cmdline="blkid -p /dev/sdb")
    a = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner(), use_fuser="always")
    b = idle.inspect(dev, fs=minihost.fs, use_fuser="never")
    assert (a["method"], b["method"]) == ("fuser", "proc")

    def key(x):
        return (x["pid"], x["device"])

    assert sorted(a["blockers"], key=key) == sorted(b["blockers"], key=key)
    assert {(x["pid"], x["device"], x["comm"]) for x in a["blockers"]} == {
        (31, "/dev/sdb1", "sgdisk"), (32, "/dev/sdb", "blkid")}


def test_missing_fuser_auto_falls_back_to_proc(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 77, "dd")
    runner = minihost.runner(with_fuser=False)
    res = idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="auto")
    assert res["method"] == "proc" and res["blockers"][0]["pid"] == 77
    assert runner.history == []


def test_missing_fuser_always_is_a_clear_error(minihost):
    dev = minihost.add_disk()
    runner = minihost.runner(with_fuser=False)
    with pytest.raises(CommandNotFound) as e:
        idle.wait_idle(dev, fs=minihost.fs, runner=runner, use_fuser=True)
    assert "'fuser' was not found" in str(e.value) and "psmisc" in str(e.value)
    assert runner.history == []


def _tool(minihost, name, script):
    d = os.path.join(minihost.root, ".alt-" + name)
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "fuser")
    with open(p, "w") as f:
        f.write("#!/bin/sh\n" + script)
    os.chmod(p, 0o755)
    return Runner(env={"PATH": d + ":/usr/bin:/bin"})


def test_busybox_fuser_output_through_the_runner(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 4321, "sh")
    runner = _tool(minihost, "busybox", 'echo "4321 "\nexit 0\n')
    res = idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="always", cmdline=True)
    assert res["blockers"] == [{"kind": "process", "device": "/dev/sdb", "pid": 4321, "comm": "sh", "cmdline": "sh"}]
    assert runner.history[0]["argv"][1:] == ["/dev/sdb"]


def test_psmisc_fuser_output_through_the_runner(minihost):
    dev = minihost.add_disk()
    runner = _tool(minihost, "psmisc", 'echo "$1:" >&2\nprintf "  1001  1002"\nexit 0\n')
    res = idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="always")
    assert [b["pid"] for b in res["blockers"]] == [1001, 1002]


def test_broken_fuser_auto_falls_back_always_raises(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 12, "dd")
    runner = _tool(minihost, "broken", 'echo "fuser: internal error" >&2\nexit 7\n')
    res = idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="auto")
    assert res["method"] == "proc" and res["blockers"][0]["pid"] == 12
    from connector.errors import CommandError
    with pytest.raises(CommandError):
        idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="always")


def test_device_missing_and_dangling_link(minihost):
    minihost._ln("/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.2004-01.com.x:t-lun-3", "../../sdx")
    runner = minihost.runner()
    with pytest.raises(DeviceNotFound) as e:
        idle.wait_idle("/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.2004-01.com.x:t-lun-3",
                       fs=minihost.fs, runner=runner)
    assert "dangling link" in str(e.value)
    with pytest.raises(DeviceNotFound) as e:
        idle.wait_idle("/dev/sdz", fs=minihost.fs, runner=runner)
    assert "does not exist" in str(e.value)
    minihost._w("/dev/notablock")
    with pytest.raises(DeviceNotFound) as e:
        idle.inspect("/dev/notablock", fs=minihost.fs, runner=runner)
    assert "not a block device" in str(e.value)
    assert runner.history == []


def test_device_vanishing_during_the_wait(minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 3, "dd")
    threading.Timer(0.15, os.unlink, (minihost._p("/dev/sdb"),)).start()
    with pytest.raises(DeviceNotFound) as e:
        idle.wait_idle(dev, interval=0.1, max_retries=10, fs=minihost.fs, runner=minihost.runner())
    assert "disappeared" in str(e.value)


def test_exclusive_open_failure_is_a_blocker(minihost, monkeypatch):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    monkeypatch.setattr(minihost.fs, "open_exclusive", lambda p: "EBUSY" if p == "/dev/sdb1" else None)
    assert idle.inspect(dev, fs=minihost.fs, runner=minihost.runner())["idle"]
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner(), exclusive=True)
    assert res["blockers"] == [{"kind": "exclusive_open", "device": "/dev/sdb1", "error": "EBUSY"}]


def test_fuser_that_cannot_see_the_device_is_not_trusted(minihost):
    """A fuser looking at another /dev (says "does not exist" while the node is there): auto
    falls back to the /proc scan instead of failing."""
    dev = minihost.add_disk()
    minihost.hold_open(dev, 61, "dd")
    runner = _tool(minihost, "blind", 'echo "Specified filename $1 does not exist." >&2\nexit 1\n')
    res = idle.inspect(dev, fs=minihost.fs, runner=runner, use_fuser="auto")
    assert res["method"] == "proc" and res["blockers"][0]["pid"] == 61


# -- the same cases on the shared simulated host (tests/sim) --------------------------------------
@pytest.fixture
def sim(tmp_path):
    simmod = pytest.importorskip("sim")
    h = simmod.SimHost(tmp_path / "sim")
    h.add_target("iqn.2004-01.com.example:t1", portals=("10.0.0.1:3260", "10.0.0.2:3260"))
    h.login("iqn.2004-01.com.example:t1", "10.0.0.1:3260")
    h.login("iqn.2004-01.com.example:t1", "10.0.0.2:3260")
    yield h
    for t in getattr(h, "_timers", []):
        t.cancel()


def test_sim_holder_closing_after_2_5s(sim):
    mp = "/dev/" + list(sim.maps())[0]
    part = sim.add_partition(mp, 1, 100)
    runner = sim.runner()
    t0 = time.monotonic()
    sim.hold_open(part, pid=4242, comm="blkid", seconds=2.5)
    # the /proc scan: the sim's fake fuser costs ~0.2 s per call (a Python start), 0.4 s a check here
    res = idle.wait_idle(mp, interval=0.5, fs=sim.fs, runner=runner, use_fuser="never")
    took = time.monotonic() - t0
    assert 2.5 <= took <= 3.1, took
    assert runner.history == []
    # fuser on the sim sees the same holder
    sim.hold_open(part, pid=4243, comm="blkid")
    res2 = idle.inspect(mp, fs=sim.fs, runner=runner)
    assert res2["method"] == "fuser" and [b["pid"] for b in res2["blockers"]] == [4243]
    assert res["idle"] and res["partitions"] == [part] and part.startswith("/dev/mapper/")


def test_sim_never_closing_holder_and_kpartx_mount_swap(sim):
    mp = "/dev/" + list(sim.maps())[0]
    p1 = sim.add_partition(mp, 1, 100)
    p2 = sim.add_partition(mp, 2, 100)
    runner = sim.runner()
    # the sd paths are held by the map
    sd = "/dev/" + sorted(sim.disks())[0]
    assert [b["kind"] for b in idle.inspect(sd, fs=sim.fs, runner=runner)["blockers"]] == ["holder"]
    sim.hold_open(p1, pid=777, comm="mkfs.xfs")
    with pytest.raises(DeviceBusy) as e:
        idle.wait_idle(mp, interval=0.05, max_retries=3, fs=sim.fs, runner=runner)
    assert e.value.details["checks"] == 4 and "pid 777 (mkfs.xfs)" in str(e.value) and p1 in str(e.value)
    sim.release(777)
    sim.mount(p2, "/srv")
    sim.swapon(p1)
    res = idle.inspect(mp, fs=sim.fs, runner=runner, use_fuser="never")
    assert sorted((b["kind"], b["device"]) for b in res["blockers"]) == [("mount", p2), ("swap", p1)]
