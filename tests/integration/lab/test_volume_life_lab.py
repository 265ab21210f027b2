"""A volume's life on the real kernel (issue 15): growth, dead targets, dead portals on re-runs, reboots.

The real modules run inside the guest (guestrun.py); every test checks the kernel itself afterwards.
"""
import time

import pytest

from test_volume_safety_lab import (P1, P2, T, disks, maps, read_sha, sessions, sh, wait_for,
                                    write_pattern)


def records(lab):
    return sh(lab, "find /etc/iscsi/nodes -type f 2>/dev/null || true").split()


# -- growth ------------------------------------------------------------------------------------------------
def test_a_lun_that_grows_online_is_resized_by_a_rerun_with_the_data_intact(lab, gm):
    lab.target("add-lun", "2", "--backstore", "iblock", "--size-mb", "32")
    vol = {"portals": [P1, P2], "iqn": [T], "lun": [2]}
    res = gm.run("iscsi_volume", vol)
    dm, name = res["device"], res["multipath_map"]
    assert res["size"] == 32 << 20
    sha = write_pattern(lab, dm)
    lab.target("grow-lun", "2", "48")
    again = gm.run("iscsi_volume", vol)
    assert again["changed"] is True and again["resized"]["old_size"] == 32 << 20, again
    assert again["resized"]["new_size"] == 48 << 20 and again["size"] == 48 << 20
    assert again["commands"] == 1  # multipathd resize map; the rescans are sysfs writes
    # kernel side: the map and both paths have the new size, the data is the same
    assert int(sh(lab, "blockdev --getsize64 %s" % dm)) == 48 << 20
    for p in again["paths"]:
        assert int(sh(lab, "blockdev --getsize64 %s" % p["device"])) == 48 << 20
    assert sh(lab, "dmsetup table %s" % name).split()[1] == str(48 * 2048)
    assert read_sha(lab, dm) == sha
    third = gm.run("iscsi_volume", vol)
    assert third["changed"] is False and third["commands"] == 0


# -- a dead target -----------------------------------------------------------------------------------------
def _dead_detach(lab, gm, vol, block):
    res = gm.run("iscsi_volume", vol)
    for ip in block:
        lab.target("block-portal", ip)
    t0 = time.monotonic()
    out = gm.race([("iscsi_volume", dict(vol, state="absent", force=True, ignore_errors=True), 0)])[0]
    took = time.monotonic() - t0
    import sys
    sys.stderr.write("[measure] force detach with %s blocked: %.1f s (changed=%s failed=%s leftovers=%s problems=%s)\n"
                     % (",".join(block), took, out.get("changed"), out.get("failed"), out.get("leftovers"),
                        out.get("problems")))
    for ip in block:
        lab.target("unblock-portal", ip)
    return res, out, took


def _nothing_left(lab):
    # once the portal is back: no session, no device, no map, no record (iscsid may need a moment)
    wait_for(lambda: sessions(lab) == {} and disks(lab) == {} and maps(lab) == {}, timeout=90,
             what="nothing of the volume to be left")
    assert records(lab) == []
    assert sh(lab, "ls /dev/disk/by-path | grep iscsi || true").strip() == ""


# lab_slow: the map case below runs the same bounded deletes of dead paths (and the flush) in the default run
@pytest.mark.lab_slow
def test_force_detach_of_a_single_path_volume_whose_target_is_gone_is_bounded(lab, gm, record_property):
    res, out, took = _dead_detach(lab, gm, {"portals": [P1], "iqn": [T], "lun": [1], "multipath": "off"},
                                  ["127.0.0.1"])
    record_property("dead_detach_single_s", round(took, 1))
    assert not out.get("failed") or out.get("leftovers") is not None, out
    assert took <= 30 + 8, (took, out)   # 30 s on the lab, plus the guest driver's own start-up
    _nothing_left(lab)


def test_force_detach_of_a_map_whose_paths_are_all_gone_is_bounded(lab, gm, record_property):
    res, out, took = _dead_detach(lab, gm, {"portals": [P1, P2], "iqn": [T], "lun": [0]},
                                  ["127.0.0.1", "127.0.0.2"])
    record_property("dead_detach_map_s", round(took, 1))
    assert took <= 30 + 8, (took, out)
    _nothing_left(lab)


# -- a dead portal on re-runs -----------------------------------------------------------------------------
# lab_slow: test_one_path_down_during_attach runs an attach with a black-holed portal on the lab in the default run;
# the re-runs that report no change are test_volume_life.py's on the simulator
@pytest.mark.lab_slow
def test_reruns_with_a_blocked_portal_report_no_change(lab, gm):
    lab.target("block-portal", "127.0.0.2")
    vol = {"portals": [P1, P2], "iqn": [T], "lun": [0]}
    first = gm.run("iscsi_volume", vol)
    assert first["changed"] is True and [f["portal"] for f in first["failed_paths"]] == [P2]
    state = (sessions(lab), sorted(disks(lab)), maps(lab), sorted(records(lab)))
    for _round in (2, 3):
        again = gm.run("iscsi_volume", vol)
        assert again["changed"] is False, again
        assert [f["portal"] for f in again["failed_paths"]] == [P2]
        assert (sessions(lab), sorted(disks(lab)), maps(lab), sorted(records(lab))) == state
    lab.target("unblock-portal", "127.0.0.2")
    healed = gm.run("iscsi_volume", vol)
    assert healed["changed"] is True and len(healed["paths"]) == 2 and healed["failed_paths"] == []
    assert len(maps(lab)[healed["multipath_map"]]) == 2


# -- a cold reboot -----------------------------------------------------------------------------------------
def test_an_automatic_attach_comes_back_after_a_cold_reboot_with_nothing_run(lab, gm):
    vol = {"portals": [P1, P2], "iqn": [T], "lun": [0], "startup": "automatic"}
    res = gm.run("iscsi_volume", vol)
    wwid, name = res["wwid"], res["multipath_map"]
    sha = write_pattern(lab, res["device"])
    sh(lab, "sync")
    lab.reboot()
    # nothing of ours ran after the boot: iscsid logged in (node.startup automatic), the LUN was scanned,
    # multipathd built the map, udev made the links
    wait_for(lambda: len(sessions(lab)) == 2, timeout=180, what="both sessions to come back")
    wait_for(lambda: len(maps(lab).get(name, [])) == 2, timeout=120, what="the map with both paths")
    assert sorted(sessions(lab).values()) == sorted([P1, P2])
    wait_for(lambda: sh(lab, "readlink -f /dev/disk/by-id/dm-uuid-mpath-%s || true" % wwid).strip().startswith(
        "/dev/dm-"), timeout=60, what="udev's by-id link of the map")
    assert read_sha(lab, "/dev/disk/by-id/dm-uuid-mpath-%s" % wwid) == sha
    # boot-friendly settings were persisted, not the attach-time bounds
    rec = sh(lab, "cat $(find /etc/iscsi/nodes -type f | head -1)")
    assert "node.conn[0].timeo.login_timeout = 5" not in rec, rec
    # and the attach finds it all attached: no change, no command
    again = gm.run("iscsi_volume", vol)
    assert again["changed"] is False and again["commands"] == 0 and again["wwid"] == wwid
