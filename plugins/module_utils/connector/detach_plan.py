# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The plan of a detach: what will be removed and what is kept, and why (sysfs only, no command).

A device belongs to the volume when it (or the map it is a path of) serves the volume's WWID.  A device is
identified by its sysfs directory (``.../hostH/sessionS/targetH:C:T/H:C:T:L``): session ids are never reused by the
kernel, so a new device that got the same ``sdX`` name or H:C:T:L after a re-login is never taken for the old one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .hostfs import HostFS

from . import scsi, validate
from .errors import VolumeMismatch
from .volume import path_objects


class DeviceRef(object):
    """One SCSI device (LUN path) the plan looks at, with its session and its multipath map."""

    __slots__ = ("dev", "session", "map", "path")

    def __init__(self, dev, session, map_, path):
        self.dev = dev
        self.session = session
        self.map = map_
        self.path = path

    @property
    def ident(self):
        return self.dev.path

    @property
    def label(self):
        return "%s (%s, %s)" % (self.dev.dev or "no block device", self.dev.hctl, self.session.portal)


class DetachPlan(object):
    """What a detach removes and keeps, and why."""

    def __init__(self, wwid=None):
        self.wwid = wwid
        self.remove = []          # [DeviceRef] devices to delete
        self.paths_out = []       # [DeviceRef] of those, paths taken out of a map that stays
        self.flush_maps = []      # [DmMap] maps that lose every path
        self.kept_maps = []       # [(DmMap, [names of the paths that stay])]
        self.kept_devices = []    # [(DeviceRef, reason)]
        self.logout = []          # [Session]
        self.kept_sessions = []   # [(Session, reason)]
        self.node_records = []    # [Path]

    def empty(self) -> bool:
        return not (self.remove or self.flush_maps or self.logout or self.node_records)

    def standalone(self):
        """Devices that are in no map: each gets its own busy check and buffer flush."""
        return [ref for ref in self.remove if ref.map is None]

    def to_dict(self) -> dict:
        return {
            "wwid": self.wwid,
            "maps": [dm_map.name for dm_map in self.flush_maps],
            "devices": [ref.dev.dev or ref.dev.hctl for ref in self.remove],
            "paths_out_of_map": ["%s from %s" % (ref.dev.dev, ref.map.name) for ref in self.paths_out],
            "logout": ["%s %s" % (session.portal, session.iqn) for session in self.logout],
            "node_records": [str(path.portal) + " " + path.iqn for path in self.node_records],
            "kept_maps": ["%s (paths that stay: %s)" % (dm_map.name, ", ".join(names)) for dm_map, names in self.kept_maps],
            "kept_devices": ["%s: %s" % (ref.label, why) for ref, why in self.kept_devices],
            "kept_sessions": ["%s %s (%s)" % (session.portal, session.iqn, why) for session, why in self.kept_sessions],
        }


# -- planning --------------------------------------------------------------------------------------
def _wwids_of(ref):
    out = []
    if ref.dev.wwid:
        out.append(ref.dev.wwid)
    if ref.map is not None and ref.map.wwid and ref.map.wwid not in out:
        out.append(ref.map.wwid)
    return out


def _claimed_wwid(ref):
    """The volume a device serves: its map's WWID when it is a path of a map, else its own."""
    return ref.map.wwid if ref.map is not None else ref.dev.wwid


def _disagreement(refs):
    lines = []
    for ref in refs:
        txt = "%s reports %s" % (ref.label, ref.dev.wwid or "no WWID")
        if ref.map is not None:
            txt += " and is a path of map %s (%s)" % (ref.map.name, ref.map.wwid)
        lines.append(txt)
    return "; ".join(lines)


def _candidates(fs, paths, iface, sessions, session_only, kernel_lun=None):
    """(path, session) pairs of the volume (each session once) and its devices, from volume.path_objects()."""
    matched = []
    refs = []
    lun_of = kernel_lun if kernel_lun is not None else (lambda path, _session, _devs=None: path.lun)
    for found in path_objects(fs, paths, iface, lun_of, sessions=sessions, devices=not session_only, others=False):
        if found.session not in [item for _p, item in matched]:
            matched.append((found.path, found.session))
        for device in found.devices:
            dm_map = scsi.multipath_of(fs, device.name) if device.name else None
            if device.path not in [ref.ident for ref in refs]:
                refs.append(DeviceRef(device, found.session, dm_map, found.path))
    return matched, refs


def plan_detach(fs: HostFS, paths: list, iface: str = "default", wwid: str | None = None, session_only: bool = False,
                node_exists: Callable | None = None, kernel_lun: Callable | None = None) -> DetachPlan:
    """Plan the detach of the volume reached through ``paths`` (sysfs only, no command runs).

    ``wwid`` is the volume's expected WWID (normalised): devices that serve another WWID are kept.
    Without it, the devices found must agree on one WWID, else :class:`VolumeMismatch` is raised and
    nothing is planned.  ``session_only`` plans only the logout of sessions that carry no device."""
    sessions = scsi.iscsi_sessions(fs)
    matched, refs = _candidates(fs, paths, iface, sessions, session_only, kernel_lun)
    if wwid is None:
        seen = sorted(set(w for ref in refs for w in _wwids_of(ref)))
        if len(seen) > 1:
            raise VolumeMismatch(
                "the paths of this volume disagree on its WWID: %s; nothing was changed" % _disagreement(refs),
                hint="the array may have mapped another volume at this LUN number: give the WWID of the volume "
                     "to detach (wwid) so that only its paths are removed",
                wwids=seen, devices=[ref.dev.to_dict() for ref in refs])
        wwid = seen[0] if seen else None
    plan = DetachPlan(wwid)
    for ref in refs:
        have = _claimed_wwid(ref)
        if wwid is None or have == wwid:
            plan.remove.append(ref)
        elif ref.map is not None:
            why = "a path of map %s, which serves WWID %s, not %s" % (ref.map.name, ref.map.wwid, wwid)
            plan.kept_devices.append((ref, why))
        else:
            plan.kept_devices.append((ref, "reports WWID %s, not %s" % (ref.dev.wwid or "(none)", wwid)))
    _plan_maps(fs, plan)
    _plan_sessions(fs, plan, matched)
    _plan_nodes(plan, paths, matched, node_exists)
    return plan


def _plan_maps(fs, plan):
    by_map = {}
    for ref in plan.remove:
        if ref.map is not None:
            by_map.setdefault(ref.map.dm, []).append(ref)
    for dm in sorted(by_map):
        refs = by_map[dm]
        dm_map = refs[0].map
        going = set(ref.dev.name for ref in refs)
        staying = [session for session in dm_map.slaves if session not in going]
        if staying:
            plan.paths_out.extend(refs)
            plan.kept_maps.append((dm_map, staying))
        else:
            plan.flush_maps.append(dm_map)
    if plan.wwid:
        # a map of this volume that lost every path (left open, or multipathd was down) goes too
        for dm_map in scsi.dm_maps(fs):
            if dm_map.wwid == plan.wwid and not dm_map.slaves and dm_map.dm not in [item.dm for item in plan.flush_maps]:
                plan.flush_maps.append(dm_map)


def _plan_sessions(fs, plan, matched):
    going = set(ref.ident for ref in plan.remove)
    for _p, session in matched:
        if session in plan.logout or session in [k for k, _w in plan.kept_sessions]:
            continue
        rest = [device for device in scsi.session_devices(fs, session, with_details=False) if device.path not in going]
        if rest:
            plan.kept_sessions.append((session, "carries %s" % ", ".join(
                "LUN %d (%s)" % (device.lun, device.dev or device.hctl) for device in rest)))
        else:
            plan.logout.append(session)


def _plan_nodes(plan, paths, matched, node_exists):
    """Node records of the sessions that are logged out, and of requested paths that have no session: only
    those that ``node_exists`` says the collection created (its ledger, records.py) for that exact target, portal
    and iface.  An admin's record stays, whatever the detach logs out."""
    from .volume import Path
    if node_exists is None:
        return
    keys = []
    for path, session in matched:
        if session in plan.logout:
            node_path = Path(validate.portal(session.portal), session.iqn, path.lun)
            if node_path.key() not in keys and node_exists(node_path):
                keys.append(node_path.key())
                plan.node_records.append(node_path)
    for path in paths:
        if path.portal is None or path.key() in keys:
            continue
        if any(q is path and session not in plan.logout for q, session in matched):
            continue  # a session of this path stays: so does its record
        if node_exists(path):
            keys.append(path.key())
            plan.node_records.append(path)
