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
from .matching import session_matches


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
        return [r for r in self.remove if r.map is None]

    def to_dict(self) -> dict:
        return {
            "wwid": self.wwid,
            "maps": [m.name for m in self.flush_maps],
            "devices": [r.dev.dev or r.dev.hctl for r in self.remove],
            "paths_out_of_map": ["%s from %s" % (r.dev.dev, r.map.name) for r in self.paths_out],
            "logout": ["%s %s" % (s.portal, s.iqn) for s in self.logout],
            "node_records": [str(p.portal) + " " + p.iqn for p in self.node_records],
            "kept_maps": ["%s (paths that stay: %s)" % (m.name, ", ".join(names)) for m, names in self.kept_maps],
            "kept_devices": ["%s: %s" % (r.label, why) for r, why in self.kept_devices],
            "kept_sessions": ["%s %s (%s)" % (s.portal, s.iqn, why) for s, why in self.kept_sessions],
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
    for r in refs:
        txt = "%s reports %s" % (r.label, r.dev.wwid or "no WWID")
        if r.map is not None:
            txt += " and is a path of map %s (%s)" % (r.map.name, r.map.wwid)
        lines.append(txt)
    return "; ".join(lines)


def _candidates(fs, paths, iface, sessions, session_only, kernel_lun=None):
    matched = []
    refs = []
    for p in paths:
        for s in sessions:
            if not session_matches(s, p, iface):
                continue
            if s not in [x for _p, x in matched]:
                matched.append((p, s))
            if session_only:
                continue
            kl = kernel_lun(p, s) if kernel_lun is not None else p.lun
            for d in scsi.session_devices(fs, s, lun=kl):
                m = scsi.multipath_of(fs, d.name) if d.name else None
                if d.path not in [r.ident for r in refs]:
                    refs.append(DeviceRef(d, s, m, p))
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
        seen = sorted(set(w for r in refs for w in _wwids_of(r)))
        if len(seen) > 1:
            raise VolumeMismatch(
                "the paths of this volume disagree on its WWID: %s; nothing was changed" % _disagreement(refs),
                hint="the array may have mapped another volume at this LUN number: give the WWID of the volume "
                     "to detach (wwid) so that only its paths are removed",
                wwids=seen, devices=[r.dev.to_dict() for r in refs])
        wwid = seen[0] if seen else None
    plan = DetachPlan(wwid)
    for r in refs:
        have = _claimed_wwid(r)
        if wwid is None or have == wwid:
            plan.remove.append(r)
        elif r.map is not None:
            why = "a path of map %s, which serves WWID %s, not %s" % (r.map.name, r.map.wwid, wwid)
            plan.kept_devices.append((r, why))
        else:
            plan.kept_devices.append((r, "reports WWID %s, not %s" % (r.dev.wwid or "(none)", wwid)))
    _plan_maps(fs, plan)
    _plan_sessions(fs, plan, matched)
    _plan_nodes(plan, paths, matched, node_exists)
    return plan


def _plan_maps(fs, plan):
    by_map = {}
    for r in plan.remove:
        if r.map is not None:
            by_map.setdefault(r.map.dm, []).append(r)
    for dm in sorted(by_map):
        refs = by_map[dm]
        m = refs[0].map
        going = set(r.dev.name for r in refs)
        staying = [s for s in m.slaves if s not in going]
        if staying:
            plan.paths_out.extend(refs)
            plan.kept_maps.append((m, staying))
        else:
            plan.flush_maps.append(m)
    if plan.wwid:
        # a map of this volume that lost every path (left open, or multipathd was down) goes too
        for m in scsi.dm_maps(fs):
            if m.wwid == plan.wwid and not m.slaves and m.dm not in [x.dm for x in plan.flush_maps]:
                plan.flush_maps.append(m)


def _plan_sessions(fs, plan, matched):
    going = set(r.ident for r in plan.remove)
    for _p, s in matched:
        if s in plan.logout or s in [k for k, _w in plan.kept_sessions]:
            continue
        rest = [d for d in scsi.session_devices(fs, s, with_details=False) if d.path not in going]
        if rest:
            plan.kept_sessions.append((s, "carries %s" % ", ".join(
                "LUN %d (%s)" % (d.lun, d.dev or d.hctl) for d in rest)))
        else:
            plan.logout.append(s)


def _plan_nodes(plan, paths, matched, node_exists):
    """Node records of the sessions that are logged out, and of requested paths that have no session."""
    from .iscsi import Path  # iscsi imports this module
    keys = []
    for p, s in matched:
        if s in plan.logout:
            np = Path(validate.portal(s.portal), s.iqn, p.lun)
            if np.key() not in keys:
                keys.append(np.key())
                plan.node_records.append(np)
    for p in paths:
        if p.portal is None or p.key() in keys:
            continue
        if any(q is p and s not in plan.logout for q, s in matched):
            continue  # a session of this path stays: so does its record
        if node_exists is not None and node_exists(p):
            keys.append(p.key())
            plan.node_records.append(p)
