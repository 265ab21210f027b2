# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Benchmark: cost of ``volume_paths_facts`` (``connector.paths.gather()``: volume paths + orphan audit) vs the
number of LUN paths: 1,024, 4,096 and 16,384.

The trees are written directly (same layout as docs/dev/sysfs-layout.md and the simulator), because the
simulator's attach path would dominate the set-up time for thousands of LUNs.  Each volume has two
portals (two sessions per target) and sits in a dm-multipath map; one target carries ``luns_per_target``
LUNs.  Three things are timed per size:

* ``gather``: ``gather(fs)``, what ``volume_paths_facts`` with no options reads and computes;
* ``audit``:  ``gather(fs, volume=..., expected=[every volume])``, what the orphan audit asks (the expected
  list grows with the host, so a per-row scan of it would make this quadratic);
* ``module``: the whole module ``main()`` in this process (argument checking, gather, ``exit_json``'s JSON of a
  result that grows with the host), as AnsiballZ runs it.

For each: the median wall time (``ms_<n>``, ``audit_ms_<n>``, ``module_ms_<n>``) and the least process CPU time
(``cpu_ms_<n>`` ...), which tells contention on this shared machine from cost, and the CPU time per path
relative to the smallest size (``linearity_<what>_<n>``: 1.00 = exactly linear).

    python3 bench/bench_facts.py [--quick]
"""

from __future__ import absolute_import, division, print_function

import contextlib
import io
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

SIZES = (1024, 4096, 16384)
LUNS_PER_TARGET = 8


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


def build_tree(root, n_paths, portals=2, luns_per_target=LUNS_PER_TARGET):
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


def expected_of(n_paths, portals=2, luns_per_target=LUNS_PER_TARGET):
    """The expected list of an audit of a ``build_tree`` host: every volume by IQN and LUN."""
    return [{"iqn": "iqn.2010-10.org.example:bench-t%d" % (v // luns_per_target), "lun": v % luns_per_target}
            for v in range(max(1, n_paths // portals))]


def _volume_query():
    return {"portals": ["10.0.0.1:3260", "10.1.0.1:3260"], "iqn": "iqn.2010-10.org.example:bench-t0", "lun": 0}


def _module():
    """volume_paths_facts, imported through a temporary ansible_collections/brick/storage link (None: no ansible)."""
    try:
        import ansible  # noqa: F401
    except ImportError:
        return None
    top = tempfile.mkdtemp(prefix="brick-bench-coll-")
    os.makedirs(os.path.join(top, "ansible_collections", "brick"))
    os.symlink(REPO, os.path.join(top, "ansible_collections", "brick", "storage"))
    sys.path.insert(0, top)
    import importlib
    return importlib.import_module("ansible_collections.brick.storage.plugins.modules.volume_paths_facts")


def _run_module(module, args):
    from ansible.module_utils.testing import patch_module_args
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit:
            pass
    res = json.loads(out.getvalue())
    if res.get("failed"):
        raise RuntimeError("volume_paths_facts failed: %s" % res.get("msg"))
    return res["ansible_facts"]["volume_paths"]


def _timed(fn):
    """(wall ms, CPU ms) of one call of ``fn``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0


class _Host(object):
    """One host tree of ``n_paths`` paths and the calls that are timed on it."""

    def __init__(self, n_paths, tmp, module):
        self.n = n_paths
        self.root = tempfile.mkdtemp(prefix="brick-bench-facts-%d-" % n_paths, dir=tmp)
        build_tree(self.root, n_paths)
        self.expected = expected_of(n_paths)
        self.module = module
        self.calls = {"gather": lambda: gather(HostFS(self.root)),
                      "audit": lambda: gather(HostFS(self.root), volume=_volume_query(), expected=self.expected)}
        if module is not None:
            self.calls["module"] = self._module_run
        self.times = dict((what, []) for what in self.calls)
        res = gather(HostFS(self.root))  # also warms the page/dentry cache
        assert len(res["luns"]) == n_paths, (len(res["luns"]), n_paths)
        assert res["summary"]["orphans"] == 0, res["orphans"][:3]
        audit = self.calls["audit"]()
        assert audit["summary"]["orphans"] == 0 and audit["volume"]["path_count"] == 2, audit["summary"]
        if module is not None:
            assert len(self._module_run()["luns"]) == n_paths

    def _module_run(self):
        os.environ["BRICK_STORAGE_ROOT"] = self.root
        try:
            return _run_module(self.module, {"volume": _volume_query(), "expected": self.expected})
        finally:
            os.environ.pop("BRICK_STORAGE_ROOT", None)

    def round(self):
        for what, fn in self.calls.items():
            self.times[what].append(_timed(fn))

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def measure(sizes=SIZES, rounds=5, tmp=None, module=None):
    """{n: {what: (median wall ms, least CPU ms)}}.  The hosts are built first and timed in rounds, one size
    after the other in each round, so that every size sees the same load on this shared machine."""
    hosts = []
    try:
        for n in sizes:
            hosts.append(_Host(n, tmp or _tmpdir(), module))
        for _round in range(rounds):
            for host in hosts:
                host.round()
        return dict((h.n, dict((what, (round(statistics.median(w for w, _c in t), 2), round(min(c for _w, c in t), 2)))
                               for what, t in h.times.items())) for h in hosts)
    finally:
        for host in hosts:
            host.close()


def run(quick=False):
    module = _module()
    out = {"sizes": list(SIZES), "module_measured": module is not None}
    got = measure(rounds=3 if quick else 7, module=module)
    for n in SIZES:
        for what, (wall, cpu) in got[n].items():
            prefix = "" if what == "gather" else what + "_"
            out["%sms_%d" % (prefix, n)] = wall
            out["%scpu_ms_%d" % (prefix, n)] = cpu  # process CPU time: what the wall time would be on an idle host
    for what in got[SIZES[0]]:
        base = got[SIZES[0]][what][1] / SIZES[0]
        for n in SIZES[1:]:
            out["linearity_%s_%d" % (what, n)] = round(got[n][what][1] / n / base, 2)
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2, sort_keys=True))
