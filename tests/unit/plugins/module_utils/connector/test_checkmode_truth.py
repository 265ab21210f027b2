"""Check mode tells the truth about an attach re-run (issue 21, item 13).

A re-run with a portal that is down changes nothing: its login fails and the host stays as it was.  Check mode
cannot log in to find out; what it knows is how that portal's last login went (the failure log in the lock
directory).  So it lists only the portals it would log in to, and a portal whose last login failed makes no
predicted change (with a warning), as the real run then reports.
"""
import time

import pytest

from connector import iscsi

IQN = "iqn.2003-01.org.example.array:vol1"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def conn(h, log, **kw):
    kw.setdefault("device_wait", 1.0)
    kw.setdefault("multipath_wait", 1.0)
    kw.setdefault("login_timeout", 1)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)),
                           failure_log=str(log), **kw)


def paths(portals):
    return iscsi.build_paths(portals, [IQN], [0])


@pytest.fixture
def half_attached(host, tmp_path):
    """The volume attached on P1 while P2 refuses logins; the failure log of a first real run knows it."""
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P2: "refuse"})
    log = tmp_path / "failed-portals.json"
    first = conn(host, log).connect(paths([P1, P2]))
    assert first["changed"] is True and [s["portal"] for s in host.sessions(IQN)] == [P1]
    return host, log


def test_check_mode_lists_only_the_portals_it_would_log_in_to(half_attached):
    host, log = half_attached
    predicted = conn(host, log).connect(paths([P1, P2]), check_mode=True)
    assert predicted["would_login"] == [P2]
    assert P1 not in predicted["msg"]


def test_check_mode_of_a_rerun_with_a_portal_whose_last_login_failed_says_what_the_run_does(half_attached):
    host, log = half_attached
    checker = conn(host, log)
    predicted = checker.connect(paths([P1, P2]), check_mode=True)
    real = conn(host, log).connect(paths([P1, P2]))
    assert real["changed"] is False
    assert predicted["changed"] is real["changed"]
    assert any(P2 in warning and "failed" in warning for warning in checker.warnings), checker.warnings


def test_check_mode_predicts_a_change_once_the_portal_answers_again(half_attached):
    host, log = half_attached
    conn(host, log).connect(paths([P1, P2]))  # fails again: still in the log
    host.set_fault("portal_down", {})
    real_would = conn(host, log).connect(paths([P1, P2]), check_mode=True)
    # the log says P2 failed last time: check mode cannot know it answers now, and says so
    assert real_would["changed"] is False and real_would["would_login"] == [P2]
    real = conn(host, log).connect(paths([P1, P2]))
    assert real["changed"] is True and sorted(s["portal"] for s in host.sessions(IQN)) == [P1, P2]


def test_a_successful_login_clears_the_failure_and_check_mode_predicts_the_change_again(host, tmp_path):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    log = tmp_path / "failed-portals.json"
    host.set_fault("portal_down", {P2: "refuse"})
    conn(host, log).connect(paths([P1, P2]))
    host.set_fault("portal_down", {})
    assert conn(host, log).connect(paths([P1, P2]))["changed"] is True
    c = conn(host, log)
    # P2 attached now: nothing to do, and nothing was written to the log by a run that had no failure
    before = log.read_text()
    assert c.connect(paths([P1, P2]), check_mode=True)["changed"] is False
    assert log.read_text() == before


def test_check_mode_predicts_no_scan_on_a_session_in_recovery(host, tmp_path):
    """The fuzzer's case: the volume is attached on P1, P2's session (of another LUN) is FAILED and carries no
    device of this LUN.  A LUN scan on a session in recovery finds nothing (the kernel cannot ask the target), so
    the real run changes nothing: check mode must not predict a scan there."""
    log = tmp_path / "failed-portals.json"
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    conn(host, log).connect(iscsi.build_paths([P1, P2], [IQN], [0]))
    conn(host, log).connect(iscsi.build_paths([P1, P2], [IQN], [1]))
    out = conn(host, log).disconnect(iscsi.build_paths([P2], [IQN], [1]))  # LUN 1 leaves P2, its map stays on P1
    assert out["changed"] and len(host.sessions(IQN)) == 2
    host.path_fail(P2, session_state="FAILED")
    both = iscsi.build_paths([P2, P1], [IQN], [1])
    checker = conn(host, log)
    predicted = checker.connect(both, check_mode=True)
    real = conn(host, log).connect(both)
    assert real["changed"] is False and real["failed_paths"]
    assert predicted["changed"] is real["changed"], predicted
    assert any(P2 in warning and "FAILED" in warning for warning in checker.warnings), checker.warnings
