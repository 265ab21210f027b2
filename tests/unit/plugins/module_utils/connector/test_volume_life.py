"""A volume's life on a host (issue 15): growth, dead portals on re-runs, bounded waits, on the simulated host."""
import json
import os
import time

import pytest

from connector import iscsi, luns
from connector.errors import AttachError, LoginError

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture
def host(host, tmp_path):
    """The shared simulated host (tests/unit/conftest.py) with a state directory."""
    host.state_dir = str(tmp_path / "state")
    os.makedirs(host.state_dir)
    return host


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0):
    return iscsi.build_paths(portals, [IQN], [lun])


# -- online extend --------------------------------------------------------------------------------------
def test_a_grown_single_path_lun_is_noticed_by_a_rerun(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    first = conn(host, multipath="off").connect(paths([P1]))
    assert first["size"] == 64 << 20
    host.resize_lun(IQN, 0, 96)
    c = conn(host, multipath="off")
    res = c.connect(paths([P1]))
    assert res["changed"] is True and res["size"] == 96 << 20
    assert res["resized"] == {"old_size": 64 << 20, "new_size": 96 << 20, "how": "rescan"}
    assert c.runner.history == []  # the rescan is a sysfs write, not a command
    assert host.fs.read("/sys/block/%s/size" % first["device"][5:]) == str(96 * 2048)
    again = conn(host, multipath="off").connect(paths([P1]))
    assert again["changed"] is False and "resized" not in again


def test_a_grown_multipath_lun_resizes_the_map_once_every_path_shows_it(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = conn(host).connect(paths([P1, P2]))
    dm = first["device"][5:]
    host.resize_lun(IQN, 0, 128)
    c = conn(host)
    res = c.connect(paths([P1, P2]))
    assert res["changed"] is True and res["resized"]["old_size"] == 64 << 20
    assert res["resized"]["new_size"] == 128 << 20 and res["size"] == 128 << 20
    assert host.fs.read("/sys/block/%s/size" % dm) == str(128 * 2048)
    assert [h["argv"] for h in c.runner.history] == [["multipathd", "resize", "map", first["multipath_map"]]]
    assert conn(host).connect(paths([P1, P2]))["changed"] is False


def test_check_mode_reports_a_growth_and_changes_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = conn(host).connect(paths([P1, P2]))
    host.resize_lun(IQN, 0, 128)
    for d in host.disks():   # someone rescanned the paths; the map still has the old size
        host.fs.write("/sys/block/%s/device/rescan" % d, "1")
    snap = host.snapshot()
    c = conn(host)
    res = c.connect(paths([P1, P2]), check_mode=True)
    assert res["changed"] is True and res["resized"]["new_size"] == 128 << 20 and "check mode" in res["resized"]["how"]
    assert c.runner.history == [] and host.snapshot() == snap
    assert res["device"] == first["device"]


def test_a_lun_that_shrank_is_never_shrunk_on_the_host(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    first = conn(host).connect(paths([P1, P2]))
    host.resize_lun(IQN, 0, 32)
    c = conn(host)
    res = c.connect(paths([P1, P2]))
    assert res["changed"] is False and "resized" not in res
    assert any("never shrunk" in w for w in c.warnings)
    assert host.fs.read("/sys/block/%s/size" % first["device"][5:]) == str(64 * 2048)
    assert c.runner.history == []


def test_a_failed_resize_is_an_error(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    conn(host).connect(paths([P1, P2]))
    host.resize_lun(IQN, 0, 128)
    host.set_fault("hang", [{"cmd": "multipathd", "args_contain": "resize"}])
    c = conn(host)
    with pytest.raises(AttachError) as ei:
        import connector.multipath as mp
        run = c.runner.run
        c.runner.run = lambda argv, **kw: run(argv, **dict(kw, timeout=0.5)) if argv[:2] == ["multipathd", "resize"] \
            else run(argv, **kw)
        c.connect(paths([P1, P2]))
    assert "did not resize" in str(ei.value) and mp


# -- honest re-runs with a dead portal ------------------------------------------------------------------
def test_rerun_with_a_dead_portal_is_no_change(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    first = conn(host).connect(paths([P1, P2]))
    assert first["changed"] and first["failed_paths"][0]["portal"] == P2
    snap = host.snapshot()
    for _round in range(2):
        c = conn(host)
        again = c.connect(paths([P1, P2]))
        assert again["changed"] is False, again
        assert again["failed_paths"][0]["portal"] == P2 and any(P2 in w for w in c.warnings)
        assert host.snapshot() == snap


def test_skip_failed_portals_for_spares_the_login_budget(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    log = host.state_dir + "/failed-portals.json"
    first = conn(host, skip_failed_for=3600, failure_log=log).connect(paths([P1, P2]))
    assert first["changed"] and json.loads(open(log).read())
    runs = []
    for _round in range(2):
        c = conn(host, skip_failed_for=3600, failure_log=log)
        again = c.connect(paths([P1, P2]))
        assert again["changed"] is False and again["failed_paths"][0]["skipped"] is True
        assert "skipped" in again["failed_paths"][0]["error"]
        runs.append(len(c.runner.history))
    assert runs == [0, 0], runs
    # once the portal is back and the window is over, the re-run heals it and forgets the failure
    host.clear_faults()
    host.set_fault("time_scale", 0.01)
    late = conn(host, skip_failed_for=3600, failure_log=log, wall_clock=lambda: time.time() + 7200)
    healed = late.connect(paths([P1, P2]))
    assert healed["changed"] is True and healed["failed_paths"] == [] and len(healed["paths"]) == 2
    assert json.loads(open(log).read()) == {}


def test_without_skip_a_dead_portal_is_tried_on_every_rerun(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    conn(host).connect(paths([P1, P2]))
    c = conn(host)
    c.connect(paths([P1, P2]))
    assert any(h["argv"][-1] == "--login" for h in c.runner.history)


# -- bounded kernel writes --------------------------------------------------------------------------------
def test_a_delete_that_blocks_in_the_kernel_does_not_hold_the_detach(host, monkeypatch):
    import connector.detach as detach_mod
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    host.path_fail(P1, session_state="FREE")
    host.set_fault("slow_sysfs", {"delete": 30})   # the SYNCHRONIZE CACHE of a dead session, say
    monkeypatch.setattr(detach_mod, "DELETE_WAIT", 2.0)
    c = conn(host)
    t0 = time.monotonic()
    out = c.disconnect(paths([P1]), force=True, ignore_errors=True)
    took = time.monotonic() - t0
    assert took < 10, took
    # it says what it left (the device the kernel still holds), and does not claim success
    assert any("device" in x for x in out["leftovers"]), out


def test_the_rescan_of_a_rerun_is_bounded(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    host.set_fault("slow_sysfs", {"rescan": 30})
    c = conn(host, multipath="off", rescan_timeout=1.0)
    t0 = time.monotonic()
    res = c.connect(paths([P1]))
    assert time.monotonic() - t0 < 5 and res["changed"] is False
    assert any("did not finish" in w for w in c.warnings)


def test_a_lun_scan_that_blocks_is_bounded_by_the_device_wait(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.set_fault("slow_sysfs", {"scan": 30})
    before = host.snapshot()
    c = conn(host, multipath="off", device_wait=2.0)
    t0 = time.monotonic()
    with pytest.raises(AttachError):
        c.connect(paths([P1]))
    assert time.monotonic() - t0 < 15
    # the rollback left the host as it was (the stuck scan writer holds nothing and changes nothing)
    after = host.snapshot()
    assert after == before, host.diff(before, after)
    host.clear_faults()


def test_offline_before_delete_is_refused_for_a_blocked_device_as_on_the_lab(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    res = conn(host, multipath="off").connect(paths([P1]))
    host.path_fail(P1, session_state="FAILED")
    name = res["device"][5:]
    assert host.fs.read("/sys/block/%s/device/state" % name) == "blocked"
    with pytest.raises(IOError):
        host.fs.write("/sys/block/%s/device/state" % name, "offline")
    # the detach goes on anyway (the write is tried and ignored), and with force removes the device
    out = conn(host).disconnect(paths([P1]), force=True, ignore_errors=True)
    assert not host.fs.exists("/sys/block/%s" % name), out


# -- LUN addressing ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lun,mode,want", [
    (5, "peripheral", 5), (5, "transparent", 5), (5, "SAM", 5),
    (5, "flat", 16389), (5, "SAM3-flat", 16389), (300, "flat", 16684),
    (5, "sam2", 5), (300, "sam2", 16684), (300, "peripheral", 300),
    (16389, "flat", 16389),   # already a kernel LUN in flat space
], ids=str)
def test_kernel_lun_numbers(lun, mode, want):
    assert luns.kernel_lun(lun, mode) == want


def test_auto_addressing_follows_what_the_session_shows():
    assert luns.kernel_lun(3, "auto", [0, 1]) == 3
    assert luns.kernel_lun(3, "auto", [16384]) == 16387


@pytest.mark.parametrize("mode", ["flat", "auto"])
def test_attach_rerun_and_detach_on_a_flat_addressing_array(host, mode):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 5: 32}, lun_addressing="flat")
    before = host.snapshot()
    res = conn(host, lun_addressing=mode).connect(paths([P1, P2], lun=5))
    assert res["multipath"] and res["size"] == 32 << 20
    assert sorted(d["hctl"].split(":")[3] for d in host.disks().values()) == ["16389", "16389"]
    assert any(x.endswith("-lun-0x4005000000000000") for x in host.fs.listdir("/dev/disk/by-path"))
    c = conn(host, lun_addressing=mode)
    assert c.connect(paths([P1, P2], lun=5))["changed"] is False and c.runner.history == []
    out = conn(host, lun_addressing=mode).disconnect(paths([P1, P2], lun=5))
    assert out["leftovers"] == []
    after = host.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}


def test_peripheral_addressing_on_a_flat_array_finds_nothing_and_cleans_up(host):
    host.add_target(IQN, portals=[P1], luns={5: 32}, lun_addressing="flat")
    before = host.snapshot()
    with pytest.raises(AttachError) as ei:
        conn(host, lun_addressing="peripheral", multipath="off", device_wait=1.5).connect(paths([P1], lun=5))
    assert "did not appear" in str(ei.value)
    assert host.snapshot() == before


def test_the_audit_reads_flat_luns_back(host):
    from connector.paths import gather
    host.add_target(IQN, portals=[P1], luns={7: 16}, lun_addressing="flat")
    conn(host, lun_addressing="flat", multipath="off").connect(paths([P1], lun=7))
    f = gather(host.fs)
    (row,) = f["luns"]
    assert row["lun"] == 16391 and row["by_path"][0].endswith("-lun-0x4007000000000000")
    assert f["orphans"] == []


def test_the_volume_query_and_the_expected_list_take_the_arrays_lun_number_on_a_flat_array(host):
    """The operator knows LUN 7; the kernel shows 16391.  The facts of the volume (which the detach role's
    verify reads) must find the path, and an expected {iqn, lun: 7} must not be reported as unexpected
    (the audit's cleanup would remove it)."""
    from connector.paths import gather
    host.add_target(IQN, portals=[P1], luns={7: 16}, lun_addressing="flat")
    conn(host, lun_addressing="flat", multipath="off").connect(paths([P1], lun=7))
    vol = gather(host.fs, volume={"portals": [P1], "iqn": IQN, "lun": 7})["volume"]
    assert vol["exists"] is True and len(vol["devices"]) == 1 and len(vol["paths"]) == 1
    assert gather(host.fs, volume={"portals": [P1], "iqn": IQN, "lun": 16391})["volume"]["path_count"] == 1
    assert gather(host.fs, volume={"portals": [P1], "iqn": IQN, "lun": 6})["volume"]["devices"] == []
    f = gather(host.fs, expected=[{"iqn": IQN, "lun": 7}])
    assert [o for o in f["orphans"] if o["kind"] == "unexpected_lun"] == []
    f = gather(host.fs, expected=[{"iqn": IQN, "lun": 6}])
    assert [o["kind"] for o in f["orphans"]] == ["unexpected_lun"]


# -- persistence across reboots ------------------------------------------------------------------------------
def _records(h):
    out = {}
    base = "/etc/iscsi/nodes/%s" % IQN
    for e in h.fs.listdir(base):
        full = "%s/%s" % (base, e)
        files = [full] if not h.fs.isdir(full) else ["%s/%s" % (full, x) for x in h.fs.listdir(full)]
        for f in files:
            out[f] = h.fs.read_raw(f)
    return out


def _setting(text, key):
    vals = [line.split("=", 1)[1].strip() for line in text.splitlines() if line.split("=", 1)[0].strip() == key]
    return vals[-1] if vals else None


def test_a_working_attach_leaves_boot_friendly_records(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    conn(host).connect(paths([P1, P2]))
    recs = _records(host)
    assert len(recs) == 2
    for text in recs.values():
        assert _setting(text, "node.startup") == "automatic"
        assert _setting(text, "node.session.scan") == "auto"
        assert _setting(text, "node.conn[0].timeo.login_timeout") == "15"
        assert _setting(text, "node.session.initial_login_retry_max") == "8"


def test_after_a_reboot_the_volume_comes_back_with_nothing_run_by_us(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    res = conn(host).connect(paths([P1, P2]))
    # the reboot: the kernel state is gone, the node records stay, and open-iscsi.service logs in
    for p in (P1, P2):
        host.logout(IQN, p, delete_record=False)
    assert host.disks() == {} and host.maps() == {}
    rc, _out, err = host.run("iscsiadm", "-m", "node", "--loginall=automatic")
    assert rc == 0, err
    maps = host.maps()
    assert len(maps) == 1 and list(maps.values())[0]["wwid"] == res["wwid"]
    assert sorted(list(maps.values())[0]["paths"]) == sorted(host.disks())
    c = conn(host)
    again = c.connect(paths([P1, P2]))
    assert again["changed"] is False and c.runner.history == []


def test_a_failed_attach_puts_back_the_record_that_was_there(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    base = ["-m", "node", "-T", IQN, "-p", P1]
    host.run("iscsiadm", *(base + ["--op", "new"]))
    host.run("iscsiadm", *(base + ["--op", "update", "-n", "node.session.scan", "-v", "auto",
                                   "-n", "node.conn[0].timeo.login_timeout", "-v", "30"]))
    before = _records(host)
    host.set_fault("portal_down", {P1: "refuse"})
    with pytest.raises(LoginError):
        conn(host, multipath="off").connect(paths([P1]))
    assert _records(host) == before


def test_a_lun_that_never_appears_on_a_session_that_stays_puts_back_the_record(host):
    """Someone else's session on the portal (LUN 0 attached, not by us) stays up when our LUN 5 never appears:
    their record is put back byte for byte, not left with our attach bounds or our boot settings."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1], lun=0))
    base = ["-m", "node", "-T", IQN, "-p", P1]
    host.run("iscsiadm", *(base + ["--op", "update", "-n", "node.session.scan", "-v", "manual",
                                   "-n", "node.conn[0].timeo.login_timeout", "-v", "42"]))
    before, sessions, disks = _records(host), host.sessions(), sorted(host.disks())
    with pytest.raises(AttachError):
        conn(host, multipath="off", device_wait=0.3).connect(paths([P1], lun=5))
    assert _records(host) == before
    assert host.sessions() == sessions and sorted(host.disks()) == disks


def test_the_boot_settings_are_written_while_the_kernel_scans_the_lun(host):
    """The record write (an fsync) overlaps the LUN scan instead of following the device wait: when it runs, the
    scan write has not returned yet (a slow scan of 0.3 s here), and the attach takes the scan's time, not the
    scan's plus the write's."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.set_fault("slow_sysfs", {"scan": 0.3})
    c = conn(host, multipath="off")
    seen = []
    persist = c.db.persist_boot_settings

    def watching(paths_):
        seen.append(sorted(host.disks()))
        persist(paths_)
    c.db.persist_boot_settings = watching
    res = c.connect(paths([P1]))
    assert res["changed"] and seen == [[]], seen  # once, before the LUN's disk existed
    for text in _records(host).values():
        assert _setting(text, "node.session.scan") == "auto"


def test_parallel_portals_with_the_modules_host_lock_all_get_their_boot_settings(host, tmp_path):
    """With multipath the portals are attached in parallel threads, and the modules' node lock is a HostLock: one
    object that is not re-entrant.  Every record still gets the boot settings, with no warning."""
    from connector.lock import HostLock

    class SlowHostLock(HostLock):
        def acquire(self):  # held for 0.3 s: both scans (0.5 s each) overlap a holder
            waited = super().acquire()
            time.sleep(0.3)
            return waited
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("slow_sysfs", {"scan": 0.5})
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir(mode=0o700)
    c = conn(host, node_lock=SlowHostLock("iscsi-node-db", lock_dir=str(lock_dir), timeout=5))
    res = c.connect(paths([P1, P2]))
    assert res["changed"] and len(res["paths"]) == 2 and c.warnings == [], c.warnings
    assert len(c.runner.history) == 6
    recs = _records(host)
    assert len(recs) == 2
    for text in recs.values():
        assert _setting(text, "node.session.scan") == "auto"
        assert _setting(text, "node.conn[0].timeo.login_timeout") == "15"


def test_a_dead_portal_keeps_its_old_record_while_the_other_one_attaches(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.run("iscsiadm", "-m", "node", "-T", IQN, "-p", P2, "--op", "new")
    before = dict((k, v) for k, v in _records(host).items() if "10.0.0.2" in k)
    host.set_fault("portal_down", {P2: "refuse"})
    res = conn(host).connect(paths([P1, P2]))
    assert res["changed"] and res["failed_paths"][0]["portal"] == P2
    after = dict((k, v) for k, v in _records(host).items() if "10.0.0.2" in k)
    assert after == before


# -- node records per iface ------------------------------------------------------------------------------------
def test_a_record_of_the_same_portal_under_another_iface_is_another_record(host):
    """open-iscsi 2.1.8 keeps a discovered record per iface (nodes/IQN/ADDR,PORT,TPGT/IFACE); the flat file of an
    --op new is one per portal for all ifaces (see test_records_ownership.py for that case: the attach refuses)."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    rc, _o, err = host.run("iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", P1, "-I", "iser")
    assert rc == 0, err
    other = _records(host)
    assert list(other) == ["/etc/iscsi/nodes/%s/10.0.0.1,3260,1/iser" % IQN]
    c = conn(host, multipath="off")
    res = c.connect(paths([P1]))
    assert res["changed"] and ["--op", "new"] == c.runner.history[0]["argv"][-2:]
    # the detach removes the default iface's record only; the iser one stays as it was
    conn(host).disconnect(paths([P1]))
    assert _records(host) == other
