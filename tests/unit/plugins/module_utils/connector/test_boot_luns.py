"""Issue 21, item 16: after a cold reboot exactly the attached LUNs come back (simulated host).

The attach persists ``node.session.scan = manual`` and records its LUNs (connector/boot.py) when the boot unit of
role brick.storage.initiator is enabled; the unit's script (roles/initiator/files/brick_boot_luns.py) scans those
LUNs, and only those, once the boot logins are up."""

import importlib.util
import json
import os
import time

import pytest

from connector import boot, iscsi

IQN = "iqn.2003-01.org.example.array:boot"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))))
SCRIPT = os.path.join(REPO, "roles", "initiator", "files", "brick_boot_luns.py")
UNIT = os.path.join(REPO, "roles", "initiator", "templates", "brick-storage-boot-luns.service.j2")


def load_script():
    spec = importlib.util.spec_from_file_location("brick_boot_luns", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def enable_boot_unit(h):
    """What role brick.storage.initiator leaves on the host: the unit file and systemctl enable's link."""
    os.makedirs(h.fs.path(os.path.dirname(boot.BOOT_UNIT_ENABLED)), exist_ok=True)
    with open(h.fs.path(boot.BOOT_UNIT_FILE), "w") as f:
        f.write("[Unit]\n")
    os.symlink(boot.BOOT_UNIT_FILE, h.fs.path(boot.BOOT_UNIT_ENABLED))


def conn(h, **kw):
    kw.setdefault("device_wait", 2.0)
    kw.setdefault("multipath_wait", 2.0)
    kw.setdefault("login_timeout", 2)
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0):
    return iscsi.build_paths(portals, [IQN], [lun])


def boot_scan(h, timeout=5.0):
    """The boot unit's script against the simulated host: reads under its root, kernel writes through the sim."""
    return load_script().boot_scan(h.root, timeout=timeout, write=h.fs.write, sleep=lambda s: time.sleep(0.01))


def luns_on_host(h):
    return sorted((d["portal"], d["lun"]) for d in h.disks().values())


def scan_setting(h):
    settings = set()
    for top, _dirs, files in os.walk(h.fs.path("/etc/iscsi/nodes")):
        for name in files:
            with open(os.path.join(top, name)) as f:
                settings.update(line.split("=", 1)[1].strip() for line in f if line.startswith("node.session.scan"))
    return settings


@pytest.fixture
def two_luns(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    return host


def test_after_a_cold_reboot_only_the_attached_lun_comes_back_with_its_map(two_luns):
    h = two_luns
    enable_boot_unit(h)
    res = conn(h).connect(paths([P1, P2], lun=0))
    wwid = res["wwid"]
    assert luns_on_host(h) == [(P1, 0), (P2, 0)]
    h.reboot()
    # iscsid's boot logins: both sessions, no LUN scanned (the records say scan = manual)
    assert len(h.sessions(iqn=IQN)) == 2 and h.disks() == {}
    report = boot_scan(h)
    assert report["missing"] == []
    assert luns_on_host(h) == [(P1, 0), (P2, 0)]
    maps = list(h.maps().values())
    assert [m["wwid"] for m in maps] == [wwid] and len(maps[0]["paths"]) == 2
    assert h.check() == []


def test_a_single_path_attach_comes_back_alone_too(two_luns):
    h = two_luns
    enable_boot_unit(h)
    conn(h, multipath="off").connect(paths([P1], lun=1))
    h.reboot()
    assert h.disks() == {}
    boot_scan(h)
    assert luns_on_host(h) == [(P1, 1)]


def test_the_attach_records_its_luns_and_the_detach_takes_them_out(two_luns):
    h = two_luns
    enable_boot_unit(h)
    conn(h).connect(paths([P1, P2], lun=0))
    conn(h).connect(paths([P1, P2], lun=1))
    state = json.loads(h.fs.read_raw(boot.state_file(IQN)))
    assert sorted((r["address"], r["port"], r["iface"], r["luns"]) for r in state["records"]) == [
        ("10.0.0.1", 3260, "default", [0, 1]), ("10.0.0.2", 3260, "default", [0, 1])]
    assert os.stat(h.fs.path(boot.state_file(IQN))).st_mode & 0o777 == 0o600
    assert scan_setting(h) == {"manual"}
    conn(h).disconnect(paths([P1, P2], lun=1))
    state = json.loads(h.fs.read_raw(boot.state_file(IQN)))
    assert [r["luns"] for r in state["records"]] == [[0], [0]]
    h.reboot()
    boot_scan(h)
    assert luns_on_host(h) == [(P1, 0), (P2, 0)]
    conn(h).disconnect(paths([P1, P2], lun=0))
    assert not h.fs.lexists(boot.state_file(IQN))


def test_without_the_boot_unit_the_records_keep_scan_auto_and_nothing_is_recorded(two_luns):
    h = two_luns
    conn(h).connect(paths([P1, P2], lun=0))
    assert scan_setting(h) == {"auto"} and not h.fs.lexists(boot.BOOT_STATE_DIR)
    h.reboot()
    # documented: without the unit every LUN of the target comes back (open-iscsi's own behaviour)
    assert luns_on_host(h) == [(P1, 0), (P1, 1), (P2, 0), (P2, 1)]


def test_a_record_with_manual_startup_is_not_recorded(two_luns):
    h = two_luns
    enable_boot_unit(h)
    conn(h, startup="manual").connect(paths([P1, P2], lun=0))
    assert not h.fs.lexists(boot.state_file(IQN))


def test_the_boot_scan_gives_up_in_time_on_a_portal_that_never_logs_in(two_luns):
    h = two_luns
    enable_boot_unit(h)
    conn(h).connect(paths([P1, P2], lun=0))
    h.set_fault("portal_down", {P2: "refuse"})
    h.reboot()
    start = time.monotonic()
    report = boot_scan(h, timeout=0.5)
    assert time.monotonic() - start < 3
    assert report["missing"] == ["%s %s default" % (P2, IQN)]
    assert luns_on_host(h) == [(P1, 0)]


def test_the_boot_scan_script_as_the_unit_runs_it_writes_only_the_recorded_scan(tmp_path):
    """Without the simulator: a host tree with one session (host5) and a state file; the script, run as a
    process, writes "- - 3" to host5's scan file and nothing else."""
    import subprocess
    import sys
    root = tmp_path / "root"
    session = root / "sys/devices/platform/host5/session9/iscsi_session/session9"
    connection = root / "sys/devices/platform/host5/session9/connection9:0/iscsi_connection/connection9:0"
    for directory in (session, connection, root / "sys/class/iscsi_session", root / "sys/class/iscsi_connection",
                      root / "sys/devices/platform/host5/scsi_host/host5", root / "sys/class/scsi_host",
                      root / "sys/devices/platform/host6/scsi_host/host6", root / "var/lib/brick-storage/boot-luns"):
        directory.mkdir(parents=True, exist_ok=True)
    for name, value in (("targetname", IQN), ("ifacename", "default"), ("state", "LOGGED_IN")):
        (session / name).write_text(value + "\n")
    for name, value in (("persistent_address", "10.0.0.1"), ("persistent_port", "3260"), ("address", "10.0.0.1"),
                        ("port", "3260")):
        (connection / name).write_text(value + "\n")
    os.symlink("../../devices/platform/host5/session9/iscsi_session/session9", str(root / "sys/class/iscsi_session/session9"))
    os.symlink("../../devices/platform/host5/session9/connection9:0/iscsi_connection/connection9:0",
               str(root / "sys/class/iscsi_connection/connection9:0"))
    for host in (5, 6):
        (root / ("sys/devices/platform/host%d/scsi_host/host%d/scan" % (host, host))).write_text("")
        os.symlink("../../devices/platform/host%d/scsi_host/host%d" % (host, host),
                   str(root / ("sys/class/scsi_host/host%d" % host)))
    (root / "var/lib/brick-storage/boot-luns" / (IQN + ".json")).write_text(json.dumps(
        {"version": 1, "iqn": IQN, "records": [{"address": "10.0.0.1", "port": 3260, "iface": "default",
                                               "luns": [3]}]}))
    done = subprocess.run([sys.executable, SCRIPT, "--root", str(root), "--timeout", "2"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["scanned"] == ["host5 - - 3"]
    assert (root / "sys/devices/platform/host5/scsi_host/host5/scan").read_text() == "- - 3"
    assert (root / "sys/devices/platform/host6/scsi_host/host6/scan").read_text() == ""


def test_the_unit_runs_the_script_after_the_boot_logins_and_before_remote_mounts():
    with open(UNIT) as f:
        text = f.read()
    assert "After=" in text and "iscsid.service" in text and "open-iscsi.service" in text
    assert "Before=remote-fs-pre.target" in text and "WantedBy=remote-fs.target" in text
    assert "TimeoutStartSec=" in text and "Type=oneshot" in text
    assert boot.BOOT_UNIT_ENABLED.endswith("remote-fs.target.wants/" + boot.BOOT_UNIT)
