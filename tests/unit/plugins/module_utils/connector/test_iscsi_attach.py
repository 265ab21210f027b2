"""iscsi_volume state=present on the simulated host: the connector's attach."""
import time

import pytest

from connector import iscsi
from connector.errors import AttachError, InvalidInput, LoginError

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2, P3, P4 = "10.0.0.1:3260", "10.0.0.2:3260", "10.0.0.3:3260", "10.0.0.4:3260"


def connector(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, **kw)


def attach(h, portals, lun=0, iqn=IQN, **kw):
    c = connector(h, **kw)
    return c, c.connect(iscsi.build_paths(portals, [iqn], [lun]))


def test_single_path_attach_three_commands_and_only_the_lun(host):
    t = host.add_target(IQN, portals=[P1], luns={0: 64, 1: 32})
    before = host.snapshot()
    c, res = attach(host, [P1], lun=1, multipath="off")
    assert res["changed"] is True
    dev = res["device"]
    assert dev.startswith("/dev/sd")
    name = dev[len("/dev/"):]
    # only LUN 1 was scanned: LUN 0 has no device
    assert host.fs.read("/sys/block/%s/device/wwid" % name) == t["luns"][1]["sysfs_wwid"]
    luns = [e for e in host.fs.listdir("/sys/bus/scsi/devices") if e.count(":") == 3 and not e.startswith(("0:", "1:"))]
    assert [e.split(":")[3] for e in luns] == ["1"]
    assert res["wwid"] == t["luns"][1]["wwid"]
    assert res["size"] == 32 * 1024 * 1024
    assert res["stable_path"] == "/dev/disk/by-id/scsi-%s" % res["wwid"]
    assert res["sessions"][0]["state"] == "LOGGED_IN" and res["sessions"][0]["portal"] == P1
    argvs = [h["argv"] for h in c.runner.history]
    assert len(argvs) == 3, argvs
    assert argvs[0][-2:] == ["--op", "new"] and argvs[2][-1] == "--login"
    upd = argvs[1]
    assert upd[upd.index("node.session.scan") + 2] == "manual"
    assert host.snapshot() != before


def test_rerun_runs_no_command_and_returns_same_device(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    c1, first = attach(host, [P1, P2])
    c2, again = attach(host, [P1, P2])
    assert again["changed"] is False
    assert again["device"] == first["device"] and again["wwid"] == first["wwid"]
    assert len(c2.runner.history) == 0


@pytest.mark.parametrize("n", [2, 4])
def test_multipath_attach_returns_the_map(host, n):
    portals = [P1, P2, P3, P4][:n]
    t = host.add_target(IQN, portals=portals, luns={0: 64})
    c, res = attach(host, portals)
    assert res["multipath"] is True and res["device"].startswith("/dev/dm-")
    assert res["multipath_map"] == t["luns"][0]["wwid"]
    assert len(res["paths"]) == n and all(p["in_map"] for p in res["paths"])
    assert sorted(s["portal"] for s in res["sessions"]) == sorted(portals)
    dm = res["device"][len("/dev/"):]
    assert len(host.fs.listdir("/sys/block/%s/slaves" % dm)) == n
    # node new + update + login per portal, nothing else (multipathd builds the map itself)
    assert len(c.runner.history) == 3 * n, [h["argv"] for h in c.runner.history]
    assert res["stable_path"] == "/dev/disk/by-id/dm-uuid-mpath-%s" % res["wwid"]


def test_one_portal_down_still_returns_a_map_and_warns(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "blackhole"})
    t0 = time.monotonic()
    c, res = attach(host, [P1, P2], login_timeout=1, login_retries=1)
    took = time.monotonic() - t0
    assert res["device"].startswith("/dev/dm-")
    assert len(res["paths"]) == 1
    assert any(P2 in w for w in c.warnings)
    assert [f["portal"] for f in res["failed_paths"]] == [P2] and "timed out" in res["failed_paths"][0]["error"]
    assert took < 10
    # the dead portal left no node record and no session
    assert not c.node_exists(iscsi.build_paths([P2], [IQN], [0])[0])


def test_all_portals_down_fails_and_leaves_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P1: "refuse", P2: "refuse"})
    before = host.snapshot()
    with pytest.raises(LoginError) as ei:
        attach(host, [P1, P2])
    assert P1 in str(ei.value) and P2 in str(ei.value)
    assert host.diff(before, host.snapshot()) == host.diff(before, before)


def test_device_never_appears_cleans_up_everything(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("device_never_appears", ["%s:0" % IQN])
    before = host.snapshot()
    t0 = time.monotonic()
    with pytest.raises(AttachError) as ei:
        attach(host, [P1, P2], device_wait=0.5)
    assert time.monotonic() - t0 < 5
    assert "did not appear" in str(ei.value)
    assert host.snapshot() == before


class FakeTime(object):
    """A clock that only the recorded sleeps move (real time is not looked at)."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 4))
        self.now += seconds


def test_device_wait_looks_again_after_5_ms_and_backs_off_to_the_poll(host):
    """A LUN answers its scan within milliseconds: the first looks come after 5, 10, 20, 40 ms, then every poll
    (here the module's 50 ms), never a flat 50 ms from the start."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.set_fault("device_never_appears", ["%s:0" % IQN])
    fake = FakeTime()
    c = iscsi.Connector(host.fs, host.runner(), poll=0.05, device_wait=0.5, multipath="off", login_timeout=2,
                        clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(AttachError):
        c.connect(iscsi.build_paths([P1], [IQN], [0]))
    assert fake.sleeps[:6] == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05]
    assert set(fake.sleeps[4:]) == {0.05}
    assert 0.5 <= sum(fake.sleeps) < 0.56


@pytest.mark.parametrize("poll, first, expected", [
    (0.05, 0.005, [0.005, 0.01, 0.02, 0.04, 0.05, 0.05]),
    (0.01, 0.005, [0.005, 0.01, 0.01, 0.01, 0.01, 0.01]),
    (0.002, 0.005, [0.002] * 6),  # a poll below the first pause wins
    (1.0, 0.1, [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]),
])
def test_backoff_table(poll, first, expected):
    from connector.attach import backoff
    pauses = backoff(poll, first)
    assert [round(next(pauses), 6) for _step in expected] == expected


def test_lun_not_mapped_fails_cleanly(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    with pytest.raises(AttachError):
        attach(host, [P1], lun=5, device_wait=0.3)
    assert host.snapshot() == before


def test_session_chap_and_mutual_chap(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", "sesame-secret"),
                    mutual_chap=("array", "mutual-secret"))
    auth = iscsi.Auth("alice", "sesame-secret", "array", "mutual-secret")
    c, res = attach(host, [P1], auth=auth)
    assert res["device"].startswith("/dev/sd")
    for h in c.runner.history:
        joined = " ".join(h["argv"])
        assert "sesame-secret" not in joined and "mutual-secret" not in joined
    assert len(c.runner.history) == 3  # CHAP costs no extra command


def test_wrong_chap_fails_and_cleans_up_without_leaking_the_secret(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", "right-secret"))
    before = host.snapshot()
    with pytest.raises(LoginError) as ei:
        attach(host, [P1], auth=iscsi.Auth("alice", "wrong-secret"))
    assert "authentication failed" in str(ei.value)
    assert "wrong-secret" not in str(ei.value) and "wrong-secret" not in repr(ei.value.details)
    assert host.snapshot() == before


def test_discovery_finds_the_target_and_stores_no_records(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, discovery_chap=("disc", "disc-secret"))
    c = connector(host, auth=iscsi.Auth(discovery_username="disc", discovery_password="disc-secret"))
    found = c.discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
    assert sorted(found) == sorted([(P1, IQN), (P2, IQN)])
    assert host.fs.listdir("/etc/iscsi/nodes") == []
    assert not list(host.fs.listdir("/etc/iscsi/send_targets"))


def test_ipv6_portal(host):
    p6 = "[fd00::10]:3260"
    host.add_target(IQN, portals=[p6], luns={0: 64})
    c, res = attach(host, [p6], multipath="off")
    assert res["sessions"][0]["portal"] == p6
    link = "/dev/disk/by-path/ip-fd00::10:3260-iscsi-%s-lun-0" % IQN
    assert host.fs.realpath(link) == res["device"]


def test_lun_above_255(host):
    host.add_target(IQN, portals=[P1], luns={300: 16})
    c, res = attach(host, [P1], lun=300, multipath="off")
    assert res["paths"][0]["hctl"].endswith(":300")
    # udev names LUNs above 255 in the SAM form
    link = "/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-%s-lun-0x012c000000000000" % IQN
    assert host.fs.realpath(link) == res["device"]
    from connector import scsi
    assert scsi.bypath_name("10.0.0.1:3260", IQN, 300) == link.rsplit("/", maxsplit=1)[-1]
    assert scsi.parse_bypath(link.rsplit("/", maxsplit=1)[-1])["lun"] == 300
    # detach removes it and leaves nothing
    out = c.disconnect(iscsi.build_paths([P1], [IQN], [300]))
    assert out["leftovers"] == [] and not host.fs.lexists(link)
    assert res["size"] == 16 * 1024 * 1024


def test_check_mode_runs_nothing_and_changes_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    c = connector(host)
    res = c.connect(iscsi.build_paths([P1, P2], [IQN], [0]), check_mode=True)
    assert res["changed"] is True and sorted(res["would_login"]) == sorted([P1, P2])
    assert c.runner.history == [] and host.snapshot() == before


def test_multipath_required_without_multipathd_fails_before_login(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("multipathd_down", True)
    before = host.snapshot()
    with pytest.raises(AttachError) as ei:
        attach(host, [P1, P2], multipath="required")
    assert "multipathd" in str(ei.value)
    assert host.snapshot() == before


@pytest.mark.parametrize("portals,iqns,luns", [
    (["10.0.0.1:99999"], [IQN], [0]),
    (["10.0.0.1"], ["iqn.bad"], [0]),
    (["10.0.0.1"], [IQN], [-1]),
    (["10.0.0.1", "10.0.0.1:3260"], [IQN], [0]),
    (["10.0.0.1", "10.0.0.2"], [IQN, IQN, IQN], [0]),
    ([], [IQN, IQN], [0]),
])
def test_bad_input_fails_before_any_command(portals, iqns, luns):
    with pytest.raises(InvalidInput):
        iscsi.build_paths(portals, iqns, luns)


@pytest.mark.parametrize("kw", [dict(password="x"), dict(username="u"), dict(username_in="a", password_in="b"),
                                dict(discovery_password="x")])
def test_secret_without_user_is_rejected(kw):
    with pytest.raises(InvalidInput):
        iscsi.Auth(**kw)


def test_single_path_mode_falls_back_to_the_next_portal_and_leaves_no_record_behind(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P1: "refuse"})
    c, res = attach(host, [P1, P2], multipath="off")
    assert res["device"].startswith("/dev/sd") and [s["portal"] for s in res["sessions"]] == [P2]
    assert not c.node_exists(iscsi.build_paths([P1], [IQN], [0])[0])
    assert any(P1 in w for w in c.warnings)
