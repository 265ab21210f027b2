"""Issue 21, item 16 on the real kernel: after a cold reboot exactly the attached LUN comes back.

Seen before the fix: LUN 0 attached, after the reboot LUN 0 *and* LUN 1 had maps (the records kept
``node.session.scan = auto``). With the boot unit of role brick.storage.initiator enabled, the attach records its
LUN and gives the records ``scan = manual``; the unit scans exactly that LUN once iscsid's boot logins are up.
The lab target has LUNs 0 and 1 (the ready state); the real modules run inside the guest (guestrun.py).
"""
import json
import pathlib

from test_volume_safety_lab import P1, P2, T, disks, maps, read_sha, sessions, sh, wait_for, write_pattern

STATE = "/var/lib/brick-storage/boot-luns/%s.json" % T


def install_boot_unit(ansible_lab, tmp_path):
    """Role brick.storage.initiator on the guest, as a user runs it: it installs and enables the boot unit."""
    play = pathlib.Path(str(tmp_path)) / "initiator.json"
    play.write_text(json.dumps([{"hosts": "lab", "gather_facts": True,
                                 "roles": [{"role": "brick.storage.initiator"}]}]))
    ansible_lab.playbook(play, check=True)


def test_after_a_cold_reboot_only_the_attached_lun_comes_back_with_its_map_and_data(lab, gm, ansible_lab, tmp_path):
    install_boot_unit(ansible_lab, tmp_path)
    # (what the role and the attach left is asserted after the reboot, so that a build without the boot unit fails
    # on what the issue is about: the LUNs that come back)
    enabled = sh(lab, "systemctl is-enabled brick-storage-boot-luns.service 2>&1 || true").strip()
    vol = {"portals": [P1, P2], "iqn": [T], "lun": [0], "startup": "automatic"}
    res = gm.run("iscsi_volume", vol)
    wwid, name = res["wwid"], res["multipath_map"]
    state = sh(lab, "cat %s 2>&1 || true" % STATE)
    scan = sh(lab, "grep -h '^node.session.scan' $(find /etc/iscsi/nodes -type f)").split()
    sha = write_pattern(lab, res["device"])
    sh(lab, "sync")
    lab.reboot()
    wait_for(lambda: len(sessions(lab)) == 2, timeout=180, what="both sessions to come back")
    wait_for(lambda: len(maps(lab).get(name, [])) == 2, timeout=180, what="the map of LUN 0 with both paths")
    if enabled == "enabled":
        wait_for(lambda: sh(lab, "systemctl is-active brick-storage-boot-luns.service || true").strip() == "active",
                 timeout=180, what="the boot unit to finish")
    sh(lab, "udevadm settle -t 30", ok=(0, 1))
    assert sorted(sessions(lab).values()) == sorted([P1, P2])
    # exactly LUN 0's two paths, and one map: LUN 1 of the same target stayed out
    luns = sorted(hctl.split(":")[3] for hctl, _wwid in disks(lab).values())
    assert luns == ["0", "0"], disks(lab)
    assert list(maps(lab)) == [name]
    assert enabled == "enabled"
    assert sorted(r["luns"] for r in json.loads(state)["records"]) == [[0], [0]], state
    assert scan == ["node.session.scan", "=", "manual"] * 2
    wait_for(lambda: sh(lab, "readlink -f /dev/disk/by-id/dm-uuid-mpath-%s || true" % wwid).strip().startswith(
        "/dev/dm-"), timeout=60, what="udev's by-id link of the map")
    assert read_sha(lab, "/dev/disk/by-id/dm-uuid-mpath-%s" % wwid) == sha
    journal = sh(lab, "journalctl -b -u brick-storage-boot-luns.service --no-pager -o cat || true")
    assert '"missing": []' in journal, journal
    again = gm.run("iscsi_volume", vol)
    assert again["changed"] is False and again["wwid"] == wwid
    # the detach takes the LUN out of the boot state (the file goes with its last LUN)
    gone = gm.run("iscsi_volume", dict(vol, state="absent"))
    assert gone["changed"] is True
    assert sh(lab, "test -e %s && echo present || echo absent" % STATE).strip() == "absent"
