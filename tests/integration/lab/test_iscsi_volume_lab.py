"""brick.storage.iscsi_volume and multipath_flush on the real kernel (QEMU lab).

Attach single path / multipath, re-run, detach, one path down during attach, a path lost
while attached, device busy at detach (nothing removed), force detach, and data integrity
(write, detach, re-attach, same checksum).
"""
import json
import re
import time

import pytest

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"


def sh(lab, cmd, timeout=120, ok=(0,)):
    rc, out, err = lab.ssh(cmd, timeout=timeout)
    assert rc in ok, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out


def module(ansible_lab, name, args, check_mode=False, expect_fail=False):
    extra = ["--check"] if check_mode else []
    r = ansible_lab.adhoc("brick.storage." + name, json.dumps(args), args=extra + ["-o"], timeout=600)
    text = r.stdout
    m = re.search(r"=>\s*(\{.*\})\s*$", text, re.S) or re.search(r"\|\s*\w+!?\s*=>\s*(\{.*)", text, re.S)
    assert m, "no JSON in output:\n%s\n%s" % (text, r.stderr)
    res = json.loads(m.group(1))
    if expect_fail:
        # ad-hoc output marks a failure in the line ("lab | FAILED! => {...}"), not always in the JSON
        assert r.rc != 0 and "FAILED" in text, res
    else:
        assert r.rc == 0 and not res.get("failed"), "%s\n%s" % (json.dumps(res, indent=1), r.stderr[-2000:])
    return res


def sessions(lab):
    return int(sh(lab, "ls /sys/class/iscsi_session | wc -l").strip())


def sd_devices(lab):
    return sh(lab, "ls /sys/block | grep '^sd' || true").split()


def dm_maps(lab):
    return sh(lab, "for d in /sys/block/dm-*; do [ -e $d/dm/uuid ] && cat $d/dm/uuid; done 2>/dev/null || true").split()


def assert_clean(lab):
    assert sessions(lab) == 0
    assert sd_devices(lab) == []
    assert [u for u in dm_maps(lab) if u.startswith("mpath-")] == []
    assert sh(lab, "ls /dev/disk/by-path 2>/dev/null | grep iscsi || true").strip() == ""
    assert sh(lab, "ls /etc/iscsi/nodes 2>/dev/null || true").strip() == ""


MP = {"portals": [P1, P2], "iqn": T, "lun": 0}
SINGLE = {"portals": [P1], "iqn": T, "lun": 1, "multipath": "off"}


def test_single_path_attach_rerun_detach(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", SINGLE)
    assert res["changed"] and res["device"].startswith("/dev/sd") and not res["multipath"]
    assert res["commands"] <= 4, res["commands"]
    assert sh(lab, "test -b %s && echo ok" % res["device"]).strip() == "ok"
    again = module(ansible_lab, "iscsi_volume", SINGLE)
    assert again["changed"] is False and again["device"] == res["device"] and again["commands"] == 0
    # udev's link (the attach does not wait for it) is there by the re-run
    assert sh(lab, "readlink -f %s" % again["stable_path"]).strip() == res["device"]
    gone = module(ansible_lab, "iscsi_volume", dict(SINGLE, state="absent"))
    assert gone["changed"] and gone["leftovers"] == []
    assert_clean(lab)
    assert module(ansible_lab, "iscsi_volume", dict(SINGLE, state="absent"))["changed"] is False


def test_multipath_attach_data_integrity_detach(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", MP)
    assert res["multipath"] and res["device"].startswith("/dev/dm-")
    assert len(res["paths"]) == 2 and all(p["in_map"] for p in res["paths"])
    assert res["commands"] <= 8, res["commands"]
    dm = res["device"]
    assert len(sh(lab, "ls /sys/block/%s/slaves" % dm[5:]).split()) == 2
    # write 4 MiB of random data, remember its checksum
    sh(lab, "head -c 4194304 /dev/urandom > /root/data && dd if=/root/data of=%s bs=1M oflag=direct status=none" % dm)
    want = sh(lab, "sha256sum < /root/data").split()[0]
    again = module(ansible_lab, "iscsi_volume", MP)
    assert again["changed"] is False and again["device"] == dm and again["commands"] == 0
    gone = module(ansible_lab, "iscsi_volume", dict(MP, state="absent"))
    assert gone["leftovers"] == [] and gone["commands"] <= 6, gone
    assert_clean(lab)
    back = module(ansible_lab, "iscsi_volume", MP)
    got = sh(lab, "head -c 4194304 %s | sha256sum" % back["device"]).split()[0]
    assert got == want
    module(ansible_lab, "iscsi_volume", dict(MP, state="absent"))
    assert_clean(lab)


def test_check_mode_attach_changes_nothing(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", MP, check_mode=True)
    assert res["changed"] is True and res["commands"] == 0
    assert sessions(lab) == 0


def test_one_path_down_during_attach(lab, ansible_lab):
    lab.target("block-portal", "127.0.0.2")
    try:
        t0 = time.monotonic()
        res = module(ansible_lab, "iscsi_volume", dict(MP, login_timeout=3, login_retries=1))
        took = time.monotonic() - t0
        assert res["multipath"] and res["device"].startswith("/dev/dm-"), res
        assert len(res["paths"]) == 1
        assert [f["portal"] for f in res["failed_paths"]] == [P2], res["failed_paths"]
        assert took < 60, took
        # the dead portal left neither a session nor a node record
        assert sessions(lab) == 1
        assert "127.0.0.2" not in sh(lab, "ls -R /etc/iscsi/nodes")
    finally:
        lab.target("unblock-portal", "127.0.0.2")
    module(ansible_lab, "iscsi_volume", dict(MP, state="absent"))
    assert_clean(lab)


def test_path_lost_while_attached_then_detach(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", MP)
    lab.target("block-portal", "127.0.0.2")
    try:
        # I/O on the map still completes over the surviving path
        sh(lab, "dd if=/dev/zero of=%s bs=1M count=1 oflag=direct status=none" % res["device"], timeout=300)
        gone = module(ansible_lab, "iscsi_volume", dict(MP, state="absent"))
        assert gone["leftovers"] == []
    finally:
        lab.target("unblock-portal", "127.0.0.2")
    assert_clean(lab)


# lab_slow: test_volume_safety_lab.py holds a map open in the default run (refused without force, nothing removed;
# with force, queueing off and I/O failing at once)
@pytest.mark.lab_slow
def test_busy_at_detach_removes_nothing_then_force(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", MP)
    dm = res["device"]
    sh(lab, "nohup sleep 3600 < %s > /dev/null 2>&1 & echo $! > /root/holder.pid" % dm)
    try:
        fail = module(ansible_lab, "iscsi_volume", dict(MP, state="absent"), expect_fail=True)
        assert "in use" in fail["msg"], fail["msg"]
        assert "sleep" in fail["msg"], fail["msg"]
        assert sessions(lab) == 2 and len(sd_devices(lab)) == 2 and dm[5:] in sh(lab, "ls /sys/block")
        flush = module(ansible_lab, "multipath_flush", {"map": dm}, expect_fail=True)
        assert "in use" in flush["msg"]
    finally:
        sh(lab, "kill $(cat /root/holder.pid) || true")
    module(ansible_lab, "iscsi_volume", dict(MP, state="absent"))
    assert_clean(lab)


def test_force_detach_of_a_busy_single_path(lab, ansible_lab):
    res = module(ansible_lab, "iscsi_volume", SINGLE)
    dev = res["device"]
    sh(lab, "nohup sleep 3600 < %s > /dev/null 2>&1 & echo $! > /root/holder.pid" % dev)
    try:
        fail = module(ansible_lab, "iscsi_volume", dict(SINGLE, state="absent"), expect_fail=True)
        assert "in use" in fail["msg"] and sessions(lab) == 1
        forced = module(ansible_lab, "iscsi_volume", dict(SINGLE, state="absent", force=True))
        assert forced["changed"] and forced["leftovers"] == []
        assert forced["problems"] and "force" in " ".join(forced["problems"])
    finally:
        sh(lab, "kill $(cat /root/holder.pid) || true")
    assert_clean(lab)
