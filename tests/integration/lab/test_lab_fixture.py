"""Self-tests of the lab's target-side fixtures (lab-target, boot.sh reboot).

Each fixture is proven with what the guest's kernel and open-iscsi really see:
a remapped LUN has a new WWID on a fresh scan, a second target logs in on the
same portal beside the first, discovery CHAP refuses discovery without
credentials, an iblock LUN grows after a rescan, and a cold reboot keeps the
target config (lab-target-restore.service).

Every test starts from "ready": the first one gets the module's reset, the
others a `boot.sh reset` of their own (a few seconds), so no test cleans up
after another.
"""
import re
import time

import pytest

T1 = "iqn.2003-01.org.linux-iscsi.lab:target1"
T2 = "iqn.2003-01.org.linux-iscsi.lab:target2"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
MIB = 1024 * 1024

_DIRTY = {"dirty": False}


@pytest.fixture(autouse=True)
def from_ready(lab):
    """Reset to "ready" unless the state is still the module's fresh one."""
    if _DIRTY["dirty"]:
        lab.reset()
    _DIRTY["dirty"] = True
    yield lab


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


def by_path(portal, iqn, lun):
    return "/dev/disk/by-path/ip-%s-iscsi-%s-lun-%d" % (portal, iqn, lun)


def disk(lab, portal, iqn, lun, timeout=90):
    """sdX of a LUN through one portal, once udev made its by-path link."""
    link = by_path(portal, iqn, lun)

    def resolve():
        rc, out, _err = lab.ssh("test -e %s && basename $(readlink -f %s)" % (link, link))
        return out.strip() if rc == 0 and out.strip().startswith("sd") else None
    return wait_for(link, resolve, timeout)


def login(lab, iqn, portal, new=True):
    """Log in on one portal. new=True makes the node record by hand; after a
    discovery the record exists already (a second `--op new` record, made
    without the discovered tpgt, would be logged in to as well: rc 15)."""
    if new:
        sh(lab, "iscsiadm -m node -T %s -p %s --op new >/dev/null" % (iqn, portal))
    sh(lab, "iscsiadm -m node -T %s -p %s --login" % (iqn, portal), timeout=120)


def new_wwid(out):
    m = re.search(r"new \S+ wwn=\S+ wwid=(3\w+)", out)
    assert m, out
    return m.group(1)


# a check of the lab itself: lab_slow, because test_volume_safety_lab.py's reused-LUN tests remap a LUN and check the new WWID
@pytest.mark.lab_slow
def test_remap_lun_gives_new_wwid(lab):
    """remap-lun: same LUN number, a new backstore; a fresh scan sees a new WWID."""
    login(lab, T1, P1)
    sd = disk(lab, P1, T1, 0)
    old = sh(lab, "/lib/udev/scsi_id --whitelisted --device=/dev/%s" % sd).strip()
    assert old.startswith("36001405"), old
    show = sh(lab, "lab-target show")
    assert "wwid=%s" % old in show, show  # lab-target's WWID = the kernel's

    out = sh(lab, "lab-target remap-lun 0")
    print(out)
    assert "old lab0 " in out and "wwid=%s" % old in out, out
    new = new_wwid(out)
    assert new != old
    show = sh(lab, "lab-target show")
    assert "lun 0 lab0-r1" in show and "backstore fileio/lab0-r1" in show, show
    assert "luns=0,1 " in show, show  # mapped again in the ACL, same LUN number

    # fresh scan: drop the old scsi device, scan the host again
    hctl = sh(lab, "basename $(readlink -f /sys/block/%s/device)" % sd).strip()
    host = hctl.split(":")[0]
    sh(lab, "echo 1 > /sys/block/%s/device/delete" % sd)
    wait_for("%s gone" % sd, lambda: lab.ssh("test -e /sys/block/%s" % sd)[0] != 0, 30)
    sh(lab, "echo '- - -' > /sys/class/scsi_host/host%s/scan" % host)
    sd2 = disk(lab, P1, T1, 0)
    assert sh(lab, "/lib/udev/scsi_id --whitelisted --device=/dev/%s" % sd2).strip() == new
    assert sh(lab, "cat /sys/block/%s/device/wwid" % sd2).strip() == "naa." + new[1:]
    # the new backstore is a new (empty) file: it reads zeroes
    assert sh(lab, "dd if=/dev/%s bs=1M count=1 iflag=direct status=none | tr -d '\\0' | wc -c"
              % sd2).strip() == "0"


# a check of the lab itself: lab_slow, because test_volume_schema_lab.py and test_lun0_detach_racing_a_lun1_attach use a second target/LUN on the same portal
@pytest.mark.lab_slow
def test_second_target_on_the_same_portal(lab):
    """add-target: a second target (own TPG, ACL, backstores) on the same portals."""
    out = sh(lab, "lab-target add-target --iqn %s --luns 1 --size-mb 32" % T2)
    assert "target %s tpg1" % T1 in out and "target %s tpg1" % T2 in out, out
    disc = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P1, timeout=90)
    for t in (T1, T2):
        for p in (P1, P2):
            assert "%s,1 %s" % (p, t) in disc, disc

    login(lab, T1, P1, new=False)
    login(lab, T2, P1, new=False)
    sessions = sh(lab, "iscsiadm -m session")
    assert "%s,1 %s" % (P1, T1) in sessions and "%s,1 %s" % (P1, T2) in sessions, sessions
    addrs = sh(lab, "cat /sys/class/iscsi_session/session*/device/connection*/"
                    "iscsi_connection/*/persistent_address | sort -u").split()
    assert addrs == ["127.0.0.1"], addrs  # both sessions on the one portal

    sd1, sd2 = disk(lab, P1, T1, 0), disk(lab, P1, T2, 0)
    assert sd1 != sd2
    assert int(sh(lab, "cat /sys/block/%s/size" % sd2)) * 512 == 32 * MIB
    w1 = sh(lab, "/lib/udev/scsi_id --whitelisted --device=/dev/%s" % sd1).strip()
    w2 = sh(lab, "/lib/udev/scsi_id --whitelisted --device=/dev/%s" % sd2).strip()
    assert w1 != w2 and "wwid=%s" % w2 in sh(lab, "lab-target show")
    for sd in (sd1, sd2):
        sh(lab, "dd if=/dev/%s of=/dev/null bs=1M count=4 iflag=direct status=none" % sd)

    # remove-target leaves the first target alone
    sh(lab, "iscsiadm -m node -T %s --logout" % T2, timeout=60)
    out = sh(lab, "lab-target remove-target --iqn %s" % T2)
    assert T2 not in out and "target %s tpg1" % T1 in out, out
    disc = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P1, timeout=90)
    assert T2 not in disc and T1 in disc, disc
    sh(lab, "dd if=/dev/%s of=/dev/null bs=1M count=1 iflag=direct status=none" % sd1)


# a check of the lab itself: lab_slow, because test_secrets_lab.py's discovery CHAP test logs in through the target's discovery CHAP
@pytest.mark.lab_slow
def test_discovery_chap(lab):
    """setup --discovery-chap: SendTargets needs the credentials; setup/teardown turn it off."""
    out = sh(lab, "lab-target setup --discovery-chap duser:dsecret12345")
    assert "discovery_auth on userid=duser mutual=-" in out, out
    db = "iscsiadm -m discoverydb -t sendtargets -p %s" % P1
    sh(lab, db + " -o new")
    rc, out, err = lab.ssh(db + " --discover", timeout=90)
    print("discovery without credentials: rc=%s %s" % (rc, err.strip()))
    assert rc != 0 and "authoriz" in err, (rc, out, err)

    upd = db + (" -o update -n discovery.sendtargets.auth.authmethod -v CHAP"
                " -n discovery.sendtargets.auth.username -v duser"
                " -n discovery.sendtargets.auth.password -v %s")
    sh(lab, upd % "wrongsecret1")
    rc, out, err = lab.ssh(db + " --discover", timeout=90)
    assert rc != 0, (rc, out, err)

    sh(lab, upd % "dsecret12345")
    out = sh(lab, db + " --discover", timeout=90)
    assert "%s,1 %s" % (P1, T1) in out and "%s,1 %s" % (P2, T1) in out, out
    # session logins are not affected by discovery CHAP
    login(lab, T1, P1, new=False)
    sh(lab, "iscsiadm -m node -T %s --logout" % T1, timeout=60)

    # mutual discovery CHAP: the initiator checks the target's credentials too
    out = sh(lab, "lab-target setup --discovery-chap duser:dsecret12345 "
                  "--discovery-mutual-chap tuser:tsecret12345")
    assert "discovery_auth on userid=duser mutual=tuser" in out, out
    sh(lab, db + " -o update -n discovery.sendtargets.auth.username_in -v tuser"
                 " -n discovery.sendtargets.auth.password_in -v tsecret12345")
    out = sh(lab, db + " --discover", timeout=90)
    assert "%s,1 %s" % (P1, T1) in out, out

    # every setup (and teardown) resets discovery auth to off
    out = sh(lab, "lab-target setup")
    assert "discovery_auth off" in out, out
    sh(lab, db + " -o delete")
    out = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P1, timeout=90)
    assert "%s,1 %s" % (P1, T1) in out, out


# a check of the lab itself: lab_slow, because test_volume_life_lab.py grows a LUN online and checks the new size
@pytest.mark.lab_slow
def test_grow_iblock_lun(lab):
    """add-lun --backstore iblock + grow-lun: the size changes after a rescan."""
    out = sh(lab, "lab-target add-lun 2 --backstore iblock --size-mb 32")
    assert re.search(r"block/lab2 /dev/loop\d+ ", out), out
    assert "luns=0,1,2 " in sh(lab, "lab-target show")
    login(lab, T1, P1)
    sd = disk(lab, P1, T1, 2)
    assert int(sh(lab, "cat /sys/block/%s/size" % sd)) == 32 * MIB // 512

    out = sh(lab, "lab-target grow-lun 2 48")
    assert "now %d bytes" % (48 * MIB) in out, out
    before = int(sh(lab, "cat /sys/block/%s/size" % sd))
    print("size before the rescan: %d sectors" % before)
    sh(lab, "echo 1 > /sys/block/%s/device/rescan" % sd)
    assert int(sh(lab, "cat /sys/block/%s/size" % sd)) == 48 * MIB // 512
    sh(lab, "dd if=/dev/%s of=/dev/null bs=1M skip=47 count=1 iflag=direct status=none" % sd)

    rc, out, _err = lab.ssh("lab-target grow-lun 0 128")  # fileio cannot grow online
    assert rc != 0 and "needs an iblock LUN" in out + _err


@pytest.mark.lab_slow
def test_reboot_keeps_target_config(lab):
    """boot.sh reboot: a cold reboot keeps the target config (saved + restored at boot)."""
    sh(lab, "lab-target add-target --iqn %s --luns 1 --size-mb 32" % T2)
    sh(lab, "lab-target add-lun 2 --backstore iblock --size-mb 32")
    sh(lab, "lab-target grow-lun 2 40")
    before = sh(lab, "lab-target show")
    login(lab, T1, P1)
    sd = disk(lab, P1, T1, 0)
    sh(lab, "dd if=/dev/urandom of=/root/pat bs=1M count=2 status=none; "
            "dd if=/root/pat of=/dev/%s bs=1M oflag=direct status=none; sync" % sd)
    boot_id = sh(lab, "cat /proc/sys/kernel/random/boot_id").strip()

    dt = lab.reboot()  # with a session logged in: the shutdown logs it out
    print("boot.sh reboot: %.1f s" % dt)
    assert sh(lab, "cat /proc/sys/kernel/random/boot_id").strip() != boot_id
    assert sh(lab, "systemctl is-active lab-target-restore").strip() == "active"
    assert sh(lab, "ls /sys/class/iscsi_session | wc -l").strip() == "0"
    after = sh(lab, "lab-target show")
    assert after == before, (before, after)

    disc = sh(lab, "iscsiadm -m discovery -t sendtargets -p %s" % P1, timeout=90)
    assert "%s,1 %s" % (P1, T1) in disc and "%s,1 %s" % (P2, T2) in disc, disc
    sh(lab, "iscsiadm -m node -T %s -p %s --login" % (T1, P1), timeout=120)
    sd = disk(lab, P1, T1, 0)
    assert sh(lab, "dd if=/dev/%s bs=1M count=2 iflag=direct status=none | sha256sum" % sd) \
        == sh(lab, "sha256sum < /root/pat")
    sd2 = disk(lab, P1, T1, 2)  # the iblock LUN, its loop device re-made at boot
    assert int(sh(lab, "cat /sys/block/%s/size" % sd2)) == 40 * MIB // 512

    # the saved "ready" state is still there
    lab.reset()
    out = sh(lab, "lab-target show")
    assert T2 not in out and "lun 2" not in out and "discovery_auth off" in out, out
    _DIRTY["dirty"] = False
