# -*- coding: utf-8 -*-
"""Several threads and processes on one simulated host; and the in-process speed budget."""
import os
import subprocess
import sys
import threading
import time

from sim import SimHost
from simtest_util import P1, P2

N = 8


def _worker(host, i, errors):
    iqn = "iqn.2003-01.org.example.array:c%d" % i
    try:
        r = host.runner()
        for portal in (P1, P2):
            base = ["iscsiadm", "-m", "node", "-T", iqn, "-p", portal]
            r.run(base + ["--op", "new"], timeout=120)
            r.run(base + ["--op", "update", "-n", "node.session.scan", "-v", "manual"], timeout=120)
            r.run(base + ["--login"], timeout=120)
        for s in host.sessions(iqn=iqn):
            for lun in (0, 1, 2):
                host.fs.write("/sys/class/scsi_host/host%d/scan" % s["host"], "0 0 %d" % lun)
        mine = dict((n, d) for n, d in host.disks().items() if d["iqn"] == iqn)
        assert len(mine) == 6, mine
        for n, d in mine.items():
            if d["lun"] == 1:
                host.fs.write("/sys/block/%s/device/delete" % n, "1")
        # logout of one portal in a separate process, the other in-process
        r.run(["iscsiadm", "-m", "node", "-T", iqn, "-p", P2, "--logout"], timeout=120)
    except Exception as e:  # pragma: no cover - reported below
        errors.append("%d: %r" % (i, e))


def test_eight_threads_login_scan_delete_leave_a_consistent_tree(host):
    for i in range(N):
        host.add_target("iqn.2003-01.org.example.array:c%d" % i, portals=[P1, P2], luns={0: 8, 1: 8, 2: 8})
    errors = []
    threads = [threading.Thread(target=_worker, args=(host, i, errors)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert errors == []
    assert host.check() == []
    disks = host.disks()
    # per target: LUN 0 and 2 on P1 remain
    assert len(disks) == 2 * N
    assert sorted((d["iqn"], d["lun"]) for d in disks.values()) == sorted(
        ("iqn.2003-01.org.example.array:c%d" % i, lun) for i in range(N) for lun in (0, 2))
    names = sorted(disks, key=lambda n: (len(n), n))
    assert len(set(names)) == len(names)
    hosts = sorted(s["host"] for s in host.sessions())
    assert len(hosts) == len(set(hosts)) == N
    sids = [s["sid"] for s in host.sessions()]
    assert len(set(sids)) == N
    # every map lost its P2 path and kept the P1 one
    for _dm, m in host.maps().items():
        assert len(m["paths"]) == 1
    # every link in /dev/disk resolves inside the root
    fs = host.fs
    for d in ("/dev/disk/by-path", "/dev/disk/by-id", "/dev/mapper"):
        for e in fs.listdir(d):
            if fs.islink("%s/%s" % (d, e)):
                assert fs.exists(fs.realpath("%s/%s" % (d, e))), e


PROC_WORKER = r"""
import sys
sys.path[:0] = [%(tests)r, %(mu)r]
from sim import SimHost
h = SimHost(%(root)r)
iqn = "iqn.2003-01.org.example.array:p%(i)d"
s = h.login(iqn, "10.0.0.1:3260", scan="manual")
for lun in range(4):
    h.scan(s["host"], lun=lun)
print(len([d for d in h.disks().values() if d["iqn"] == iqn]))
"""


def test_several_processes_share_one_host(host):
    tests = os.path.dirname(os.path.dirname(host.bin_dir))
    mu = os.path.join(os.path.dirname(tests), "plugins", "module_utils")
    for i in range(4):
        host.add_target("iqn.2003-01.org.example.array:p%d" % i, portals=[P1], luns={0: 8, 1: 8, 2: 8, 3: 8})
    procs = [subprocess.Popen([sys.executable, "-c", PROC_WORKER % dict(tests=tests, mu=mu, root=host.root, i=i)],
                              stdout=subprocess.PIPE, universal_newlines=True) for i in range(4)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert outs == ["4"] * 4
    assert len(host.disks()) == 16 and host.check() == []
    assert [d["name"] for d in sorted(host.disks().values(), key=lambda d: d["index"])] == \
        ["sd" + chr(ord("a") + k) for k in range(16)]


def test_build_and_attach_two_paths_in_process_is_fast(tmp_path):
    # CPU time is what the simulator costs; wall time only gets a generous bound (shared CI machines)
    c0, w0 = time.process_time(), time.monotonic()
    h = SimHost(str(tmp_path / "fast"))
    t = h.add_target("iqn.2003-01.org.example.array:fast", portals=[P1, P2], luns={0: 64})
    for p in (P1, P2):
        s = h.login(t["iqn"], p, scan="manual")
        h.fs.write("/sys/class/scsi_host/host%d/scan" % s["host"], "0 0 0")
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    assert list(h.maps()) == ["dm-0"] and len(h.maps()["dm-0"]["paths"]) == 2
    assert cpu < 0.2, cpu
    assert wall < 2.0, wall
