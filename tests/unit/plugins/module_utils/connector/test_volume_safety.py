"""Never touch another volume: partial detach, shared sessions, device-name reuse, host names, identity.

Each test here reproduces a corner where a storage tool destroys or strands data (issue 13), on the
simulated host, and checks the kernel-side result (sysfs, maps, sessions), not only the returned dict.
"""
import socket
import time

import pytest

from connector import detach, iscsi, validate
from connector.errors import DetachError, DeviceBusy, InvalidInput, VolumeMismatch

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0, iqn=IQN, **kw):
    return iscsi.build_paths(portals, [iqn], [lun], **kw)


def attach(h, portals, lun=0, **kw):
    return conn(h, **kw).connect(paths(portals, lun))


def sd_of(h, portal, lun=0):
    """sd name of LUN ``lun`` behind ``portal`` (from the simulator's state)."""
    key = portal
    return [n for n, d in h.disks().items() if d["portal"] == key and d["lun"] == lun]


def slaves(h, dm):
    return sorted(h.fs.listdir("/sys/block/%s/slaves" % dm))


# -- partial detach -----------------------------------------------------------------------------------
def test_partial_detach_takes_the_path_out_and_keeps_the_map(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    dm = res["device"][5:]
    keep, = sd_of(host, P1)
    gone, = sd_of(host, P2)
    c = conn(host, wwid=res["wwid"])
    out = c.disconnect(paths([P2]))
    assert out["leftovers"] == []
    # the map is still there, serving I/O through the P1 path only; it was never flushed
    assert host.fs.exists("/sys/block/%s" % dm) and slaves(host, dm) == [keep]
    assert host.maps()[dm]["paths"] == {keep: "active"}
    assert not host.fs.exists("/sys/block/%s" % gone)
    argvs = [h["argv"] for h in c.runner.history]
    assert not any(a[:2] == ["multipath", "-f"] for a in argvs), argvs
    assert ["multipathd", "del", "path", "/dev/%s" % gone] in argvs
    # the P2 session and its node record are gone, P1's stay
    assert [s["portal"] for s in host.sessions(IQN)] == [P1]
    assert out["removed"]["paths_out_of_map"] == ["/dev/%s from %s" % (gone, res["multipath_map"])]
    assert out["removed"]["maps"] == [] and out["removed"]["kept_maps"]
    # a re-run of the attach for the surviving portal still finds the map, with no command
    c2 = conn(host)
    again = c2.connect(paths([P1]))
    assert again["changed"] is False and again["device"] == res["device"] and c2.runner.history == []


def test_partial_detach_of_a_mounted_map_keeps_it_mounted_and_serving(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    host.mount(res["device"], "/srv/data")
    gone, = sd_of(host, P2)
    out = conn(host, wwid=res["wwid"]).disconnect(paths([P2]))
    assert out["leftovers"] == [] and not host.fs.exists("/sys/block/%s" % gone)
    assert slaves(host, res["device"][5:]) == sd_of(host, P1)
    assert "/srv/data" in host.fs.read("/proc/mounts")


def test_partial_detach_refuses_without_multipathd_and_removes_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    host.set_fault("multipathd_down", True)
    snap = host.snapshot()
    with pytest.raises(DetachError) as ei:
        conn(host, wwid=res["wwid"]).disconnect(paths([P2]))
    assert "multipathd is not running" in str(ei.value)
    assert host.snapshot() == snap


def test_a_failed_path_of_a_live_map_is_removed_as_a_path_not_by_flushing_the_map(host):
    """The orphan audit's cleanup of a dead path: the map and its working path must stay."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    host.mount(res["device"], "/srv/data")
    dead, = sd_of(host, P2)
    host.path_fail(P2, session_state="FREE")
    c = conn(host, wwid=res["wwid"])
    out = c.disconnect(paths([P2]))
    assert out["leftovers"] == []
    assert slaves(host, res["device"][5:]) == sd_of(host, P1)
    assert not host.fs.exists("/sys/block/%s" % dead)
    assert not any(h["argv"][:2] == ["multipath", "-f"] for h in c.runner.history)


# -- shared sessions: the decision to log out is taken again right before the logout ----------------
def test_a_lun_that_appears_during_the_detach_keeps_its_session(host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    res = attach(host, [P1], lun=0, multipath="off")
    s = host.sessions(IQN)[0]
    c = conn(host)
    run = c.runner.run

    def racing_run(argv, *a, **kw):
        r = run(argv, *a, **kw)
        if argv[:2] == ["blockdev", "--flushbufs"]:
            host.scan(s["host"], lun=1)  # another attach scans LUN 1 on the same session meanwhile
        return r
    c.runner.run = racing_run
    out = c.disconnect(paths([P1], lun=0))
    assert not host.fs.exists("/sys/block/%s" % res["device"][5:])
    lun1 = sd_of(host, P1, lun=1)
    assert lun1 and host.fs.read("/sys/block/%s/device/state" % lun1[0]) == "running"
    assert [x["sid"] for x in host.sessions(IQN)] == [s["sid"]]
    assert not any("--logout" in h["argv"] for h in c.runner.history)
    assert any("appeared before the logout" in k for k in out["removed"]["kept_sessions"])
    assert out["leftovers"] == []


def test_session_only_logout_leaves_a_session_that_carries_a_device(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, [P1], multipath="off")
    snap = host.snapshot()
    c = conn(host)
    out = c.disconnect(paths([P1], lun=None, session_only=True), session_only=True)
    assert out["changed"] is False and c.runner.history == []
    assert host.snapshot() == snap


def test_session_only_logout_of_an_empty_session(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    host.login(IQN, P1, scan="manual")
    assert host.sessions(IQN) and not host.disks()
    record = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN
    c = conn(host)
    out = c.disconnect(paths([P1], lun=None, session_only=True), session_only=True)
    assert out["changed"] is True and out["leftovers"] == []
    assert host.sessions(IQN) == []
    # the node record was made by someone else (not by an attach of the collection): it stays (issue 21, item 6)
    after = host.snapshot()
    assert set(after) ^ set(before) == {"/etc/iscsi/nodes/" + IQN, record}
    assert {k: v for k, v in after.items() if k in before} == before


def test_session_only_logout_keeps_a_session_whose_lun_appears_meanwhile(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    s = host.login(IQN, P1, scan="manual")
    c = conn(host)
    plan = c.plan_disconnect(paths([P1], lun=None, session_only=True), session_only=True)
    assert [x.sid for x in plan.logout] == [s["sid"]]
    host.scan(s["host"], lun=0)  # an attach that was logged in but not yet scanned finishes its scan
    d = detach.Detacher(c, paths([P1], lun=None, session_only=True), session_only=True)
    d.verify(plan)
    d.execute(plan)
    assert [x["sid"] for x in host.sessions(IQN)] == [s["sid"]] and sd_of(host, P1)
    assert not any("--logout" in h["argv"] for h in c.runner.history)


def test_session_only_refuses_a_lun():
    with pytest.raises(InvalidInput):
        iscsi.build_paths([P1], [IQN], [0], session_only=True)


# -- device name reuse ------------------------------------------------------------------------------
def test_a_reused_sd_name_is_neither_a_leftover_nor_kept_behind_a_stale_link(host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    res = attach(host, [P1], lun=0, multipath="off")
    name = res["device"][5:]
    s = host.sessions(IQN)[0]
    stale = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P1, IQN)
    c = conn(host)
    write = c.fs.write

    def racing_write(p, data):
        write(p, data)
        if p.endswith("/delete") and "/%s:0:0:0/" % s["host"] in p + "/":
            # a concurrent attach scans LUN 1: the kernel hands out the freed name again, and udev is late
            # to remove the old by-path link of LUN 0
            assert host.scan(s["host"], lun=1) == [name]
            import os
            os.symlink("../../%s" % name, host.fs.path(stale))
    c.fs.write = racing_write
    out = c.disconnect(paths([P1], lun=0))
    assert out["leftovers"] == [], out
    assert not host.fs.lexists(stale)  # it described LUN 0 and pointed at LUN 1's device
    assert host.fs.read("/sys/block/%s/device/wwid" % name)  # LUN 1's device is untouched
    assert host.disks()[name]["lun"] == 1
    assert host.fs.lexists("/dev/disk/by-path/ip-%s-iscsi-%s-lun-1" % (P1, IQN))


# -- host names -------------------------------------------------------------------------------------
def fake_resolver(table):
    def resolve(host, port, family=0, kind=0):
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]
    return resolve


def test_a_portal_given_as_a_host_name_is_found_again(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    names = fake_resolver({"array-a.example": ["10.0.0.1"], "array-b.example": ["10.0.0.2"]})
    by_name = iscsi.build_paths(["array-a.example", "array-b.example:3260"], [IQN], [0], resolver=names)
    assert [str(p.portal) for p in by_name] == [P1, P2]
    res = conn(host).connect(by_name)
    c = conn(host)
    assert c.connect(by_name)["changed"] is False and c.runner.history == []
    out = conn(host).disconnect(by_name)
    assert out["leftovers"] == [] and host.sessions(IQN) == [] and res["multipath"]


def test_a_host_name_with_several_addresses_matches_a_session_on_any_of_them(host):
    host.add_target(IQN, portals=[P2], luns={0: 64})
    attach(host, [P2], multipath="off")
    names = fake_resolver({"array.example": ["10.0.0.1", "10.0.0.2"]})
    out = conn(host).disconnect(iscsi.build_paths(["array.example"], [IQN], [0], resolver=names))
    assert out["changed"] and host.sessions(IQN) == []


@pytest.mark.parametrize("name,table,needle", [
    ("nowhere.example", {}, "does not resolve"),
    ("empty.example", {"empty.example": []}, "has no address"),
], ids=["unknown", "no-address"])
def test_a_host_name_that_does_not_resolve_fails_before_anything_runs(name, table, needle):
    with pytest.raises(InvalidInput) as ei:
        iscsi.build_paths([name], [IQN], [0], resolver=fake_resolver(table))
    assert needle in str(ei.value) and name in str(ei.value)


def test_a_hanging_name_lookup_is_bounded():
    def hang(*a, **kw):
        time.sleep(5)
    t0 = time.monotonic()
    with pytest.raises(InvalidInput) as ei:
        validate.resolve_portal(validate.portal("slow.example"), resolver=hang, timeout=0.2)
    assert time.monotonic() - t0 < 2 and "did not finish" in str(ei.value)


def test_the_same_portal_by_name_and_by_address_is_a_duplicate():
    with pytest.raises(InvalidInput) as ei:
        iscsi.build_paths(["array.example", "10.0.0.1:3260"], [IQN], [0],
                          resolver=fake_resolver({"array.example": ["10.0.0.1"]}))
    assert "twice" in str(ei.value)


@pytest.mark.parametrize("value,want", [
    ("36001405abcdef", "36001405abcdef"),
    ("naa.6001405ABCDEF", "36001405abcdef"),
    ("0x6001405abcdef", "36001405abcdef"),
    ("wwn-0x6001405abcdef", "36001405abcdef"),
    ("eui.0011223344556677", "20011223344556677"),
], ids=["udev", "sysfs-naa", "wwn", "by-id-wwn", "sysfs-eui"])
def test_wwid_forms(value, want):
    assert validate.wwid(value) == want


@pytest.mark.parametrize("value", ["", " ", "3600;rm", "a" * 300, None, 12],
                         ids=["empty", "blank", "meta", "long", "none", "int"])
def test_bad_wwid_is_refused(value):
    with pytest.raises(InvalidInput):
        validate.wwid(value)


# -- identity -------------------------------------------------------------------------------------
def test_attach_with_the_wrong_expected_wwid_fails_and_leaves_nothing(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    other = "36001405" + "0" * 25
    with pytest.raises(VolumeMismatch) as ei:
        conn(host, wwid=other).connect(paths([P1, P2]))
    assert other in str(ei.value) and t["luns"][0]["wwid"] in str(ei.value)
    snap = host.snapshot()
    assert {k: v for k, v in snap.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}, host.diff(before, snap)


def test_rerun_with_the_wrong_expected_wwid_fails_and_touches_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    attach(host, [P1, P2])
    snap = host.snapshot()
    c = conn(host, wwid="naa.6001405" + "1" * 25)
    with pytest.raises(VolumeMismatch):
        c.connect(paths([P1, P2]))
    assert host.snapshot() == snap and c.runner.history == []


def test_detach_with_another_wwid_keeps_the_volume(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    snap = host.snapshot()
    c = conn(host, wwid="36001405" + "2" * 25)
    out = c.disconnect(paths([P1, P2]))
    assert out["changed"] is False and c.runner.history == [] and host.snapshot() == snap
    assert "not " + c.wwid in " ".join(out["removed"]["kept_devices"]) and res["multipath_map"] in out["msg"]


def test_a_name_whose_first_address_is_dead_logs_in_on_the_next_one(host):
    host.add_target(IQN, portals=[P2], luns={0: 64})
    names = fake_resolver({"array.example": ["10.0.0.1", "10.0.0.2"]})  # nothing listens on 10.0.0.1
    before = host.snapshot()
    c = conn(host, multipath="off")
    res = c.connect(iscsi.build_paths(["array.example"], [IQN], [0], resolver=names))
    assert res["changed"] and [s["portal"] for s in host.sessions(IQN)] == [P2]
    assert any("another address of the name" in w for w in c.warnings)
    # no node record is left for the address that failed
    assert host.fs.listdir("/etc/iscsi/nodes/%s" % IQN) == ["10.0.0.2,3260"]
    conn(host).disconnect(iscsi.build_paths(["array.example"], [IQN], [0], resolver=names))
    assert host.snapshot() == before


# -- a reused LUN number (the simulator's remap_lun behaves as the lab's kernel 6.1 + multipath-tools 0.9.4) ------
def test_rerun_after_the_array_reused_the_lun_fails_and_touches_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    wa = res["wwid"]
    new = host.remap_lun(IQN, 0)   # same size: no uevent, multipathd notices nothing
    disks, sessions, maps = dict(host.disks()), host.sessions(IQN), host.maps()
    c = conn(host, wwid=wa)
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert wa in str(ei.value) and new["wwid"] in str(ei.value)
    assert c.runner.history == []
    assert sorted(host.disks()) == sorted(disks) and host.sessions(IQN) == sessions and host.maps() == maps
    # the rescan made the kernel tell the truth about each path
    assert all(host.fs.read("/sys/block/%s/device/wwid" % n) == new["sysfs_wwid"] for n in disks)


def test_rerun_without_a_wwid_refuses_paths_that_disagree_with_their_map(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    attach(host, [P1, P2])
    host.remap_lun(IQN, 0)
    c = conn(host)
    with pytest.raises(VolumeMismatch) as ei:
        c.connect(paths([P1, P2]))
    assert "disagree" in str(ei.value) and c.runner.history == []


def test_detach_with_the_old_wwid_removes_only_the_stale_paths(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    wa, dm = res["wwid"], res["device"][5:]
    stale, = sd_of(host, P1)
    new = host.remap_lun(IQN, 0)
    # the kernel met the new volume on P2: its path was deleted and LUN 0 scanned there again
    old2, = sd_of(host, P2)
    host.delete_device(old2)
    s2 = host.sessions(IQN, P2)[0]
    fresh, = host.scan(s2["host"], lun=0)
    assert host.disks()[fresh]["wwid"] == new["wwid"] and slaves(host, dm) == [stale]
    c = conn(host, wwid=wa)
    out = c.disconnect(paths([P1, P2]))
    assert out["leftovers"] == [] and out["removed"]["maps"] == [res["multipath_map"]]
    assert any(fresh in k and new["wwid"] in k for k in out["removed"]["kept_devices"])
    assert not host.fs.exists("/sys/block/%s" % dm) and not host.fs.exists("/sys/block/%s" % stale)
    assert host.fs.exists("/sys/block/%s" % fresh)
    assert [s["portal"] for s in host.sessions(IQN)] == [P2]


def test_detach_without_a_wwid_never_picks_among_paths_that_disagree(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    attach(host, [P1, P2])
    new = host.remap_lun(IQN, 0)
    one, = sd_of(host, P2)
    host.fs.write("/sys/block/%s/device/rescan" % one, "1")   # same size: it stays in map A, reporting B
    snap = host.snapshot()
    c = conn(host)
    with pytest.raises(VolumeMismatch) as ei:
        c.disconnect(paths([P1, P2]))
    assert new["wwid"] in str(ei.value) and "give the WWID" in str(ei.value)
    assert c.runner.history == [] and host.snapshot() == snap


# -- mixed paths: a device of the volume outside its map ---------------------------------------------------
def test_an_open_path_outside_the_map_is_refused_before_anything_is_removed(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    outside, = sd_of(host, P2)
    assert host.run("multipathd", "del", "path", "/dev/" + outside)[0] == 0
    host.hold_open(outside, pid=4343, comm="backup")
    snap = host.snapshot()
    c = conn(host)
    with pytest.raises(DeviceBusy) as ei:
        c.disconnect(paths([P1, P2]))
    assert "/dev/%s" % outside in str(ei.value) and "4343" in str(ei.value) and "outside" in str(ei.value)
    assert c.runner.history == [] and host.snapshot() == snap
    assert res["multipath"]


def test_a_mounted_path_that_could_not_join_the_map_is_refused(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = attach(host, [P1], multipath="off")
    host.mount(first["device"], "/mnt/p1")
    attach(host, [P1, P2])
    snap = host.snapshot()
    with pytest.raises(DeviceBusy) as ei:
        conn(host).disconnect(paths([P1, P2]))
    assert "/mnt/p1" in str(ei.value)
    assert host.snapshot() == snap


# -- force on an open map ---------------------------------------------------------------------------------
def test_force_on_an_open_map_disables_queueing_names_the_holder_and_removes_the_paths(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    host.hold_open(res["device"], pid=5151, comm="qemu")
    c = conn(host)
    out = c.disconnect(paths([P1, P2]), force=True, ignore_errors=True)
    text = " ".join(out["problems"])
    assert "queueing disabled" in text and "pid 5151" in text and "data may be lost" in text
    assert host.sessions(IQN) == [] and not host.disks()
    # the map stays while it is held, with no path and no queueing: its I/O fails instead of hanging
    dm = res["device"][5:]
    assert host.fs.exists("/sys/block/%s" % dm) and slaves(host, dm) == []
    assert host.map_features(dm) == "0"
    assert any(res["multipath_map"] in x for x in out["leftovers"])


def test_without_force_an_open_map_keeps_everything(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = attach(host, [P1, P2])
    host.hold_open(res["device"], pid=5252, comm="qemu")
    snap = host.snapshot()
    with pytest.raises(Exception) as ei:
        conn(host).disconnect(paths([P1, P2]))
    assert "in use" in str(ei.value)
    assert host.snapshot() == snap and host.map_features(res["device"][5:]) == "1 queue_if_no_path"


def test_check_mode_returns_the_plan_of_a_partial_detach(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 64})
    res = attach(host, [P1, P2])
    attach(host, [P2], lun=1, multipath="off")
    snap = host.snapshot()
    c = conn(host, wwid=res["wwid"])
    out = c.disconnect(paths([P2]), check_mode=True)
    r = out["removed"]
    gone, = sd_of(host, P2)
    assert r["paths_out_of_map"] == ["/dev/%s from %s" % (gone, res["multipath_map"])]
    assert r["maps"] == [] and r["logout"] == [] and "LUN 1" in r["kept_sessions"][0]
    assert r["kept_maps"][0].startswith(res["multipath_map"])
    assert c.runner.history == [] and host.snapshot() == snap


def test_a_session_someone_made_with_a_host_name_is_found(host):
    """Lab finding: `iscsiadm -p localhost` gives persistent_address "localhost" and address 127.0.0.1."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, [P1], multipath="off")
    s = host.sessions(IQN)[0]
    conn_dir = "/sys/class/iscsi_connection/connection%d:0" % s["sid"]
    with open(host.fs.path(conn_dir + "/persistent_address"), "w") as f:
        f.write("array.example\n")
    names = fake_resolver({"array.example": ["10.0.0.1"]})
    assert conn(host).connect(iscsi.build_paths(["array.example"], [IQN], [0], resolver=names))["changed"] is False
    out = conn(host).disconnect(iscsi.build_paths([P1], [IQN], [0]))
    assert out["changed"] and host.sessions(IQN) == []
