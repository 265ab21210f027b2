"""Minimal cases the ownership fuzzer (test_ownership_fuzz.py) found, as plain tests on the simulated host.

Each test names the invariant it breaks. A test marked xfail(strict) is a bug not fixed yet: when it is fixed, the
test passes, strict xfail turns that into a failure, and whoever fixed it removes the mark here and the matching tag
from ``KNOWN_BUGS`` in test_ownership_fuzz.py.
"""
from __future__ import annotations

import os
import time

import pytest

from connector import iscsi
from connector.errors import BrickError

TA = "iqn.2003-01.org.example.fuzz:a"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def conn(host, **kw):
    kw.setdefault("device_wait", 1.0)
    kw.setdefault("multipath_wait", 1.0)
    kw.setdefault("login_timeout", 1)
    return iscsi.Connector(host.fs, host.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), **kw)


def paths(portals, lun=0, iqn=TA):
    return iscsi.build_paths(portals, [iqn], [lun])


def record_files(host, iqn=TA):
    """{path: bytes} of every node record file of ``iqn`` (either layout open-iscsi writes)."""
    base = os.path.join(host.root, "etc/iscsi/nodes", iqn)
    out = {}
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as fh:
                out[full[len(host.root):]] = fh.read()
    return out


def admin_record(host, portal, *settings):
    """The admin's static record (``iscsiadm -m node -o new``), then ``-o update`` of ``settings`` (name, value)."""
    rc, _out, err = host.run("iscsiadm", "-m", "node", "-o", "new", "-T", TA, "-p", portal)
    assert rc == 0, err
    if settings:
        argv = ["-m", "node", "-o", "update", "-T", TA, "-p", portal]
        for name, value in settings:
            argv += ["-n", name, "-v", value]
        rc, _out, err = host.run("iscsiadm", *argv)
        assert rc == 0, err


# -- invariant "check mode's changed equals the real run's" ------------------------------------------------------
def test_check_mode_of_a_re_run_with_a_dark_portal_predicts_the_real_run(host, tmp_path):
    """Issue 21 item 13: check mode said 'would attach' a portal that is dark (changed: true), the real re-run changed
    nothing.  With the failure log the modules always keep, check mode knows the portal failed last time."""
    log = str(tmp_path / "failed-portals.json")
    host.add_target(TA, portals=[P1, P2], luns={0: 64})
    host.set_fault("portal_down", {P1: "refuse"})
    first = conn(host, failure_log=log).connect(paths([P2, P1]))
    assert first["failed_paths"]
    predicted = conn(host, failure_log=log).connect(paths([P2, P1]), check_mode=True)
    before = host.snapshot()
    real = conn(host, failure_log=log).connect(paths([P2, P1]))
    assert real["changed"] is (host.snapshot() != before)
    assert predicted["changed"] is real["changed"], (predicted, real)


# -- invariant "changed equals the host differs" -------------------------------------------------------------------
def test_a_re_run_after_a_same_size_remap_does_not_hide_the_change(host):
    """A re-run's identity rescan after a same-size re-map rewrites the device's device/wwid (the kernel now shows
    another volume): the attach reported changed: false with the new WWID, as if nothing happened; now it is a
    change, with a warning and ``remapped``."""
    host.add_target(TA, portals=[P1], luns={0: 64})
    first = conn(host).connect(paths([P1]))
    new = host.remap_lun(TA, 0)  # same size: no uevent, only device/wwid changes at the next rescan
    before = host.snapshot()
    try:
        again = conn(host).connect(paths([P1]))
    except BrickError:
        return  # refusing a LUN that now serves another volume is an honest answer
    assert again["wwid"] == new["wwid"] != first["wwid"]
    assert again["changed"] is (host.snapshot() != before), host.diff(before, host.snapshot())
    assert again["remapped"] == [{"device": first["device"], "old_wwid": first["wwid"], "new_wwid": new["wwid"]}]


# -- invariant "nothing of another volume or of the admin changed" ---------------------------------------------------
def _only_lun0(host):
    return sorted((d["iqn"], d["lun"]) for d in host.disks().values())


@pytest.mark.xfail(strict=True, reason="an attach of LUN 0 that logs in through the admin's record (open-iscsi's "
                                       "default node.session.scan = automatic) makes every LUN of the target appear: "
                                       "the unwanted devices of seed 004")
def test_an_attach_through_the_admins_record_brings_only_its_lun(host):
    host.add_target(TA, portals=[P1], luns={0: 64, 1: 32, 2: 16})
    admin_record(host, P1, ("node.startup", "manual"))
    conn(host).connect(paths([P1]))
    assert _only_lun0(host) == [(TA, 0)]


def test_an_attach_leaves_the_admins_record_as_it_was(host):
    host.add_target(TA, portals=[P1], luns={0: 64})
    admin_record(host, P1, ("node.startup", "manual"), ("node.conn[0].timeo.login_timeout", "40"),
                 ("node.session.scan", "manual"))
    made = record_files(host)
    conn(host).connect(paths([P1]))
    assert record_files(host) == made


# -- invariant "changed equals the host differs", and records the collection says it made -------------------------
def _records_state(host):
    import json
    path = os.path.join(host.root, "var/lib/brick-storage/iscsi-records.json")
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        return json.load(fh).get("nodes", [])


def _dark_new_portal(host):
    host.add_target(TA, portals=[P1, P2], luns={0: 64, 1: 32})
    conn(host).connect(paths([P1], lun=1))
    host.set_fault("portal_down", {P2: "blackhole"})


def test_a_failed_login_leaves_no_record_listed_as_ours(host):
    """An attach whose login on a new portal fails deletes the record it made and its ledger entry: an admin's later
    record at that place must not count as the collection's (records.Ledger.drop compared the live entries with
    themselves and never wrote)."""
    _dark_new_portal(host)
    res = conn(host).connect(paths([P2, P1], lun=1))
    assert res["failed_paths"]
    for entry in _records_state(host):
        assert os.path.exists(host.fs.path(entry["file"])), entry


@pytest.mark.xfail(strict=True, reason="check mode does not rescan: after the array re-mapped the LUN (another size) it "
                                       "says changed: false, and the real re-run rescans, takes the new volume "
                                       "(new WWID, size, by-id links) and says changed: true")
def test_check_mode_of_a_re_run_after_a_remap_predicts_the_real_run(host):
    host.add_target(TA, portals=[P1], luns={0: 64})
    conn(host).connect(paths([P1]))
    host.remap_lun(TA, 0, size_mb=72)
    predicted = conn(host).connect(paths([P1]), check_mode=True)
    try:
        real = conn(host).connect(paths([P1]))
    except BrickError:
        return  # refusing the LUN that now serves another volume: check mode's "no change" is then fine
    assert predicted["changed"] is real["changed"], (predicted, real)
