# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.iscsi_volume through its main(), on the simulated host."""

import json
import re

import pytest

from unit.plugins.modules.modtest_util import import_collection_module

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


@pytest.fixture(scope="module")
def mod():
    pytest.importorskip("ansible")
    return import_collection_module("iscsi_volume")


@pytest.fixture
def host(host, mod):
    """The simulated host (conftest.py), wired to the module: it builds its HostFS and Runner from it."""
    return host.wire(mod)


OMIT = object()  # args(h, portals=OMIT): the option is not given at all


def args(h, **kw):
    a = {"portals": [P1, P2], "iqn": [IQN], "lun": [0], "lock_dir": h.lock_dir,
         "device_wait_timeout": 3, "multipath_wait_timeout": 3}
    a.update(kw)
    return dict((k, v) for k, v in a.items() if v is not OMIT)


def test_attach_rerun_detach(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host))
    assert not failed, res
    assert res["changed"] and res["device"].startswith("/dev/dm-") and res["commands"] == 6
    assert res["lock_wait"] >= 0
    failed, again = run_module(mod, args(host))
    assert not again["changed"] and again["device"] == res["device"] and again["commands"] == 0
    failed, gone = run_module(mod, args(host, state="absent"))
    assert not failed and gone["changed"] and gone["leftovers"] == []
    failed, again = run_module(mod, args(host, state="absent"))
    assert not failed and again["changed"] is False and again["commands"] == 0
    # multipathd remembers the WWID of every map it built (/etc/multipath/wwids), as on a real host
    after = host.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}


def test_check_mode_attach_runs_nothing(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host), check_mode=True)
    assert not failed and res["changed"] is True and res["commands"] == 0
    assert host.snapshot() == before


def test_check_mode_detach_runs_nothing(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    run_module(mod, args(host))
    snap = host.snapshot()
    failed, res = run_module(mod, args(host, state="absent"), check_mode=True)
    assert not failed and res["changed"] and res["removed"]["devices"]
    assert host.snapshot() == snap


# Bad input: a message, and nothing runs (no command, no change on the host). The first column is the id.
BAD_INPUT = [
    ("port-out-of-range", dict(portals=["10.0.0.1:99999"]), "out of range"),
    ("malformed-iqn", dict(iqn=["iqn.bad"]), "malformed"),
    ("negative-lun", dict(lun=[-3]), "out of range"),
    # ansible-core's required_together, before the module's code; the connector's own check (Auth) stays
    ("chap-secret-without-user", dict(chap_password="only-a-secret"),
     "parameters are required together: chap_username, chap_password"),
    ("chap-secret-with-empty-user", dict(chap_username="", chap_password="only-a-secret"), "without a user name"),
    ("chap-user-without-secret", dict(chap_username="alice"),
     "parameters are required together: chap_username, chap_password"),
    ("mutual-chap-half", dict(chap_username="alice", chap_password="session-secret", chap_username_in="array"),
     "parameters are required together: chap_username_in, chap_password_in"),
    ("mutual-chap-without-session-chap", dict(chap_username_in="u", chap_password_in="p"),
     "mutual CHAP needs session CHAP"),
    ("discovery-chap-half", dict(discovery_chap_password="discovery-secret"),
     "parameters are required together: discovery_chap_username, discovery_chap_password"),
    ("alias-chap-half", dict(auth_username="alice"), "parameters are required together"),
    ("iface-with-shell-characters", dict(iface="bad iface;reboot"), "not allowed"),
    ("lock-timeout-word", dict(lock_timeout="soon"), "lock_timeout"),
    ("login-timeout-zero", dict(login_timeout=0), "login_timeout must be >= 1"),
    # ansible-core's required_if; an empty (or null) list counts as given for it: the module checks that
    ("present-without-portals", dict(portals=OMIT), "state is present but all of the following are missing: portals"),
    ("present-with-empty-portals", dict(portals=[]), "at least one portal"),
    ("present-with-null-portals", dict(portals=None), "at least one portal"),
    ("absent-without-iqn", dict(state="absent", iqn=OMIT), "state=absent needs the target IQN"),
    ("session-only-present", dict(session_only=True, lun=OMIT), "session_only is a logout"),
    ("session-only-with-wwid", dict(state="absent", session_only=True, lun=OMIT, wwid="36001405" + "1" * 25),
     "session_only touches no LUN"),
    ("unknown-option", dict(luns_per_portal=2), "Unsupported parameters"),
]


@pytest.mark.parametrize("bad,needle", [pytest.param(bad, needle, id=name) for name, bad, needle in BAD_INPUT])
def test_bad_input_fails_before_any_command(mod, host, run_module, bad, needle):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mod, args(host, **bad))
    assert failed and needle in res["msg"], res
    assert all(len(r.history) == 0 for r in host.runners)
    assert host.snapshot() == before


def test_secrets_never_in_results(mod, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", "right-secret"))
    failed, res = run_module(mod, args(host, portals=[P1], chap_username="alice", chap_password="wrong-secret"))
    assert failed and "authentication failed" in res["msg"]
    assert "wrong-secret" not in json.dumps(res)
    failed, res = run_module(mod, args(host, portals=[P1], chap_username="alice", chap_password="right-secret"))
    assert not failed, res
    assert "right-secret" not in json.dumps(res)


def test_discovery_when_iqn_is_not_given(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mod, {"portals": [P1], "lock_dir": host.lock_dir, "discover": "always",
                                   "device_wait_timeout": 3, "multipath_wait_timeout": 3})
    assert not failed, res
    assert sorted(s["portal"] for s in res["sessions"]) == [P1, P2]
    assert res["multipath"] is True


# -- issue 13: identity, lock scope, session-only logout, host names --------------------------------------
def test_discovery_based_attach_locks_the_target_not_the_portal(mod, host, run_module):
    """The IQN is resolved first, then the target is locked: a detach of the same target (which holds the
    target lock) must keep a discovery-based attach out."""
    from connector.lock import HostLock
    from connector.lockdir import target_lock_name
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0, info="a detach of LUN 0")
    held.acquire()
    try:
        failed, res = run_module(mod, {"portals": [P1], "lun": [1], "lock_dir": host.lock_dir, "lock_timeout": 0,
                                       "multipath": "off", "device_wait_timeout": 3})
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    assert host.disks() == {}


def test_every_target_of_a_volume_is_locked(mod, host, run_module):
    from connector.lock import HostLock
    from connector.lockdir import target_lock_name
    iqn2 = "iqn.2003-01.org.example.array:vol1-b"
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.add_target(iqn2, portals=[P2], luns={0: 64})
    held = HostLock(target_lock_name(iqn2), lock_dir=host.lock_dir, timeout=0)
    held.acquire()
    try:
        failed, res = run_module(mod, args(host, iqn=[IQN, iqn2], lock_timeout=0, multipath="off"))
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res


def test_session_only_through_the_module(mod, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    host.login(IQN, P1, scan="manual")
    with_record = host.snapshot()  # the session's node record is not one the collection made: it stays
    failed, res = run_module(mod, {"state": "absent", "portals": [P1], "iqn": [IQN], "session_only": True,
                                   "lock_dir": host.lock_dir})
    assert not failed and res["changed"] and host.sessions(IQN) == []
    after = host.snapshot()
    assert set(after) - set(before) == {"/etc/iscsi/nodes/" + IQN, "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN}
    assert {k: v for k, v in after.items() if k in before} == before
    assert {k: v for k, v in after.items() if k.startswith("/etc/iscsi/nodes/")} == \
        {k: v for k, v in with_record.items() if k.startswith("/etc/iscsi/nodes/")}
    failed, res = run_module(mod, {"state": "absent", "portals": [P1], "iqn": [IQN], "session_only": True,
                                   "lun": [0], "lock_dir": host.lock_dir})
    assert failed and "session_only touches no LUN" in res["msg"]


def test_wwid_through_the_module(mod, host, run_module):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    w = t["luns"][0]["wwid"]
    failed, res = run_module(mod, args(host, wwid=t["luns"][0]["sysfs_wwid"]))
    assert not failed and res["wwid"] == w
    snap = host.snapshot()
    failed, res = run_module(mod, args(host, wwid="36001405" + "9" * 25))
    assert failed and w in res["msg"] and res["wwids"], res
    assert host.snapshot() == snap
    failed, res = run_module(mod, args(host, state="absent", portals=[P2], wwid=w))
    assert not failed and res["removed"]["paths_out_of_map"] and res["removed"]["maps"] == []
    assert [s["portal"] for s in host.sessions(IQN)] == [P1]


def test_a_portal_host_name_is_resolved(mod, host, run_module):
    host.add_target(IQN, portals=["127.0.0.1:3260"], luns={0: 64})
    failed, res = run_module(mod, args(host, portals=["127.0.0.1"], multipath="off"))
    assert not failed, res
    failed, res = run_module(mod, args(host, state="absent", portals=["localhost:3260"], multipath="off"))
    assert not failed and res["changed"] and res["leftovers"] == [], res
    assert host.sessions(IQN) == []


# -- issue 15: growth and dead portals through the module -------------------------------------------------
def test_a_grown_map_is_resized_under_the_target_lock(mod, host, run_module):
    from connector.lock import HostLock
    from connector.lockdir import target_lock_name
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, first = run_module(mod, args(host))
    host.resize_lun(IQN, 0, 128)
    held = HostLock(target_lock_name(IQN), lock_dir=host.lock_dir, timeout=0)
    held.acquire()
    try:  # the resize is a command: it waits for the target lock (the rescan alone did not)
        failed, res = run_module(mod, args(host, lock_timeout=0))
    finally:
        held.release()
    assert failed and "lock" in res["msg"].lower(), res
    failed, res = run_module(mod, args(host))
    assert not failed and res["changed"] and res["resized"]["new_size"] == 128 << 20 and res["commands"] == 1
    failed, res = run_module(mod, args(host))
    assert not failed and not res["changed"] and res["commands"] == 0


def test_skip_failed_portals_for_through_the_module(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    failed, first = run_module(mod, args(host, skip_failed_portals_for=600))
    assert not failed and first["changed"] and first["failed_paths"][0]["portal"] == P2
    for _round in range(2):
        failed, again = run_module(mod, args(host, skip_failed_portals_for=600))
        assert not failed and again["changed"] is False and again["commands"] == 0, again
        assert again["failed_paths"][0]["skipped"] is True


@pytest.mark.parametrize("mode", ["flat", "SAM3-flat", "auto"])
def test_lun_addressing_through_the_module(mod, host, run_module, mode):
    host.add_target(IQN, portals=[P1, P2], luns={3: 32}, lun_addressing="flat")
    failed, res = run_module(mod, args(host, lun=[3], lun_addressing=mode))
    assert not failed and res["multipath"] and {p["lun"] for p in res["paths"]} == {16387}, res
    failed, res = run_module(mod, args(host, lun=[3], lun_addressing=mode, state="absent"))
    assert not failed and res["changed"] and res["leftovers"] == []


# -- argv shapes: the commands a run starts, as the simulator's fake tools logged them ----------------------------
def node(portal, *op):
    return " ".join(["iscsiadm -m node -T", IQN, "-p", portal, "-I default"] + list(op))


NEW = "--op new"
SETTINGS = ("--op update -n node.session.scan -v manual -n node.startup -v automatic"
            " -n node.conn[0].timeo.login_timeout -v 5 -n node.session.initial_login_retry_max -v 1")
LOGOUT = "iscsiadm -m session -r SID --logout"


def shape(argv):
    """An argv as one string, with what changes from run to run (session ids, WWIDs, sd names) as placeholders."""
    out = []
    for arg in argv:
        if out and out[-1] == "-r":
            arg = "SID"
        arg = re.sub(r"^3[0-9a-f]{32}$", "WWID", arg)
        out.append(re.sub(r"^/dev/sd[a-z]+$", "/dev/sdX", arg))
    return " ".join(out)


def attach_one(h):
    return args(h, portals=[P1], multipath="off")


# id, the attach that runs first (or None), the run's arguments, check mode, the commands it starts (logins run
# in parallel: compared as a multiset; the order of a detach is asserted by the connector's tests)
ARGV = [
    ("attach-one-portal-multipath-off", None, attach_one, False,
     [node(P1, NEW), node(P1, SETTINGS), node(P1, "--login")]),
    ("attach-two-portals", None, args, False,
     [node(P, op) for P in (P1, P2) for op in (NEW, SETTINGS, "--login")]),
    ("attach-discovers-every-portal", None, lambda h: args(h, portals=[P1], iqn=OMIT, discover="always"), False,
     ["iscsiadm -m discovery -t sendtargets -p %s -I default --op nonpersistent" % P1]
     + [node(P, op) for P in (P1, P2) for op in (NEW, SETTINGS, "--login")]),
    ("rerun-attached", args, args, False, []),
    ("check-mode-attach", None, args, True, []),
    ("detach-one-portal", attach_one, lambda h: dict(attach_one(h), state="absent"), False,
     ["blockdev --flushbufs /dev/sdX", LOGOUT, node(P1, "--op delete")]),
    ("detach-two-portals", args, lambda h: args(h, state="absent"), False,
     ["multipath -f WWID", LOGOUT, LOGOUT, node(P1, "--op delete"), node(P2, "--op delete")]),
    ("detach-one-path-of-a-map-that-stays", args, lambda h: args(h, state="absent", portals=[P2], wwid=h.wwid0), False,
     ["multipathd del path /dev/sdX", LOGOUT, node(P2, "--op delete")]),
    ("detach-not-attached", None, lambda h: args(h, state="absent"), False, []),
    ("check-mode-detach", args, lambda h: args(h, state="absent"), True, []),
]


@pytest.mark.parametrize("first,run,check_mode,expected", [pytest.param(*case[1:], id=case[0]) for case in ARGV])
def test_argv_shapes(mod, host, run_module, first, run, check_mode, expected):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.wwid0 = t["luns"][0]["wwid"]
    if first is not None:
        failed, res = run_module(mod, first(host))
        assert not failed, res
    host.reset_commands()
    failed, res = run_module(mod, run(host), check_mode=check_mode)
    assert not failed, res
    assert sorted(shape(argv) for argv in host.commands()) == sorted(expected)
    assert res["commands"] == len(expected)


# -- diff mode ---------------------------------------------------------------------------------------------------
EMPTY = {"sessions": [], "devices": [], "maps": []}


def attached_view(h, lun=0):
    """The volume as the sim shows it: its sessions, its devices and its map."""
    sessions = sorted("%s %s" % (s["portal"], s["iqn"]) for s in h.sessions(IQN))
    names = sorted(name for name, d in h.disks().items() if d["lun"] == lun)
    maps = sorted(m["name"] for m in h.maps().values() if m["kind"] == "mpath" and set(m["paths"]) & set(names))
    return {"sessions": sessions, "devices": ["/dev/" + name for name in names], "maps": maps}


def test_no_diff_unless_asked(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mod, args(host))
    assert not failed and "diff" not in res
    failed, res = run_module(mod, args(host, state="absent"), check_mode=True)
    assert not failed and "diff" not in res


def test_diff_of_an_attach_rerun_and_detach(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mod, args(host), diff=True)
    assert not failed and res["changed"], res
    view = attached_view(host)
    assert len(view["sessions"]) == 2 and len(view["devices"]) == 2 and view["maps"] == [res["multipath_map"]]
    assert res["diff"]["before"] == EMPTY and res["diff"]["after"] == view
    assert res["diff"]["before_header"] == "%s LUN 0 (before)" % IQN
    failed, again = run_module(mod, args(host), diff=True)
    assert not failed and not again["changed"] and again["diff"]["before"] == again["diff"]["after"] == view
    failed, gone = run_module(mod, args(host, state="absent"), diff=True)
    assert not failed and gone["changed"]
    assert gone["diff"]["before"] == view and gone["diff"]["after"] == EMPTY


def test_check_mode_diff_of_an_attach_is_the_prediction(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    snap = host.snapshot()
    failed, res = run_module(mod, args(host), check_mode=True, diff=True)
    assert not failed and res["changed"] and res["commands"] == 0
    assert host.snapshot() == snap
    assert res["diff"]["before"] == EMPTY
    assert res["diff"]["after"] == {
        "sessions": ["%s %s" % (P1, IQN), "%s %s" % (P2, IQN)],
        "devices": ["a device for LUN 0 via %s" % P1, "a device for LUN 0 via %s" % P2],
        "maps": ["a map of the volume (when multipathd runs)"]}
    failed, res = run_module(mod, args(host, multipath="off"), check_mode=True, diff=True)
    assert res["diff"]["after"] == {"sessions": ["%s %s" % (P1, IQN)], "devices": ["a device for LUN 0 via %s" % P1],
                                    "maps": []}
    # the sessions it predicts are the ones the attach makes
    failed, done = run_module(mod, args(host), diff=True)
    assert not failed and done["diff"]["after"]["sessions"] == ["%s %s" % (P1, IQN), "%s %s" % (P2, IQN)]


def test_check_mode_diff_of_a_detach_is_what_the_detach_does(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    run_module(mod, args(host))
    run_module(mod, args(host, lun=[1]))
    snap = host.snapshot()
    view = attached_view(host)
    # LUN 1 stays: the sessions carry it, so they stay too
    failed, predicted = run_module(mod, args(host, state="absent"), check_mode=True, diff=True)
    assert not failed and predicted["changed"] and host.snapshot() == snap
    assert predicted["diff"]["before"] == view
    assert predicted["diff"]["after"] == dict(EMPTY, sessions=view["sessions"])
    failed, done = run_module(mod, args(host, state="absent"), diff=True)
    assert not failed and done["changed"]
    assert done["diff"]["before"] == predicted["diff"]["before"] and done["diff"]["after"] == predicted["diff"]["after"]


def test_diff_of_a_path_taken_out_of_a_map(mod, host, run_module):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    run_module(mod, args(host))
    view = attached_view(host)
    out_of_map = args(host, state="absent", portals=[P2], wwid=t["luns"][0]["wwid"])
    failed, predicted = run_module(mod, out_of_map, check_mode=True, diff=True)
    assert not failed and predicted["diff"]["before"]["sessions"] == ["%s %s" % (P2, IQN)]
    assert predicted["diff"]["before"]["maps"] == view["maps"] and len(predicted["diff"]["before"]["devices"]) == 1
    # the diff is of the paths asked for: P2's session and device go, the map stays (with P1's path)
    assert predicted["diff"]["after"] == dict(EMPTY, maps=view["maps"])
    failed, done = run_module(mod, out_of_map, diff=True)
    assert not failed and done["removed"]["paths_out_of_map"]
    assert done["diff"] == predicted["diff"]
    assert attached_view(host)["maps"] == view["maps"] and len(attached_view(host)["devices"]) == 1


def test_diff_of_a_session_only_logout(mod, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.login(IQN, P1, scan="manual")
    a = {"state": "absent", "portals": [P1], "iqn": [IQN], "session_only": True, "lock_dir": host.lock_dir}
    failed, predicted = run_module(mod, a, check_mode=True, diff=True)
    assert not failed and predicted["diff"]["before"] == dict(EMPTY, sessions=["%s %s" % (P1, IQN)])
    assert predicted["diff"]["after"] == EMPTY and predicted["diff"]["before_header"] == "%s sessions (before)" % IQN
    failed, done = run_module(mod, a, diff=True)
    assert not failed and done["diff"] == predicted["diff"]


def test_check_mode_without_iqn_has_no_diff(mod, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    failed, res = run_module(mod, args(host, iqn=OMIT), check_mode=True, diff=True)
    assert not failed and res["changed"] and "would discover" in res["msg"] and "diff" not in res
