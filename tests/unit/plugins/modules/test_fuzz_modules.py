# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Property-based test (hypothesis) of every option of the four modules, through main(), on the simulated host.

Each option gets either a plausible value (so that real attaches, detaches, flushes and waits happen too) or
junk: random strings (control characters, NUL, non-ASCII), ints of any size, floats (NaN, infinities), lists and
nested dicts/lists.  Every run must end in ``fail_json`` with a message or in a normal result:

* never an exception out of main() (a traceback), and never the modules' InternalError safety net;
* a failure for invalid input (an argument-spec error, or ``error: InvalidInput``) ran no command at all (the
  simulator's fake tools log every argv they are started with);
* a CHAP secret never appears in the result or on a command line.

The number of examples is bounded (``BRICK_FUZZ_EXAMPLES`` scales it) to stay well under a minute.  Timing
options get junk or small values only: a valid but huge wait is a correct module waiting, not a finding.
"""

import json
import math
import os
import socket
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from sim import SimHost  # noqa: E402
from unit.plugins.modules.modtest_util import call_module, import_collection_module  # noqa: E402

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2, P3 = "10.0.0.1:3260", "10.0.0.2:3260", "10.0.0.3:3260"
SCALE = float(os.environ.get("BRICK_FUZZ_EXAMPLES", "1"))
MODULES = ("iscsi_volume", "multipath_flush", "block_device_idle", "volume_paths_facts")
PKG = "ansible_collections.brick.storage.plugins.module_utils.connector"


def examples(n):
    return max(1, int(n * SCALE))


# -- strategies ---------------------------------------------------------------------------------------------
text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(max_codepoint=0x9f), max_size=30),   # ASCII and C0/C1 controls, NUL
    st.sampled_from(["", " ", "..", "/", "/dev/../etc/passwd", "a\x00b", "x\ny", "\x1b[31m", "iqn.2003-01.org.x:",
                     "iqn.2003-01.org.x:a/../b", "$(reboot)", "`id`", "a;b", "-rf", "~", "$HOME/x", "patient",
                     "nan", "inf", "-1", "1e309", "0x10", "true", "None", "<empty>"]),
)
scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                   st.floats(allow_nan=True, allow_infinity=True), text)
junk = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                    max_leaves=6)


def _number(v):
    """The number ``v`` turns into for a float/int option (as AnsibleModule converts it), or None."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v) if isinstance(v, (int, float)) else float(str(v).strip())
    except (TypeError, ValueError, OverflowError):
        return None
    return f


def not_a_long_wait(limit):
    """Junk, minus values that are valid long waits (a correct module would just wait that long)."""
    def ok(v):
        n = _number(v)
        return n is None or math.isnan(n) or n < 0 or n <= limit or n > 1e7
    return junk.filter(ok)


def opt(good, bad=junk):
    """An option: a list of plausible values and a strategy of junk for it."""
    return (list(good), bad)


def volume_options(h):
    # the working values come several times: most examples should get far enough to attach or detach
    return {
        "state": opt(["present", "present", "absent"]),
        "portals": opt([[P1, P2], [P1, P2], [P1], [P1], "10.0.0.1", [P2], [P3], ["[fd00::1]:3260"],
                        ["host.invalid:3260"]]),
        "iqn": opt([IQN, IQN, [IQN], [IQN, IQN], None]),
        "lun": opt([0, 0, 1, [0], [1], [0, 1], 7, None]),
        "wwid": opt([None, None, h.wwid0, "naa." + h.wwid0[1:], "0x" + h.wwid0[1:]]),
        "session_only": opt([False, False, False, True]),
        "multipath": opt(["auto", "auto", "required", "off"]),
        "discover": opt(["auto", "auto", "always"]),
        "chap_username": opt([None, None, "alice"]),
        "chap_password": opt([None, None, "Fuzz-chap-secret"]),
        "chap_username_in": opt([None, None, None, "array"]),
        "chap_password_in": opt([None, None, None, "Fuzz-mutual-secret"]),
        "discovery_chap_username": opt([None, None, "disc"]),
        "discovery_chap_password": opt([None, None, "Fuzz-disc-secret"]),
        "iface": opt(["default"]),
        "login_timeout": opt([1, 2], not_a_long_wait(3)),
        "login_retries": opt([0, 1], not_a_long_wait(2)),
        "device_wait_timeout": opt([0.5, 1], not_a_long_wait(2)),
        "multipath_wait_timeout": opt([0.5, 1], not_a_long_wait(2)),
        "startup": opt(["automatic", "manual"]),
        "force": opt([False, False, True]),
        "ignore_errors": opt([False, False, True]),
        "lock_timeout": opt([0, 5, "patient"]),
        "lock_dir": opt(["/locks", "/run/brick-storage"]),
    }


def flush_options(h):
    return {
        "map": opt([h.wwid0, "/dev/dm-0", "/dev/mapper/" + h.wwid0, "mpatha", "/dev/sdb"]),
        "wwid": opt([h.wwid0]),
        "force": opt([False, True]),
        "retries": opt([0, 1], not_a_long_wait(3)),
        "delay": opt([0, 0.01], not_a_long_wait(0.05)),
        "timeout": opt([5, 10], not_a_long_wait(10)),
        "lock_timeout": opt([0, 5, "patient"]),
        "lock_dir": opt(["/locks"]),
        "show_cmdline": opt([False, True]),
    }


def idle_options(h):
    return {
        "device": opt(["/dev/sda", "/dev/sdb", "/dev/dm-0", "/dev/vda", "/dev/disk/by-id/scsi-" + h.wwid0,
                       "/dev/nothing"]),
        "interval": opt([0.01, 0.05], not_a_long_wait(0.05)),
        "max_retries": opt([0, 1, 2], not_a_long_wait(3)),
        "timeout": opt([0, 0.05], not_a_long_wait(0.1)),
        "exclusive_open": opt([False, True]),
        "use_fuser": opt(["auto", "always", "never"]),
        "show_cmdline": opt([False, True]),
    }


def facts_options(h):
    sub = {"portals": opt([[P1, P2], [P1], "10.0.0.1"]), "portal": opt([[P1]]), "iqn": opt([IQN]),
           "lun": opt([0, 1]), "wwid": opt([h.wwid0])}
    volume = st.fixed_dictionaries(
        {}, optional=dict((k, st.one_of(st.sampled_from(g), b)) for k, (g, b) in sub.items()))
    return {
        "volume": ([{"portals": [P1, P2], "iqn": IQN, "lun": 0},
                    {"portals": [P1], "iqn": IQN, "lun": 1, "wwid": h.wwid0}], st.one_of(volume, junk)),
        "expected": opt([[h.wwid0], [{"iqn": IQN, "lun": 0}], [{"iqn": IQN, "lun": 0, "portal": P1}], []]),
        "gather_orphans": opt([True, False]),
    }


OPTIONS = {"iscsi_volume": volume_options, "multipath_flush": flush_options, "block_device_idle": idle_options,
           "volume_paths_facts": facts_options}


def bases(name, h):
    """Coherent starting points (attach, re-run, detach, flush...) that the examples then perturb."""
    fast = {"lock_dir": "/locks", "lock_timeout": 5, "device_wait_timeout": 1, "multipath_wait_timeout": 1,
            "login_timeout": 1, "login_retries": 0}
    if name == "iscsi_volume":
        return [dict(fast, portals=[P1, P2], iqn=[IQN], lun=[0]),
                dict(fast, portals=[P1], iqn=IQN, lun=1, multipath="off"),
                dict(fast, portals=[P1, P2], iqn=[IQN], lun=[0], state="absent"),
                dict(fast, portals=[P1], iqn=IQN, lun=1, state="absent"),
                dict(fast, portals=[P1], discover="always", lun=0),
                dict(fast, portals=[P1, P2], iqn=[IQN], state="absent", session_only=True),
                dict(fast, portals=[P1, P2], iqn=[IQN], lun=[0], chap_username="alice",
                     chap_password="Fuzz-chap-secret")]
    if name == "multipath_flush":
        return [{"map": h.wwid0, "lock_dir": "/locks", "delay": 0}, {"map": "/dev/dm-0", "lock_dir": "/locks"}]
    if name == "block_device_idle":
        return [{"device": "/dev/sdb", "interval": 0.01, "max_retries": 1}, {"device": "/dev/dm-0", "timeout": 0}]
    return [{"volume": {"portals": [P1, P2], "iqn": IQN, "lun": 0}}, {"gather_orphans": True},
            {"expected": [h.wwid0]}]


SECRETS = ("Fuzz-chap-secret", "Fuzz-mutual-secret", "Fuzz-disc-secret")


# -- the harness ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One simulated host for all examples of all modules (its state evolves as the examples attach and detach),
    with the modules wired to it, DNS answered by a stub and every lock directory kept inside a temp dir."""
    pytest.importorskip("ansible")
    mp = pytest.MonkeyPatch()
    top = tmp_path_factory.mktemp("fuzz")
    h = SimHost(str(top / "host"))
    h.set_fault("time_scale", 0.01)
    t = h.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    h.wwid0 = t["luns"][0]["wwid"]
    mods = {n: import_collection_module(n) for n in MODULES}
    envs = h.env()
    # the collection's own Runner class (its errors are the modules' BrickError), on the sim's PATH
    runner_cls = __import__(PKG + ".runner", fromlist=["Runner"]).Runner
    for n in ("iscsi_volume", "multipath_flush"):
        mp.setattr(mods[n], "HostFS", lambda *a, **kw: h.fs)
        mp.setattr(mods[n], "Runner", lambda *a, **kw: runner_cls(env={"BRICK_SIM_ROOT": h.root,
                                                                       "PATH": envs["PATH"]}))
    mp.setenv("BRICK_STORAGE_ROOT", h.root)
    mp.setenv("BRICK_SIM_ROOT", h.root)
    mp.setenv("PATH", envs["PATH"])

    def no_dns(*a, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    mp.setattr(socket, "getaddrinfo", no_dns)
    # a lock directory a random example names is made below the temp dir, never on the real host
    lockmod = __import__(PKG + ".lock", fromlist=["ensure_lock_dir"])
    real_ensure = lockmod.ensure_lock_dir
    locks = str(top / "lockroot")
    os.makedirs(locks, 0o700)
    mp.setattr(lockmod, "ensure_lock_dir", lambda p=None: real_ensure(locks + os.path.abspath(p)))
    yield h, mods
    mp.undo()


def run_one(h, mod, args, check_mode, capsys):
    h.reset_commands()
    t0 = time.monotonic()
    try:
        failed, res = call_module(mod, capsys, args, check_mode=check_mode)
    except BaseException as e:  # a traceback: report the input that made it
        pytest.fail("%s raised %r for args %r (check_mode=%s)" % (mod.__name__, e, args, check_mode))
    took = time.monotonic() - t0
    cmds = h.commands()
    where = "%s args=%r check_mode=%s -> %r" % (mod.__name__.rsplit(".", 1)[-1], args, check_mode, res)
    assert isinstance(res, dict), where
    assert res.get("error") != "InternalError", "the safety net caught a bug: " + where
    assert "exception" not in res and "module_stderr" not in res, where
    if failed:
        assert isinstance(res.get("msg"), str) and res["msg"], where
        if res.get("error") in (None, "InvalidInput"):
            assert cmds == [], "invalid input ran commands %r: %s" % (cmds, where)
    out = json.dumps(res) + "\n".join(" ".join(c) for c in cmds)
    for s in SECRETS:
        assert s not in out, "secret %s leaked: %s" % (s, where)
    assert took < 30, "took %.1fs: %s" % (took, where)
    # what the examples reached (pytest --hypothesis-show-statistics)
    hypothesis.event("failed: %s" % (res.get("error") or "argument spec / input") if failed else
                     "ok: changed" if res.get("changed") else "ok: no change")
    hypothesis.event("ran commands" if cmds else "ran no command")
    return failed, res


def _test(name, n):
    @settings(max_examples=examples(n), deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(env, capsys, data):
        h, mods = env
        opts = OPTIONS[name](h)
        # a coherent starting point, a few options changed to other plausible values, junk in a few (so that
        # the examples get past the argument spec into the modules' own checks and actions), sometimes junk in all
        args = dict(data.draw(st.sampled_from(bases(name, h)), label="base"))
        for k in data.draw(st.lists(st.sampled_from(sorted(opts)), unique=True, max_size=3), label="changed"):
            args[k] = data.draw(st.sampled_from(opts[k][0]), label=k)
        wild = data.draw(st.lists(st.sampled_from(sorted(opts)), unique=True,
                                  max_size=data.draw(st.sampled_from([0, 0, 1, 1, 2, len(opts)]))), label="junk in")
        for k in wild:
            args[k] = data.draw(opts[k][1], label=k)
        args = dict((k, v) for k, v in args.items() if v is not None)
        check_mode = data.draw(st.booleans(), label="check_mode")
        run_one(h, mods[name], args, check_mode, capsys)
    return check


test_iscsi_volume_any_input = _test("iscsi_volume", 300)
test_multipath_flush_any_input = _test("multipath_flush", 150)
test_block_device_idle_any_input = _test("block_device_idle", 150)
test_volume_paths_facts_any_input = _test("volume_paths_facts", 150)
