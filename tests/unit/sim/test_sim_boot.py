"""The simulator's cold reboot: what the kernel and the daemons forget, what the disks keep, and iscsid's boot
logins (``iscsiadm -m node --loginall=automatic``, as open-iscsi.service runs it) with each record's scan setting."""

from sim import SimHost

IQN = "iqn.2003-01.org.example:boot"
OTHER = "iqn.2003-01.org.example:other"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def _set(h, iqn, portal, key, value):
    rc, _out, err = h.run("iscsiadm", "-m", "node", "-T", iqn, "-p", portal, "--op", "update", "-n", key, "-v", value)
    assert rc == 0, err


def test_a_cold_reboot_forgets_the_kernel_state_and_keeps_the_records(tmp_path):
    h = SimHost(str(tmp_path / "host"))
    h.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    for portal in (P1, P2):
        h.login(IQN, portal, scan="auto")
        _set(h, IQN, portal, "node.startup", "manual")
    assert len(h.disks()) == 4 and len(h.maps()) == 2
    dm = sorted(h.maps())[0]
    h.mount("/dev/" + dm, "/mnt/v")
    h.hold_open("/dev/" + dm)
    records = {p: v for p, v in h.snapshot().items() if p.startswith("/etc/iscsi/nodes/")}
    h.reboot()   # node.startup = manual: nothing logs in
    assert h.sessions() == [] and h.disks() == {} and h.maps() == {}
    state = h.state()
    assert state["mounts"] == [] and state["procs"] == {} and state["hosts"] == [0, 1]
    assert "/mnt/v" not in h.fs.read("/proc/mounts")
    assert {p: v for p, v in h.snapshot().items() if p.startswith("/etc/iscsi/nodes/")} == records
    assert h.fs.listdir("/sys/class/iscsi_session") == [] and h.fs.listdir("/dev/disk/by-path") != []
    assert h.check() == []


def test_boot_logins_follow_node_startup_and_node_session_scan(tmp_path):
    h = SimHost(str(tmp_path / "host"))
    h.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
    h.add_target(OTHER, portals=[P1], luns={0: 16})
    first = h.login(IQN, P1, scan="manual")
    h.scan(first["host"], lun=0)
    h.login(IQN, P2, scan="auto")
    h.login(OTHER, P1, scan="auto")
    _set(h, IQN, P1, "node.startup", "automatic")
    _set(h, IQN, P2, "node.startup", "automatic")
    _set(h, OTHER, P1, "node.startup", "manual")   # no login at boot
    wwids = h.fs.read("/etc/multipath/wwids")
    h.reboot()
    sessions = h.sessions()
    assert sorted((s["iqn"], s["portal"]) for s in sessions) == [(IQN, P1), (IQN, P2)]
    assert [s["sid"] for s in sessions] == [1, 2]   # a new boot: session ids start again
    by_portal = {}
    for disk in h.disks().values():
        by_portal.setdefault(disk["portal"], []).append(disk["lun"])
    # P1's record has scan = manual: no LUN; P2's has auto: every LUN the target maps
    assert by_portal == {P2: [0, 1]}
    assert h.fs.read("/etc/multipath/wwids") == wwids
    # find_multipaths yes: a single path makes a map only when its WWID is in /etc/multipath/wwids (LUN 0 had a
    # map before the reboot; LUN 1 had one path, no map)
    lun_wwid = {d["lun"]: d["wwid"] for d in h.disks().values()}
    assert lun_wwid[0] in wwids and lun_wwid[1] not in wwids
    assert [m["wwid"] for m in h.maps().values()] == [lun_wwid[0]]
    assert h.check() == []
