"""Child process for the concurrency test: attach or detach one volume on a shared simulated host,
under the same locks the iscsi_volume module takes (per-target lock + host-wide node-DB lock)."""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", "..", "..", "..", ".."))  # HERE: tests/unit/plugins/module_utils/...
sys.path[:0] = [os.path.join(REPO, "tests"), os.path.join(REPO, "plugins", "module_utils")]

from connector import iscsi  # noqa: E402
from connector.lock import HostLock  # noqa: E402
from connector.lockdir import target_lock_name  # noqa: E402
from sim import SimHost  # noqa: E402


def main():
    root, lock_dir, op, portals, iqn, lun = sys.argv[1:7]
    host = SimHost(root)  # attaches to the existing simulated host
    runner = host.runner()
    conn = iscsi.Connector(host.fs, runner, device_wait=5, multipath_wait=5, poll=0.01,
                           node_lock=HostLock("iscsi-node-db", lock_dir=lock_dir, timeout=60))
    paths = iscsi.build_paths(portals.split(","), [iqn], [int(lun)])
    t0 = time.monotonic()
    with HostLock(target_lock_name(iqn), lock_dir=lock_dir, timeout=120) as lk:
        if op == "attach":
            res = conn.connect(paths)
        else:
            res = conn.disconnect(paths)
    print(json.dumps({"op": op, "iqn": iqn, "lun": int(lun), "device": res.get("device"),
                      "changed": res["changed"], "waited": lk.waited, "took": time.monotonic() - t0}))


if __name__ == "__main__":
    main()
