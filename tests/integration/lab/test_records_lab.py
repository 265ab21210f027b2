"""Node records on the real open-iscsi 2.1.8 (issue 21, item 6): the layout the simulator copies, and the admin's
records, which the modules use as they are and never delete or rewrite.

Every test drives the real modules inside the guest (guestrun.py) and looks at /etc/iscsi itself.
"""
import json

from guestrun import sh

T = "iqn.2003-01.org.linux-iscsi.lab:target1"
P1, P2 = "127.0.0.1:3260", "127.0.0.2:3260"
NODES = "/etc/iscsi/nodes/" + T
FLAT = NODES + "/127.0.0.1,3260"
LEDGER = "/var/lib/brick-storage/iscsi-records.json"


def tree(lab):
    """{path: "f <sha256>" | "d"} of everything under the target's node directory."""
    out = sh(lab, "[ -d %s ] || exit 0; find %s -mindepth 1 | sort | while read p; do "
                  "if [ -d \"$p\" ]; then echo \"$p d\"; else echo \"$p f $(sha256sum < \"$p\" | cut -d' ' -f1)\"; fi; "
                  "done" % (NODES, NODES))
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def setting(lab, record, key):
    pattern = key.replace("[", "\\[").replace("]", "\\]")
    out = sh(lab, "grep -E '^%s = ' %s | tail -1 | sed 's/^[^=]*= //'" % (pattern, record))
    return out.strip() or None


def warning_texts(res):
    """The warnings of a module result: ansible-core 2.19 returns each as a WarningSummary dict
    ({"event": {"msg": ...}}), older ones as a string."""
    return [w if isinstance(w, str) else (w.get("event") or {}).get("msg") or json.dumps(w)
            for w in res.get("warnings", [])]


def sessions(lab):
    return int(sh(lab, "ls /sys/class/iscsi_session/ 2>/dev/null | wc -l").strip())


def luns(lab):
    """The LUN numbers of the SCSI devices (H:C:T:L in /sys/class/scsi_device)."""
    return sorted(name.rsplit(":", 1)[1] for name in sh(lab, "ls /sys/class/scsi_device/ 2>/dev/null || true").split())


def no_records(lab):
    sh(lab, "iscsiadm -m node -T %s -o delete >/dev/null 2>&1 || true; rm -f %s" % (T, LEDGER))


def test_op_new_writes_the_flat_file_and_overwrites_it_for_another_iface(lab, gm):
    """The layout tests/sim copies: `-o new` without a tpgt is ONE flat file per portal, for any iface."""
    no_records(lab)
    sh(lab, "iscsiadm -m iface -I brick-test -o new >/dev/null 2>&1 || true")
    try:
        sh(lab, "iscsiadm -m node -T %s -p %s -I brick-test -o new" % (T, P1))
        assert sh(lab, "stat -c %%F %s" % FLAT).strip() == "regular file"
        assert setting(lab, FLAT, "iface.iscsi_ifacename") == "brick-test"
        assert setting(lab, FLAT, "node.tpgt") == "-1"
        assert "127.0.0.1:3260,4294967295 %s" % T in sh(lab, "iscsiadm -m node")
        sh(lab, "iscsiadm -m node -T %s -p %s -I default -o new" % (T, P1))
        assert sorted(tree(lab)) == [FLAT]
        assert setting(lab, FLAT, "iface.iscsi_ifacename") == "default"
        rc, _out, _err = lab.ssh("iscsiadm -m node -T %s -p %s -I brick-test -o show" % (T, P1))
        assert rc == 21
        # the attach on brick-test now refuses: creating its record would overwrite the default iface's
        before = tree(lab)
        res = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "off",
                                      "iface": "brick-test"}, expect_fail=True)
        assert FLAT in res["msg"] and res["commands"] == 0
        assert tree(lab) == before
    finally:
        no_records(lab)
        sh(lab, "iscsiadm -m iface -I brick-test -o delete >/dev/null 2>&1 || true")


def test_detach_of_an_unattached_lun_keeps_the_admins_record(lab, gm):
    no_records(lab)
    try:
        sh(lab, "iscsiadm -m node -T %s -p %s -o new" % (T, P1))
        sh(lab, "iscsiadm -m node -T %s -p %s -o update -n node.startup -v manual "
                "-n node.conn[0].timeo.login_timeout -v 40" % (T, P1))
        before = tree(lab)
        out = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [1], "state": "absent"})
        assert out["changed"] is False and out["commands"] == 0, out
        assert tree(lab) == before
        # an attach through it uses it as it is; its detach logs out and keeps it, byte for byte
        res = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "off"})
        assert res["changed"] and any(FLAT in text for text in warning_texts(res)), json.dumps(res, indent=1)
        assert tree(lab) == before
        assert setting(lab, FLAT, "node.startup") == "manual"
        # the admin's record keeps node.session.scan = auto: the login brought LUN 1 too (the warning says so), so
        # the detach of LUN 0 keeps the session for LUN 1 (another LUN on it is not ours to take)
        gone = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "state": "absent"})
        assert gone["changed"] and gone["leftovers"] == []
        assert tree(lab) == before
        assert sessions(lab) == 1 and luns(lab) == ["1"], sh(lab, "ls /sys/class/scsi_device/")
        gone = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [1], "state": "absent"})
        assert gone["changed"] and gone["leftovers"] == []
        assert tree(lab) == before
        assert sessions(lab) == 0
    finally:
        no_records(lab)


def test_the_collections_own_record_is_in_the_ledger_and_goes_with_the_detach(lab, gm):
    no_records(lab)
    res = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "multipath": "off"})
    assert res["changed"]
    assert sorted(tree(lab)) == [FLAT]
    ledger = json.loads(sh(lab, "cat %s" % LEDGER))
    assert [entry["file"] for entry in ledger["nodes"]] == [FLAT]
    assert sh(lab, "stat -c %%a %s" % LEDGER).strip() == "600"
    gone = gm.run("iscsi_volume", {"portals": [P1], "iqn": [T], "lun": [0], "state": "absent"})
    assert gone["changed"] and gone["leftovers"] == []
    assert tree(lab) == {}
    assert sh(lab, "[ -e %s ] && echo yes || echo no" % LEDGER).strip() == "no"
