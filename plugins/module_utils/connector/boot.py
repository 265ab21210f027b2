# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The LUNs that come back after a reboot: exactly the attached ones.

open-iscsi logs in to every node record with ``node.startup = automatic`` at boot, and with
``node.session.scan = auto`` iscsid then scans every LUN the target maps to this initiator (seen on the lab: LUN 0
attached, LUN 1 came back too after a cold reboot).  When the collection's boot unit is enabled (role
brick.storage.initiator installs ``brick-storage-boot-luns.service``), the attach persists ``scan = manual`` in the
records it writes and lists the LUNs it attached in one state file per target, ``BOOT_STATE_DIR/<IQN>.json``; the
unit scans exactly those LUNs once iscsid's boot logins are up.  A detach takes its LUNs out of that file.
Without the unit nothing changes: the records keep ``scan = auto`` (every LUN of the target comes back).

State file (JSON, mode 0600, replaced atomically)::

    {"version": 1, "iqn": IQN,
     "records": [{"address": "10.0.0.1", "port": 3260, "iface": "default", "luns": [0]}]}

``luns`` are the kernel's LUN numbers (the L of H:C:T:L, what a write to ``hostH/scan`` takes).
"""

from __future__ import annotations

import json
import os

from . import scsi
from .luns import FLAT_BASE, array_lun
from .volume import address_key

BOOT_STATE_DIR = "/var/lib/brick-storage/boot-luns"
BOOT_UNIT = "brick-storage-boot-luns.service"
BOOT_UNIT_FILE = "/etc/systemd/system/" + BOOT_UNIT
# `systemctl enable` of the unit (WantedBy=remote-fs.target) makes this link
BOOT_UNIT_ENABLED = "/etc/systemd/system/remote-fs.target.wants/" + BOOT_UNIT
STATE_VERSION = 1


def boot_unit_enabled(fs) -> bool:
    """Whether the boot unit that scans the recorded LUNs is installed and enabled on the host."""
    return fs.exists(BOOT_UNIT_FILE) and fs.lexists(BOOT_UNIT_ENABLED)


def state_file(iqn: str) -> str:
    return "%s/%s.json" % (BOOT_STATE_DIR, iqn)


def read_state(fs, iqn: str) -> dict:
    """The state of target ``iqn`` (an empty one when there is none, or it cannot be read)."""
    empty = {"version": STATE_VERSION, "iqn": iqn, "records": []}
    text = fs.read_raw(state_file(iqn))
    if not text:
        return empty
    try:
        data = json.loads(text)
    except ValueError:
        return empty
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        return empty
    return data


def _write_state(fs, iqn: str, data: dict) -> None:
    path = state_file(iqn)
    records = [rec for rec in data["records"] if rec.get("luns")]
    if not records:
        fs.unlink(path)
        return
    os.makedirs(fs.path(BOOT_STATE_DIR), mode=0o700, exist_ok=True)
    data = {"version": STATE_VERSION, "iqn": iqn, "records": records}
    fs.write_private(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _same_record(rec: dict, addresses, port, iface: str) -> bool:
    return (address_key(rec.get("address")) in addresses and str(rec.get("port")) == str(port)
            and rec.get("iface", "default") == iface)


def scan_luns(kernel_lun: int, addressing: str, session_luns) -> list[int]:
    """The kernel LUN numbers the boot unit scans for one attached LUN: the one seen on the session, else the
    computed one (and its flat-space form when ``lun_addressing: auto`` could not tell the addressing yet)."""
    if kernel_lun in session_luns:
        return [kernel_lun]
    flat = kernel_lun + FLAT_BASE
    if addressing == "auto" and kernel_lun < FLAT_BASE and flat in session_luns:
        return [flat]
    if addressing == "auto" and kernel_lun < FLAT_BASE:
        return [kernel_lun, flat]
    return [kernel_lun]


def record_luns(fs, iqn: str, address: str, port, iface: str, luns) -> None:
    """Add ``luns`` (kernel numbers) to the record (address, port, iface) of target ``iqn``."""
    data = read_state(fs, iqn)
    for rec in data["records"]:
        if _same_record(rec, {address_key(address)}, port, iface):
            rec["luns"] = sorted(set(int(x) for x in rec.get("luns", [])) | set(int(x) for x in luns))
            break
    else:
        data["records"].append({"address": address, "port": int(port), "iface": iface,
                                "luns": sorted(set(int(x) for x in luns))})
    _write_state(fs, iqn, data)


def forget_luns(fs, iqn: str, addresses, port, iface: str, luns) -> bool:
    """Take ``luns`` (kernel numbers; both addressing forms of the same array LUN go) out of the records of target
    ``iqn`` on any of ``addresses``.  Returns whether the state changed.  The file goes with its last LUN."""
    if not fs.exists(state_file(iqn)):
        return False
    gone = set(array_lun(int(x)) for x in luns)
    wanted = set(address_key(a) for a in addresses if a)
    data = read_state(fs, iqn)
    changed = False
    for rec in data["records"]:
        if not _same_record(rec, wanted, port, iface):
            continue
        keep = [x for x in rec.get("luns", []) if array_lun(int(x)) not in gone]
        changed = changed or keep != rec.get("luns", [])
        rec["luns"] = keep
    if changed:
        _write_state(fs, iqn, data)
    return changed


def record_paths(conn, paths) -> None:
    """Record the LUN of each of ``paths`` (logged in, on ``conn``'s iface) for the boot unit."""
    for path in paths:
        sessions = conn.sessions_for(path)
        if not sessions or path.lun is None:
            continue
        session = sessions[0]
        session_luns = [device.lun for device in scsi.session_devices(conn.fs, session, with_details=False)]
        luns = scan_luns(conn.kernel_lun(path, session), conn.lun_addressing, session_luns)
        record_luns(conn.fs, path.iqn, path.portal.host, path.portal.port, conn.iface, luns)


def forget_devices(fs, refs) -> list[str]:
    """Take the LUNs of removed devices (DetachPlan refs: device + session) out of the boot state.  Returns the
    problems (a state file that could not be written), never raises."""
    problems = []
    for ref in refs:
        session = ref.session
        if session is None or session.iqn is None or ref.dev.lun is None:
            continue
        try:
            forget_luns(fs, session.iqn, [session.address, session.conn_address], session.port,
                        session.iface or "default", [ref.dev.lun])
        except (IOError, OSError) as e:
            problems.append("the boot state of %s still lists LUN %s (%s): the boot unit scans it again after a "
                            "reboot" % (session.iqn, ref.dev.lun, e))
    return problems
