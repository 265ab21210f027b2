# -*- coding: utf-8 -*-
"""path_fail: a session on a dead portal is FAILED (devices blocked) during the recovery window and FREE
(devices transport-offline) once recovery_tmo x time_scale has run out; multipathd sets recovery_tmo to
5 s for sessions with a path in a map."""
import os
import subprocess
import sys
import time

import pytest

from simtest_util import IQN, P1, P2, sh


def _mp(host):
    t = host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.login(IQN, P1)
    host.login(IQN, P2)
    return t["luns"][0]["wwid"]


def _wait(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_recovery_tmo_is_5_once_a_path_is_in_a_map(host):
    fs = host.fs
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.login(IQN, P1)
    assert fs.read("/sys/class/iscsi_session/session1/recovery_tmo") == "120"  # node record, no map yet
    host.login(IQN, P2, node_params={"node.session.timeo.replacement_timeout": 30})
    assert fs.read("/sys/class/iscsi_session/session1/recovery_tmo") == "5"
    assert fs.read("/sys/class/iscsi_session/session2/recovery_tmo") == "5"


def test_failed_first_then_free_after_recovery_tmo(host):
    _mp(host)
    fs = host.fs
    host.set_fault("time_scale", 0.1)  # recovery_tmo 5 -> 0.5 s
    t0 = time.monotonic()
    assert host.path_fail(P2) == [2]
    assert fs.read("/sys/class/iscsi_session/session2/state") == "FAILED"
    assert fs.read("/sys/class/iscsi_connection/connection2:0/state") == "failed"
    assert fs.read("/sys/block/sdb/device/state") == "blocked"
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "failed"}
    assert "\t\tiSCSI Session State: FAILED" in host.run("iscsiadm", "-m", "session", "-P", "1")[1].splitlines()
    # the timer of this process moves it on, without anybody asking
    assert _wait(lambda: fs.read("/sys/class/iscsi_session/session2/state") == "FREE")
    assert time.monotonic() - t0 >= 0.5
    # like the kernel (session_recovery_timedout), the timer sets FREE first and then unblocks the
    # devices as transport-offline: a reader without the lock may see the two a moment apart
    assert _wait(lambda: fs.read("/sys/block/sdb/device/state") == "transport-offline", timeout=5)
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "failed"}
    assert host.sessions(portal=P1)[0]["state"] == "LOGGED_IN"
    host.path_restore(P2)
    assert fs.read("/sys/class/iscsi_session/session2/state") == "LOGGED_IN"
    assert fs.read("/sys/block/sdb/device/state") == "running"
    assert host.maps()["dm-0"]["paths"] == {"sda": "active", "sdb": "active"}
    assert host.check() == []


def test_recovery_tmo_of_a_session_without_map_and_wait(host):
    host.add_target(IQN, portals=[P1], luns={0: 8})
    host.login(IQN, P1)
    host.set_fault("time_scale", 0.002)  # 120 s -> 0.24 s
    t0 = time.monotonic()
    host.path_fail(P1, wait=True)
    assert time.monotonic() - t0 >= 0.24
    assert host.fs.read("/sys/class/iscsi_session/session1/state") == "FREE"
    assert host.fs.read("/sys/block/sda/device/state") == "transport-offline"


def test_path_fail_explicit_states_and_restore_cancels(host):
    _mp(host)
    fs = host.fs
    host.set_fault("time_scale", 0.01)
    host.path_fail(P2, session_state="FAILED")
    host.path_fail(P1, session_state="FREE")
    assert fs.read("/sys/class/iscsi_session/session1/state") == "FREE"
    assert fs.read("/sys/block/sda/device/state") == "transport-offline"
    time.sleep(0.2)  # 4 x recovery_tmo: FAILED stays FAILED (the recovery window)
    assert fs.read("/sys/class/iscsi_session/session2/state") == "FAILED"
    assert fs.read("/sys/block/sdb/device/state") == "blocked"
    assert host.maps()["dm-0"]["paths"] == {"sda": "failed", "sdb": "failed"}
    host.path_restore(P1)
    host.path_restore(P2)
    # a restore before the timer fires cancels it
    host.path_fail(P2)
    host.path_restore(P2)
    time.sleep(0.2)
    assert fs.read("/sys/class/iscsi_session/session2/state") == "LOGGED_IN"
    assert not os.path.exists(host.sim.due_path)
    with pytest.raises(ValueError):
        host.path_fail(P2, session_state="LOGGED_OUT")
    with pytest.raises(ValueError):
        host.path_fail(P2, session_state="FAILED", wait=True)


def test_another_process_sees_free_through_the_fake_commands(host):
    """The process that failed the path is gone (so is its timer): the next fake command expires it."""
    _mp(host)
    host.set_fault("time_scale", 0.02)  # 5 s -> 0.1 s
    code = ("import sys; sys.path.insert(0, %r); from sim import SimHost; SimHost(%r).path_fail(%r)"
            % (os.path.dirname(os.path.dirname(host.bin_dir)), host.root, P2))
    subprocess.check_call([sys.executable, "-c", code])
    assert host.fs.read("/sys/class/iscsi_session/session2/state") == "FAILED"
    time.sleep(0.3)
    # nobody looked yet: sysfs still says FAILED; a fake command (any process) notices the expiry first
    assert host.fs.read("/sys/class/iscsi_session/session2/state") == "FAILED"
    r = sh(host, "iscsiadm", "-m", "session", "-P", "3")
    assert "\t\tiSCSI Session State: FREE" in r.stdout.splitlines()
    assert "\t\t\tAttached scsi disk sdb\t\tState: transport-offline" in r.stdout.splitlines()
    assert host.fs.read("/sys/class/iscsi_session/session2/state") == "FREE"
    assert host.check() == []


def test_logout_during_recovery(host):
    _mp(host)
    host.set_fault("time_scale", 1.0)
    host.path_fail(P2)
    assert os.path.exists(host.sim.due_path)
    assert host.logout(IQN, P2) == 0
    assert not os.path.exists(host.sim.due_path) and [s["sid"] for s in host.sessions()] == [1]
    assert host.maps()["dm-0"]["paths"] == {"sda": "active"}
