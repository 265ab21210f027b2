# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""A child process for the lock tests, driven by one command per line on stdin.

Usage: worker.py LOCK_DIR NAME ID [LOG]
Every command answers one JSON line on stdout.  Commands:

  acq [TIMEOUT]   acquire (TIMEOUT seconds, 'patient', default patient); stays held
  rel             release
  cycle           acquire (patient), append "ID TICKET" to LOG, release
  count FILE K    K times: acquire, read int from FILE, sleep a little, write it + 1, release
  compete STOP    until file STOP exists: acquire, append "C TICKET T_ACQ" to LOG, hold 2 ms,
                  release; answers the number of acquisitions
  quit
"""

from __future__ import absolute_import, division, print_function

import json
import os
import sys
import time

# tests/unit/plugins/module_utils/connector/lockhelpers/worker.py -> the repository's plugins/module_utils
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "..", "..",
                                "plugins", "module_utils"))

from connector.errors import LockTimeout  # noqa: E402
from connector.lock import HostLock  # noqa: E402


def answer(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def append(log, line):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def main():
    lock_dir, name, ident = sys.argv[1:4]
    log = sys.argv[4] if len(sys.argv) > 4 else None
    held = None
    answer(ready=True, pid=os.getpid())
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        op = cmd[0]
        if op == "acq":
            timeout = cmd[1] if len(cmd) > 1 else "patient"
            held = HostLock(name, lock_dir=lock_dir, timeout=timeout, info="worker %s" % ident)
            try:
                waited = held.acquire()
            except LockTimeout as e:
                held = None
                answer(ok=False, error=str(e))
                continue
            answer(ok=True, waited=waited, ticket=held.ticket, pos=held.position_at_entry,
                   t=time.monotonic())
        elif op == "rel":
            t = time.monotonic()
            held.release()
            held = None
            answer(ok=True, t=t)
        elif op == "cycle":
            with HostLock(name, lock_dir=lock_dir, timeout="patient") as lk:
                append(log, "%s %d" % (ident, lk.ticket))
            answer(ok=True)
        elif op == "count":
            path, k = cmd[1], int(cmd[2])
            for dummy in range(k):
                with HostLock(name, lock_dir=lock_dir, timeout=30):
                    with open(path) as f:
                        v = int(f.read() or 0)
                    time.sleep(0.0002)
                    with open(path, "w") as f:
                        f.write(str(v + 1))
            answer(ok=True)
        elif op == "compete":
            stop = cmd[1]
            n = 0
            while not os.path.exists(stop):
                with HostLock(name, lock_dir=lock_dir, timeout=30) as lk:
                    n += 1
                    append(log, "C %d %.6f" % (lk.ticket, time.time()))
                    time.sleep(0.002)
            answer(ok=True, n=n)
        elif op == "quit":
            answer(ok=True)
            return


if __name__ == "__main__":
    main()
