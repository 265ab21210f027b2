"""lab-target - LIO iSCSI target fixture for the brick.storage lab guest.

Runs IN the guest (installed as /usr/local/sbin/lab-target).

  lab-target setup [--luns N] [--size-mb M] [--portals 127.0.0.1,127.0.0.2]
                   [--chap USER:SECRET] [--mutual-chap USER:SECRET] [--iqn IQN]
                   [--discovery-chap USER:SECRET]
                   [--discovery-mutual-chap USER:SECRET]
  lab-target teardown            delete every target and lab backstore,
                                 discovery auth off
  lab-target show                every target, backstore, ACL, discovery auth
  lab-target block-portal IP     iptables DROP of tcp IP:3260 (new and existing
                                 connections: a black hole, not a refusal)
  lab-target unblock-portal IP   undo block-portal
  lab-target remove-portal IP    delete the IP:3260 network portal from the TPG
                                 (connections are refused: a dead portal)
  lab-target restore-portal IP   re-create the IP:3260 network portal
  lab-target unmap-lun N         remove LUN N from the initiator's ACL
                                 (leaves a stale path behind: orphan audits)
  lab-target map-lun N           map LUN N into the ACL again
  lab-target remap-lun N [--size-mb M] [--iqn IQN]
                                 put a NEW fileio backstore (new file, new
                                 serial, so a new WWID) behind LUN N, at the
                                 same LUN number, while sessions stay up
  lab-target add-target --iqn IQN [--luns N] [--size-mb M] [--portals ...]
                                 a further target on the same portals (own
                                 TPG, ACL and backstores)
  lab-target remove-target --iqn IQN
  lab-target add-lun N [--backstore fileio|iblock] [--size-mb M] [--iqn IQN]
                                 iblock = a loop device over a file: it can
                                 grow online (grow-lun)
  lab-target grow-lun N MB [--iqn IQN]
                                 grow an iblock LUN to MB MiB (file + losetup -c):
                                 READ CAPACITY changes, the initiator needs a
                                 rescan to see it
  lab-target save                save the config (every change does it)
  lab-target restore             re-attach iblock loop devices and restore the
                                 saved config (lab-target-restore.service, boot)

--iqn defaults to the lab target (iqn.2003-01.org.linux-iscsi.lab:target1);
unmap-lun / map-lun without --iqn act on every target that has LUN N.

One rtslib_fb process instead of many targetcli calls: under TCG every python
start costs seconds. The target exports N fileio LUNs (files under
/var/lib/lab-target) through ONE TPG listening on several portals, so a
sendtargets discovery on any portal returns every portal and dm-multipath sees
one path per portal. Access is limited by an ACL for the guest's own initiator
name (like a real array), optionally with (mutual) CHAP. Every command that
changes the config saves it to /etc/rtslib-fb-target/saveconfig.json, and
lab-target-restore.service restores it at boot.
"""
import argparse
import fcntl
import json
import os
import re
import subprocess
import sys

from rtslib_fb import (BlockStorageObject, FabricModule, FileIOStorageObject, LUN,
                       MappedLUN, NetworkPortal, NodeACL, RTSRoot, Target, TPG)

DEFAULT_IQN = "iqn.2003-01.org.linux-iscsi.lab:target1"
DATA_DIR = "/var/lib/lab-target"
LOOPS_FILE = DATA_DIR + "/loops.json"  # {"/dev/loopN": "/var/lib/lab-target/x.img"}
SAVE_FILE = "/etc/rtslib-fb-target/saveconfig.json"
PORT = 3260
MIB = 1024 * 1024
LOOP_CTL_ADD = 0x4C80
DISCOVERY_AUTH = "/sys/kernel/config/target/iscsi/discovery_auth"


def initiator_name():
    with open("/etc/iscsi/initiatorname.iscsi") as f:
        for line in f:
            if line.startswith("InitiatorName="):
                return line.split("=", 1)[1].strip()
    sys.exit("no InitiatorName in /etc/iscsi/initiatorname.iscsi")


def tpgs(iqn=None):
    for t in RTSRoot().targets:
        if iqn is None or t.wwn == iqn:
            yield from t.tpgs


def find_tpg(iqn):
    for tpg in tpgs(iqn):
        return tpg
    sys.exit(f"no target {iqn} (lab-target show)")


def split_cred(value, opt):
    if ":" not in value:
        sys.exit(f"{opt} wants USER:SECRET")
    return value.split(":", 1)


def so_base(iqn, lun):
    """Backstore name of LUN `lun`: lab0, lab1 ... for the lab target,
    lab-<last part of the IQN>-<lun> for others."""
    if iqn == DEFAULT_IQN:
        return f"lab{lun}"
    return "lab-%s-%d" % (re.sub(r"[^A-Za-z0-9_.-]", "_", iqn.rsplit(":", 1)[-1]), lun)


def wwid_of(so):
    """The SCSI WWID the initiator derives from LIO's VPD 0x83 NAA id:
    '3' + NAA 6 + IEEE OUI 001405 + the first 25 hex digits of the serial."""
    return "36001405" + re.sub(r"[^0-9a-f]", "", so.wwn.lower())[:25]


# -- loop devices for iblock backstores ------------------------------------------
def loops():
    try:
        with open(LOOPS_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_loops(d):
    os.makedirs(DATA_DIR, exist_ok=True)
    with open(LOOPS_FILE + ".tmp", "w") as f:
        json.dump(d, f, indent=1, sort_keys=True)
    os.replace(LOOPS_FILE + ".tmp", LOOPS_FILE)


def losetup(*args):
    return subprocess.run(["losetup"] + list(args), capture_output=True, text=True,
                          check=False)


def loop_attach(dev, path):
    """Attach `path` to the loop device `dev` (made if missing); idempotent."""
    cur = losetup("-n", "-O", "BACK-FILE", dev)
    if cur.returncode == 0 and cur.stdout.strip() == path:
        return
    if not os.path.exists(dev):
        subprocess.run(["modprobe", "loop"], check=False)
        if not os.path.exists(dev):
            with open("/dev/loop-control") as ctl:
                fcntl.ioctl(ctl, LOOP_CTL_ADD, int(dev[len("/dev/loop"):]))
    r = losetup(dev, path)
    if r.returncode != 0:
        raise RuntimeError(f"losetup {dev} {path}: {r.stderr.strip()}")


def loop_detach(dev):
    d = loops()
    path = d.pop(dev, None)
    losetup("-d", dev)
    write_loops(d)
    if path and path.startswith(DATA_DIR + "/"):
        try:
            os.unlink(path)
        except OSError:
            pass


def delete_so(so):
    """Delete a storage object and what lab-target made for it (file, loop)."""
    plugin, dev = so.plugin, so.udev_path
    so.delete()
    if plugin == "block" and dev in loops():
        loop_detach(dev)
    elif plugin == "fileio" and dev.startswith(DATA_DIR + "/") \
            and not re.fullmatch(r"lab\d+\.img", os.path.basename(dev)):
        # lab0.img, lab1.img ... stay (setup reuses them, as it always did)
        try:
            os.unlink(dev)
        except OSError:
            pass


def unused_name(base):
    names = {so.name for so in RTSRoot().storage_objects}
    if base not in names:
        return base
    n = 1
    while f"{base}-r{n}" in names:
        n += 1
    return f"{base}-r{n}"


def make_so(name, backstore, size_mb):
    os.makedirs(DATA_DIR, exist_ok=True)
    path = f"{DATA_DIR}/{name}.img"
    if backstore == "fileio":
        if os.path.exists(path):
            os.unlink(path)
        return FileIOStorageObject(name, path, size=size_mb * MIB, write_back=False)
    with open(path, "wb") as f:
        f.truncate(size_mb * MIB)
    r = losetup("--find", "--show", path)
    if r.returncode != 0:
        sys.exit(f"losetup --find {path}: {r.stderr.strip()}")
    dev = r.stdout.strip()
    d = loops()
    d[dev] = path
    write_loops(d)
    return BlockStorageObject(name, dev)


def map_everywhere(tpg, n, lun):
    for acl in tpg.node_acls:
        if not any(m.mapped_lun == n for m in acl.mapped_luns):
            MappedLUN(acl, n, lun)


# -- discovery authentication (iscsi fabric, global) -------------------------------
def discovery_auth(userid=None, password=None, muserid=None, mpassword=None):
    """Write LIO's SendTargets discovery auth; no userid = auth off.

    The kernel clears a credential when "NULL" is written to it."""
    if not os.path.isdir(DISCOVERY_AUTH):
        FabricModule("iscsi")  # loads iscsi_target_mod
        os.makedirs(os.path.dirname(DISCOVERY_AUTH), exist_ok=True)

    def put(attr, value):
        with open(os.path.join(DISCOVERY_AUTH, attr), "w") as f:
            f.write(value)
    put("userid", userid or "NULL")
    put("password", password or "NULL")
    put("userid_mutual", muserid or "NULL")
    put("password_mutual", mpassword or "NULL")
    put("enforce_discovery_auth", "1" if userid else "0")


def discovery_auth_state():
    if not os.path.isdir(DISCOVERY_AUTH):
        return "off"

    def get(attr):
        with open(os.path.join(DISCOVERY_AUTH, attr)) as f:
            return f.read().strip()
    if get("enforce_discovery_auth") != "1":
        return "off"
    mutual = get("userid_mutual")
    return "on userid=%s mutual=%s" % (get("userid"), mutual if mutual != "NULL" else "-")


# -- config persistence ------------------------------------------------------------
def save():
    os.makedirs(os.path.dirname(SAVE_FILE), exist_ok=True)
    RTSRoot().save_to_file(SAVE_FILE)
    subprocess.run(["sync"], check=False)


def restore():
    """At boot: loop devices first (iblock backstores point at them), then
    the rtslib config, discovery auth included."""
    for dev, path in sorted(loops().items()):
        try:
            loop_attach(dev, path)
            print(f"loop {dev} -> {path}")
        except (OSError, RuntimeError) as e:
            print(f"loop {dev}: {e}", file=sys.stderr)
    if not os.path.exists(SAVE_FILE):
        print(f"no {SAVE_FILE}: nothing to restore")
        return
    errors = RTSRoot().restore_from_file(SAVE_FILE, clear_existing=True)
    for e in errors or ():
        print(f"restore: {e}", file=sys.stderr)
    show()
    if errors:
        sys.exit(1)


# -- targets -------------------------------------------------------------------------
def make_target(a, iqn):
    os.makedirs(DATA_DIR, exist_ok=True)
    target = Target(FabricModule("iscsi"), iqn)
    tpg = TPG(target, 1)
    for p in a.portals.split(","):
        NetworkPortal(tpg, p.strip(), PORT)
    acl = NodeACL(tpg, initiator_name())
    if a.chap or a.mutual_chap:
        if not a.chap:
            sys.exit("--mutual-chap needs --chap")
        user, secret = split_cred(a.chap, "--chap")
        tpg.set_attribute("authentication", "1")
        acl.chap_userid, acl.chap_password = user, secret
        if a.mutual_chap:
            muser, msecret = split_cred(a.mutual_chap, "--mutual-chap")
            acl.chap_mutual_userid, acl.chap_mutual_password = muser, msecret
    else:
        tpg.set_attribute("authentication", "0")
    for i in range(a.luns):
        name = so_base(iqn, i)
        if iqn == DEFAULT_IQN:
            so = FileIOStorageObject(name, f"{DATA_DIR}/{name}.img",
                                     size=a.size_mb * MIB, write_back=False)
        else:
            so = make_so(unused_name(name), "fileio", a.size_mb)
        lun = LUN(tpg, i, so)
        MappedLUN(acl, i, lun)
    tpg.enable = True


def teardown(persist=True):
    root = RTSRoot()
    for t in list(root.targets):
        t.delete()
    for so in list(root.storage_objects):
        if so.name.startswith("lab"):
            delete_so(so)
    for dev in list(loops()):  # loops left by an interrupted run
        loop_detach(dev)
    discovery_auth()
    if persist:
        save()


def setup(a):
    teardown(persist=False)
    if a.discovery_mutual_chap and not a.discovery_chap:
        sys.exit("--discovery-mutual-chap needs --discovery-chap")
    make_target(a, a.iqn or DEFAULT_IQN)
    if a.discovery_chap:
        user, secret = split_cred(a.discovery_chap, "--discovery-chap")
        muser = msecret = None
        if a.discovery_mutual_chap:
            muser, msecret = split_cred(a.discovery_mutual_chap, "--discovery-mutual-chap")
        discovery_auth(user, secret, muser, msecret)
    save()
    show()


def add_target(a):
    if not a.iqn:
        sys.exit("add-target needs --iqn IQN")
    if any(t.wwn == a.iqn for t in RTSRoot().targets):
        sys.exit(f"target {a.iqn} exists already")
    make_target(a, a.iqn)
    save()
    show()


def remove_target(a):
    if not a.iqn:
        sys.exit("remove-target needs --iqn IQN")
    found = False
    for t in list(RTSRoot().targets):
        if t.wwn == a.iqn:
            sos = [lun.storage_object for tpg in t.tpgs for lun in tpg.luns]
            t.delete()
            for so in sos:
                delete_so(so)
            found = True
    if not found:
        print(f"no target {a.iqn} (already removed)")
    save()
    show()


def blocked():
    out = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True,
                         text=True, check=False).stdout
    return [l for l in out.splitlines() if f"--dport {PORT}" in l and "DROP" in l]


def show():
    root = RTSRoot()
    for so in sorted(root.storage_objects, key=lambda x: x.name):
        extra = ""
        if so.plugin == "block" and so.udev_path in loops():
            extra = f" file={loops()[so.udev_path]}"
        print(f"backstore {so.plugin}/{so.name} {so.udev_path} "
              f"size={so.size} wwn={so.wwn} wwid={wwid_of(so)}{extra}")
    for t in sorted(root.targets, key=lambda x: x.wwn):
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
    print(f"discovery_auth {discovery_auth_state()}")
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
    save()


def restore_portal(ip):
    for tpg in tpgs():
        if not any(np.ip_address == ip and np.port == PORT
                   for np in tpg.network_portals):
            NetworkPortal(tpg, ip, PORT)
    save()


def unmap_lun(n, iqn):
    for tpg in tpgs(iqn):
        for acl in tpg.node_acls:
            for m in list(acl.mapped_luns):
                if m.mapped_lun == n:
                    m.delete()
    save()
    show()


def map_lun(n, iqn):
    done = False
    for tpg in tpgs(iqn):
        luns = {lun.lun: lun for lun in tpg.luns}
        if n not in luns:
            if iqn is None and len(list(RTSRoot().targets)) > 1:
                continue
            sys.exit(f"no LUN {n} in {tpg.parent_target.wwn} tpg{tpg.tag}")
        if not tpg.node_acls:
            continue
        map_everywhere(tpg, n, luns[n])
        done = True
    if not done:
        sys.exit("no target/ACL with that LUN: run lab-target setup first")
    save()
    show()


def remap_lun(n, a):
    """Same LUN number, new backstore: the initiator's next INQUIRY sees a new
    serial and WWID. The old backstore (and its file/loop) is deleted."""
    iqn = a.iqn or DEFAULT_IQN
    tpg = find_tpg(iqn)
    luns = {lun.lun: lun for lun in tpg.luns}
    if n not in luns:
        sys.exit(f"no LUN {n} in {iqn}")
    old = luns[n].storage_object
    old_wwn, old_wwid, old_name = old.wwn, wwid_of(old), old.name
    size_mb = a.size_mb_given or max(1, old.size // MIB)
    acls = [acl for acl in tpg.node_acls
            if any(m.mapped_lun == n for m in acl.mapped_luns)]
    name = unused_name(so_base(iqn, n))  # never the old name: lab0 -> lab0-r1 -> lab0
    for acl in tpg.node_acls:
        for m in list(acl.mapped_luns):
            if m.mapped_lun == n:
                m.delete()
    luns[n].delete()
    delete_so(old)
    new = make_so(name, "fileio", size_mb)
    lun = LUN(tpg, n, new)
    for acl in acls:
        MappedLUN(acl, n, lun)
    save()
    print(f"remap-lun {n} {iqn}: old {old_name} wwn={old_wwn} wwid={old_wwid}")
    print(f"remap-lun {n} {iqn}: new {new.name} wwn={new.wwn} wwid={wwid_of(new)} "
          f"size={size_mb}MiB")


def add_lun(n, a):
    iqn = a.iqn or DEFAULT_IQN
    tpg = find_tpg(iqn)
    if any(lun.lun == n for lun in tpg.luns):
        sys.exit(f"LUN {n} exists in {iqn} (remap-lun replaces it)")
    so = make_so(unused_name(so_base(iqn, n)), a.backstore, a.size_mb)
    lun = LUN(tpg, n, so)
    map_everywhere(tpg, n, lun)
    save()
    print(f"add-lun {n} {iqn}: {so.plugin}/{so.name} {so.udev_path} "
          f"wwn={so.wwn} wwid={wwid_of(so)} size={a.size_mb}MiB")


def grow_lun(n, mb, a):
    iqn = a.iqn or DEFAULT_IQN
    tpg = find_tpg(iqn)
    luns = {lun.lun: lun for lun in tpg.luns}
    if n not in luns:
        sys.exit(f"no LUN {n} in {iqn}")
    so = luns[n].storage_object
    dev = so.udev_path
    if so.plugin != "block" or dev not in loops():
        sys.exit(f"LUN {n} is {so.plugin}/{so.name}: grow-lun needs an iblock LUN "
                 "(lab-target add-lun N --backstore iblock)")
    path = loops()[dev]
    if mb * MIB < os.path.getsize(path):
        sys.exit(f"grow-lun only grows ({path} is {os.path.getsize(path) // MIB} MiB)")
    with open(path, "r+b") as f:
        f.truncate(mb * MIB)
    r = losetup("-c", dev)
    if r.returncode != 0:
        sys.exit(f"losetup -c {dev}: {r.stderr.strip()}")
    size = subprocess.run(["blockdev", "--getsize64", dev], capture_output=True,
                          text=True, check=False).stdout.strip()
    print(f"grow-lun {n} {iqn}: {so.name} {dev} {path} now {size} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    ap.add_argument("action", choices=[
        "setup", "teardown", "show", "block-portal", "unblock-portal",
        "remove-portal", "restore-portal", "unmap-lun", "map-lun", "remap-lun",
        "add-target", "remove-target", "add-lun", "grow-lun", "save", "restore"])
    ap.add_argument("arg", nargs="?",
                    help="IP for *-portal, LUN number for *-lun")
    ap.add_argument("arg2", nargs="?", help="new size in MiB for grow-lun")
    ap.add_argument("--iqn", default=None,
                    help=f"target IQN (default {DEFAULT_IQN})")
    ap.add_argument("--luns", type=int, default=2)
    ap.add_argument("--size-mb", type=int, default=None)
    ap.add_argument("--portals", default="127.0.0.1,127.0.0.2")
    ap.add_argument("--backstore", choices=["fileio", "iblock"], default="fileio")
    ap.add_argument("--chap", default=None, help="USER:SECRET (initiator auth)")
    ap.add_argument("--mutual-chap", default=None,
                    help="USER:SECRET (target auth, needs --chap)")
    ap.add_argument("--discovery-chap", default=None,
                    help="USER:SECRET (SendTargets discovery auth)")
    ap.add_argument("--discovery-mutual-chap", default=None,
                    help="USER:SECRET (target auth in discovery, needs --discovery-chap)")
    a = ap.parse_args()
    a.size_mb_given = a.size_mb
    if a.size_mb is None:
        a.size_mb = 64
    no_arg = ("setup", "teardown", "show", "add-target", "remove-target", "save", "restore")
    if a.action not in no_arg and a.arg is None:
        ap.error(f"{a.action} needs an argument")
    if a.action == "grow-lun" and a.arg2 is None:
        ap.error("grow-lun needs LUN and MB")
    actions = {
        "setup": lambda: setup(a),
        "teardown": teardown,
        "show": show,
        "block-portal": lambda: block_portal(a.arg),
        "unblock-portal": lambda: unblock_portal(a.arg),
        "remove-portal": lambda: remove_portal(a.arg),
        "restore-portal": lambda: restore_portal(a.arg),
        "unmap-lun": lambda: unmap_lun(int(a.arg), a.iqn),
        "map-lun": lambda: map_lun(int(a.arg), a.iqn),
        "remap-lun": lambda: remap_lun(int(a.arg), a),
        "add-target": lambda: add_target(a),
        "remove-target": lambda: remove_target(a),
        "add-lun": lambda: add_lun(int(a.arg), a),
        "grow-lun": lambda: grow_lun(int(a.arg), int(a.arg2), a),
        "save": save,
        "restore": restore,
    }
    actions[a.action]()


if __name__ == "__main__":
    main()
