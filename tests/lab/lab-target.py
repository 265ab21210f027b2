"""lab-target - LIO iSCSI target fixture for the brick.storage lab guest.

Runs IN the guest (installed as /usr/local/sbin/lab-target).

  lab-target setup [--luns N] [--size-mb M] [--portals 127.0.0.1,127.0.0.2]
                   [--chap USER:SECRET] [--mutual-chap USER:SECRET] [--iqn IQN]
  lab-target teardown
  lab-target show
  lab-target block-portal IP     iptables DROP of tcp IP:3260 (new and existing
                                 connections: a black hole, not a refusal)
  lab-target unblock-portal IP   undo block-portal
  lab-target remove-portal IP    delete the IP:3260 network portal from the TPG
                                 (connections are refused: a dead portal)
  lab-target restore-portal IP   re-create the IP:3260 network portal
  lab-target unmap-lun N         remove LUN N from the initiator's ACL
                                 (leaves a stale path behind: orphan audits)
  lab-target map-lun N           map LUN N into the ACL again

One rtslib_fb process instead of many targetcli calls: under TCG every python
start costs seconds. The target exports N fileio LUNs (files under
/var/lib/lab-target) through ONE TPG listening on several portals, so a
sendtargets discovery on any portal returns every portal and dm-multipath sees
one path per portal. Access is limited by an ACL for the guest's own initiator
name (like a real array), optionally with (mutual) CHAP.
"""
import argparse
import os
import subprocess
import sys

from rtslib_fb import (FabricModule, FileIOStorageObject, LUN, MappedLUN,
                       NetworkPortal, NodeACL, RTSRoot, Target, TPG)

DEFAULT_IQN = "iqn.2003-01.org.linux-iscsi.lab:target1"
DATA_DIR = "/var/lib/lab-target"
PORT = 3260


def initiator_name():
    with open("/etc/iscsi/initiatorname.iscsi") as f:
        for line in f:
            if line.startswith("InitiatorName="):
                return line.split("=", 1)[1].strip()
    sys.exit("no InitiatorName in /etc/iscsi/initiatorname.iscsi")


def tpgs():
    for t in RTSRoot().targets:
        yield from t.tpgs


def teardown():
    root = RTSRoot()
    for t in list(root.targets):
        t.delete()
    for so in list(root.storage_objects):
        if so.name.startswith("lab"):
            so.delete()


def setup(a):
    teardown()
    os.makedirs(DATA_DIR, exist_ok=True)
    target = Target(FabricModule("iscsi"), a.iqn)
    tpg = TPG(target, 1)
    for p in a.portals.split(","):
        NetworkPortal(tpg, p.strip(), PORT)
    acl = NodeACL(tpg, initiator_name())
    if a.chap or a.mutual_chap:
        if not a.chap:
            sys.exit("--mutual-chap needs --chap")
        user, secret = a.chap.split(":", 1)
        tpg.set_attribute("authentication", "1")
        acl.chap_userid, acl.chap_password = user, secret
        if a.mutual_chap:
            muser, msecret = a.mutual_chap.split(":", 1)
            acl.chap_mutual_userid, acl.chap_mutual_password = muser, msecret
    else:
        tpg.set_attribute("authentication", "0")
    for i in range(a.luns):
        so = FileIOStorageObject(f"lab{i}", f"{DATA_DIR}/lab{i}.img",
                                 size=a.size_mb * 1024 * 1024, write_back=False)
        lun = LUN(tpg, i, so)
        MappedLUN(acl, i, lun)
    tpg.enable = True
    show()


def blocked():
    out = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True,
                         text=True, check=False).stdout
    return [l for l in out.splitlines() if f"--dport {PORT}" in l and "DROP" in l]


def show():
    root = RTSRoot()
    for so in sorted(root.storage_objects, key=lambda x: x.name):
        print(f"backstore {so.plugin}/{so.name} {so.udev_path} "
              f"size={so.size} wwn={so.wwn}")
    for t in root.targets:
        for tpg in t.tpgs:
            portals = ",".join(sorted(f"{p.ip_address}:{p.port}"
                                      for p in tpg.network_portals))
            print(f"target {t.wwn} tpg{tpg.tag} enabled={tpg.enable} "
                  f"auth={tpg.get_attribute('authentication')} portals={portals}")
            for lun in sorted(tpg.luns, key=lambda x: x.lun):
                print(f"  lun {lun.lun} {lun.storage_object.name}")
            for acl in tpg.node_acls:
                luns = ",".join(str(n) for n in sorted(m.mapped_lun for m in acl.mapped_luns))
                chap = acl.chap_userid or "-"
                mchap = acl.chap_mutual_userid or "-"
                print(f"  acl {acl.node_wwn} luns={luns} chap={chap} "
                      f"mutual_chap={mchap}")
    for rule in blocked():
        print(f"blocked {rule}")


def _rule(op, ip):
    return subprocess.run(["iptables", op, "INPUT", "-p", "tcp", "-d", ip,
                           "--dport", str(PORT), "-j", "DROP"],
                          capture_output=True, check=False).returncode


def block_portal(ip):
    if _rule("-C", ip) != 0:
        if _rule("-I", ip) != 0:
            sys.exit(f"iptables -I failed for {ip}")


def unblock_portal(ip):
    while _rule("-C", ip) == 0:
        _rule("-D", ip)


def remove_portal(ip):
    found = False
    for tpg in tpgs():
        for np in list(tpg.network_portals):
            if np.ip_address == ip and np.port == PORT:
                np.delete()
                found = True
    if not found:
        print(f"no portal {ip}:{PORT} (already removed)")


def restore_portal(ip):
    for tpg in tpgs():
        if not any(np.ip_address == ip and np.port == PORT
                   for np in tpg.network_portals):
            NetworkPortal(tpg, ip, PORT)


def unmap_lun(n):
    for tpg in tpgs():
        for acl in tpg.node_acls:
            for m in list(acl.mapped_luns):
                if m.mapped_lun == n:
                    m.delete()
    show()


def map_lun(n):
    done = False
    for tpg in tpgs():
        luns = {lun.lun: lun for lun in tpg.luns}
        if n not in luns:
            sys.exit(f"no LUN {n} in {tpg.parent_target.wwn} tpg{tpg.tag}")
        for acl in tpg.node_acls:
            if not any(m.mapped_lun == n for m in acl.mapped_luns):
                MappedLUN(acl, n, luns[n])
            done = True
    if not done:
        sys.exit("no target/ACL: run lab-target setup first")
    show()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("action", choices=[
        "setup", "teardown", "show", "block-portal", "unblock-portal",
        "remove-portal", "restore-portal", "unmap-lun", "map-lun"])
    ap.add_argument("arg", nargs="?",
                    help="IP for *-portal, LUN number for *map-lun")
    ap.add_argument("--iqn", default=DEFAULT_IQN)
    ap.add_argument("--luns", type=int, default=2)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--portals", default="127.0.0.1,127.0.0.2")
    ap.add_argument("--chap", default=None, help="USER:SECRET (initiator auth)")
    ap.add_argument("--mutual-chap", default=None,
                    help="USER:SECRET (target auth, needs --chap)")
    a = ap.parse_args()
    if a.action not in ("setup", "teardown", "show") and a.arg is None:
        ap.error(f"{a.action} needs an argument")
    actions = {
        "setup": lambda: setup(a),
        "teardown": teardown,
        "show": show,
        "block-portal": lambda: block_portal(a.arg),
        "unblock-portal": lambda: unblock_portal(a.arg),
        "remove-portal": lambda: remove_portal(a.arg),
        "restore-portal": lambda: restore_portal(a.arg),
        "unmap-lun": lambda: unmap_lun(int(a.arg)),
        "map-lun": lambda: map_lun(int(a.arg)),
    }
    actions[a.action]()


if __name__ == "__main__":
    main()
