# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark: cost of ``connector.paths.gather()`` (volume paths + orphan audit) vs the number of LUN paths.

The trees are written directly (same layout as docs/dev/sysfs-layout.md and the simulator), because the
simulator's attach path would dominate the set-up time for thousands of LUNs.  Each volume has two
portals (two sessions per target) and sits in a dm-multipath map; one target carries ``luns_per_target``
LUNs.  ``run()`` returns the median wall time of several ``gather()`` calls per size, in milliseconds
(``ms_<n>``), and the median process CPU time (``cpu_ms_<n>``), which tells contention from cost.

    python3 bench/bench_facts.py [--quick]
"""

from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "plugins", "module_utils"))

from connector.hostfs import HostFS  # noqa: E402
from connector.paths import gather  # noqa: E402

SIZES = (64, 256, 1024, 4096)


def _w(root, path, data=""):
    p = root + path
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        f.write(data)


def _ln(root, path, target):
    p = root + path
    os.makedirs(os.path.dirname(p), exist_ok=True)
    os.symlink(target, p)


def _sd_name(i):
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return "sd" + s


def build_tree(root, n_paths, portals=2, luns_per_target=8):
    """Write a host with ``n_paths`` iSCSI LUN paths (``n_paths / portals`` multipath volumes)."""
    _w(root, "/etc/iscsi/initiatorname.iscsi", "InitiatorName=iqn.2004-10.org.example:bench\n")
    for d in ("/sys/class/iscsi_host", "/sys/class/iscsi_session", "/sys/class/block", "/sys/block",
              "/dev/disk/by-path", "/dev/disk/by-id", "/dev/mapper"):
        os.makedirs(root + d, exist_ok=True)
    volumes = max(1, n_paths // portals)
    targets = (volumes + luns_per_target - 1) // luns_per_target
    host = sid = sdi = 0
    dm_slaves = {}
    for t in range(targets):
        iqn = "iqn.2010-10.org.example:bench-t%d" % t
        for pi in range(portals):
            addr = "10.%d.%d.%d" % (pi, (t // 250) % 250, t % 250 + 1)
            host += 1
            sid += 1
            hd = "/sys/devices/platform/host%d" % host
            _w(root, hd + "/iscsi_host/host%d/initiatorname" % host, "iqn.2004-10.org.example:bench")
            _ln(root, "/sys/class/iscsi_host/host%d" % host, "../../devices/platform/host%d/iscsi_host/host%d" % (host, host))
            _ln(root, hd + "/iscsi_host/host%d/device" % host, "../../../host%d" % host)
            sd_ = "%s/session%d" % (hd, sid)
            attrs = "%s/iscsi_session/session%d" % (sd_, sid)
            for k, v in (("targetname", iqn), ("state", "LOGGED_IN"), ("tpgt", "1"), ("ifacename", "default")):
                _w(root, "%s/%s" % (attrs, k), v + "\n")
            _ln(root, "/sys/class/iscsi_session/session%d" % sid,
                "../../devices/platform/host%d/session%d/iscsi_session/session%d" % (host, sid, sid))
            conn = "%s/connection%d:0/iscsi_connection/connection%d:0" % (sd_, sid, sid)
            _w(root, conn + "/persistent_address", addr + "\n")
            _w(root, conn + "/persistent_port", "3260\n")
            for lun in range(luns_per_target):
                v = t * luns_per_target + lun
                if v >= volumes:
                    break
                name = _sd_name(sdi)
                sdi += 1
                hctl = "%d:0:0:%d" % (host, lun)
                dd = "%s/target%d:0:0/%s" % (sd_, host, hctl)
                wwid = "6001405%025x" % (v + 1)
                for k, val in (("state", "running"), ("wwid", "naa." + wwid), ("vendor", "LIO-ORG "),
                               ("model", "bench"), ("type", "0")):
                    _w(root, "%s/%s" % (dd, k), val + "\n")
                bd = "%s/block/%s" % (dd, name)
                _w(root, bd + "/size", "2097152\n")
                _w(root, bd + "/dev", "8:%d\n" % sdi)
                dm = "dm-%d" % v
                _ln(root, bd + "/holders/" + dm, "../../../../../../../../virtual/block/" + dm)
                rel = bd[len("/sys/"):]
                _ln(root, "/sys/block/" + name, "../" + rel)
                _ln(root, "/sys/class/block/" + name, "../../" + rel)
                _w(root, "/dev/" + name)
                _ln(root, "/dev/disk/by-path/ip-%s:3260-iscsi-%s-lun-%d" % (addr, iqn, lun), "../../" + name)
                dm_slaves.setdefault(v, []).append((name, rel))
    for v, slaves in dm_slaves.items():
        dm = "dm-%d" % v
        wwid = "36001405%025x" % (v + 1)
        vd = "/sys/devices/virtual/block/" + dm
        _w(root, vd + "/dm/name", "mpath%d\n" % v)
        _w(root, vd + "/dm/uuid", "mpath-%s\n" % wwid)
        _w(root, vd + "/size", "2097152\n")
        os.makedirs(root + vd + "/holders", exist_ok=True)
        for name, rel in slaves:
            _ln(root, "%s/slaves/%s" % (vd, name), "../../../../" + rel[len("devices/"):])
        _ln(root, "/sys/block/" + dm, "../devices/virtual/block/" + dm)
        _ln(root, "/sys/class/block/" + dm, "../../devices/virtual/block/" + dm)
        _w(root, "/dev/" + dm)
        _ln(root, "/dev/mapper/mpath%d" % v, "../" + dm)
        _ln(root, "/dev/disk/by-id/dm-uuid-mpath-" + wwid, "../../" + dm)
        _ln(root, "/dev/disk/by-id/dm-name-mpath%d" % v, "../../" + dm)
        _ln(root, "/dev/disk/by-id/scsi-" + wwid, "../../" + dm)
    return root


def _tmpdir():
    # sysfs lives in memory: a tmpfs is the closer stand-in (and much faster to build and remove)
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def measure(n_paths, repeats=7, tmp=None):
    root = tempfile.mkdtemp(prefix="brick-bench-facts-%d-" % n_paths, dir=tmp or _tmpdir())
    try:
        build_tree(root, n_paths)
        fs = HostFS(root)
        res = gather(fs)  # warm the page/dentry cache
        assert len(res["luns"]) == n_paths, (len(res["luns"]), n_paths)
        assert res["summary"]["orphans"] == 0, res["orphans"][:3]
        times, cpu = [], []
        for _attempt in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            gather(HostFS(root))
            times.append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.process_time() - c0) * 1000.0)
        return round(statistics.median(times), 2), round(statistics.median(cpu), 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(quick=False):
    repeats = 3 if quick else 7
    out = {}
    for n in SIZES:
        wall, cpu = measure(n, repeats=repeats if n < 4096 else max(3, repeats // 2))
        out["ms_%d" % n] = wall
        out["cpu_ms_%d" % n] = cpu  # process CPU time: what the wall time would be on an idle host
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
