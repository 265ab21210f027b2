# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""connector.paths: volume paths, orphans and the cleanup plan, on the simulated host."""

import os
import subprocess
import sys
import time

import pytest

from connector import iscsi
from connector.errors import BrickError, InvalidInput
from connector.hostfs import HostFS
from connector.orphans import KINDS
from connector.paths import cleanup_plan, gather, normalize_expected, normalize_volume

IQN = "iqn.2003-01.org.example.array:vol1"
IQN2 = "iqn.2003-01.org.example.array:vol2"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
VOL = {"portals": [P1, P2], "iqn": IQN, "lun": 0}


def attach(h, portals=(P1, P2), lun=0, iqn=IQN, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)
    return c.connect(iscsi.build_paths(list(portals), [iqn], [lun]))


def detach(h, portals=(P1, P2), lun=0, iqn=IQN):
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)))
    return c.disconnect(iscsi.build_paths(list(portals), [iqn], [lun]))


def kinds(facts):
    return sorted(o["kind"] for o in facts["orphans"])


@pytest.fixture
def mp_host(host):
    """A healthy 2-path multipath volume (LUN 0) next to the local virtio disk /dev/vda."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    res = attach(host)
    assert res["multipath"] is True
    return host


# -- clean hosts: no false positives ----------------------------------------------------------------
def test_empty_host_has_no_orphans_and_ignores_local_disk(host):
    f = gather(host.fs)
    assert f["orphans"] == [] and f["cleanup"] == []
    assert f["sessions"] == [] and f["luns"] == [] and f["maps"] == []
    assert f["search_path"] == "/dev/disk/by-path"
    assert host.fs.exists("/dev/vda") and not any("vda" in str(v) for v in f["luns"])
    assert set(f["summary"]["counts"]) == set(KINDS) and f["summary"]["orphans"] == 0


def test_healthy_multipath_volume_is_no_orphan(mp_host):
    f = gather(mp_host.fs)
    assert f["orphans"] == [], f["orphans"]
    assert len(f["sessions"]) == 2 and all(s["state"] == "LOGGED_IN" for s in f["sessions"])
    assert len(f["luns"]) == 2
    (m,) = f["maps"]
    assert m["active_paths"] == 2 and [p["state"] for p in m["paths"]] == ["active", "active"]
    assert all(r["map"] == m["name"] and r["dm"] == m["dm"] for r in f["luns"])
    assert all(len(r["by_path"]) == 1 for r in f["luns"])
    assert sorted(r["portal"] for r in f["luns"]) == [P1, P2]
    assert any(link.endswith("dm-uuid-mpath-" + m["wwid"]) for link in m["by_id"])


def test_gather_runs_no_external_command(mp_host, monkeypatch):
    before = len(mp_host.commands())

    def boom(*a, **kw):
        raise AssertionError("gather ran a command: %r" % (a,))

    monkeypatch.setattr(subprocess, "Popen", boom)
    monkeypatch.setattr(os, "system", boom)
    gather(mp_host.fs, volume=VOL, expected=[])
    assert len(mp_host.commands()) == before


def test_gather_with_a_plain_hostfs_matches_the_sim_fs(mp_host):
    a = gather(mp_host.fs, volume=VOL)
    b = gather(HostFS(mp_host.root), volume=VOL)
    assert a == b


def test_missing_sysfs_fails_clearly(tmp_path):
    with pytest.raises(BrickError, match="sysfs is not readable"):
        gather(HostFS(str(tmp_path)))


# -- the volume query ------------------------------------------------------------------------------
def test_volume_query_lists_every_path_of_a_two_portal_volume(mp_host):
    v = gather(mp_host.fs, volume=VOL, orphans=False)["volume"]
    assert v["path_count"] == 2 and v["active_paths"] == 2
    assert sorted(d["portal"] for d in v["devices"]) == [P1, P2]
    assert len(v["paths"]) == 2 and all(mp_host.fs.exists(p) for p in v["paths"])
    assert v["map"] is not None and v["dm"].startswith("/dev/dm-")
    assert v["missing_portals"] == [] and v["dangling_links"] == [] and v["empty_sessions"] == []
    assert v["exists"] is True and len(v["leftovers"]) == 5  # 2 devices, 2 links, the map
    assert [pp["active"] for pp in v["per_portal"]] == [True, True]


def test_volume_query_other_lun_and_port_default(mp_host):
    v = gather(mp_host.fs, volume={"portals": ["10.0.0.1", "10.0.0.2"], "iqn": IQN, "lun": 1})["volume"]
    assert v["exists"] is False and v["devices"] == [] and v["paths"] == []
    # LUN 1 is not attached: the sessions of LUN 0 are not leftovers of LUN 1 (they carry another LUN)
    assert v["sessions"] and v["empty_sessions"] == [] and v["leftovers"] == []
    assert v["missing_portals"] == [P1, P2]


def test_volume_query_finds_nothing_after_logout(mp_host):
    detach(mp_host)
    f = gather(mp_host.fs, volume=VOL)
    v = f["volume"]
    assert v["exists"] is False and v["leftovers"] == [] and v["sessions"] == []
    assert f["orphans"] == [] and f["luns"] == [] and f["maps"] == []


def test_volume_query_one_portal_failed(mp_host):
    mp_host.path_fail(P2, session_state="FREE")
    v = gather(mp_host.fs, volume=VOL)["volume"]
    assert v["path_count"] == 2 and v["active_paths"] == 1 and v["missing_portals"] == [P2]


def test_volume_query_reports_leftover_links_and_empty_sessions(mp_host):
    detach(mp_host)
    mp_host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    mp_host.login(IQN, P1, scan="manual")           # a session the detach should have logged out
    stale = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P2, IQN)
    os.symlink("../../sdq", mp_host.fs.path(stale))  # and a link udev did not remove
    v = gather(mp_host.fs, volume=VOL)["volume"]
    assert v["dangling_links"] == [stale] and v["paths"] == []
    assert len(v["empty_sessions"]) == 1
    assert stale in v["leftovers"] and any(x.startswith("session ") for x in v["leftovers"])


def test_volume_input_is_validated():
    for bad, msg in (({"portals": [], "iqn": IQN, "lun": 0}, "portals is empty"),
                     ({"portals": ["10.0.0.300"], "iqn": IQN, "lun": 0}, "not a valid IPv4"),
                     ({"portals": [P1], "iqn": "nope", "lun": 0}, "malformed"),
                     ({"portals": [P1], "iqn": IQN, "lun": -1}, "out of range"),
                     ({"portals": [P1], "iqn": IQN}, "lun is missing"),
                     ({"portals": [P1], "iqn": IQN, "lun": 0, "x": 1}, "unknown key")):
        with pytest.raises(InvalidInput, match=msg):
            normalize_volume(bad)
    v = normalize_volume({"portals": ["[FD00::1]:3261", "[fd00::1]:3261"], "iqn": IQN, "lun": "3"})
    assert [str(p) for p in v["portals"]] == ["[fd00::1]:3261"] and v["lun"] == 3


# -- orphans -----------------------------------------------------------------------------------------
def test_failed_session_makes_device_orphans_but_map_still_works(mp_host):
    mp_host.path_fail(P2, session_state="FREE")
    f = gather(mp_host.fs)
    assert kinds(f) == ["device_on_failed_session"]
    (o,) = f["orphans"]
    assert o["portal"] == P2 and o["iqn"] == IQN and o["lun"] == 0 and "is FREE" in o["reason"]
    (m,) = f["maps"]
    assert m["active_paths"] == 1
    assert sorted(p["state"] for p in m["paths"]) == ["active", "failed"]


def test_map_without_working_path(mp_host):
    mp_host.path_fail(P1, session_state="FREE")
    mp_host.path_fail(P2, session_state="FREE")
    f = gather(mp_host.fs)
    assert kinds(f) == ["device_on_failed_session", "device_on_failed_session", "map_without_working_path"]
    mo = [o for o in f["orphans"] if o["kind"] == "map_without_working_path"][0]
    assert mo["map"] == f["maps"][0]["name"] and "no working path" in mo["reason"]
    assert len(mo["paths"]) == 2


def test_map_without_slaves(mp_host):
    m = gather(mp_host.fs)["maps"][0]
    dm = m["dm"][len("/dev/"):]
    for sd in os.listdir(mp_host.fs.path("/sys/class/block/%s/slaves" % dm)):
        os.unlink(mp_host.fs.path("/sys/class/block/%s/slaves/%s" % (dm, sd)))
    f = gather(mp_host.fs)
    (o,) = [o for o in f["orphans"] if o["kind"] == "map_without_working_path"]
    assert "has no path device" in o["reason"]


def test_offline_device_on_a_live_session(mp_host):
    f0 = gather(mp_host.fs)
    row = [r for r in f0["luns"] if r["portal"] == P1][0]
    with open(mp_host.fs.path("/sys/class/block/%s/device/state" % row["name"]), "w") as fh:
        fh.write("offline\n")
    f = gather(mp_host.fs)
    assert kinds(f) == ["device_on_failed_session"]
    assert "device state is offline" in f["orphans"][0]["reason"]
    assert f["maps"][0]["active_paths"] == 1


def test_blocked_device_fails_the_path_but_is_no_orphan(mp_host):
    row = gather(mp_host.fs)["luns"][0]
    with open(mp_host.fs.path("/sys/class/block/%s/device/state" % row["name"]), "w") as fh:
        fh.write("blocked\n")
    f = gather(mp_host.fs)
    assert f["orphans"] == [] and f["maps"][0]["active_paths"] == 1


def test_device_whose_session_is_gone(mp_host):
    f0 = gather(mp_host.fs)
    s = [x for x in f0["sessions"] if x["portal"] == P2][0]
    # the iSCSI class entries vanished but the SCSI disk is still there
    os.unlink(mp_host.fs.path("/sys/class/iscsi_session/session%d" % s["sid"]))
    os.unlink(mp_host.fs.path("/sys/class/iscsi_host/host%d" % s["host"]))
    f = gather(mp_host.fs)
    assert kinds(f) == ["device_without_session"]
    o = f["orphans"][0]
    assert "no longer exists" in o["reason"] and o["sid"] == s["sid"]
    # portal and IQN recovered from the by-path link, so the cleanup can detach it
    assert o["portal"] == P2 and o["iqn"] == IQN
    assert [a["action"] for a in f["cleanup"]] == ["iscsi_volume"]
    assert len(f["luns"]) == 2  # the ghost is still listed as a LUN path
    assert f["maps"][0]["active_paths"] == 1


def test_device_on_a_free_session(mp_host):
    s = gather(mp_host.fs)["sessions"][0]
    p = mp_host.fs.realpath("/sys/class/iscsi_session/session%d" % s["sid"]) + "/state"
    with open(mp_host.fs.path(p), "w") as fh:
        fh.write("FREE\n")
    f = gather(mp_host.fs)
    # FREE = recovery_tmo expired (seen on the lab's real kernel): the session exists, its paths are dead
    assert kinds(f) == ["device_on_failed_session"] and "is FREE" in f["orphans"][0]["reason"]


def test_session_without_lun(host):
    host.add_target(IQN2, portals=[P1], luns={0: 16})
    host.login(IQN2, P1, scan="manual")
    f = gather(host.fs)
    assert kinds(f) == ["session_without_lun"]
    o = f["orphans"][0]
    assert o["portal"] == P1 and o["iqn"] == IQN2 and o["lun"] is None
    # a session-only logout: no LUN is touched (never the module's default LUN 0)
    assert f["cleanup"] == [{"action": "iscsi_volume", "portals": [P1], "iqn": IQN2, "lun": None, "iface": "default",
                             "session_only": True, "kinds": ["session_without_lun"], "reason": o["reason"]}]


def test_dangling_links(mp_host):
    bp = "/dev/disk/by-path/ip-10.0.0.9:3260-iscsi-%s-lun-7" % IQN
    bi = "/dev/disk/by-id/scsi-3600140500000000000000000000000aa"
    os.symlink("../../sdzz", mp_host.fs.path(bp))
    os.symlink("../../dm-99", mp_host.fs.path(bi))
    f = gather(mp_host.fs)
    assert kinds(f) == ["dangling_link", "dangling_link"]
    by = dict((o["link"], o) for o in f["orphans"])
    assert by[bp]["portal"] == "10.0.0.9:3260" and by[bp]["lun"] == 7 and by[bp]["target"] == "/dev/sdzz"
    assert by[bi]["target"] == "/dev/dm-99" and "iqn" not in by[bi]
    assert [a["path"] for a in f["cleanup"]] == sorted([bp, bi]) or \
        sorted(a["path"] for a in f["cleanup"]) == sorted([bp, bi])


def test_link_to_a_node_the_kernel_no_longer_knows_is_dangling(host):
    # a stale /dev node (no /sys/class/block entry) does not keep a link alive
    open(host.fs.path("/dev/sdx"), "w").close()
    link = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P1, IQN)
    os.symlink("../../sdx", host.fs.path(link))
    f = gather(host.fs)
    assert kinds(f) == ["dangling_link"]


# -- the expected set ---------------------------------------------------------------------------------
@pytest.fixture
def two_luns(mp_host):
    attach(mp_host, lun=1)
    return mp_host


def test_expected_none_means_no_comparison(two_luns):
    assert gather(two_luns.fs, expected=None)["orphans"] == []


def test_expected_by_iqn_and_lun(two_luns):
    f = gather(two_luns.fs, expected=[{"iqn": IQN.upper().replace("IQN.", "iqn."), "lun": 0}])
    assert kinds(f) == ["unexpected_lun", "unexpected_lun"]
    assert sorted(o["portal"] for o in f["orphans"]) == [P1, P2] and {o["lun"] for o in f["orphans"]} == {1}
    # one detach for the whole unexpected volume, over both portals
    w1 = [r["wwid"] for r in f["luns"] if r["lun"] == 1][0]
    assert f["cleanup"] == [{"action": "iscsi_volume", "portals": [P1, P2], "iqn": IQN, "lun": 1, "wwid": w1,
                             "iface": "default", "kinds": ["unexpected_lun"], "reason": f["cleanup"][0]["reason"]}]


def test_expected_by_wwid_both_forms(two_luns):
    luns = gather(two_luns.fs)["luns"]
    w0 = [r["wwid"] for r in luns if r["lun"] == 0][0]
    w1 = [r["wwid"] for r in luns if r["lun"] == 1][0]
    assert gather(two_luns.fs, expected=[w0, {"wwid": "naa." + w1[1:]}])["orphans"] == []
    assert {o["lun"] for o in gather(two_luns.fs, expected=[w0.upper()])["orphans"]} == {1}


def test_expected_with_portal_flags_the_other_path(two_luns):
    f = gather(two_luns.fs, expected=[{"iqn": IQN, "lun": 0}, {"iqn": IQN, "lun": 1, "portal": "10.0.0.1"}])
    assert kinds(f) == ["unexpected_lun"] and f["orphans"][0]["portal"] == P2


def test_expected_empty_list_flags_everything(two_luns):
    f = gather(two_luns.fs, expected=[])
    assert kinds(f) == ["unexpected_lun"] * 4


def test_expected_input_is_validated():
    for bad, msg in (([42], "WWID string or a dictionary"), ([{"iqn": IQN}], "needs iqn and lun"),
                     ([{"iqn": IQN, "lun": 0, "port": 1}], "unknown key"), (["bad wwid!"], "not a WWID"),
                     ([{"iqn": IQN, "lun": 0, "portal": "1.2.3.999"}], "IPv4"), (7, "must be a list")):
        with pytest.raises(InvalidInput, match=msg):
            normalize_expected(bad)
    e = normalize_expected(["naa.6001405ABC", {"iqn": IQN, "lun": 2, "portals": [P1, P2]}])
    assert e["wwids"] == {"36001405abc"} and len(e["luns"]) == 2


# -- the cleanup plan -----------------------------------------------------------------------------------
def test_cleanup_plan_order_and_dedup():
    orphans = [
        {"kind": "dangling_link", "reason": "l", "link": "/dev/disk/by-path/x", "target": "/dev/sdq"},
        {"kind": "device_on_failed_session", "reason": "d1", "portal": P2, "iqn": IQN, "lun": 0},
        {"kind": "unexpected_lun", "reason": "u1", "portal": P2, "iqn": IQN, "lun": 3},
        {"kind": "device_on_failed_session", "reason": "d2", "portal": P2, "iqn": IQN, "lun": 3},
        {"kind": "map_without_working_path", "reason": "m", "map": "mpatha"},
        {"kind": "map_without_working_path", "reason": "m", "map": "mpatha"},
        {"kind": "device_without_session", "reason": "g", "portal": None, "iqn": None, "lun": 1,
         "device": "/dev/sdk", "hctl": "9:0:0:1"},
        {"kind": "unexpected_lun", "reason": "u2", "portal": P1, "iqn": IQN, "lun": 3},
    ]
    plan = cleanup_plan(orphans)
    assert [a["action"] for a in plan] == ["multipath_flush", "iscsi_volume", "iscsi_volume", "file", "manual"]
    assert plan[1] == {"action": "iscsi_volume", "portals": [P2], "iqn": IQN, "lun": 0, "wwid": None, "iface": None,
                       "kinds": ["device_on_failed_session"], "reason": "d1"}
    # LUN 3 is unexpected: one detach over both portals covers its failed path too
    assert plan[2]["portals"] == [P1, P2] and plan[2]["lun"] == 3
    assert plan[4]["device"] == "/dev/sdk"


def test_real_cleanup_through_the_connector_leaves_no_orphan(mp_host):
    mp_host.path_fail(P2, session_state="FREE")
    f = gather(mp_host.fs)
    (a,) = f["cleanup"]
    c = iscsi.Connector(mp_host.fs, mp_host.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)))
    c.disconnect(iscsi.build_paths(a["portals"], [a["iqn"]], [a["lun"]]), force=False)
    after = gather(mp_host.fs, volume=VOL)
    assert after["orphans"] == [], after["orphans"]
    assert after["volume"]["active_paths"] == 1 and after["volume"]["missing_portals"] == [P2]


# -- cost --------------------------------------------------------------------------------------------
def _bench_facts():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "..", "bench"))
    import bench_facts
    return bench_facts


def _degrade(root, n_paths):
    """Make a bench_facts host look lived-in, in proportion to its size: every 4th session FREE (its devices are
    orphans, each with a cleanup action) and every 16th path's device node gone (its links dangle)."""
    sessions = n_paths // 8  # a target carries 8 volumes (16 paths) over two sessions
    for sid in range(1, sessions + 1, 4):
        with open(root + "/sys/devices/platform/host%d/session%d/iscsi_session/session%d/state" % (sid, sid, sid),
                  "w") as f:
            f.write("FREE\n")
    links = sorted(os.listdir(root + "/dev/disk/by-path"))
    for link in links[::16]:
        os.unlink(os.path.join(root, "dev", os.path.basename(os.readlink(root + "/dev/disk/by-path/" + link))))


def _operations(root, expected):
    """(lines of connector code run, file-system calls made) by one audit-style gather of the host at ``root``:
    counts of work, not time, so that they do not depend on the machine's load."""
    connector_dir = os.path.dirname(os.path.abspath(iscsi.__file__))
    counts = {"lines": 0, "fs": 0}

    def local(frame, event, _arg):
        if event == "line":
            counts["lines"] += 1
        return local

    def tracer(frame, _event, _arg):
        return local if frame.f_code.co_filename.startswith(connector_dir) else None

    class CountingFS(HostFS):
        def __getattribute__(self, name):
            if name in ("read", "read_int", "listdir", "readlink", "realpath", "exists", "lexists", "isdir",
                        "match", "islink"):
                counts["fs"] += 1
            return object.__getattribute__(self, name)

    volume = {"portals": ["10.0.0.1:3260", "10.1.0.1:3260"], "iqn": "iqn.2010-10.org.example:bench-t0", "lun": 0}
    sys.settrace(tracer)
    try:
        facts = gather(CountingFS(root), volume=volume, expected=expected)
    finally:
        sys.settrace(None)
    return counts, facts


def test_cost_grows_linearly(tmp_path):
    """8x the paths (with orphans, cleanup actions, an expected list and a volume query, all growing with the
    host) is at most 8x the work: the connector's lines run and file-system calls are counted, so a quadratic
    step (a scan of a list per path) fails here whatever the machine's load."""
    bench_facts = _bench_facts()
    per_path = {}
    for n in (64, 512):
        root = bench_facts.build_tree(str(tmp_path / str(n)), n)
        _degrade(root, n)
        counts, facts = _operations(root, normalize_expected(bench_facts.expected_of(n)))
        assert len(facts["luns"]) == n and facts["volume"]["path_count"] == 2
        assert facts["summary"]["counts"]["device_on_failed_session"] >= n // 16, facts["summary"]
        assert facts["summary"]["counts"]["dangling_link"] >= n // 16, facts["summary"]
        assert len(facts["cleanup"]) >= n // 8
        per_path[n] = dict((k, v / float(n)) for k, v in counts.items())
    for what in ("lines", "fs"):
        assert per_path[512][what] <= 1.1 * per_path[64][what], (what, per_path)


def test_single_path_volume_with_a_partition_is_no_orphan(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    res = attach(host, portals=(P1,), multipath="off")
    host.add_partition(res["device"], 1, 16)
    f = gather(host.fs, volume={"portals": [P1], "iqn": IQN, "lun": 0})
    assert f["orphans"] == [] and f["maps"] == []
    assert any(x.endswith("-lun-0-part1") for x in os.listdir(host.fs.path("/dev/disk/by-path")))
    v = f["volume"]
    assert v["paths"] == ["/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P1, IQN)] and v["map"] is None
    assert v["active_paths"] == 1 and v["missing_portals"] == []


# -- issue 13: recovery window, identity, a safe cleanup ------------------------------------------------
def test_a_session_in_its_recovery_window_is_degraded_not_an_orphan(mp_host):
    mp_host.path_fail(P2, session_state="FAILED")
    f = gather(mp_host.fs)
    assert f["orphans"] == [] and f["cleanup"] == []
    (d,) = f["degraded"]
    assert d["portal"] == P2 and d["session_state"] == "FAILED" and "recovery" in d["reason"]
    assert f["summary"]["degraded"] == 1 and f["summary"]["orphans"] == 0


def test_a_map_whose_paths_are_all_recovering_is_not_flushed(mp_host):
    mp_host.path_fail(P1, session_state="FAILED")
    mp_host.path_fail(P2, session_state="FAILED")
    f = gather(mp_host.fs)
    assert f["orphans"] == [] and f["cleanup"] == [] and len(f["degraded"]) == 2


def test_cleanup_of_a_dead_path_carries_the_wwid_the_path_serves(mp_host):
    mp_host.path_fail(P2, session_state="FREE")
    f = gather(mp_host.fs)
    (a,) = f["cleanup"]
    assert a["wwid"] == f["maps"][0]["wwid"] and a["portals"] == [P2]


def test_cleanup_of_a_dead_path_keeps_a_mounted_map_and_its_live_path(mp_host):
    m = gather(mp_host.fs)["maps"][0]
    mp_host.mount(m["dm"], "/srv/data")
    mp_host.path_fail(P2, session_state="FREE")
    (a,) = gather(mp_host.fs)["cleanup"]
    c = iscsi.Connector(mp_host.fs, mp_host.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)),
                        wwid=a["wwid"])
    c.disconnect(iscsi.build_paths(a["portals"], [a["iqn"]], [a["lun"]]))
    after = gather(mp_host.fs, volume=VOL)
    assert after["orphans"] == [] and after["volume"]["active_paths"] == 1
    (m2,) = after["maps"]
    assert m2["dm"] == m["dm"] and [p["portal"] for p in m2["paths"]] == [P1]
    assert not any(h["argv"][:2] == ["multipath", "-f"] for h in c.runner.history)


def test_volume_query_with_a_wwid_leaves_out_another_volume_at_the_same_lun(mp_host):
    v = gather(mp_host.fs, volume=dict(VOL, wwid="36001405" + "0" * 25), orphans=False)["volume"]
    assert v["devices"] == [] and v["map"] is None and v["exists"] is False
    assert len(v["foreign_devices"]) == 2 and v["leftovers"] == []
    w = gather(mp_host.fs, orphans=False)["maps"][0]["wwid"]
    v = gather(mp_host.fs, volume=dict(VOL, wwid="naa." + w[1:]), orphans=False)["volume"]
    assert len(v["devices"]) == 2 and v["foreign_devices"] == [] and v["wwid"] == w


def test_facts_without_input_do_not_load_the_input_checks(tmp_path):
    """The fleet audit runs the facts on every host with neither volume nor expected: validate.py and
    path_inputs.py (a fifth of the code) are not even compiled then; they load as soon as there is input."""
    import subprocess
    import sys
    code = ("import sys; from connector import paths; from connector.hostfs import HostFS; "
            "paths.gather(HostFS(sys.argv[1])); print(sorted(m for m in sys.modules if m.startswith('connector.'))); "
            "paths.normalize_expected(['3600140512345678901234567890abcde']); "
            "print('connector.validate' in sys.modules, 'connector.path_inputs' in sys.modules)")
    here = os.path.dirname(os.path.abspath(__file__))
    top = here[:here.index(os.sep + "tests" + os.sep)]
    env = dict(os.environ, PYTHONPATH=os.path.join(top, "plugins", "module_utils"))
    (tmp_path / "sys" / "class" / "block").mkdir(parents=True)  # a host without any block device
    out = subprocess.check_output([sys.executable, "-c", code, str(tmp_path)], env=env,
                                  universal_newlines=True).splitlines()
    assert "connector.paths" in out[0] and "connector.orphans" in out[0]
    assert "connector.validate" not in out[0] and "connector.path_inputs" not in out[0], out[0]
    assert out[1] == "True True"
