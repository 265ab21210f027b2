# -*- coding: utf-8 -*-
"""Node records: the collection deletes or rewrites only the records it created (its ledger), and uses an admin's
record as it is (issue 21, item 6).  The simulator writes open-iscsi 2.1.8's layout (tests/unit/sim/test_sim_records.py)."""
import json
import os
import stat
import time

import pytest

from connector import iscsi, records
from connector.errors import AttachError

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
SECRET = "Chap-Secret-0123"
FLAT = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0):
    return iscsi.build_paths(portals, [IQN], [lun])


def admin(h, portal, *updates, iface="default"):
    """The admin's own static record (``iscsiadm -o new``, then ``-o update`` of ``updates`` (key, value))."""
    base = ["iscsiadm", "-m", "node", "-T", IQN, "-p", portal, "-I", iface]
    rc, _out, err = h.run(*base, "--op", "new")
    assert rc == 0, err
    for key, value in updates:
        rc, _out, err = h.run(*base, "--op", "update", "-n", key, "-v", value)
        assert rc == 0, err


def argvs(c):
    return [" ".join(item["argv"]) for item in c.runner.history]


def test_detach_of_an_unattached_lun_keeps_the_admins_record(host):
    host.add_target(IQN, portals=[P1], luns={0: 64, 1: 64})
    admin(host, P1)
    before = host.snapshot()
    c = conn(host)
    res = c.disconnect(paths([P1], lun=1))
    assert res["changed"] is False
    assert not any("--op delete" in a for a in argvs(c))
    assert host.snapshot() == before


def test_check_mode_detach_plans_no_delete_of_the_admins_record(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    admin(host, P1)
    plan = conn(host).plan_disconnect(paths([P1]))
    assert plan.node_records == [] and plan.empty()


def test_an_attach_uses_the_admins_record_as_it_is(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    admin(host, P1, ("node.startup", "manual"), ("node.conn[0].timeo.login_timeout", "40"))
    record = host.fs.read_raw(FLAT)
    c = conn(host, multipath="off")
    res = c.connect(paths([P1]))
    assert res["changed"] is True and res["device"]
    assert host.fs.read_raw(FLAT) == record
    assert not any("--op new" in a or "--op update" in a for a in argvs(c)), argvs(c)
    assert any(FLAT in w and "as it is" in w for w in c.warnings), c.warnings
    # its detach logs out the session and keeps the record, byte for byte
    d = conn(host)
    out = d.disconnect(paths([P1]))
    assert out["changed"] is True and not any("--op delete" in a for a in argvs(d))
    assert host.fs.read_raw(FLAT) == record and host.sessions(IQN) == []


def test_the_login_of_an_admins_record_gets_the_time_its_settings_ask_for(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    admin(host, P1, ("node.conn[0].timeo.login_timeout", "40"), ("node.session.initial_login_retry_max", "4"))
    c = conn(host, multipath="off", login_timeout=5, login_retries=1)
    timeouts = []
    run = c.runner.run

    def spy(argv, *args, **kw):
        if "--login" in argv:
            timeouts.append(kw.get("timeout"))
        return run(argv, *args, **kw)

    c.runner.run = spy
    c.connect(paths([P1]))
    assert timeouts and timeouts[0] >= 40 * 5


def test_our_record_is_in_the_ledger_and_the_detach_deletes_it(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    before = host.snapshot()
    c = conn(host, multipath="off", auth=iscsi.Auth("alice", SECRET))
    c.connect(paths([P1]))
    ledger = host.fs.path(records.LEDGER)
    st = os.lstat(ledger)
    assert stat.S_IMODE(st.st_mode) == 0o600
    text = open(ledger).read()
    assert SECRET not in text and "alice" not in text
    assert [entry["file"] for entry in json.loads(text)["nodes"]] == [FLAT]
    d = conn(host)
    out = d.disconnect(paths([P1]))
    assert out["changed"] is True and any("--op delete" in a for a in argvs(d))
    assert host.snapshot() == before, host.diff(before, host.snapshot())


def test_a_detach_without_session_deletes_our_record_of_that_exact_path_only(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    host.run("iscsiadm", "-m", "session", "-r", "1", "--logout")
    assert host.fs.lexists(FLAT)
    c = conn(host)
    assert c.disconnect(paths([P1], lun=3))["changed"] is True
    assert not host.fs.lexists(FLAT) and records.Ledger(host.fs).entries() == []


def test_chap_settings_that_differ_from_the_admins_record_fail_before_anything_runs(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    admin(host, P1)
    before = host.snapshot()
    c = conn(host, multipath="off", auth=iscsi.Auth("alice", SECRET))
    with pytest.raises(AttachError) as err:
        c.connect(paths([P1]))
    text = str(err.value) + repr(err.value.details)
    assert FLAT in text and "CHAP" in text and SECRET not in text
    assert c.runner.history == [] and host.snapshot() == before


def test_chap_settings_equal_to_the_admins_record_are_used_as_they_are(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    admin(host, P1)
    text = host.fs.read_raw(FLAT).replace("# END RECORD", "node.session.auth.authmethod = CHAP\n"
                                          "node.session.auth.username = alice\n"
                                          "node.session.auth.password = %s\n# END RECORD" % SECRET)
    host.fs.write_private(FLAT, text)
    c = conn(host, multipath="off", auth=iscsi.Auth("alice", SECRET))
    assert c.connect(paths([P1]))["device"]
    assert host.fs.read_raw(FLAT) == text


def test_the_flat_record_of_another_iface_is_not_overwritten(host):
    """open-iscsi keeps ONE flat record per portal: an --op new for our iface would overwrite the admin's."""
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.fs.write_private("/etc/iscsi/ifaces/iser", "iface.iscsi_ifacename = iser\n")
    admin(host, P1, iface="iser")
    before = host.snapshot()
    c = conn(host, multipath="off")
    with pytest.raises(AttachError) as err:
        c.connect(paths([P1]))
    assert "iser" in str(err.value) and FLAT in str(err.value)
    assert c.runner.history == [] and host.snapshot() == before


def test_a_failed_attach_through_the_admins_record_leaves_it_as_it_was(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    # (with the admin's scan = auto, the login itself would bring every LUN of the target: the warning says so)
    admin(host, P1, ("node.startup", "manual"), ("node.session.scan", "manual"))
    before = host.snapshot()
    c = conn(host, multipath="off", device_wait=0.2)
    with pytest.raises(AttachError):
        c.connect(paths([P1], lun=5))  # no such LUN
    assert host.snapshot() == before, host.diff(before, host.snapshot())


def test_a_record_rewritten_for_another_iface_is_no_longer_ours(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    host.run("iscsiadm", "-m", "session", "-r", "1", "--logout")
    host.fs.write_private("/etc/iscsi/ifaces/iser", "iface.iscsi_ifacename = iser\n")
    admin(host, P1, iface="iser")  # the admin's --op new overwrites the flat file
    record = host.fs.read_raw(FLAT)
    c = conn(host, iface="iser")
    assert c.disconnect(paths([P1]))["changed"] is False
    assert host.fs.read_raw(FLAT) == record


def test_a_ledger_that_cannot_be_read_makes_every_record_the_admins(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    conn(host, multipath="off").connect(paths([P1]))
    host.run("iscsiadm", "-m", "session", "-r", "1", "--logout")
    assert host.fs.lexists(records.LEDGER)
    host.fs.write_private(records.LEDGER, "{not json")
    c = conn(host)
    assert c.disconnect(paths([P1]))["changed"] is False and host.fs.lexists(FLAT)


def test_a_two_portal_attach_refuses_before_the_first_record_is_written(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, chap=("alice", SECRET))
    admin(host, P2)
    before = host.snapshot()
    c = conn(host, auth=iscsi.Auth("alice", SECRET))
    with pytest.raises(AttachError) as err:
        c.connect(paths([P1, P2]))
    assert "10.0.0.2,3260" in str(err.value)
    assert not any("iscsiadm" in a for a in argvs(c)) and host.snapshot() == before


def test_check_mode_predicts_the_refusal(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    admin(host, P1)
    before = host.snapshot()
    c = conn(host, multipath="off", auth=iscsi.Auth("alice", SECRET))
    with pytest.raises(AttachError):
        c.connect(paths([P1]), check_mode=True)
    assert c.runner.history == [] and host.snapshot() == before


# -- a record of ours that the admin rewrites is the admin's from then on (its fingerprint, records.py) ----------
def _attached_then_logged_out(h, **kw):
    """Our record of P1 (made by an attach), its session logged out: the record stays, in the ledger."""
    conn(h, multipath="off", **kw).connect(paths([P1]))
    rc, _out, err = h.run("iscsiadm", "-m", "session", "-r", "1", "--logout")
    assert rc == 0, err
    assert records.Ledger(h.fs).owns(FLAT)


def test_the_admins_op_new_over_our_record_makes_it_theirs(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    _attached_then_logged_out(host)
    admin(host, P1)  # the admin's own static record of the same portal and iface, written over ours
    record = host.fs.read_raw(FLAT)
    d = conn(host)
    d.disconnect(paths([P1]))
    assert not any("--op delete" in a for a in argvs(d)), argvs(d)
    assert host.fs.read_raw(FLAT) == record
    assert not records.Ledger(host.fs).owns(FLAT)


def test_the_admins_op_update_of_our_record_makes_it_theirs(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    _attached_then_logged_out(host)
    rc, _out, err = host.run("iscsiadm", "-m", "node", "-T", IQN, "-p", P1, "-I", "default",
                             "-o", "update", "-n", "node.startup", "-v", "manual")
    assert rc == 0, err
    record = host.fs.read_raw(FLAT)
    c = conn(host, multipath="off")
    assert c.connect(paths([P1]))["device"]
    assert not any("--op update" in a or "--op new" in a for a in argvs(c)), argvs(c)
    assert host.fs.read_raw(FLAT) == record
    assert any(FLAT in w and "as it is" in w for w in c.warnings), c.warnings
    d = conn(host)
    assert d.disconnect(paths([P1]))["changed"] is True and host.sessions(IQN) == []
    assert not any("--op delete" in a for a in argvs(d)), argvs(d)
    assert host.fs.read_raw(FLAT) == record


def _enable_boot_unit(h):
    from connector import boot
    os.makedirs(h.fs.path(os.path.dirname(boot.BOOT_UNIT_ENABLED)), exist_ok=True)
    h.fs.write_private(boot.BOOT_UNIT_FILE, "[Unit]\n")
    os.symlink(boot.BOOT_UNIT_FILE, h.fs.path(boot.BOOT_UNIT_ENABLED))


@pytest.mark.parametrize("boot_unit", [False, True])
def test_our_own_writes_keep_the_record_ours(host, boot_unit):
    """--op new, --op update, the CHAP lines, the boot settings, a second attach's writes and a failed attach's
    restore are all the collection's: the detach still deletes the record."""
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    if boot_unit:
        _enable_boot_unit(host)
    auth = iscsi.Auth("alice", SECRET)
    _attached_then_logged_out(host, auth=auth)
    assert "node.session.auth.password" in host.fs.read_raw(FLAT)
    conn(host, multipath="off", auth=auth).connect(paths([P1]))  # a re-attach: the record saved, then rewritten
    assert records.Ledger(host.fs).owns(FLAT)
    host.run("iscsiadm", "-m", "session", "-r", "2", "--logout")
    with pytest.raises(AttachError):  # no such LUN: the record is put back as it was
        conn(host, multipath="off", auth=auth, device_wait=0.2).connect(paths([P1], lun=5))
    assert records.Ledger(host.fs).owns(FLAT)
    d = conn(host)
    assert d.disconnect(paths([P1]))["changed"] is True
    assert any("--op delete" in a for a in argvs(d)), argvs(d)
    assert not host.fs.lexists(FLAT) and not host.fs.lexists(records.LEDGER)


def test_an_entry_of_an_older_ledger_without_fingerprint_is_not_ours(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    _attached_then_logged_out(host)
    old = {"version": 1, "nodes": [{"file": FLAT, "iqn": IQN, "portal": P1, "iface": "default"}]}
    host.fs.write_private(records.LEDGER, json.dumps(old))
    d = conn(host)
    assert d.disconnect(paths([P1]))["changed"] is False and host.fs.lexists(FLAT)


def test_the_ledger_holds_a_keyed_fingerprint_and_no_secret(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    _attached_then_logged_out(host, auth=iscsi.Auth("alice", SECRET))
    data = json.loads(open(host.fs.path(records.LEDGER)).read())
    (entry,) = data["nodes"]
    import hashlib
    plain = hashlib.sha256(open(host.fs.path(FLAT), "rb").read()).hexdigest()
    assert len(entry["fingerprint"]) == 64 and entry["fingerprint"] != plain and len(data["key"]) == 64
    assert SECRET not in json.dumps(data)
