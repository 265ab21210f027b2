"""iscsi_volume state=absent on the simulated host: the connector's detach."""
import time

import pytest

from connector import iscsi
from connector.errors import DeviceBusy, FlushError

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0):
    return iscsi.build_paths(portals, [IQN], [lun])


def attached(h, portals, lun=0, **kw):
    return conn(h, **kw).connect(paths(portals, lun))


def test_single_path_detach_leaves_exactly_the_tree_before_attach(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    attached(host, [P1], multipath="off")
    c = conn(host)
    res = c.disconnect(paths([P1]))
    assert res["changed"] is True and res["leftovers"] == []
    assert host.snapshot() == before, host.diff(before, host.snapshot())
    tools = [h["argv"][0].split("/")[-1] + " " + h["argv"][1] for h in c.runner.history]
    # flushbufs + logout + node delete: the raw floor
    assert len(c.runner.history) == 3, tools


def test_multipath_detach_flushes_first_and_leaves_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    res = attached(host, [P1, P2])
    c = conn(host)
    out = c.disconnect(paths([P1, P2]))
    argvs = [h["argv"] for h in c.runner.history]
    assert argvs[0][:2] == ["multipath", "-f"] and argvs[0][2] == res["multipath_map"]
    assert not any(a[0] == "blockdev" for a in argvs)  # the map flush is the barrier, no path flush
    assert len(argvs) <= 6, argvs
    assert out["leftovers"] == []
    # only multipathd's memory of the WWID (/etc/multipath/wwids) differs, as on a real host
    after = host.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}


def test_shared_session_keeps_the_other_lun_working(host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    a = attached(host, [P1], lun=0, multipath="off")
    b = attached(host, [P1], lun=1, multipath="off")
    c = conn(host)
    out = c.disconnect(paths([P1], lun=0))
    assert out["leftovers"] == []
    assert not host.fs.exists("/sys/block/%s" % a["device"][5:])
    assert host.fs.exists("/sys/block/%s" % b["device"][5:])
    assert host.fs.read("/sys/block/%s/device/state" % b["device"][5:]) == "running"
    assert not any("--logout" in h["argv"] for h in c.runner.history)
    assert out["removed"]["kept_sessions"]
    # re-run of the other LUN's attach still finds it, with zero commands
    c2 = conn(host, multipath="off")
    assert c2.connect(paths([P1], lun=1))["changed"] is False and c2.runner.history == []


def test_flush_fails_in_use_nothing_removed(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attached(host, [P1, P2])
    host.hold_open(res["device"], pid=4242, comm="qemu-img")
    snap = host.snapshot()
    c = conn(host)
    calls = []
    with pytest.raises(FlushError) as ei:
        # the stub holds the map (what hold_open did), not its paths: a held path is refused before the flush
        c.disconnect(paths([P1, P2]), busy_check=lambda d: calls.append(d) or (
            [{"kind": "process", "pid": 4242, "comm": "qemu-img"}] if d == res["device"] else []))
    assert "in use" in str(ei.value) and "4242" in str(ei.value)
    # an "in use" map gets one wait for udev to settle before the retries (transient udev holders)
    argvs = [h["argv"] for h in c.runner.history]
    assert argvs[1][:2] == ["udevadm", "settle"] and sum(a[:2] == ["multipath", "-f"] for a in argvs) == 4
    assert host.snapshot() == snap
    assert not any("--logout" in h["argv"] for h in c.runner.history)


def test_flush_fails_with_io_error_nothing_removed(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attached(host, [P1, P2])
    host.set_fault("flush_fail", {res["multipath_map"]: "io_error"})
    snap = host.snapshot()
    c = conn(host)
    with pytest.raises(FlushError) as ei:
        c.disconnect(paths([P1, P2]))
    assert ei.value.details["reason"] == "io_error"
    assert ei.value.details["attempts"] == 4  # first try + 3 retries with backoff
    assert host.snapshot() == snap


def test_single_path_busy_mounted_refuses(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    res = attached(host, [P1], multipath="off")
    host.mount(res["device"], "/mnt/data")
    snap = host.snapshot()
    c = conn(host)
    from connector import idle

    def busy(d):
        return idle.inspect(d, use_fuser="never", fs=host.fs, runner=c.runner)["blockers"]
    with pytest.raises(DeviceBusy) as ei:
        c.disconnect(paths([P1]), busy_check=busy)
    assert "/mnt/data" in str(ei.value)
    assert host.snapshot() == snap


def test_force_goes_on_and_cleans_up(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attached(host, [P1, P2])
    host.set_fault("flush_fail", {res["multipath_map"]: "io_error"})
    c = conn(host)
    out = c.disconnect(paths([P1, P2]), force=True)
    assert any("data may be lost" in p for p in out["problems"])
    assert host.fs.listdir("/sys/class/iscsi_session") == []
    assert not host.fs.exists("/sys/block/%s" % res["device"][5:])


def test_ignore_errors_turns_failures_into_warnings(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attached(host, [P1], multipath="off")
    host.set_fault("hang", [{"cmd": "iscsiadm", "args_contain": "--logout"}])
    c = conn(host)
    c.command_timeout = 0.5
    out = c.disconnect(paths([P1]), ignore_errors=True)
    assert out["leftovers"] and any("session" in left for left in out["leftovers"])
    assert any("left" in w for w in c.warnings)


def test_hanging_command_is_bounded_by_its_timeout(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attached(host, [P1, P2])
    host.set_fault("hang", [{"cmd": "multipath", "args_contain": "-f"}])
    c = conn(host)
    import connector.multipath as mp
    old = mp.FLUSH_TIMEOUT
    t0 = time.monotonic()
    with pytest.raises(FlushError) as ei:
        mpf = mp.flush
        mp.flush = lambda runner, name, **kw: mpf(runner, name, retries=1, delay=0.01, timeout=0.5)
        try:
            c.disconnect(paths([P1, P2]))
        finally:
            mp.flush = mpf
    assert time.monotonic() - t0 < 5
    assert ei.value.details["reason"] == "timeout"
    assert host.fs.exists("/sys/block/%s" % res["device"][5:])
    del old


def test_a_path_already_gone(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attached(host, [P1, P2])
    gone = res["paths"][1]["device"][5:]
    host.fs.write("/sys/block/%s/device/delete" % gone, "1")
    c = conn(host)
    out = c.disconnect(paths([P1, P2]))
    assert out["leftovers"] == []
    assert host.fs.listdir("/sys/class/iscsi_session") == []


def test_rerun_of_detach_is_unchanged_with_no_command(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attached(host, [P1], multipath="off")
    conn(host).disconnect(paths([P1]))
    c = conn(host)
    out = c.disconnect(paths([P1]))
    assert out["changed"] is False and c.runner.history == []


def test_detach_without_portals_finds_sessions_from_sysfs(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    attached(host, [P1, P2])
    c = conn(host)
    c.disconnect(iscsi.build_paths(None, [IQN], [0]))
    assert host.fs.listdir("/sys/class/iscsi_session") == []
    assert host.fs.listdir("/sys/block") == host.fs.listdir("/sys/block") and not [
        d for d in host.fs.listdir("/sys/block") if d.startswith(("sd", "dm-"))]
    assert not [n for n in host.fs.listdir("/etc/iscsi/nodes") if host.fs.listdir("/etc/iscsi/nodes/" + n)]
    after = host.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}, host.diff(before, after)


def test_check_mode_changes_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    attached(host, [P1, P2])
    snap = host.snapshot()
    c = conn(host)
    out = c.disconnect(paths([P1, P2]), check_mode=True)
    assert out["changed"] is True and out["removed"]["maps"]
    assert c.runner.history == [] and host.snapshot() == snap
