"""Issue 8: concurrent attach/detach operations (real processes) on one simulated host."""
import json
import os
import subprocess
import sys

from sim import SimHost

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "lockhelpers", "volume_worker.py")
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def spawn(root, lock_dir, op, portals, iqn, lun):
    return subprocess.Popen([sys.executable, WORKER, root, lock_dir, op, ",".join(portals), iqn, str(lun)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(procs):
    out = []
    for p in procs:
        so, se = p.communicate(timeout=240)
        assert p.returncode == 0, se[-3000:]
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def test_eight_concurrent_attaches_then_detaches_leave_a_consistent_tree(tmp_path):
    root = str(tmp_path / "host")
    lock_dir = str(tmp_path / "locks")
    h = SimHost(root)
    h.set_fault("time_scale", 0.01)
    before = h.snapshot()
    # 4 targets x 2 LUNs: two volumes share each target (and its sessions)
    vols = []
    for t in range(4):
        iqn = "iqn.2003-01.org.example.array:t%d" % t
        h.add_target(iqn, portals=[P1, P2], luns={0: 16, 1: 16})
        vols += [(iqn, 0), (iqn, 1)]
    before = h.snapshot()
    attached = finish([spawn(root, lock_dir, "attach", [P1, P2], iqn, lun) for iqn, lun in vols])
    assert all(r["changed"] for r in attached)
    devices = [r["device"] for r in attached]
    assert len(set(devices)) == 8 and all(d.startswith("/dev/dm-") for d in devices)
    assert h.check() == []
    # 8 sessions (4 targets x 2 portals), each carrying 2 LUNs; 8 maps of 2 paths
    assert len(h.fs.listdir("/sys/class/iscsi_session")) == 8
    assert len([d for d in h.fs.listdir("/sys/block") if d.startswith("sd")]) == 16
    # now mix: detach LUN 0 everywhere while LUN 1s are re-attached (no-ops) at the same time
    procs = [spawn(root, lock_dir, "detach", [P1, P2], iqn, 0) for iqn, _lun in vols[::2]]
    procs += [spawn(root, lock_dir, "attach", [P1, P2], iqn, 1) for iqn, _lun in vols[::2]]
    res = finish(procs)
    assert [r["changed"] for r in res[4:]] == [False] * 4
    assert h.check() == []
    assert len(h.fs.listdir("/sys/class/iscsi_session")) == 8  # LUN 1 keeps every session
    finish([spawn(root, lock_dir, "detach", [P1, P2], iqn, 1) for iqn, _lun in vols[::2]])
    assert h.check() == []
    after = h.snapshot()
    assert {k: v for k, v in after.items() if k != "/etc/multipath/wwids"} == \
        {k: v for k, v in before.items() if k != "/etc/multipath/wwids"}
