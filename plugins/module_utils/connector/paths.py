# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Volume paths and orphan paths of one host, read from sysfs and /dev only.

``gather(fs)`` answers three questions without running a single external command:

* which iSCSI sessions, LUN paths (SCSI disks) and multipath maps exist, and how they hang together;
* which paths of one given volume (portals + IQN + LUN) exist (``volume``), so that an attach can be
  verified ("all expected paths are there") and a detach as well ("nothing is left");
* which of them are *orphans*: left behind by a detach that did not finish, by a path that died, or
  not expected on this host at all (``orphans``, see orphans.py), with a cleanup plan that the orphan_audit
  role runs through the collection's data-safe modules (``cleanup``).

Everything is read once into dictionaries and cross-referenced in memory, so the cost grows linearly
with the number of LUN paths.  Layout: docs/dev/sysfs-layout.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hostfs import HostFS

import os
import re

from . import orphans as orphans_mod
from .errors import BrickError
from .orphans import (  # noqa: F401
    SESSION_OK,
    SESSION_RECOVERING,
    cleanup_plan,
    summarize,
)
from .luns import array_lun
from .matching import address_key
from .scsi import SEARCH_PATH, Session, block_names, dm_maps, iscsi_sessions, parse_bypath, session_devices, udev_wwid

BY_ID = "/dev/disk/by-id"

_SESSION_IN_PATH = re.compile(r"^(?P<dir>.*/session(?P<sid>\d+))/")


# A map path that is an NVMe namespace (nvme-tcp, -rdma, -fc, PCIe with native NVMe multipath off): its
# ``device`` is the controller, whose ``state`` is NVMe's, not SCSI's.
_NVME_NAMESPACE = re.compile(r"^nvme\d+(c\d+)?n\d+$")
NVME_LIVE = "live"
# the controller reconnects or resets: the path may come back by itself (like an iSCSI session in recovery)
NVME_RECOVERING_STATES = ("new", "connecting", "resetting")


# -- helpers ---------------------------------------------------------------------------------
def _portal_key(address, port):
    if address is None:
        return None
    try:
        return (address_key(address), int(port))
    except (TypeError, ValueError):
        return (address_key(address), port)


def _session_portal(session):
    text = session["portal"] or ""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    return _portal_key(host, port) if sep else _portal_key(text, None)


def _row_portal_key(row):
    return _session_portal({"portal": row["portal"]})


def _row_portal_keys(row):
    """Every portal key a session (or a LUN row) is known by: its persistent address, which is a host name for a
    session made with ``iscsiadm -p NAME`` (lab: persistent_address "localhost"), and the connection's address."""
    keys = set()
    if row.get("portal"):
        keys.add(_row_portal_key(row))
        if row.get("address"):
            keys.add(_portal_key(row["address"], _row_portal_key(row)[1]))
    return keys


def _link_index(fs, directory, blocks, devnodes):
    """[(name, link, target_host_path, target_name, alive)] for every link in ``directory``."""
    out = []
    # udev's links are "../../sdb" (two levels up, then a name): that case without the general path arithmetic
    up2 = os.path.dirname(os.path.dirname(directory))
    for entry in fs.listdir(directory):
        link = "%s/%s" % (directory, entry)
        target = fs.readlink(link)
        if target is None:
            continue  # not a link
        if target.startswith("../../") and "/" not in target[6:] and target[6:] not in ("", ".", ".."):
            parent, name = up2, target[6:]
            target = "%s/%s" % (up2, name)
        else:
            target = os.path.normpath(target if target.startswith("/") else os.path.join(directory, target))
            parent, name = os.path.split(target)
        if parent == "/dev":
            alive = name in devnodes and name in blocks
        else:
            alive = fs.exists(target)
        out.append((entry, link, target, name, alive))
    return out


def _path_state(dev_state, session_state):
    if dev_state == "running" and session_state in (SESSION_OK, None):
        return "active"
    return "failed"


def _devices(fs, session, names):
    """LUN paths of a session with only the details the audit needs (wwid, size).

    Holders are not listed per disk: the multipath map of a path comes from the maps' slaves."""
    out = session_devices(fs, session, with_details=False, names=names)
    for dev in out:
        dev.wwid = udev_wwid(fs.read(dev.path + "/wwid"))
        if dev.name:
            sectors = fs.read_int("%s/block/%s/size" % (dev.path, dev.name))
            dev.size = sectors * 512 if sectors is not None else None
    return out


def _lun_row(dev, session, map_of, links_of):
    dm_map = map_of.get(dev.name)
    links = links_of.get(dev.name) or {}
    session_state = session.state if session is not None else None
    return {"hctl": dev.hctl, "device": dev.dev, "name": dev.name, "wwid": dev.wwid, "size": dev.size,
            "state": dev.state,
            "path_state": "failed" if session is None else _path_state(dev.state, session_state),
            "sid": session.sid if session is not None else None, "session_state": session_state,
            "portal": session.portal if session is not None else None,
            "address": session.conn_address if session is not None else None,
            "iface": session.iface if session is not None else None,
            "iqn": session.iqn if session is not None else None,
            "lun": dev.lun, "map": dm_map.name if dm_map else None, "dm": dm_map.dev if dm_map else None,
            "by_path": sorted(links.get("by_path", [])), "by_id": sorted(links.get("by_id", []))}


# -- what the host has ---------------------------------------------------------------------------
class _Inventory(object):
    """Sessions, LUN paths, maps and links of the host, read once and cross-referenced in memory."""

    def __init__(self, fs):
        if not fs.isdir("/sys/class/block"):
            raise BrickError("sysfs is not readable at %s" % fs.path("/sys/class/block"),
                             hint="run it on a Linux host with /sys mounted; for a simulated host check "
                                  "BRICK_STORAGE_ROOT")
        self.fs = fs
        entries = fs.listdir("/sys/class/block")
        self.blocks = set(entries)
        self.names = block_names(fs, entries)  # {SCSI device dir: sdX}
        devnodes = set(fs.listdir("/dev"))
        self.dm = {}
        self.map_of = {}
        for dm_map in dm_maps(fs):
            self.dm[dm_map.dm] = dm_map
            for sd in dm_map.slaves:
                self.map_of.setdefault(sd, dm_map)
        self.bypath = _link_index(fs, SEARCH_PATH, self.blocks, devnodes)
        self.byid = _link_index(fs, BY_ID, self.blocks, devnodes)
        self.links_of = {}
        for entries, key in ((self.bypath, "by_path"), (self.byid, "by_id")):
            for _name, link, _target, target_name, alive in entries:
                if alive:
                    self.links_of.setdefault(target_name, {"by_path": [], "by_id": []})[key].append(link)
        self.sessions, self.luns, self.lun_by_name, self.luns_of_sid = [], [], {}, {}
        self._read_sessions()
        self._read_ghosts()
        self.luns.sort(key=lambda r: (r["sid"] if r["sid"] is not None else -1, r["lun"], r["hctl"]))
        self.maps = [self._map_row(dm) for dm in sorted(self.dm, key=lambda x: int(x[3:]) if x[3:].isdigit() else 0)]

    def _add(self, dev, row):
        self.luns.append(row)
        if dev.name:
            self.lun_by_name[dev.name] = row

    def _read_sessions(self):
        self.known_sids = set()
        for session in iscsi_sessions(self.fs):
            self.known_sids.add(session.sid)
            self.sessions.append({"sid": session.sid, "host": session.host, "portal": session.portal,
                                  "address": session.conn_address, "iqn": session.iqn, "state": session.state,
                                  "iface": session.iface, "tpgt": session.tpgt})
            for dev in _devices(self.fs, session, self.names):
                row = _lun_row(dev, session, self.map_of, self.links_of)
                self.luns_of_sid.setdefault(session.sid, []).append(row)
                self._add(dev, row)

    def _read_ghosts(self):
        """SCSI disks whose session is gone from the iSCSI classes but whose device still exists."""
        ghosts = {}
        for device_dir, name in self.names.items():
            if name in self.lun_by_name:
                continue
            match = _SESSION_IN_PATH.match(device_dir + "/")
            if not match or int(match.group("sid")) in self.known_sids:
                continue  # a local disk (no iSCSI session in its device path)
            ghosts.setdefault(match.group("dir"), int(match.group("sid")))
        if not ghosts:
            return
        by_target = dict((target_name, (name, link)) for name, link, _t, target_name, _alive in self.bypath)
        for session_dir, sid in sorted(ghosts.items()):
            for dev in _devices(self.fs, Session(sid=sid, path=session_dir), self.names):
                if dev.name in self.lun_by_name:
                    continue
                row = _lun_row(dev, None, self.map_of, self.links_of)
                row["sid"] = sid
                row["session_state"] = None
                _ids_from_link(row, by_target.get(dev.name))
                self._add(dev, row)

    def _map_row(self, dm):
        dm_map = self.dm[dm]
        paths = []
        for sd in dm_map.slaves:
            row = self.lun_by_name.get(sd)
            if row is not None:
                paths.append({"device": "/dev/" + sd, "state": row["path_state"], "dev_state": row["state"],
                              "session_state": row["session_state"], "portal": row["portal"], "hctl": row["hctl"],
                              "transport": "iscsi", "recovering": row["session_state"] in SESSION_RECOVERING})
            else:  # not an iSCSI path (FC, SAS, NVMe...)
                paths.append(self._other_path(sd))
        return {"name": dm_map.name, "wwid": dm_map.wwid, "dm": dm_map.dev, "uuid": dm_map.uuid, "size": dm_map.size,
                "paths": paths, "active_paths": sum(1 for p in paths if p["state"] == "active"),
                "holders": list(dm_map.holders), "by_id": sorted((self.links_of.get(dm) or {}).get("by_id", []))}

    def _other_path(self, sd):
        """A map path that is not an iSCSI disk, judged by its own transport's states: an NVMe namespace by its
        controller's (``live`` works; connecting/resetting may come back), a SCSI disk (FC, SAS) by the SCSI
        device's; a device whose state cannot be read is ``unknown``, never "failed" on a guess."""
        state = self.fs.read("/sys/class/block/%s/device/state" % sd)
        transport = "nvme" if _NVME_NAMESPACE.match(sd) else "scsi"
        if state is None and self.fs.exists("/sys/class/block/" + sd):
            judged = "unknown"
        elif transport == "nvme":
            judged = "active" if state == NVME_LIVE else "failed"
        else:
            judged = _path_state(state, None)
        return {"device": "/dev/" + sd, "state": judged, "dev_state": state, "session_state": None,
                "portal": None, "hctl": None, "transport": transport,
                "recovering": transport == "nvme" and state in NVME_RECOVERING_STATES}


def _ids_from_link(row, found):
    """Portal and IQN of a path whose session is gone, from its by-path link (if udev left one)."""
    if found is None:
        return
    name, link = found
    parsed = parse_bypath(name)
    if parsed and parsed["part"] is None:
        row["portal"] = "[%s]:%d" % (parsed["address"], parsed["port"]) if ":" in parsed["address"] else \
            "%s:%d" % (parsed["address"], parsed["port"])
        row["iqn"] = parsed["iqn"]
        row["by_path"] = sorted(set(row["by_path"]) | set([link]))


# -- gather ----------------------------------------------------------------------------------
def gather(fs: HostFS, volume: dict | None = None, expected: object = None, orphans: bool = True) -> dict:
    """Everything this host knows about its iSCSI volume paths.  Read-only, no command runs."""
    vol = normalize_volume(volume) if volume is not None and not _is_normalized(volume) else volume
    exp = expected if isinstance(expected, dict) and "wwids" in expected else normalize_expected(expected)
    inv = _Inventory(fs)
    out = {"root": getattr(fs, "root", "/"), "search_path": SEARCH_PATH, "sessions": inv.sessions,
           "luns": inv.luns, "maps": inv.maps}
    if vol is not None:
        out["volume"] = _Volume(vol, inv).result()
    if orphans:
        found = orphans_mod.find(inv, exp, _ExpectedIndex(exp).match if exp is not None else None)
        out["orphans"] = found
        out["degraded"] = orphans_mod.degraded(inv)
        out["cleanup"] = cleanup_plan(found, inv.maps)
    out["summary"] = summarize(out)
    return out


def _is_normalized(volume):
    from .validate import Portal
    return isinstance(volume, dict) and all(isinstance(p, Portal) for p in volume.get("portals") or [None])


# The input checks (path_inputs.py, validate.py: a fifth of the code a facts run would compile) are imported only
# when there is input to check: the fleet audit's facts run on every host, mostly with neither volume nor expected.
def normalize_volume(volume):
    """``{portals, iqn, lun}`` -> ``{portals: [Portal], iqn, lun}`` (path_inputs.normalize_volume)."""
    if volume is None:
        return None
    from .path_inputs import normalize_volume as normalize
    return normalize(volume)


def normalize_expected(expected):
    """Expected LUNs -> ``{"wwids": set, "luns": [...]}`` or None (path_inputs.normalize_expected)."""
    if expected is None:
        return None
    from .path_inputs import normalize_expected as normalize
    return normalize(expected)


def _same_lun(asked, kernel_lun):
    """Does the LUN the operator names (the array's number) mean this kernel LUN?  A flat-space array's LUN N
    shows as 16384 + N (luns.py); the kernel's own number is accepted too."""
    return asked == kernel_lun or asked == array_lun(kernel_lun)


class _ExpectedIndex(object):
    """The expected LUNs by (IQN, LUN), so that checking a row costs the same however many LUNs are expected (a
    scan of the whole list per row made the audit of a host quadratic in its number of paths)."""

    def __init__(self, exp):
        self.wwids = exp["wwids"]
        self.portals = {}  # (iqn lower, the LUN as asked) -> set of portal keys; None = any portal
        for iqn_l, lun, portal in exp["luns"]:
            self.portals.setdefault((iqn_l, lun), set()).add(
                None if portal is None else _portal_key(portal.host, portal.port))

    def match(self, row):
        if row["wwid"] and row["wwid"].lower() in self.wwids:
            return True
        iqn = (row["iqn"] or "").lower()
        keys = _row_portal_keys(row)  # the persistent address (maybe a host name) and the connection's
        # the LUN as asked is the kernel's number or, for a flat-space array, the array's (see _same_lun)
        for asked in set((row["lun"], array_lun(row["lun"]))):
            allowed = self.portals.get((iqn, asked))
            if allowed and (None in allowed or keys & allowed):
                return True
        return False


# -- the volume query ------------------------------------------------------------------------
class _Volume(object):
    """Which paths of one volume (portals + IQN + LUN [+ WWID]) exist on the host."""

    def __init__(self, vol, inv):
        self.vol = vol
        self.inv = inv
        self.iqn = vol["iqn"].lower()
        self.lun = vol["lun"]
        self.iface = vol.get("iface")  # None: any iface
        self.wanted = dict((_portal_key(p.host, p.port), p) for p in vol["portals"])
        for portal in vol["portals"]:
            for alias in (vol.get("aliases") or {}).get(str(portal), ()):
                self.wanted.setdefault(_portal_key(alias.host, alias.port), portal)
        self.per_portal = dict((str(p), {"portal": str(p), "sessions": [], "devices": [], "links": [],
                                         "active": False}) for p in vol["portals"])
        self.foreign = []

    def _portal_of(self, row):
        """The volume's portal that a session or LUN row is on (by its persistent or its connection's address),
        or None; a row of another iface than the one asked is not the volume's (a disk whose session is gone has
        no known iface: it stays a candidate, a leftover check must see it)."""
        other_iface = self.iface is not None and row.get("iface") not in (None, self.iface)
        if (row["iqn"] or "").lower() != self.iqn or other_iface:
            return None
        for key in _row_portal_keys(row):
            if key in self.wanted:
                return self.wanted[key]
        return None

    def _sessions(self):
        sids, empty = [], []
        for session in self.inv.sessions:
            portal = self._portal_of(session)
            if portal is None:
                continue
            sids.append(session["sid"])
            self.per_portal[str(portal)]["sessions"].append({"sid": session["sid"], "state": session["state"]})
            if not self.inv.luns_of_sid.get(session["sid"]):
                empty.append(session["sid"])
        return sids, empty

    def _devices(self):
        map_wwid = dict((m["name"], m["wwid"]) for m in self.inv.maps)
        devices = []
        for row in self.inv.luns:
            if not _same_lun(self.lun, row["lun"]) or row["portal"] is None:
                continue
            portal = self._portal_of(row)
            if portal is None:
                continue
            serves = map_wwid.get(row["map"]) if row["map"] else row["wwid"]
            if self.vol.get("wwid") and serves != self.vol["wwid"]:
                # the array reused this LUN number for another volume (or the path is in another volume's map)
                self.foreign.append({"device": row["device"], "hctl": row["hctl"], "portal": row["portal"],
                                     "wwid": row["wwid"], "map": row["map"], "serves": serves})
                continue
            devices.append({"device": row["device"], "hctl": row["hctl"], "portal": row["portal"], "sid": row["sid"],
                            "address": row["address"], "iface": row["iface"], "state": row["state"],
                            "path_state": row["path_state"], "wwid": row["wwid"], "map": row["map"]})
            entry = self.per_portal[str(portal)]
            entry["devices"].append(row["device"])
            entry["active"] = entry["active"] or row["path_state"] == "active"
        return devices

    def _links(self, devices):
        paths, dangling = [], []
        foreign_nodes = set("/dev/" + (f["device"] or "")[5:] for f in self.foreign)
        # a link named for another name of the portal (ip-NAME:PORT of a session made with -p NAME, asked for by
        # number, or the other way round) is the volume's when it resolves to one of the volume's devices
        ours = dict((d["device"], self.wanted[k]) for d in devices for k in _row_portal_keys(d) if k in self.wanted)
        for name, link, target, _target_name, alive in self.inv.bypath:
            parsed = parse_bypath(name)
            if not parsed or parsed["part"] is not None or not _same_lun(self.lun, parsed["lun"]) or \
                    parsed["iqn"].lower() != self.iqn:
                continue
            portal = self.wanted.get(_portal_key(parsed["address"], parsed["port"]))
            if portal is None and alive:
                portal = ours.get(target)
            if portal is None or (alive and target in foreign_nodes):
                continue  # not the volume's portal, or the link is right but the device is another volume now
            if alive and self.iface is not None and target not in ours:
                continue  # a device of another iface
            if alive:
                paths.append(link)
                self.per_portal[str(portal)]["links"].append(link)
            else:
                dangling.append(link)
        return paths, dangling

    def result(self):
        vol = self.vol
        sids, empty = self._sessions()
        devices = self._devices()
        paths, dangling = self._links(devices)
        wwids = [vol["wwid"]] if vol.get("wwid") else sorted(set(d["wwid"] for d in devices if d["wwid"]))
        map_names = set(d["map"] for d in devices if d["map"])
        vmaps = [m for m in self.inv.maps if m["name"] in map_names or (m["wwid"] and m["wwid"] in wwids)]
        first = vmaps[0] if vmaps else None
        portals = [str(p) for p in vol["portals"]]
        return {"portals": portals, "iqn": vol["iqn"], "lun": self.lun,
                "search_path": SEARCH_PATH, "paths": sorted(paths), "dangling_links": sorted(dangling),
                "devices": devices, "wwid": wwids[0] if len(wwids) == 1 else (wwids or None),
                "map": first["name"] if first else None, "dm": first["dm"] if first else None,
                "maps": [m["name"] for m in vmaps], "sessions": sids, "empty_sessions": empty,
                "path_count": len(devices), "active_paths": sum(1 for d in devices if d["path_state"] == "active"),
                "per_portal": [self.per_portal[p] for p in portals],
                "missing_portals": [p for p in portals if not self.per_portal[p]["active"]],
                "exists": bool(devices or paths or dangling or vmaps), "foreign_devices": self.foreign,
                "leftovers": ([d["device"] for d in devices] + paths + dangling + [m["dm"] for m in vmaps]
                              + ["session %d" % sid for sid in empty])}
