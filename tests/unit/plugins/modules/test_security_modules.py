# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 14 through the modules' main(): hostile input is a message before anything runs, the lock directory
cannot be planted by another user, holders are named without their command lines, secrets stay off every
command line (the simulator's fake tools log the argv they were really started with)."""

import json
import os
import pathlib
import pwd
import shutil
import tempfile

import pytest
import yaml

from unit.plugins.modules.modtest_util import REPO, import_collection_module

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
SECRET = "Chap-secret-of-vol1"
DISC = "Discovery-secret-of-array"
# ansible-core 2.21 itself refuses an argument with a NUL (it cannot log it to syslog): a failure, no traceback
NUL_REFUSED = "null character"


@pytest.fixture(scope="module")
def mods():
    pytest.importorskip("ansible")
    return {n: import_collection_module(n) for n in ("iscsi_volume", "multipath_flush", "block_device_idle")}


@pytest.fixture
def host(host, mods):
    """The simulated host (conftest.py), wired to the modules that build a HostFS and a Runner."""
    for name in ("iscsi_volume", "multipath_flush"):
        host.wire(mods[name])
    return host


def vol(h, **kw):
    a = {"portals": [P1, P2], "iqn": [IQN], "lun": [0], "lock_dir": h.lock_dir, "device_wait_timeout": 3,
         "multipath_wait_timeout": 3}
    a.update(kw)
    return a


def argv_text(h):
    return "\n".join(" ".join(a) for a in h.commands())


# -- secrets ----------------------------------------------------------------------------------------------
def test_chap_attach_rerun_detach_with_discovery_chap(mods, host, run_module):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64}, chap=("alice", SECRET), discovery_chap=("disc", DISC))
    m = mods["iscsi_volume"]
    a = vol(host, iqn=None, discover="always", chap_username="alice", chap_password=SECRET,
            discovery_chap_username="disc", discovery_chap_password=DISC)
    failed, res = run_module(m, a)
    assert not failed and res["multipath"], res
    failed, again = run_module(m, vol(host, chap_username="alice", chap_password=SECRET))
    assert not failed and again["changed"] is False and again["commands"] == 0
    failed, gone = run_module(m, vol(host, state="absent"))
    assert not failed and gone["leftovers"] == []
    text = argv_text(host)
    assert "iscsiadm" in text and SECRET not in text and DISC not in text
    assert SECRET not in json.dumps([res, again, gone]) and DISC not in json.dumps([res, again, gone])
    assert host.fs.listdir("/etc/iscsi/nodes") == [] and host.fs.listdir("/etc/iscsi/send_targets") == []


def test_plain_attach_command_counts_do_not_grow(mods, host, run_module):
    host.add_target(IQN, portals=[P1], luns={0: 32})
    host.add_target(IQN + "b", portals=[P1, P2], luns={0: 64})
    m = mods["iscsi_volume"]
    failed, one = run_module(m, vol(host, portals=[P1], multipath="off"))
    failed2, two = run_module(m, vol(host, iqn=[IQN + "b"]))
    assert not failed and not failed2
    assert (one["commands"], two["commands"]) == (3, 6)


# -- hostile input: a message, no command ----------------------------------------------------------------
# id, the hostile arguments, what the message says (None: an absurd but harmless value, which works)
HOSTILE_VOLUME = [
    ("iqn-traversal", dict(iqn=["iqn.2003-01.org.x:a/../../etc"]), "malformed"),
    ("iqn-nul", dict(iqn=["iqn.2003-01.org.x:a\x00b"]), "malformed"),
    ("iqn-escape-sequence", dict(iqn=["iqn.2003-01.org.x:t\x1b[31m"]), "malformed"),
    ("iqn-empty-label", dict(iqn=["iqn.2003-01.org..x:t"]), "malformed"),
    ("eui-name", dict(iqn=["eui.02004567A425678"]), "malformed"),
    ("portal-nul", dict(portals=["10.0.0.1\x00:3260"]), "not allowed"),
    ("portal-crlf", dict(portals=["10.0.0.1:3260\r\nX"]), "not allowed"),
    ("iface-nul", dict(iface="default\x00"), "not allowed"),
    ("lock-dir-nul", dict(lock_dir="/run/x\x00y"), "control characters"),
    ("lock-dir-relative", dict(lock_dir="relative"), "absolute"),
    ("chap-user-newline", dict(chap_username="ali\nce", chap_password=SECRET), "control characters"),
    ("chap-secret-nul", dict(chap_username="alice", chap_password=SECRET + "\x00"), "control characters"),
    ("chap-secret-leading-blank", dict(chap_username="alice", chap_password=" " + SECRET), "cannot be stored"),
    ("wwid-nul", dict(wwid="3600\x00"), "not a WWID"),
    ("device-wait-nan", dict(device_wait_timeout=float("nan")), "device_wait_timeout"),
    ("multipath-wait-huge", dict(multipath_wait_timeout=1e300), "multipath_wait_timeout"),
    ("login-retries-huge", dict(login_retries=10 ** 9), "login_retries"),
    ("lock-timeout-huge", dict(lock_timeout=1e300), "at most 604800 seconds"),  # no wait could take it
]


@pytest.mark.parametrize("bad,needle", [pytest.param(bad, needle, id=name) for name, bad, needle in HOSTILE_VOLUME])
def test_hostile_input_is_a_message_and_runs_nothing(mods, host, run_module, bad, needle):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    before = host.snapshot()
    failed, res = run_module(mods["iscsi_volume"], vol(host, **dict({"lock_timeout": 0}, **bad)))
    if needle is None:  # an absurd but harmless value: works like a long timeout
        assert not failed, res
        return
    assert failed and (needle in res["msg"] or NUL_REFUSED in res["msg"]), res
    assert res.get("commands", 0) == 0 and host.commands() == []
    assert host.snapshot() == before
    assert SECRET not in json.dumps(res)
    assert "\x00" not in res["msg"] and "\x1b" not in res["msg"]


HOSTILE_FLUSH = [
    ("name-nul", {"map": "a\x00b"}, "not allowed"),
    ("device-nul", {"map": "/dev/dm-0\x00"}, "not allowed"),
    ("retries-huge", {"map": "x", "retries": 10 ** 12}, "retries"),
    ("delay-infinite", {"map": "x", "delay": float("inf")}, "delay"),
    ("timeout-nan", {"map": "x", "timeout": float("nan")}, "timeout"),
    ("lock-dir-bell", {"map": "x", "lock_dir": "/a/\x07"}, "control"),
]


@pytest.mark.parametrize("bad,needle", [pytest.param(bad, needle, id=name) for name, bad, needle in HOSTILE_FLUSH])
def test_multipath_flush_hostile_input(mods, host, run_module, bad, needle):
    failed, res = run_module(mods["multipath_flush"], dict({"lock_dir": host.lock_dir}, **bad))
    assert failed and (needle in res["msg"] or NUL_REFUSED in res["msg"]), res
    assert host.commands() == []


HOSTILE_IDLE = [
    ("interval-nan", {"interval": float("nan")}),
    ("interval-huge", {"interval": 1e300}),
    ("timeout-nan", {"timeout": float("nan")}),
    ("max-retries-huge", {"max_retries": 10 ** 12}),
    ("device-nul", {"device": "/dev/sd\x00b"}),
]


@pytest.mark.parametrize("bad", [pytest.param(bad, id=name) for name, bad in HOSTILE_IDLE])
def test_block_device_idle_hostile_input(mods, host, run_module, bad):
    failed, res = run_module(mods["block_device_idle"], dict({"device": "/dev/sdb", "use_fuser": "never"}, **bad))
    assert failed and (res.get("error") == "InvalidInput" or NUL_REFUSED in res["msg"]), res


# -- the lock directory --------------------------------------------------------------------------------------
def test_lock_dir_defaults_are_root_only(mods):
    from ansible_collections.brick.storage.plugins.module_utils.connector.lockdir import DEFAULT_LOCK_DIR
    frag = open(os.path.join(REPO, "plugins", "doc_fragments", "lock.py")).read()
    doc = yaml.safe_load(frag.split('r"""', 1)[1].split('"""', 1)[0])
    assert doc["options"]["lock_dir"]["default"] == DEFAULT_LOCK_DIR == "/run/brick-storage"
    # the lock options are declared once (brick_module.LOCK_OPTIONS, next to the fragment), used by every module
    # that locks
    src = open(os.path.join(REPO, "plugins", "module_utils", "brick_module.py")).read()
    assert 'lock_dir=dict(type="path", default="/run/brick-storage")' in src
    assert "/run/lock" not in src
    for name in ("iscsi_volume", "multipath_flush"):
        src = open(os.path.join(REPO, "plugins", "modules", name + ".py")).read()
        assert mods[name].argument_spec()["lock_dir"] == dict(type="path", default="/run/brick-storage")
        assert "/run/lock" not in src


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as user nobody")
def test_lock_dir_planted_by_nobody_fails_with_the_fix_and_runs_nothing(mods, host, run_module):
    top = tempfile.mkdtemp(prefix="brick-lockdir-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        public = pathlib.Path(top) / "lock"
        public.mkdir()
        os.chmod(str(public), 0o1777)
        planted = public / "brick-storage"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the unprivileged child
            try:
                nobody = pwd.getpwnam("nobody")
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
                os.mkdir(str(planted), 0o777)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert planted.is_dir()
        host.add_target(IQN, portals=[P1, P2], luns={0: 64})
        failed, res = run_module(mods["iscsi_volume"], vol(host, lock_dir=str(planted)))
        assert failed and str(planted) in res["msg"] and "rm -rf" in res["msg"], res
        assert host.commands() == []
        assert host.sessions() == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- holders -------------------------------------------------------------------------------------------------
def test_multipath_flush_names_holders_without_command_lines(mods, host, run_module):
    from connector import iscsi
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    c = iscsi.Connector(host.fs, host.runner(), poll=0.01, device_wait=2, multipath_wait=2)
    res = c.connect(iscsi.build_paths([P1, P2], [IQN], [0]))
    host.hold_open(res["device"], pid=4711, comm="backup")
    failed, out = run_module(mods["multipath_flush"], {"map": res["multipath_map"], "lock_dir": host.lock_dir})
    assert failed and "pid 4711 (backup" in out["msg"]
    assert [b for b in out["blockers"] if "cmdline" in b] == []
    failed, out = run_module(mods["multipath_flush"], {"map": res["multipath_map"], "lock_dir": host.lock_dir,
                                                       "show_cmdline": True}, check_mode=True)
    assert [b["cmdline"].split()[0] for b in out["blockers"] if b["kind"] == "process"] == ["backup"]


CORE_RAISES = [
    ("volume-login-retries-INF", "iscsi_volume", {"portals": [P1], "iqn": [IQN], "login_retries": "INF"}),
    ("volume-lun-minus-inf", "iscsi_volume", {"portals": [P1], "iqn": [IQN], "lun": ["-inf"]}),
    ("flush-retries-inf", "multipath_flush", {"map": "x", "retries": "inf"}),
    ("idle-max-retries-Infinity", "block_device_idle", {"device": "/dev/sdb", "max_retries": "Infinity"}),
    ("facts-lun-inf", "volume_paths_facts", {"volume": {"portals": [P1], "iqn": IQN, "lun": "inf"}}),
    ("facts-volume-list-of-null", "volume_paths_facts", {"volume": [None]}),
]


@pytest.mark.parametrize("name,args", [pytest.param(name, args, id=case) for case, name, args in CORE_RAISES])
def test_ansible_cores_own_exceptions_become_messages(mods, host, run_module, name, args):
    """ansible-core's check_type_int('inf') raises OverflowError (a traceback) instead of failing: the
    modules report it as invalid input, and run nothing."""
    mod = mods.get(name) or import_collection_module(name)
    failed, res = run_module(mod, dict(args, chap_password=SECRET) if name == "iscsi_volume" else args)
    assert failed and res["error"] == "InvalidInput" and "could not be checked" in res["msg"], res
    assert host.commands() == [] and SECRET not in json.dumps(res)
