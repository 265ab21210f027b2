"""No secret on any command line, and nothing of the admin's touched, proven on the real kernel (issue 14).

A watcher in the guest reads every /proc/*/cmdline (and /proc/*/environ) in a tight loop while the real modules
(guestrun.py: the same code Ansible runs) attach, re-run and detach volumes with CHAP, mutual CHAP and discovery
CHAP against the LIO target (which enforces them: a login with the wrong secret is refused, so a login that works
used the secret the module wrote into the record).  It must find no secret, ever.  The secrets reach the guest
only through files and stdin, never through an ssh command line.

``BRICK_SECRETS_LAB_TREE=/path/to/an/old/checkout`` installs the modules of another tree instead of this one
(the lab fixture's LAB_DIR/LAB_SSH_PORT apply as usual): run against the commit before issue 14, the watcher
finds the secrets and the admin's discovery record is gone.
"""
import json
import os
import shlex

import pytest

import guestrun
from guestrun import GuestModules

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
MP = {"portals": [P1, P2], "iqn": [T], "lun": [0]}
SINGLE = {"portals": [P1], "iqn": [T], "lun": [1], "multipath": "off"}
CHAP = ("brick-user", "Lab-chap-S3cret-1")
MUTUAL = ("lab-target", "Lab-mutual-S3cret-2")
DISC = ("brick-disc", "Lab-disc-S3cret-3")
ADMIN = ("admin-disc", "Admins-own-S3cret-4")
HOLDER = "--password=Someone-elses-S3cret-5"

WATCHER = r'''
import json, os, sys, time
secrets = [s.encode() for s in open(sys.argv[1]).read().split("\n") if s]
out, stop = sys.argv[2], sys.argv[3]
me = str(os.getpid())
hits, scans, seen = [], 0, set()
def scan():
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        for what in ("cmdline", "environ"):
            try:
                fd = os.open("/proc/%s/%s" % (pid, what), os.O_RDONLY)
                try:
                    data = os.read(fd, 65536)
                finally:
                    os.close(fd)
            except OSError:
                continue
            for i, s in enumerate(secrets):
                if s in data:
                    try:
                        comm = open("/proc/%s/comm" % pid).read().strip()
                    except OSError:
                        comm = "?"
                    shown = data.replace(s, b"<SECRET%d>" % i).replace(b"\0", b" ").decode("utf-8", "replace")
                    hits.append({"pid": int(pid), "comm": comm, "secret": i, "in": what, "text": shown[:300]})
                    seen.add(pid)
            if what == "cmdline" and len(data) > 0 and b"iscsiadm" in data.split(b"\0")[0]:
                seen.add("iscsiadm:" + pid)
open(out + ".ready", "w").close()
while not os.path.exists(stop):
    scan()
    scans += 1
json.dump({"hits": hits, "scans": scans, "iscsiadm_seen": len([x for x in seen if x.startswith("iscsiadm:")])},
          open(out, "w"))
'''


def sh(lab, cmd, timeout=120, ok=(0,), input=None):
    rc, out, err = lab.ssh(cmd, timeout=timeout, input=input)
    assert rc in ok, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out


class Watcher(object):
    """The /proc watcher in the guest; the secrets go to it through stdin into a 0600 file."""

    def __init__(self, lab, secrets):
        self.lab = lab
        sh(lab, "umask 077; cat > /root/brick-watch.py", input=WATCHER)
        sh(lab, "umask 077; cat > /root/brick-watch.secrets", input="\n".join(secrets) + "\n")

    def __enter__(self):
        sh(self.lab, "rm -f /root/brick-watch.out* /root/brick-watch.stop; "
                     "(nohup python3 /root/brick-watch.py /root/brick-watch.secrets /root/brick-watch.out "
                     "/root/brick-watch.stop >/dev/null 2>&1 &); "
                     "for i in $(seq 100); do [ -e /root/brick-watch.out.ready ] && break; sleep 0.1; done; "
                     "test -e /root/brick-watch.out.ready")
        return self

    def __exit__(self, *exc):
        sh(self.lab, "touch /root/brick-watch.stop; for i in $(seq 300); do [ -e /root/brick-watch.out ] && break; "
                     "sleep 0.1; done")
        self.result = r = json.loads(sh(self.lab, "cat /root/brick-watch.out"))
        sh(self.lab, "rm -f /root/brick-watch.secrets /root/brick-watch.out* /root/brick-watch.stop")
        print("\nwatcher: %d scans of /proc, %d iscsiadm processes seen, %d hits%s" % (
            r["scans"], r["iscsiadm_seen"], len(r["hits"]),
            (": " + "; ".join("pid %(pid)s %(comm)s %(in)s: %(text)s" % h for h in r["hits"][:3])) if r["hits"]
            else ""))
        return False

    def check(self):
        r = self.result
        assert r["scans"] > 50 and r["iscsiadm_seen"] > 0, r
        assert r["hits"] == [], "secrets seen in /proc: %s" % json.dumps(r["hits"][:5], indent=1)


def assert_clean(lab):
    assert sh(lab, "ls /sys/class/iscsi_session").split() == []
    assert sh(lab, "ls /sys/block | grep '^sd' || true").split() == []
    assert sh(lab, "dmsetup ls --target multipath 2>/dev/null | grep -v 'No devices' || true").strip() == ""
    assert sh(lab, "ls -A /etc/iscsi/nodes 2>/dev/null || true").strip() == ""
    # (not /tmp: guestrun's driver keeps each module's arguments there, as Ansible keeps them in its own
    # temporary directory)
    assert sh(lab, "grep -rl S3cret /etc/iscsi /run /var/lib/iscsi /var/log 2>/dev/null || true").strip() == ""


def record_modes(lab):
    return sh(lab, "find /etc/iscsi/nodes -type f -exec stat -c %a {} + 2>/dev/null || true").split()


@pytest.fixture(scope="module")
def guest(lab, lab_ready):
    tree = os.environ.get("BRICK_SECRETS_LAB_TREE")
    saved = guestrun.REPO
    if tree:
        guestrun.REPO = tree  # GuestModules installs guestrun.REPO's plugins (again after each reset)
    yield GuestModules(lab)
    guestrun.REPO = saved


def dirty(lab):
    """Anything left of an earlier test: sessions, SCSI disks, node or discovery records."""
    return sh(lab, "ls /sys/class/iscsi_session; ls -A /etc/iscsi/nodes /etc/iscsi/send_targets 2>/dev/null | "
                   "grep -v '^/' ; ls /sys/block | grep '^sd' || true").split() != []


@pytest.fixture
def gm(lab, guest):
    """The guest modules on a clean guest: a test that failed half way is followed by a reset."""
    if dirty(lab):
        lab.reset()
        guest.installed = False
    return guest


def setup_target(lab, *args):
    # the fixture's own command line carries the secrets: it runs before any watcher starts
    lab.target("setup", *args)


# -- session CHAP ---------------------------------------------------------------------------------------------
def test_chap_multipath_attach_rerun_detach_no_secret_anywhere(lab, gm):
    setup_target(lab, "--chap", "%s:%s" % CHAP)
    chap = dict(MP, chap_username=CHAP[0], chap_password=CHAP[1])
    w = Watcher(lab, [CHAP[1]])
    with w:
        res = gm.run("iscsi_volume", chap)
        assert res["multipath"] and len(res["paths"]) == 2
        assert res["commands"] == 6  # as without CHAP: 2 x (node new, node update, login)
        assert set(record_modes(lab)) == {"600"}
        again = gm.run("iscsi_volume", chap)
        assert again["changed"] is False and again["commands"] == 0
        # a holder whose command line carries someone else's secret: named by pid, name and user only
        # (root opens the device as fd 3 for it: nobody may not open a disk itself)
        holder = sh(lab, "setpriv --reuid=nobody --regid=nogroup --clear-groups python3 -c "
                         "'import time; time.sleep(120)' %s 3<%s >/dev/null 2>&1 </dev/null & echo $!; sleep 1"
                    % (shlex.quote(HOLDER), shlex.quote(res["device"]))).split()[0]
        busy = gm.run("block_device_idle", {"device": res["device"], "timeout": 0, "use_fuser": "never"},
                      expect_fail=True)
        assert "user nobody" in busy["msg"] and "python3" in busy["msg"]
        refused = gm.run("iscsi_volume", dict(MP, state="absent"), expect_fail=True)
        assert "python3" in refused["msg"]
        for r in (busy, refused):
            assert "Someone-elses" not in json.dumps(r)
        sh(lab, "kill %d; sleep 1" % int(holder))
        gone = gm.run("iscsi_volume", dict(MP, state="absent"))
        assert gone["changed"] and gone["leftovers"] == []
    w.check()
    assert_clean(lab)
    for r in (res, again, gone):
        assert CHAP[1] not in json.dumps(r)


def test_wrong_chap_secret_is_refused_by_the_target_and_leaves_nothing(lab, gm):
    """The target really checks the secret: so a login that worked used the one the module wrote."""
    setup_target(lab, "--chap", "%s:%s" % CHAP)
    bad = gm.run("iscsi_volume", dict(SINGLE, chap_username=CHAP[0], chap_password="Wrong-S3cret-x"),
                 expect_fail=True)
    assert "authentication failed" in bad["msg"] or "login" in bad["msg"], bad["msg"]
    assert "Wrong-S3cret-x" not in json.dumps(bad)
    assert_clean(lab)


# -- mutual CHAP ----------------------------------------------------------------------------------------------
def test_mutual_chap_attach_rerun_detach(lab, gm):
    setup_target(lab, "--chap", "%s:%s" % CHAP, "--mutual-chap", "%s:%s" % MUTUAL)
    args = dict(SINGLE, chap_username=CHAP[0], chap_password=CHAP[1], chap_username_in=MUTUAL[0],
                chap_password_in=MUTUAL[1])
    w = Watcher(lab, [CHAP[1], MUTUAL[1]])
    with w:
        # the target checks the initiator, and the initiator checks the target with the mutual secret
        wrong = gm.run("iscsi_volume", dict(args, chap_password_in="Wrong-mutual-S3cret"), expect_fail=True)
        assert "Wrong-mutual" not in json.dumps(wrong)
        assert sh(lab, "ls /sys/class/iscsi_session").split() == []
        res = gm.run("iscsi_volume", args)
        assert res["device"].startswith("/dev/sd") and res["commands"] == 3
        assert set(record_modes(lab)) == {"600"}
        assert gm.run("iscsi_volume", args)["commands"] == 0
        gone = gm.run("iscsi_volume", dict(SINGLE, state="absent"))
        assert gone["leftovers"] == []
    w.check()
    assert_clean(lab)


# -- discovery CHAP, and the admin's discovery record ---------------------------------------------------------
def st_config(lab, addr):
    path = "/etc/iscsi/send_targets/%s,3260/st_config" % addr
    out = sh(lab, "test -e %s && { sha256sum < %s; stat -c '%%a %%U' %s; } || echo none" % (path, path, path))
    return out.split()


def test_discovery_chap_keeps_the_admins_record_and_leaves_none_of_its_own(lab, gm):
    setup_target(lab, "--discovery-chap", "%s:%s" % DISC)
    # the admin's own discovery record on 127.0.0.1, with the admin's credentials (before any watcher)
    base = "iscsiadm -m discoverydb -t sendtargets -p 127.0.0.1"
    sh(lab, "%s -o new && %s -o update -n discovery.sendtargets.auth.authmethod -v CHAP "
            "-n discovery.sendtargets.auth.username -v %s -n discovery.sendtargets.auth.password -v %s"
       % (base, base, ADMIN[0], ADMIN[1]))
    admin_before = st_config(lab, "127.0.0.1")
    assert admin_before[-2:] == ["600", "root"]
    assert st_config(lab, "127.0.0.2") == ["none"]
    disc = {"discovery_chap_username": DISC[0], "discovery_chap_password": DISC[1], "lun": [1],
            "multipath": "off"}
    w = Watcher(lab, [DISC[1]])
    with w:
        # through the admin's record: used for the discovery with our credentials, then put back byte for byte
        res = gm.run("iscsi_volume", dict(disc, portals=[P1]))
        assert res["sessions"][0]["iqn"] == T
        assert st_config(lab, "127.0.0.1") == admin_before
        assert gm.run("iscsi_volume", dict(disc, portals=[P1], iqn=[T]))["commands"] == 0
        gone = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [1], "state": "absent"})
        assert gone["leftovers"] == []
        # no record on 127.0.0.2: one is made for the discovery and deleted again
        res2 = gm.run("iscsi_volume", dict(disc, portals=[P2]))
        assert res2["sessions"][0]["iqn"] == T
        assert st_config(lab, "127.0.0.2") == ["none"]
        gone2 = gm.run("iscsi_volume", {"portals": [P2], "iqn": [T], "lun": [1], "state": "absent"})
        assert gone2["leftovers"] == []
    w.check()
    assert st_config(lab, "127.0.0.1") == admin_before  # the admin's record is still there, unchanged
    assert sh(lab, "ls /etc/iscsi/send_targets").split() == ["127.0.0.1,3260"]
    sh(lab, "%s -o delete" % base)
    assert_clean(lab)
