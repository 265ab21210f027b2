# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark of the fair host lock (plugins/module_utils/connector/lock.py).

``run(quick=False)`` returns:

* ``handoff_ms``: median time from the holder calling ``release()`` to a waiting *process*
  returning from ``acquire()``, with the modules' default (a finite ``lock_timeout``);
  ``handoff_ms_patient`` (``lock_timeout: patient``), ``handoff_ms_poll_10ms`` (``poll=0.01``)
  and ``handoff_ms_flock`` (a bare blocking ``flock``, the floor) for comparison;
* ``acquire_release_per_s``: uncontended acquire + release per second in one process;
* ``flock_acquire_release_per_s``: the same for a bare ``flock``/``LOCK_UN`` pair on an open
  file, measured in the same run, and ``ratio_vs_flock`` (ours / bare flock);
* ``overtakes_max_fair`` / ``overtakes_max_flock_poll``: the most times a competitor that takes
  the lock for 2 ms windows in a tight loop got it while one waiter was queued: with this lock,
  and with a poll-and-retry ``flock`` lock (the way file-lock libraries without a queue wait);
  ``starved_rounds_*``: waits that had to give up after 2 s (out of ``rounds_starvation``).

Run: ``python3 bench/bench_lock.py [--quick]``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MU = os.path.join(_REPO, "plugins", "module_utils")
if _MU not in sys.path:
    sys.path.insert(0, _MU)

from connector.lock import HostLock  # noqa: E402

# A poll-and-retry waiter on a bare flock gives up (and counts as starved) after this long.
_GIVE_UP = 2.0

# The waiting process.  Reads one command per line; answers one JSON line.
_CHILD = r"""
import fcntl, json, os, sys, time
sys.path.insert(0, %(mu)r)
from connector.lock import HostLock
mode, lock_dir, flock_path = sys.argv[1:4]
out = sys.stdout
def say(**kw):
    out.write(json.dumps(kw) + "\n"); out.flush()
say(ready=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "quit":
        break
    if cmd[0] == "wait":                       # queue, then report when we got it
        if mode == "flock":
            fd = os.open(flock_path, os.O_RDWR | os.O_CREAT, 0o600)
            say(queued=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
            t = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_UN); os.close(fd)
        else:
            kw = {"timed": {"timeout": 300}, "patient": {"timeout": "patient"},
                  "poll": {"timeout": 300, "poll": 0.01}}[mode]
            lk = HostLock("bench", lock_dir=lock_dir, **kw)
            lk.acquire()
            t = time.monotonic()
            lk.release()
        say(t=t)
    elif cmd[0] == "compete":                  # tight loop of short holds until STOP exists
        stop, log, n = cmd[1], cmd[2], 0
        lf = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        while not os.path.exists(stop):
            if mode == "flock":
                fd = os.open(flock_path, os.O_RDWR | os.O_CREAT, 0o600)
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); break
                    except OSError:
                        time.sleep(0.001)
                os.write(lf, b"%%.6f\n" %% time.time())
                time.sleep(0.002)
                fcntl.flock(fd, fcntl.LOCK_UN); os.close(fd)
            else:
                with HostLock("bench", lock_dir=lock_dir, timeout=30):
                    os.write(lf, b"%%.6f\n" %% time.time())
                    time.sleep(0.002)
            n += 1
        os.close(lf)
        say(n=n)
""" % {"mu": _MU}


class _Child(object):
    def __init__(self, mode, lock_dir, flock_path):
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, mode, lock_dir, flock_path],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.recv()["ready"]

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark child died")
        return json.loads(line)

    def close(self):
        try:
            self.send("quit")
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def _queue_len(lock_dir):
    return len(HostLock("bench", lock_dir=lock_dir).queue())


def _wait_queued(lock_dir, n, limit=5.0):
    end = time.monotonic() + limit
    while _queue_len(lock_dir) < n:
        if time.monotonic() > end:
            raise RuntimeError("the waiting process did not queue")
        time.sleep(0.0005)


def _handoff(mode, lock_dir, flock_path, rounds):
    """Median and p90 (ms) from our release to the waiting child's acquire."""
    child = _Child(mode, lock_dir, flock_path)
    samples = []
    try:
        for dummy in range(rounds):
            if mode == "flock":
                fd = os.open(flock_path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                child.send("wait")
                child.recv()
                time.sleep(0.005)  # a bare flock cannot tell us the child blocks; give it time
                t_rel = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                lk = HostLock("bench", lock_dir=lock_dir, timeout="patient")
                lk.acquire()
                child.send("wait")
                _wait_queued(lock_dir, 2)
                time.sleep(0.002)  # let the child get from 'queued' to 'sleeping on our ticket'
                t_rel = time.monotonic()
                lk.release()
            samples.append((child.recv()["t"] - t_rel) * 1000.0)
    finally:
        child.close()
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def _rate(step, n, chunks=10):
    """Calls of ``step`` per second: the median over ``chunks`` runs (robust on a busy host)."""
    per = max(1, n // chunks)
    rates = []
    for dummy in range(chunks):
        t0 = time.perf_counter()
        for dummy2 in range(per):
            step()
        rates.append(per / (time.perf_counter() - t0))
    return statistics.median(rates)


def _rate_hostlock(lock_dir, n):
    lk = HostLock("bench-solo", lock_dir=lock_dir, timeout=0)

    def step():
        lk.acquire()
        lk.release()
    step()
    return _rate(step, n)


def _rate_flock(path, n):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def step():
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
    try:
        return _rate(step, n)
    finally:
        os.close(fd)


def _overtakes(mode, lock_dir, flock_path, rounds, tmp):
    """Max competitor acquisitions while one of our waits was in progress (over ``rounds``)."""
    log = os.path.join(tmp, "compete-%s.log" % mode)
    stop = os.path.join(tmp, "stop-%s" % mode)
    child = _Child(mode, lock_dir, flock_path)
    spans = []
    starved = 0
    try:
        child.send("compete %s %s" % (stop, log))
        while not os.path.exists(log) or os.path.getsize(log) < 200:
            time.sleep(0.005)
        for dummy in range(rounds):
            if mode == "flock":
                fd = os.open(flock_path, os.O_RDWR | os.O_CREAT, 0o600)
                t_q = time.time()
                while True:  # retry with a fixed poll, as lock libraries without a queue do
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError:
                        time.sleep(0.01)
                        if time.time() - t_q > _GIVE_UP:
                            starved += 1
                            break  # starved: count what happened until we gave up
                t_a = time.time()
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                lk = HostLock("bench", lock_dir=lock_dir, timeout=30)
                lk.acquire()
                t_q, t_a = lk.queued_at, lk.acquired_at
                lk.release()
            spans.append((t_q, t_a))
            time.sleep(0.005)
    finally:
        open(stop, "w").close()
        child.recv()
        child.close()
    with open(log) as f:
        times = [float(x) for x in f.read().split()]
    return max(sum(1 for t in times if q <= t <= a) for q, a in spans), starved


def run(quick=False):
    tmp = tempfile.mkdtemp(prefix="bench-lock-")
    lock_dir = os.path.join(tmp, "locks")
    flock_path = os.path.join(tmp, "plain.flock")
    rounds = 40 if quick else 300
    n = 3000 if quick else 30000
    try:
        flock_rate = _rate_flock(flock_path, n * 10)
        ours = _rate_hostlock(lock_dir, n)
        out = {}
        out["handoff_ms"], out["handoff_ms_p90"] = _handoff("timed", lock_dir, flock_path, rounds)
        out["handoff_ms_patient"], dummy = _handoff("patient", lock_dir, flock_path, rounds)
        out["handoff_ms_poll_10ms"], dummy = _handoff("poll", lock_dir, flock_path, rounds)
        out["handoff_ms_flock"], dummy = _handoff("flock", lock_dir, flock_path, rounds)
        out["acquire_release_per_s"] = ours
        out["flock_acquire_release_per_s"] = flock_rate
        out["ratio_vs_flock"] = ours / flock_rate
        k = 10 if quick else 30
        out["overtakes_max_fair"], out["starved_rounds_fair"] = _overtakes("timed", lock_dir, flock_path, k, tmp)
        out["overtakes_max_flock_poll"], out["starved_rounds_flock_poll"] = _overtakes(
            "flock", lock_dir, flock_path, k, tmp)
        out["rounds_starvation"] = k
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv[1:])
    for key, value in result.items():
        print("%-30s %s" % (key, value))
