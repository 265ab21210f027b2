# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The fair host lock, exercised with real processes (tests/unit/plugins/module_utils/connector/lockhelpers/worker.py)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import queue
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from connector.errors import BrickError, InvalidInput, LockTimeout
from connector.lock import (DEFAULT_LOCK_TIMEOUT, HostLock, LockSet, ensure_lock_dir, parse_lock_timeout,
                            safe_lock_name)
from connector.lockdir import target_lock_name

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lockhelpers", "worker.py")
NAME = "host"


class Worker(object):
    """A child process holding/queueing for the lock on command."""

    def __init__(self, lock_dir, ident, log=None, name=NAME):
        argv = [sys.executable, WORKER, str(lock_dir), name, str(ident)] + ([str(log)] if log else [])
        self.ident = ident
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines = queue.Queue()
        t = threading.Thread(target=self._read)
        t.daemon = True
        t.start()
        assert self.recv(10)["ready"]
        self.pid = self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout=5.0):
        return self.lines.get(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(2)
            except Exception:
                self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


@pytest.fixture
def lock_dir(tmp_path):
    return str(tmp_path / "locks")


@pytest.fixture
def workers():
    started = []
    yield started
    for w in started:
        w.close()


def spawn(workers, *args, **kw):
    w = Worker(*args, **kw)
    workers.append(w)
    return w


def wait_until(pred, timeout=5.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.002)
    raise AssertionError("timed out waiting for %s" % what)


def queued(lock_dir, n, name=NAME):
    probe = HostLock(name, lock_dir=lock_dir)
    wait_until(lambda: len(probe.queue()) == n, what="%d tickets in the queue" % n)


def queue_files(lock_dir, name=NAME):
    return sorted(os.listdir(os.path.join(lock_dir, name + ".q")))


# -- exclusion and order ------------------------------------------------------------------------
def test_mutual_exclusion_no_lost_update(lock_dir, workers, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    ws = [spawn(workers, lock_dir, i) for i in range(4)]
    t0 = time.monotonic()
    for w in ws:
        w.send("count %s 150" % counter)
    # Meanwhile, keep inspecting the queue: an inspection that mistook a live ticket for a dead
    # one would delete it and break the exclusion, which the counter would show.
    probe = HostLock(NAME, lock_dir=lock_dir)
    inspected = 0
    pending = list(ws)
    while pending:
        probe.queue()
        inspected += 1
        for w in list(pending):
            try:
                assert w.lines.get_nowait()["ok"]
                pending.remove(w)
            except queue.Empty:
                pass
        assert time.monotonic() - t0 < 20
    assert int(counter.read_text()) == 600
    assert inspected > 10
    assert queue_files(lock_dir) == []


def test_fifo_order_8_processes_20_rounds(lock_dir, workers, tmp_path):
    log = tmp_path / "order.log"
    ws = [spawn(workers, lock_dir, i, log) for i in range(8)]
    gate = HostLock(NAME, lock_dir=lock_dir, timeout=5)
    rng = random.Random(4711)
    for rnd in range(20):
        log.write_text("")
        order = ws[:]
        rng.shuffle(order)
        gate.acquire()
        for pos, w in enumerate(order):
            w.send("cycle")
            queued(lock_dir, pos + 2)  # the gate + everyone sent so far: each queues after the previous
        gate.release()
        for w in order:
            assert w.recv(5)["ok"]
        got = [line.split() for line in log.read_text().splitlines()]
        assert [int(line[0]) for line in got] == [w.ident for w in order], "round %d out of order" % rnd
        tickets = [int(line[1]) for line in got]
        assert tickets == sorted(tickets)
    assert queue_files(lock_dir) == []


def test_threads_of_one_process_exclude_each_other(lock_dir):
    state = {"inside": 0, "max": 0, "n": 0}
    errors = []

    def work():
        try:
            for dummy in range(50):
                with HostLock(NAME, lock_dir=lock_dir, timeout=10):
                    state["inside"] += 1
                    state["max"] = max(state["max"], state["inside"])
                    time.sleep(0.0001)
                    state["n"] += 1
                    state["inside"] -= 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for dummy in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert state == {"inside": 0, "max": 1, "n": 200}


def test_position_and_wait_reported(lock_dir, workers):
    h = spawn(workers, lock_dir, "h")
    h.send("acq")
    assert h.recv()["ok"]
    w = spawn(workers, lock_dir, "w")
    w.send("acq 5")
    queued(lock_dir, 2)
    time.sleep(0.2)
    h.send("rel")
    h.recv()
    got = w.recv()
    assert got["ok"] and got["pos"] == 1
    assert 0.2 <= got["waited"] < 2.0
    with pytest.raises(LockTimeout):  # w still holds it
        HostLock(NAME, lock_dir=lock_dir, timeout=0).acquire()


# -- crashes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout,poll", [("patient", None), (5, None), (5, 0.005)],
                         ids=["patient-block", "timed-block", "timed-poll"])
def test_killed_holder_does_not_block_the_next(lock_dir, workers, timeout, poll):
    h = spawn(workers, lock_dir, "h")
    h.send("acq")
    assert h.recv()["ok"]
    killed = {}

    def kill():
        killed["t"] = time.monotonic()
        os.kill(h.pid, signal.SIGKILL)

    timer = threading.Timer(0.3, kill)
    timer.start()
    lk = HostLock(NAME, lock_dir=lock_dir, timeout=timeout, poll=poll)
    try:
        lk.acquire()
        took = time.monotonic() - killed["t"]
        assert lk.position_at_entry == 1
        assert took < 0.5, "next waiter needed %.3f s after the holder was killed" % took
        assert len(queue_files(lock_dir)) == 1  # only our ticket: the dead one was removed
    finally:
        timer.join()
        lk.release()
        h.kill()


def test_dead_holder_ticket_is_ignored_and_removed(lock_dir, workers):
    h = spawn(workers, lock_dir, "h")
    h.send("acq")
    assert h.recv()["ok"]
    h.kill()  # died before anyone queued: its ticket file is still there, but unlocked
    assert len(queue_files(lock_dir)) == 1
    lk = HostLock(NAME, lock_dir=lock_dir, timeout=0)
    assert lk.acquire() < 0.5
    assert lk.position_at_entry == 0
    lk.release()
    assert queue_files(lock_dir) == []


def test_killed_waiter_is_skipped(lock_dir, workers):
    gate = HostLock(NAME, lock_dir=lock_dir, timeout=5)
    gate.acquire()
    w1 = spawn(workers, lock_dir, 1)
    w1.send("acq")
    queued(lock_dir, 2)
    w2 = spawn(workers, lock_dir, 2)
    w2.send("acq")
    queued(lock_dir, 3)
    w1.kill()
    t0 = time.monotonic()
    gate.release()
    got = w2.recv(2)
    took = time.monotonic() - t0
    assert got["ok"]
    assert took < 0.5, "waiter behind a dead waiter needed %.3f s" % took
    assert queue_files(lock_dir) == ["%016d" % got["ticket"]]


# -- fairness -----------------------------------------------------------------------------------
def test_tight_loop_competitor_cannot_starve_a_waiter(lock_dir, workers, tmp_path):
    log = tmp_path / "compete.log"
    stop = tmp_path / "stop"
    c = spawn(workers, lock_dir, "c", log)
    c.send("compete %s" % stop)
    wait_until(lambda: log.exists() and len(log.read_text().splitlines()) > 20, what="the competitor to run")
    rounds = []
    try:
        for dummy in range(20):
            lk = HostLock(NAME, lock_dir=lock_dir, timeout=5)
            lk.acquire()
            rounds.append((lk.queued_at, lk.acquired_at, lk.waited, lk.position_at_entry))
            lk.release()
            time.sleep(0.01)
    finally:
        stop.write_text("")
    n = c.recv(5)["n"]
    competitor = [float(line.split()[2]) for line in log.read_text().splitlines()]
    assert n == len(competitor)
    start, end = rounds[0][0], rounds[-1][1]
    during = sum(1 for t in competitor if start <= t <= end)
    # The competitor kept taking the lock throughout, and we usually found it in front of us.
    assert during >= len(rounds), "the competitor was not busy (%d acquisitions)" % during
    assert sum(1 for r in rounds if r[3] == 1) >= 5
    for queued_at, acquired_at, waited, dummy in rounds:
        overtakes = sum(1 for t in competitor if queued_at <= t <= acquired_at)
        assert overtakes <= 1, "competitor took the lock %d times while we waited" % overtakes
        assert waited < 0.5  # one 2 ms window of the holder ahead, plus the hand-off


# -- time-outs ----------------------------------------------------------------------------------
def test_timeout_names_the_holder_and_removes_our_ticket(lock_dir, workers):
    h = spawn(workers, lock_dir, "holder-x")
    h.send("acq")
    assert h.recv()["ok"]
    lk = HostLock(NAME, lock_dir=lock_dir, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(LockTimeout) as ei:
        lk.acquire()
    took = time.monotonic() - t0
    assert 0.5 <= took < 0.9
    msg = str(ei.value)
    assert "lock 'host' in %s is held by pid %d" % (lock_dir, h.pid) in msg
    assert "worker.py" in msg and "worker holder-x" in msg
    assert "waited 0.5 s" in msg and " since 20" in msg
    holder = ei.value.details["holder"]
    assert holder["pid"] == h.pid and holder["name"] == "host"
    assert not lk.locked
    assert len(queue_files(lock_dir)) == 1  # the holder's ticket only
    assert lk.queue()[0]["pid"] == h.pid


def test_timeout_zero_tries_once(lock_dir, workers):
    h = spawn(workers, lock_dir, "h")
    h.send("acq")
    assert h.recv()["ok"]
    lk = HostLock(NAME, lock_dir=lock_dir, timeout=0)
    t0 = time.monotonic()
    with pytest.raises(LockTimeout):
        lk.acquire()
    assert time.monotonic() - t0 < 0.3
    h.send("rel")
    h.recv()
    assert lk.acquire() < 0.1
    lk.release()


def test_timed_out_waiter_does_not_block_those_behind(lock_dir, workers):
    gate = HostLock(NAME, lock_dir=lock_dir, timeout=5)
    gate.acquire()
    a = spawn(workers, lock_dir, "a")
    b = spawn(workers, lock_dir, "b")
    a.send("acq 1.0")
    queued(lock_dir, 2)
    b.send("acq patient")
    queued(lock_dir, 3)
    got = a.recv(3)
    assert not got["ok"] and "pid %d" % os.getpid() in got["error"]  # timed out, naming the gate
    queued(lock_dir, 2)
    assert b.lines.empty()  # b still waits for the gate
    t0 = time.monotonic()
    gate.release()
    assert b.recv(2)["ok"]
    assert time.monotonic() - t0 < 0.5


def test_holder_reports_who_holds(lock_dir, workers):
    lk = HostLock("target-x", lock_dir=lock_dir, info="attach iqn.x lun 1")
    assert lk.holder() is None
    with lk:
        h = lk.holder()
        assert h["pid"] == os.getpid()
        assert h["info"] == "attach iqn.x lun 1"
        assert h["name"] == "target-x"
        assert h["since"].startswith("20")
        assert os.path.basename(sys.executable) in h["cmd"] or "python" in h["cmd"]
    assert lk.holder() is None


def test_not_reentrant_and_release_idempotent(lock_dir):
    lk = HostLock(NAME, lock_dir=lock_dir)
    assert lk.release() is False
    with lk:
        with pytest.raises(BrickError):
            lk.acquire()
    assert lk.release() is False
    assert lk.acquire() < 0.1  # reusable
    lk.release()


def test_lockset_takes_locks_in_one_order_and_rolls_back(lock_dir):
    ls = LockSet(["target-b", "host", "target-a", "host"], lock_dir=lock_dir, timeout=0)
    assert [lk.name for lk in ls.locks] == ["host", "target-a", "target-b"]
    other = HostLock("target-b", lock_dir=lock_dir, timeout=0)
    other.acquire()
    with pytest.raises(LockTimeout):
        ls.acquire()
    assert all(not lk.locked for lk in ls.locks)
    assert HostLock("host", lock_dir=lock_dir).holder() is None  # rolled back
    other.release()
    with ls:
        assert all(lk.locked for lk in ls.locks)


# -- lock directory -----------------------------------------------------------------------------
def test_lock_dir_created_private_and_files_private(tmp_path):
    d = str(tmp_path / "a" / "locks")
    old = os.umask(0o022)
    try:
        with HostLock(NAME, lock_dir=d) as lk:
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
            assert stat.S_IMODE(os.stat(lk.counter_path).st_mode) == 0o600
            (ticket,) = queue_files(d)
            assert stat.S_IMODE(os.stat(os.path.join(lk.queue_dir, ticket)).st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.parametrize("mode,word", [(0o777, "everyone"), (0o1777, "everyone"), (0o770, "its group")])
def test_writable_lock_dir_refused(tmp_path, mode, word):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(str(d), mode)
    with pytest.raises(InvalidInput) as ei:
        HostLock(NAME, lock_dir=str(d)).acquire()
    assert "refusing lock directory %s" % d in str(ei.value)
    assert "writable by %s" % word in str(ei.value)


def test_foreign_lock_dir_refused(tmp_path, monkeypatch):
    d = tmp_path / "foreign"
    d.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(str(d)).st_uid + 4242)
    with pytest.raises(InvalidInput) as ei:
        ensure_lock_dir(str(d))
    assert "not by the current user" in str(ei.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_lock_dir_owned_by_another_uid_refused(tmp_path):
    d = tmp_path / "nobody"
    d.mkdir(mode=0o700)
    os.chown(str(d), 65534, -1)
    with pytest.raises(InvalidInput) as ei:
        HostLock(NAME, lock_dir=str(d)).acquire()
    assert "owned by uid 65534" in str(ei.value)


def test_lock_dir_that_is_a_file_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InvalidInput):
        ensure_lock_dir(str(f))


# -- inputs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [
    (0, 0.0), (5, 5.0), (2.5, 2.5), ("30", 30.0), (" 7.5 ", 7.5), ("0", 0.0),
    ("patient", None), ("PATIENT", None), (" Patient ", None), (None, DEFAULT_LOCK_TIMEOUT),
])
def test_parse_lock_timeout_accepts(value, expected):
    assert parse_lock_timeout(value) == expected


@pytest.mark.parametrize("value", [-1, -0.5, "-3", "", "abc", "30s", True, False, [], {}, float("nan"),
                                   float("inf"), "inf", "nan", "forever"])
def test_parse_lock_timeout_rejects(value):
    with pytest.raises(InvalidInput) as ei:
        parse_lock_timeout(value)
    assert "patient" in str(ei.value)


def test_bad_timeout_and_poll_rejected_by_hostlock(lock_dir):
    with pytest.raises(InvalidInput):
        HostLock(NAME, lock_dir=lock_dir, timeout="soon")
    with pytest.raises(InvalidInput):
        HostLock(NAME, lock_dir=lock_dir, poll=0)


@pytest.mark.parametrize("name,expected", [
    ("host", "host"),
    ("../../etc/passwd", "_.._etc_passwd"),
    (".hidden", "hidden"),
    ("a b/c:d", "a_b_c_d"),
])
def test_safe_lock_name(name, expected):
    assert safe_lock_name(name) == expected


def test_lock_names_edge_cases():
    for bad in ("", "   ", None, 3):
        with pytest.raises(InvalidInput):
            safe_lock_name(bad)
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(safe_lock_name(long_a)) <= 96 and safe_lock_name(long_a) != safe_lock_name(long_b)
    assert target_lock_name("IQN.2010-10.org.Example:Vol-1") == "target-iqn.2010-10.org.example_vol-1"
    assert target_lock_name("iqn.2010-10.org.example:vol-1") == target_lock_name(" IQN.2010-10.ORG.EXAMPLE:VOL-1")
