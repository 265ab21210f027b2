"""Smoke test: the lab's real kernel iSCSI + dm-multipath stack works.

Plain iscsiadm / multipath / sysfs over ssh (no collection code): both portals
answer sendtargets, login on both gives 2 sessions and one dm-multipath map
with 2 paths, a black-holed portal fails its path, unblocking brings it back,
and a clean teardown leaves no session, map or SCSI disk behind.
"""
import re
import time

import pytest

ACTIVE = re.compile(r"active\s+ready\s+running")
T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"


def sh(lab, cmd, timeout=120, ok=(0,)):
    rc, out, err = lab.ssh(cmd, timeout=timeout)
    assert rc in ok, "guest: %s\nrc=%s\nstdout:\n%s\nstderr:\n%s" % (cmd, rc, out, err)
    return out


def wait_for(what, fn, timeout, interval=1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))


class Steps:
    def __init__(self, record):
        self.t = time.monotonic()
        self.record = record

    def __call__(self, name):
        now = time.monotonic()
        print("TIMING %-24s %6.1f s" % (name, now - self.t))
        self.record("t_" + name, round(now - self.t, 1))
        self.t = now


def test_ready_state(lab):
    """The "ready" state: target on 2 portals, no sessions, multipathd up, stock iscsid.conf."""
    out = sh(lab, "lab-target show")
    assert "127.0.0.1:3260" in out and "127.0.0.2:3260" in out, out
    assert out.count("backstore fileio/lab") == 2, out
    assert out.count("target iqn.") == 1 and "discovery_auth off" in out, out
    # the config is saved, and restored by lab-target-restore.service on a cold boot
    assert sh(lab, "systemctl is-enabled lab-target-restore.service").strip() == "enabled"
    assert sh(lab, "test -s /etc/rtslib-fb-target/saveconfig.json && echo saved").strip() == "saved"
    assert sh(lab, "ls /sys/class/iscsi_session | wc -l").strip() == "0"
    assert sh(lab, "systemctl is-active multipathd").strip() == "active"
    conf = sh(lab, "multipathd show config")
    # multipath-tools 0.9 reports find_multipaths yes as "on"
    assert re.search(r'find_multipaths "?(yes|on)"?', conf), conf[:2000]
    assert re.search(r'user_friendly_names "?no"?', conf), conf[:2000]
    # open-iscsi defaults as Debian ships them (the collection bounds its own time)
    iscsid = sh(lab, "grep -E '^node.session.timeo.replacement_timeout|^node.conn\\[0\\].timeo.login_timeout' /etc/iscsi/iscsid.conf")
    assert "replacement_timeout = 120" in iscsid and "login_timeout = 15" in iscsid, iscsid
    v = lab.versions()
    assert v["kernel"] and v["iscsiadm"] and v["multipath-tools"], v


@pytest.mark.lab_slow
def test_two_portals_multipath_failover(lab, record_property):
    step = Steps(record_property)
    try:
        # -- discovery: each portal returns both portals of the one TPG
        for p in (P1, P2):
            out = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % p, timeout=90)
            assert "127.0.0.1:3260,1 %s" % T in out and "127.0.0.2:3260,1 %s" % T in out, out
        assert sh(lab, "iscsiadm -m node | grep -c %s" % T).strip() == "2"
        # this test wants a quick failover; the image keeps the stock 120 s default
        for p in (P1, P2):
            sh(lab, "iscsiadm -m node -T %s -p %s -o update "
                    "-n node.session.timeo.replacement_timeout -v 10" % (T, p))
        step("discovery")

        # -- login on both portals: 2 sessions
        for p in (P1, P2):
            sh(lab, "iscsiadm -m node -T %s -p %s --login" % (T, p), timeout=120)
        sessions = sh(lab, "for s in /sys/class/iscsi_session/session*; do "
                           "echo $(basename $s) $(cat $s/targetname) $(cat $s/state); done").split("\n")
        sessions = [s for s in sessions if s.strip()]
        assert len(sessions) == 2, sessions
        assert all(T in s and s.endswith("LOGGED_IN") for s in sessions), sessions
        step("login")

        # -- dm-multipath map for LUN 0 with 2 paths (sysfs slaves)
        sh(lab, "udevadm settle --timeout=60", timeout=90)
        bp1 = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P1, T)
        bp2 = "/dev/disk/by-path/ip-%s-iscsi-%s-lun-0" % (P2, T)
        wait_for("by-path links", lambda: lab.ssh("test -e %s -a -e %s" % (bp1, bp2))[0] == 0, 60)
        wwid = sh(lab, "/lib/udev/scsi_id --whitelisted --device=%s" % bp1).strip()
        assert wwid.startswith("36001405"), wwid
        p2dev = sh(lab, "basename $(readlink -f %s)" % bp2).strip()

        def slaves():
            rc, out, _err = lab.ssh("ls /sys/block/$(basename $(readlink -f /dev/mapper/%s))/slaves" % wwid)
            return out.split() if rc == 0 and len(out.split()) == 2 else None
        paths = wait_for("2-path map %s" % wwid, slaves, 60)
        assert p2dev in paths, (p2dev, paths)
        dm = sh(lab, "basename $(readlink -f /dev/mapper/%s)" % wwid).strip()
        assert sh(lab, "cat /sys/block/%s/dm/uuid" % dm).strip() == "mpath-" + wwid
        for sd in paths:
            assert sh(lab, "ls /sys/block/%s/holders" % sd).split() == [dm]
        ll = sh(lab, "multipath -ll %s" % wwid)
        assert len(ACTIVE.findall(ll)) == 2, ll
        step("multipath_map")

        # -- black-hole portal 2: its path fails, I/O goes through portal 1
        lab.target("block-portal", "127.0.0.2")
        sh(lab, "dd if=/dev/urandom of=/tmp/pat bs=1M count=4 status=none; "
                "dd if=/tmp/pat of=/dev/mapper/%s bs=1M oflag=direct status=none" % wwid,
           timeout=180)

        def p2_failed():
            out = lab.ssh("multipath -ll %s" % wwid)[1]
            return out if any(p2dev in line and "failed" in line for line in out.splitlines()) else None
        ll = wait_for("path %s to fail" % p2dev, p2_failed, 120, interval=2)
        assert ACTIVE.search(ll), ll  # the other path is still good
        got = sh(lab, "dd if=/dev/mapper/%s bs=1M count=4 iflag=direct status=none | sha256sum" % wwid,
                 timeout=120)
        assert got == sh(lab, "sha256sum < /tmp/pat")
        state = sh(lab, "cat /sys/block/%s/device/state" % p2dev).strip()
        assert state in ("transport-offline", "blocked"), state
        step("path_down")

        # -- unblock: iscsid reconnects, the path comes back
        lab.target("unblock-portal", "127.0.0.2")

        def p2_back():
            out = lab.ssh("multipath -ll %s" % wwid)[1]
            return any(p2dev in line and ACTIVE.search(line) for line in out.splitlines())
        wait_for("path %s to come back" % p2dev, p2_back, 150, interval=2)
        step("path_back")

        # -- clean teardown: flush maps, logout, delete node records
        sh(lab, "for i in $(seq 1 10); do multipath -F && break; sleep 1; done; "
                "dmsetup ls --target multipath", timeout=60)
        sh(lab, "iscsiadm -m node -T %s --logout" % T, timeout=120)
        sh(lab, "iscsiadm -m node -T %s -o delete" % T)
        step("logout")
        assert sh(lab, "ls /sys/class/iscsi_session | wc -l").strip() == "0"
        assert sh(lab, "iscsiadm -m session", ok=(21,)) == ""  # 21 = no active sessions
        assert "No devices found" in sh(lab, "dmsetup ls --target multipath")
        assert sh(lab, "grep -l LIO-ORG /sys/block/sd*/device/vendor 2>/dev/null | wc -l").strip() == "0"
    finally:
        lab.ssh("lab-target unblock-portal 127.0.0.2")


@pytest.mark.lab_slow
def test_removed_portal_is_refused(lab):
    """remove-portal: the portal refuses connections (unlike block-portal's black hole)."""
    lab.target("remove-portal", "127.0.0.2")
    try:
        t0 = time.monotonic()
        rc, out, err = lab.ssh("iscsiadm -m discovery -t sendtargets -p %s" % P2, timeout=120)
        dt = time.monotonic() - t0
        assert rc != 0, out
        print("discovery on a removed portal: rc=%s after %.1f s: %s" % (rc, dt, err.strip()[-300:]))
        out = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P1, timeout=90)
        assert "127.0.0.2" not in out, out
    finally:
        lab.target("restore-portal", "127.0.0.2")
    out = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P2, timeout=90)
    assert "127.0.0.2:3260,1 %s" % T in out, out


def test_ansible_reaches_lab(ansible_lab):
    """The inventory + ansible helper work (pipelining, key auth, python3 in the guest)."""
    if not ansible_lab.ansible:
        pytest.skip("ansible not installed (run scripts/setup.sh for .venv): "
                    "lab reachable by ssh only")
    r = ansible_lab.adhoc("ansible.builtin.command", "cat /etc/iscsi/initiatorname.iscsi",
                          timeout=180).check()
    assert "InitiatorName=" in r.stdout, r.stdout
    print("ansible ad-hoc command against the lab: %.1f s" % r.duration)
