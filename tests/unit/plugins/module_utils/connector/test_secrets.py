"""Issue 14: CHAP secrets never reach a command line, and a discovery leaves the admin's records as they were.

The simulator's fake tools log the argv they were REALLY started with (``.sim/commands.log``), unmasked: the
runner's own history is masked, so it cannot show a leak.  Every test here looks at both.
"""
import json
import os
import stat
import sys
import threading
import time

import pytest

from connector import iscsi, iscsiadm, records
from connector.chap import NODE_AUTH_KEYS
from connector.errors import AttachError, InvalidInput, LoginError, SecretExposure
from connector.hostfs import HostFS
from connector.runner import Runner

IQN = "iqn.2003-01.org.example.array:vol1"
IQN2 = "iqn.2003-01.org.example.array:vol2"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
SECRET = "Sesame-0pen-secret"
MUTUAL = "Mutual-target-secret"
DISC = "Discovery-secret-42"


def connector(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, **kw)


def real_argvs(h):
    """Every command line the fake tools were started with, joined, unmasked."""
    return [" ".join(a) for a in h.commands()]


def assert_nowhere(h, c, *secrets):
    for s in secrets:
        hits = [a for a in real_argvs(h) if s in a]
        assert hits == [], "secret on a command line: %s" % hits
        assert s not in json.dumps(c.runner.history)
        assert s not in json.dumps(c.warnings)


def node_files(h):
    out = []
    for top, _dirs, files in os.walk(h.fs.path("/etc/iscsi/nodes")):
        out += [os.path.join(top, f) for f in files]
    return out


# -- session CHAP, mutual CHAP --------------------------------------------------------------------------------
def test_chap_attach_puts_no_secret_on_any_command_line(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    c = connector(host, auth=iscsi.Auth("alice", SECRET), multipath="off")
    res = c.connect(iscsi.build_paths([P1], [IQN], [0]))
    assert res["device"].startswith("/dev/sd")
    assert_nowhere(host, c, SECRET)
    # the same three commands as without CHAP (node new, node update, login)
    assert len(c.runner.history) == 3
    # the secret is in the record (and nowhere else on disk), mode 0600, as the line open-iscsi reads
    (rec,) = node_files(host)
    assert stat.S_IMODE(os.stat(rec).st_mode) == 0o600
    text = open(rec).read()
    assert "node.session.auth.password = %s\n" % SECRET in text
    assert "node.session.auth.authmethod = CHAP\n" in text and "node.session.auth.username = alice\n" in text
    assert text.rstrip().endswith("# END RECORD")
    # the re-run runs nothing; the detach logs out and removes the record (with the secret)
    again = connector(host, auth=iscsi.Auth("alice", SECRET), multipath="off").connect(
        iscsi.build_paths([P1], [IQN], [0]))
    assert again["changed"] is False
    out = c.disconnect(iscsi.build_paths([P1], [IQN], [0]))
    assert out["leftovers"] == [] and node_files(host) == []
    assert_nowhere(host, c, SECRET)


def test_mutual_chap_two_portals(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, chap=("alice", SECRET), mutual_chap=("array", MUTUAL))
    c = connector(host, auth=iscsi.Auth("alice", SECRET, "array", MUTUAL))
    res = c.connect(iscsi.build_paths([P1, P2], [IQN], [0]))
    assert res["multipath"] and len(res["paths"]) == 2
    assert_nowhere(host, c, SECRET, MUTUAL)
    assert len(c.runner.history) == 6  # as a plain 2-portal attach
    for rec in node_files(host):
        text = open(rec).read()
        assert "node.session.auth.password_in = %s\n" % MUTUAL in text
        assert stat.S_IMODE(os.stat(rec).st_mode) == 0o600


def test_wrong_mutual_secret_fails_cleanly_without_leaking(host):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET), mutual_chap=("array", MUTUAL))
    before = host.snapshot()
    c = connector(host, auth=iscsi.Auth("alice", SECRET, "array", "Not-the-target-secret"))
    with pytest.raises(LoginError) as ei:
        c.connect(iscsi.build_paths([P1], [IQN], [0]))
    assert "Not-the-target-secret" not in str(ei.value) + repr(ei.value.details)
    assert_nowhere(host, c, SECRET, "Not-the-target-secret")
    assert host.snapshot() == before


def test_existing_record_gets_every_auth_line_replaced(host):
    """A record of ours (an earlier attach's) left with an old mutual CHAP pair: our lines replace all five auth
    keys (no stale pair)."""
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    host.run("iscsiadm", "-m", "node", "-T", IQN, "-p", P1, "-I", "default", "--op", "new")
    (rec,) = node_files(host)
    with open(rec) as f:
        text = f.read()
    text = text.replace("# END RECORD", "node.session.auth.username_in = old\nnode.session.auth.password_in = "
                                        "old-secret\n# END RECORD")
    with open(rec, "w") as f:
        f.write(text)
    # the earlier attach's ledger entry: the fingerprint of the record as that attach left it
    records.Ledger(host.fs).add("/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN, IQN, P1, "default")
    c = connector(host, auth=iscsi.Auth("alice", SECRET), multipath="off")
    c.connect(iscsi.build_paths([P1], [IQN], [0]))
    text = open(rec).read()
    assert "old-secret" not in text and "username_in" not in text
    assert text.count("node.session.auth.password =") == 1


def test_record_that_is_a_link_is_refused(host, tmp_path):
    host.add_target(IQN, portals=[P1], luns={0: 64}, chap=("alice", SECRET))
    host.run("iscsiadm", "-m", "node", "-T", IQN, "-p", P1, "-I", "default", "--op", "new")
    records.Ledger(host.fs).add("/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN, IQN, P1, "default")  # an attach's
    (rec,) = node_files(host)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(open(rec).read())
    os.unlink(rec)
    os.symlink(str(elsewhere), rec)
    c = connector(host, auth=iscsi.Auth("alice", SECRET), multipath="off")
    with pytest.raises(AttachError) as ei:
        c.connect(iscsi.build_paths([P1], [IQN], [0]))
    # a record replaced by a link no longer holds what the collection wrote: it is not ours (records.py)
    assert "was not created by brick.storage" in str(ei.value)
    assert SECRET not in elsewhere.read_text()
    # and the write itself refuses a link, whoever calls it
    from connector.iscsiadm import write_record
    with pytest.raises(AttachError) as ei:
        write_record(host.fs, "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN, ("node.session.auth.password",),
                     [("node.session.auth.password", SECRET)])
    assert "refusing to write CHAP credentials" in str(ei.value)
    assert SECRET not in elsewhere.read_text()


def test_record_with_replaces_and_keeps_the_rest():
    text = ("# BEGIN RECORD 2.1.8\nnode.name = x\nnode.session.auth.authmethod = None\n"
            "node.session.auth.chap_algs = MD5\n# END RECORD\n")
    out = iscsiadm.record_with(text, NODE_AUTH_KEYS, [("node.session.auth.authmethod", "CHAP"),
                                                      ("node.session.auth.password", "p w=#x")])
    assert out == ("# BEGIN RECORD 2.1.8\nnode.name = x\nnode.session.auth.chap_algs = MD5\n"
                   "node.session.auth.authmethod = CHAP\nnode.session.auth.password = p w=#x\n# END RECORD\n")
    # no END line: appended
    assert iscsiadm.record_with("a = 1", ("b",), [("b", "2")]) == "a = 1\nb = 2\n"


def test_private_write_is_0600_whatever_the_umask(tmp_path):
    fs = HostFS(str(tmp_path))
    (tmp_path / "rec").write_text("x = 1\n")
    os.chmod(str(tmp_path / "rec"), 0o644)
    old = os.umask(0)
    try:
        fs.write_private("/rec", "y = 2\n")
    finally:
        os.umask(old)
    assert (tmp_path / "rec").read_text() == "y = 2\n"
    assert stat.S_IMODE(os.stat(str(tmp_path / "rec")).st_mode) == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ["rec"]  # no temporary file left


def test_idbm_lock_is_taken_and_bounded(host):
    """open-iscsi's node-DB lock (lock.write) is held while a record is written, and a stale one costs at most
    the bound, with a warning (iscsiadm itself goes on after 30 s)."""
    fs = host.fs
    os.makedirs(fs.path("/run/lock/iscsi"))
    seen = {}

    class Spy(iscsiadm.IdbmLock):
        def __enter__(self):
            r = iscsiadm.IdbmLock.__enter__(self)
            seen["held"] = fs.lexists("/run/lock/iscsi/lock.write")
            return r
    with Spy(fs, timeout=1.0):
        pass
    assert seen["held"] and not fs.lexists("/run/lock/iscsi/lock.write")
    os.link(fs.path("/run/lock/iscsi/lock"), fs.path("/run/lock/iscsi/lock.write"))  # a crashed iscsiadm's
    t0 = time.monotonic()
    with iscsiadm.IdbmLock(fs, timeout=0.3) as il:
        pass
    assert 0.3 <= time.monotonic() - t0 < 1.0 and il.stale
    assert fs.lexists("/run/lock/iscsi/lock.write")  # not ours: left alone


# -- the runner's guard ---------------------------------------------------------------------------------------
def test_runner_refuses_a_protected_secret_on_a_command_line(tmp_path):
    marker = tmp_path / "ran"
    r = Runner()
    r.protect_secret("Top-Secret-1")
    with pytest.raises(SecretExposure) as ei:
        r.run(["sh", "-c", "touch %s" % marker, "x", "--password=Top-Secret-1"])
    assert not marker.exists() and "Top-Secret-1" not in str(ei.value)
    assert r.history == []


def test_runner_hands_no_secret_to_a_child_environment(monkeypatch):
    monkeypatch.setenv("SOME_PASSWORD", "Top-Secret-2")
    r = Runner()
    r.protect_secret("Top-Secret-2")
    out = r.run([sys.executable, "-c", "import os; print(sorted(os.environ.items()))"]).stdout
    assert "SOME_PASSWORD" not in out


def test_nul_in_an_argument_is_a_message_not_a_traceback():
    with pytest.raises(InvalidInput) as ei:
        Runner().run(["echo", "a\x00b"])
    assert "NUL" in str(ei.value)


def test_bad_chap_values_are_refused_without_echoing_them():
    for kw in (dict(username="alice", password="line\nbreak-secret"), dict(username="alice", password=" lead-secret"),
               dict(username="alice", password="x" * 256), dict(username="al\x00ice", password="fine-secret-1"),
               dict(username="alice", password="nul\x00-secret"), dict(username="alice", password="<empty>")):
        with pytest.raises(InvalidInput) as ei:
            iscsi.Auth(**kw)
        if "secret" in kw.get("password", ""):
            assert kw["password"] not in str(ei.value) and kw["password"].strip() not in str(ei.value)


# -- discovery ------------------------------------------------------------------------------------------------
def st_config(h, portal=P1):
    return h.fs.path("/etc/iscsi/send_targets/%s/st_config" % portal.replace(":", ","))


def test_discovery_chap_without_a_record_leaves_nothing(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, discovery_chap=("disc", DISC))
    before = host.snapshot()
    c = connector(host, auth=iscsi.Auth(discovery_username="disc", discovery_password=DISC))
    found = c.discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
    assert sorted(found) == sorted([(P1, IQN), (P2, IQN)])
    assert_nowhere(host, c, DISC)
    assert host.snapshot() == before
    # discoverydb new, discover (nonpersistent), delete: one command fewer than with --op update
    assert [a["argv"][a["argv"].index("-I") + 2:] for a in c.runner.history] == [
        ["--op", "new"], ["--discover", "--op", "nonpersistent"], ["--op", "delete"]]


def admin_record(h, user="admin", secret="Admins-own-secret"):
    """The admin's discovery record on P1 with their own CHAP settings, and the node records a persistent
    discovery made through it (target vol2 only: vol1 is added to the array afterwards)."""
    h.add_target(IQN2, portals=[P1], luns={0: 16})
    for args in (["--op", "new"],
                 ["--op", "update", "-n", "discovery.sendtargets.auth.authmethod", "-v", "CHAP",
                  "-n", "discovery.sendtargets.auth.username", "-v", user,
                  "-n", "discovery.sendtargets.auth.password", "-v", secret],
                 ["--discover"]):
        rc, out, err = h.run("iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", P1, "-I", "default", *args)
        assert rc == 0, err
    assert node_files(h), "the admin's discovery made no node record"


def test_discovery_chap_puts_the_admins_record_back_byte_for_byte(host):
    admin_record(host)
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, discovery_chap=("disc", DISC))
    before = host.snapshot()
    st_before = open(st_config(host), "rb").read()
    c = connector(host, auth=iscsi.Auth(discovery_username="disc", discovery_password=DISC))
    found = c.discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
    assert (P1, IQN) in found and (P1, IQN2) in found
    assert open(st_config(host), "rb").read() == st_before
    assert host.snapshot() == before, str(host.diff(before, host.snapshot()))
    assert_nowhere(host, c, DISC)
    # the existing record costs one command: the discovery itself
    assert len(c.runner.history) == 1


def test_failed_discovery_chap_also_puts_the_record_back(host):
    admin_record(host)
    host.add_target(IQN, portals=[P1], luns={0: 64}, discovery_chap=("disc", DISC))
    before = host.snapshot()
    c = connector(host, auth=iscsi.Auth(discovery_username="disc", discovery_password="Wrong-disc-secret"))
    with pytest.raises(Exception) as ei:
        c.discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
    assert "Wrong-disc-secret" not in str(ei.value)
    assert host.snapshot() == before
    assert_nowhere(host, c, "Wrong-disc-secret")


def test_plain_discovery_leaves_the_admins_record_alone(host):
    admin_record(host)
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    found = connector(host).discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
    assert (P1, IQN) in found
    assert host.snapshot() == before


def test_two_discoveries_at_once_never_see_each_others_secret(host, tmp_path):
    """Two processes, one node lock: each writes its credentials, discovers and cleans up in turn."""
    from connector.lock import HostLock
    host.add_target(IQN, portals=[P1], luns={0: 64}, discovery_chap=("disc", DISC))
    lock_dir = str(tmp_path / "locks")
    errors = []

    def one():
        try:
            c = connector(host, auth=iscsi.Auth(discovery_username="disc", discovery_password=DISC),
                          node_lock=HostLock("iscsi-node-db", lock_dir=lock_dir, timeout=30))
            for dummy in range(3):
                assert c.discover(iscsi.build_paths([P1], [IQN], [0])[0].portal)
        except Exception as e:  # pylint: disable=broad-except  # reported below
            errors.append(e)
    threads = [threading.Thread(target=one), threading.Thread(target=one)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not os.path.exists(st_config(host))
    assert [a for a in real_argvs(host) if DISC in a] == []
