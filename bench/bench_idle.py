# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark: waiting for a block device to be idle vs. the fixed ``sleep(3)`` it replaces.

Scenario (on a simulated host): a disk with two partitions, one of which a process (udev's blkid,
say) holds open for ``HOLD_S`` seconds after partitioning.  Measured in the same run:

* ``us_s``        our ``wait_idle`` (interval 0.1 s) from the moment the holder appears;
* ``us_default_s`` the same with the module's default interval (1 s);
* ``us_idle_s``   our wait on the disk once it is idle (one check, no wait);
* ``sleep3_s``    ``time.sleep(3)``, what Ironic did before its fuser loop;
* ``ratio``       ``us_s / sleep3_s``.

Run: ``python3 bench/bench_idle.py [--quick]``.
"""

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))
sys.path.insert(0, os.path.join(REPO, "tests"))

from connector import idle  # noqa: E402

HOLD_S = 0.3


def _host(tmp):
    """The simulated host; the connector tests' MiniHost until tests/sim offers the same calls."""
    from unit.plugins.module_utils.connector.minihost import MiniHost
    return MiniHost(os.path.join(tmp, "root"))


def _timed(fn):
    t0 = time.monotonic()
    res = fn()
    return time.monotonic() - t0, res


def run(quick=False):
    rounds = 1 if quick else 3
    us, us_default, us_idle, checks, fusers = [], [], [], [], []
    method = None
    for i in range(rounds):
        tmp = tempfile.mkdtemp(prefix="bench-idle-")
        host = _host(tmp)
        dev = host.add_disk()
        host.add_partition(dev, 1)
        host.add_partition(dev, 2)
        runner = host.runner()

        host.hold_open("/dev/sdb1", 1000 + i, "blkid", seconds=HOLD_S)
        dt, res = _timed(lambda dev=dev, host=host, runner=runner: idle.wait_idle(
            dev, interval=0.1, fs=host.fs, runner=runner))
        us.append(dt)
        checks.append(res["checks"])
        method = res["method"]

        host.hold_open("/dev/sdb2", 2000 + i, "blkid", seconds=HOLD_S)
        dt, _result = _timed(lambda dev=dev, host=host, runner=runner: idle.wait_idle(
            dev, interval=1.0, fs=host.fs, runner=runner))
        us_default.append(dt)

        n0 = runner.count("fuser")
        dt, _result = _timed(lambda dev=dev, host=host, runner=runner: idle.wait_idle(dev, fs=host.fs, runner=runner))
        us_idle.append(dt)
        fusers.append(runner.count("fuser") - n0)

    sleep3, _result = _timed(lambda: time.sleep(3))
    best = min(us)
    return {
        "scenario": "disk + 2 partitions, sdb1 held open for %.1fs after partitioning" % HOLD_S,
        "method": method,
        "us_s": round(best, 3),
        "us_default_s": round(min(us_default), 3),
        "us_idle_s": round(min(us_idle), 4),
        "sleep3_s": round(sleep3, 3),
        "ratio": round(best / sleep3, 3),
        "checks": checks[us.index(best)],
        "fuser_calls_per_check": fusers[0],
        "rounds": rounds,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
