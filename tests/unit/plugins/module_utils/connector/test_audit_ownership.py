# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 21, items 1, 4, 5 and 15: the facts and the audit find only what is provably a volume's, on the
simulated host.

1. every cleanup action names the iface of the session it is about (two ifaces to one portal);
4. the expected list's host names are resolved and matched on any address of a session;
5. a session made with ``iscsiadm -p NAME`` (persistent_address NAME, address numeric) is found by the volume query;
15. a dm-multipath map over NVMe namespaces (controller state ``live``) is judged by NVMe's states.
"""

import os
import socket
import time

import pytest

from connector import iscsi
from connector.errors import InvalidInput
from connector.validate import RESOLVE_TIMEOUT
from connector.paths import cleanup_plan, gather, normalize_expected, normalize_volume

IQN = "iqn.2003-01.org.example.array:vol1"
P1 = "10.0.0.1:3260"
NAME = "array.example"
NVME_WWID = "eui.0025388b71b2c1a4"


def fake_resolver(table):
    def resolve(host, port, family=0, kind=0):
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]
    return resolve


@pytest.fixture
def names(monkeypatch):
    """``array.example`` is 10.0.0.1 (the lookups of validate.resolve_portal go through socket.getaddrinfo)."""
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({NAME: ["10.0.0.1"]}))


def connector(h, **kw):
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), device_wait=2.0,
                           multipath_wait=2.0, **kw)


def attach(h, portals=(P1,), lun=0, **kw):
    return connector(h, **kw).connect(iscsi.build_paths(list(portals), [IQN], [lun]))


def add_iface(h, name="eth1"):
    """An open-iscsi iface with its own initiator name (what the initiator role writes to /etc/iscsi/ifaces)."""
    with open(h.fs.path("/etc/iscsi/ifaces/" + name), "w") as f:
        f.write("# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = %s\niface.transport_name = tcp\n"
                "iface.initiatorname = iqn.1994-05.com.example:sim-host-%s\n# END RECORD\n" % (name, name))


@pytest.fixture
def two_ifaces(host):
    """One portal, LUN 0 logged in on iface default and on eth1: two paths of one map.  (The sessions are made
    with the simulator's iscsiadm: which node records an attach may write for a second iface is item 6's.)"""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    add_iface(host)
    host.login(IQN, P1)
    host.login(IQN, P1, iface="eth1")
    assert sorted(s["iface"] for s in host.sessions(IQN)) == ["default", "eth1"]
    (m,) = gather(host.fs)["maps"]
    assert len(m["paths"]) == 2 and m["active_paths"] == 2
    return host


def session_of(h, iface):
    (s,) = [s for s in h.sessions(IQN) if s["iface"] == iface]
    return s


# -- item 1: the iface ---------------------------------------------------------------------------------------
def test_the_orphan_and_its_cleanup_action_carry_the_iface_of_its_session(two_ifaces):
    two_ifaces.path_fail(P1, session_state="FREE", iface="eth1")
    f = gather(two_ifaces.fs)
    (orphan,) = f["orphans"]
    assert orphan["kind"] == "device_on_failed_session" and orphan["iface"] == "eth1"
    (action,) = f["cleanup"]
    assert action["action"] == "iscsi_volume" and action["iface"] == "eth1" and action["portals"] == [P1]
    assert session_of(two_ifaces, "default")["state"] == "LOGGED_IN"
    assert {s["sid"]: s["iface"] for s in f["sessions"]} == {s["sid"]: s["iface"] for s in two_ifaces.sessions(IQN)}


def test_the_cleanup_takes_out_the_dead_iface_path_and_keeps_the_healthy_one_of_a_mounted_map(two_ifaces):
    m = gather(two_ifaces.fs)["maps"][0]
    two_ifaces.mount(m["dm"], "/srv/data")
    healthy = session_of(two_ifaces, "default")
    two_ifaces.path_fail(P1, session_state="FREE", iface="eth1")
    (action,) = gather(two_ifaces.fs)["cleanup"]
    c = connector(two_ifaces, iface=action["iface"], wwid=action["wwid"])
    c.disconnect(iscsi.build_paths(action["portals"], [action["iqn"]], [action["lun"]]))
    assert [s["sid"] for s in two_ifaces.sessions(IQN)] == [healthy["sid"]]
    after = gather(two_ifaces.fs)
    (m2,) = after["maps"]
    assert m2["dm"] == m["dm"] and m2["active_paths"] == 1 and after["orphans"] == []
    assert [p["session_state"] for p in m2["paths"]] == ["LOGGED_IN"]
    # the by-path link both paths had (its name has no iface) now names the path that stays
    vol = gather(two_ifaces.fs, volume={"portals": [P1], "iqn": IQN, "lun": 0})["volume"]
    assert vol["paths"] and vol["path_count"] == 1 and vol["devices"][0]["sid"] == healthy["sid"]
    assert not any(h["argv"][:2] == ["multipath", "-f"] for h in c.runner.history)
    ifaces = [h["argv"][h["argv"].index("-I") + 1] for h in c.runner.history if "-I" in h["argv"]]
    assert set(ifaces) <= {"eth1"}, c.runner.history


def test_a_session_without_lun_on_a_second_iface_is_logged_out_on_that_iface(two_ifaces):
    target2 = "iqn.2003-01.org.example.array:vol2"
    two_ifaces.add_target(target2, portals=[P1], luns={0: 16})
    two_ifaces.login(target2, P1, scan="manual", iface="eth1")
    (action,) = gather(two_ifaces.fs)["cleanup"]
    assert action["session_only"] is True and action["iface"] == "eth1" and action["iqn"] == target2


def test_an_unexpected_lun_on_two_ifaces_gets_one_action_per_iface(two_ifaces):
    target2 = "iqn.2003-01.org.example.array:vol2"
    two_ifaces.add_target(target2, portals=[P1], luns={0: 16})
    two_ifaces.login(target2, P1)
    two_ifaces.login(target2, P1, iface="eth1")
    f = gather(two_ifaces.fs, expected=[{"iqn": IQN, "lun": 0}])
    acts = sorted((a["iface"], a["iqn"], a["lun"], a["portals"][0]) for a in f["cleanup"])
    assert acts == [("default", target2, 0, P1), ("eth1", target2, 0, P1)], f["cleanup"]


def test_a_cleanup_plan_of_orphans_without_iface_names_none():
    """A ghost device or a link carries no session, hence no iface: the action says so (None), it does not
    invent "default"."""
    plan = cleanup_plan([{"kind": "device_without_session", "reason": "g", "portal": P1, "iqn": IQN, "lun": 1,
                          "device": "/dev/sdk", "hctl": "9:0:0:1", "wwid": None, "map": None}])
    assert plan[0]["iface"] is None


def test_the_volume_query_can_ask_for_one_iface(two_ifaces):
    vol = {"portals": [P1], "iqn": IQN, "lun": 0}
    assert gather(two_ifaces.fs, volume=vol)["volume"]["path_count"] == 2
    eth1 = gather(two_ifaces.fs, volume=dict(vol, iface="eth1"))["volume"]
    assert eth1["sessions"] == [session_of(two_ifaces, "eth1")["sid"]] and eth1["path_count"] == 1
    assert eth1["devices"][0]["sid"] == session_of(two_ifaces, "eth1")["sid"]


# -- items 4 and 5: host names --------------------------------------------------------------------------------
def test_an_expected_portal_given_by_host_name_matches_the_numeric_session(host, names):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, multipath="off")
    f = gather(host.fs, expected=[{"iqn": IQN, "lun": 0, "portal": NAME + ":3260"}])
    assert f["orphans"] == [] and f["cleanup"] == []


def test_an_expected_numeric_portal_matches_a_session_made_by_host_name(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, multipath="off")
    host.name_session(host.sessions(IQN)[0]["sid"], NAME)
    f = gather(host.fs, expected=[{"iqn": IQN, "lun": 0, "portal": P1}])
    assert f["orphans"] == [] and f["cleanup"] == []


def test_an_expected_host_name_that_does_not_resolve_fails_clearly(names):
    with pytest.raises(InvalidInput, match="does not resolve"):
        normalize_expected([{"iqn": IQN, "lun": 0, "portal": "nowhere.example"}])


def test_an_expected_host_name_lookup_is_bounded(monkeypatch):
    import threading
    release = threading.Event()

    def hang(*_a, **_k):
        release.wait(30)
        raise socket.gaierror(-2, "late")
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    try:
        with pytest.raises(InvalidInput, match="did not finish"):
            normalize_expected([{"iqn": IQN, "lun": 0, "portal": "slow.example"}])
    finally:
        release.set()
    assert time.monotonic() - started < RESOLVE_TIMEOUT + 2


@pytest.mark.parametrize("asked", [P1, NAME + ":3260"], ids=["numeric", "host-name"])
def test_the_volume_query_finds_a_session_made_with_a_host_name(host, names, asked):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, multipath="off")
    sid = host.sessions(IQN)[0]["sid"]
    host.name_session(sid, NAME)
    assert host.fs.read("/sys/class/iscsi_connection/connection%d:0/persistent_address" % sid) == NAME
    vol = gather(host.fs, volume={"portals": [asked], "iqn": IQN, "lun": 0})["volume"]
    assert vol["sessions"] == [sid] and vol["path_count"] == 1 and vol["active_paths"] == 1, vol
    assert vol["paths"] == ["/dev/disk/by-path/ip-%s:3260-iscsi-%s-lun-0" % (NAME, IQN)]
    assert vol["missing_portals"] == [] and vol["leftovers"]


def test_the_volume_query_of_a_host_name_finds_a_numeric_session(host, names):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    attach(host, multipath="off")
    vol = gather(host.fs, volume={"portals": [NAME], "iqn": IQN, "lun": 0})["volume"]
    assert vol["path_count"] == 1 and vol["paths"] and vol["missing_portals"] == []


def test_a_normalized_volume_keeps_the_host_name(names):
    vol = normalize_volume({"portals": [NAME], "iqn": IQN, "lun": 0})
    assert [str(p) for p in vol["portals"]] == [P1]
    assert NAME + ":3260" in [str(p) for p in vol["aliases"][P1]]


# -- item 15: dm-multipath over NVMe ------------------------------------------------------------------------------
def test_a_map_over_live_nvme_namespaces_is_healthy(host):
    host.add_nvme_map(NVME_WWID)
    f = gather(host.fs)
    (m,) = f["maps"]
    assert m["active_paths"] == 2 and [p["state"] for p in m["paths"]] == ["active", "active"]
    assert f["orphans"] == [] and f["cleanup"] == []


def test_a_map_with_one_live_nvme_path_is_never_flushed(host):
    host.add_nvme_map(NVME_WWID)
    host.set_nvme_state("nvme1", "dead")
    f = gather(host.fs)
    assert f["maps"][0]["active_paths"] == 1 and f["cleanup"] == [] and f["orphans"] == []


def test_a_map_whose_nvme_controllers_reconnect_is_not_flushed(host):
    host.add_nvme_map(NVME_WWID)
    host.set_nvme_state("nvme0", "connecting")
    host.set_nvme_state("nvme1", "resetting")
    f = gather(host.fs)
    assert f["maps"][0]["active_paths"] == 0 and f["cleanup"] == [] and f["orphans"] == []


def test_a_map_whose_nvme_controllers_are_dead_is_flushed(host):
    host.add_nvme_map(NVME_WWID)
    host.set_nvme_state("nvme0", "dead")
    host.set_nvme_state("nvme1", "deleting")
    f = gather(host.fs)
    assert [o["kind"] for o in f["orphans"]] == ["map_without_working_path"]
    assert [a["action"] for a in f["cleanup"]] == ["multipath_flush"]


def test_a_map_path_of_an_unknown_kind_is_never_judged_dead(host):
    """A path without a state the audit can read (not SCSI, not NVMe): no flush is planned on a guess."""
    host.add_nvme_map(NVME_WWID, controllers=("nvme0",))
    os.unlink(host.fs.path("/sys/devices/virtual/nvme-fabrics/ctl/nvme0/state"))
    f = gather(host.fs)
    assert f["cleanup"] == [] and f["orphans"] == []
    assert f["maps"][0]["paths"][0]["state"] == "unknown"
