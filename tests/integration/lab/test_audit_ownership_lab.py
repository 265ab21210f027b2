"""Issue 21, item 1 on the real kernel: the audit's cleanup runs on the iface of the session it is about.

One portal, two open-iscsi ifaces (``default`` and ``eth1``, which has its own initiator name), LUN 0 logged in on
both: two paths of one dm-multipath map, held open.  The target drops the eth1 initiator alone (its ACL goes), so
that session goes FAILED, then FREE once recovery_tmo is over.  The orphan_audit cleanup must take out the eth1 path
and session only: the default session, its path in the map, the open map and its data stay.
"""
import json

import pytest

from guestrun import GuestModules
from test_volume_safety_lab import maps, read_sha, sh, wait_for, write_pattern

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1 = "127.0.0.1:3260"
ETH1_NAME = "iqn.1994-05.org.example.lab:initiator-eth1"

# rtslib_fb in the guest (as tests/lab/lab-target.py uses it): an ACL for the eth1 initiator name with LUN 0, or
# its removal (LIO closes that initiator's sessions; its re-logins are refused)
ACL = r'''
import sys
from rtslib_fb import FabricModule, MappedLUN, NodeACL
tpg = next(iter([t for t in FabricModule("iscsi").targets if t.wwn == %(iqn)r][0].tpgs))
if sys.argv[1] == "add":
    acl = NodeACL(tpg, %(name)r)
    MappedLUN(acl, 0, [lun for lun in tpg.luns if lun.lun == 0][0])
else:
    [a for a in tpg.node_acls if a.node_wwn == %(name)r][0].delete()
''' % {"iqn": T, "name": ETH1_NAME}


@pytest.fixture
def gm(lab, lab_ready):
    """The guest modules, on the "ready" guest of lab_ready (one test in this module)."""
    return GuestModules(lab)


def acl(lab, op):
    rc, out, err = lab.ssh("cat > /tmp/brick-acl.py && python3 /tmp/brick-acl.py %s && lab-target save" % op,
                           input=ACL, timeout=120)
    assert rc == 0, "acl %s: %s %s" % (op, out, err)


def sessions_by_iface(lab):
    """{iface: (sid, state)} of every session (sysfs)."""
    out = sh(lab, "for s in /sys/class/iscsi_session/session*; do [ -e $s ] || continue; "
                  "echo ${s##*session} $(cat $s/ifacename) $(cat $s/state); done")
    return dict((f[1], (int(f[0]), f[2])) for f in (line.split() for line in out.splitlines()) if len(f) == 3)


def test_audit_cleanup_of_a_free_session_on_a_second_iface_keeps_the_healthy_one(lab, gm, ansible_lab, tmp_path):
    acl(lab, "add")
    sh(lab, "iscsiadm -m iface -I eth1 -o new && "
            "iscsiadm -m iface -I eth1 -o update -n iface.initiatorname -v %s" % ETH1_NAME)
    # one discovered record per iface (a static -o new record is one flat file for every iface, see item 6)
    sh(lab, "iscsiadm -m discovery -t st -p 127.0.0.1 -I default -I eth1")
    # multipath required: a single-portal attach with multipath auto makes no map (find_multipaths yes builds one
    # only later, on its own); required makes the first path a map that the eth1 path joins
    vol = {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "required"}
    first = gm.run("iscsi_volume", vol)
    res = gm.run("iscsi_volume", dict(vol, iface="eth1"))
    assert res["multipath"], res
    dm, name = res["device"], res["multipath_map"]
    assert sorted(sessions_by_iface(lab)) == ["default", "eth1"] and len(maps(lab)[name]) == 2
    healthy_sid = sessions_by_iface(lab)["default"][0]
    healthy_dev = [p["device"][5:] for p in first["paths"]]
    sha = write_pattern(lab, dm)
    holder = sh(lab, "nohup python3 -c 'import os,time; fd=os.open(\"%s\", os.O_RDONLY); time.sleep(3600)' "
                     ">/dev/null 2>&1 & echo $!" % dm).strip()
    acl(lab, "remove")  # the target drops the eth1 initiator alone
    wait_for(lambda: sessions_by_iface(lab).get("eth1", (0, ""))[1] == "FREE", timeout=120,
             what="the eth1 session to become FREE")
    assert sessions_by_iface(lab)["default"] == (healthy_sid, "LOGGED_IN")
    r = ansible_lab.playbook(
        "playbooks/orphan_audit.yml",
        extra_vars={"brick_orphan_audit_cleanup": True, "brick_hosts": "iscsi_lab",
                    "brick_orphan_audit_report_dir": str(tmp_path)},
        timeout=900)
    # first what the kernel has: the healthy session, its path in the open map and the data stay; the eth1
    # session is gone (before the fix the cleanup ran on iface default: it logged out the healthy session)
    assert sessions_by_iface(lab) == {"default": (healthy_sid, "LOGGED_IN")}, r.stdout[-4000:]
    assert maps(lab) == {name: healthy_dev}
    assert sh(lab, "kill -0 %s && echo alive" % holder).strip() == "alive"
    assert read_sha(lab, dm) == sha
    report = json.loads((tmp_path / "orphan-report.json").read_text())
    entry = report["hosts"]["lab"]
    assert r.rc == 0, r.stdout[-4000:]
    assert [a.get("iface") for a in entry["cleanup"]["actions"] if a["action"] == "iscsi_volume"] == ["eth1"], entry
    assert entry["orphans_left"] == 0, entry
    sh(lab, "kill %s" % holder)
    gm.run("iscsi_volume", dict(vol, state="absent"))
    sh(lab, "iscsiadm -m iface -I eth1 -o delete", ok=(0, 21))
