# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Volume paths and orphan paths of one host, read from sysfs and /dev only.

``gather(fs)`` answers three questions without running a single external command:

* which iSCSI sessions, LUN paths (SCSI disks) and multipath maps exist, and how they hang together;
* which paths of one given volume (portals + IQN + LUN) exist (``volume``), so that an attach can be
  verified ("all expected paths are there") and a detach as well ("nothing is left");
* which of them are *orphans*: left behind by a detach that did not finish, by a path that died, or
  not expected on this host at all (``orphans``), with a cleanup plan that the orphan_audit role runs
  through the collection's data-safe modules (``cleanup``).

Everything is read once into dictionaries and cross-referenced in memory, so the cost grows linearly
with the number of LUN paths.  Layout: docs/dev/sysfs-layout.md.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from . import validate
from .errors import BrickError, InvalidInput
from .scsi import (SEARCH_PATH, Session, dm_maps, iscsi_sessions, parse_bypath,
                   session_devices, udev_wwid)

BY_ID = "/dev/disk/by-id"

KINDS = ("dangling_link", "device_without_session", "device_on_failed_session",
         "map_without_working_path", "session_without_lun", "unexpected_lun")

# SCSI device states that mean the path carries no I/O and will not come back by itself.
DEAD_DEVICE_STATES = ("offline", "transport-offline")
# Device states a multipath path counts as failed with (blocked = session recovery in progress).
FAILED_DEVICE_STATES = ("offline", "transport-offline", "blocked")
SESSION_OK = "LOGGED_IN"
SESSION_FAILED = "FAILED"
SESSION_FREE = "FREE"
# FAILED while the initiator recovers (its devices are "blocked": I/O waits, the path may come back within
# recovery_tmo), FREE once recovery_tmo has expired (devices "transport-offline": I/O fails).  Both carry no
# working path; only FREE is an orphan to clean up, FAILED is reported as degraded.
SESSION_FAILED_STATES = (SESSION_FAILED, SESSION_FREE)
SESSION_RECOVERING = (SESSION_FAILED,)

_SD_DISK = re.compile(r"^sd[a-z]+$")
_SESSION_IN_PATH = re.compile(r"^(?P<dir>.*/session(?P<sid>\d+))/")


# -- input normalisation (shared with the module: bad input fails before anything is read) -------
def normalize_volume(volume):
    """``{portals, iqn, lun}`` -> ``{portals: [Portal], iqn, lun}``; raises InvalidInput."""
    if volume is None:
        return None
    if not isinstance(volume, dict):
        raise InvalidInput("volume must be a dictionary with portals, iqn and lun")
    unknown = sorted(set(volume) - set(("portals", "portal", "iqn", "lun", "wwid")))
    if unknown:
        raise InvalidInput("volume has unknown key(s): %s" % ", ".join(unknown),
                           hint="use portals (list), iqn, lun and optionally wwid")
    portals = volume.get("portals")
    if portals is None and volume.get("portal") is not None:
        portals = [volume["portal"]]
    if isinstance(portals, str):
        portals = [portals]
    if not portals or not isinstance(portals, (list, tuple)):
        raise InvalidInput("volume.portals is empty", hint="give at least one portal, e.g. 10.0.0.1:3260")
    out = []
    aliases = {}
    for i, p in enumerate(portals):
        what = "volume.portals[%d]" % i
        pv = p if isinstance(p, validate.Portal) else validate.portal(p, what)
        addrs = validate.resolve_portal(pv, what)  # a host name: every address of it (sysfs shows numbers)
        if addrs[0] not in out:
            out.append(addrs[0])
            aliases[str(addrs[0])] = addrs[1:]
    if volume.get("lun") is None:
        raise InvalidInput("volume.lun is missing")
    wwid = volume.get("wwid")
    return {"portals": out, "aliases": aliases, "iqn": validate.iqn(volume.get("iqn"), "volume.iqn"),
            "lun": validate.lun(volume.get("lun"), "volume.lun"),
            "wwid": validate.wwid(wwid, "volume.wwid") if wwid not in (None, "") else None}


def _norm_wwid(value, what):
    return validate.wwid(value, what)


def normalize_expected(expected):
    """Expected LUNs -> ``{"wwids": set, "luns": [(iqn_lower, lun, Portal|None)]}`` or None.

    Items are WWID strings or dictionaries with ``iqn`` + ``lun`` (and optionally ``portal`` or
    ``portals``), or with ``wwid``.  ``None`` means "no expectation" (no unexpected_lun check);
    an empty list means "this host should have no iSCSI LUN at all".
    """
    if expected is None:
        return None
    if isinstance(expected, (str, dict)):
        expected = [expected]
    if not isinstance(expected, (list, tuple)):
        raise InvalidInput("expected must be a list of WWIDs or of {iqn, lun[, portal]} dictionaries")
    wwids, luns = set(), []
    for i, item in enumerate(expected):
        what = "expected[%d]" % i
        if isinstance(item, str):
            wwids.add(_norm_wwid(item, what))
            continue
        if not isinstance(item, dict):
            raise InvalidInput("%s must be a WWID string or a dictionary, not %s" % (what, type(item).__name__))
        unknown = sorted(set(item) - set(("iqn", "lun", "portal", "portals", "wwid")))
        if unknown:
            raise InvalidInput("%s has unknown key(s): %s" % (what, ", ".join(unknown)),
                               hint="use iqn, lun and optionally portal/portals, or wwid")
        if item.get("wwid") is not None and item.get("iqn") is None:
            wwids.add(_norm_wwid(item["wwid"], what + ".wwid"))
            continue
        if item.get("iqn") is None or item.get("lun") is None:
            raise InvalidInput("%s needs iqn and lun (or wwid)" % what)
        q = validate.iqn(item["iqn"], what + ".iqn").lower()
        n = validate.lun(item["lun"], what + ".lun")
        portals = item.get("portals")
        if portals is None and item.get("portal") is not None:
            portals = [item["portal"]]
        if isinstance(portals, str):
            portals = [portals]
        if portals:
            for j, p in enumerate(portals):
                luns.append((q, n, validate.portal(p, "%s.portals[%d]" % (what, j))))
        else:
            luns.append((q, n, None))
        if item.get("wwid") is not None:
            wwids.add(_norm_wwid(item["wwid"], what + ".wwid"))
    return {"wwids": wwids, "luns": luns}


# -- helpers ---------------------------------------------------------------------------------
def _portal_key(address, port):
    if address is None:
        return None
    try:
        return (str(address).lower(), int(port))
    except (TypeError, ValueError):
        return (str(address).lower(), port)


def _link_index(fs, directory, blocks, devnodes):
    """[(link, target_host_path, target_name, alive)] for every link in ``directory``."""
    out = []
    for e in fs.listdir(directory):
        link = "%s/%s" % (directory, e)
        t = fs.readlink(link)
        if t is None:
            continue  # not a link
        target = os.path.normpath(t if t.startswith("/") else os.path.join(directory, t))
        name = os.path.basename(target)
        if os.path.dirname(target) == "/dev":
            alive = name in devnodes and name in blocks
        else:
            alive = fs.exists(target)
        out.append((e, link, target, name, alive))
    return out


def _path_state(dev_state, session_state):
    if dev_state == "running" and session_state in (SESSION_OK, None):
        return "active"
    return "failed"


def _ids(row):
    """Identifying fields of a LUN path, for orphans and cleanup actions."""
    return {"device": row["device"], "hctl": row["hctl"], "sid": row["sid"], "portal": row["portal"],
            "iqn": row["iqn"], "lun": row["lun"], "wwid": row["wwid"], "map": row["map"]}


# -- gather ----------------------------------------------------------------------------------
def gather(fs, volume=None, expected=None, orphans=True):
    """Everything this host knows about its iSCSI volume paths.  Read-only, no command runs."""
    vol = normalize_volume(volume) if volume is not None and not _is_normalized(volume) else volume
    exp = expected if isinstance(expected, dict) and "wwids" in expected else normalize_expected(expected)

    if not fs.isdir("/sys/class/block"):
        raise BrickError("sysfs is not readable at %s" % fs.path("/sys/class/block"),
                         hint="run it on a Linux host with /sys mounted; for a simulated host check BRICK_STORAGE_ROOT")
    blocks = set(fs.listdir("/sys/class/block"))
    devnodes = set(fs.listdir("/dev"))

    # Multipath maps by kernel name.
    maps = {}
    map_of = {}
    for m in dm_maps(fs):
        maps[m.dm] = m
        for sd in m.slaves:
            map_of.setdefault(sd, m)

    # udev links: by-path (the search path) and by-id, indexed by the device they point at.
    bypath = _link_index(fs, SEARCH_PATH, blocks, devnodes)
    byid = _link_index(fs, BY_ID, blocks, devnodes)
    links_of = {}
    for entries, key in ((bypath, "by_path"), (byid, "by_id")):
        for name, link, target, tname, alive in entries:
            if alive:
                links_of.setdefault(tname, {"by_path": [], "by_id": []})[key].append(link)

    # Sessions and their LUN paths.
    sessions = iscsi_sessions(fs)
    sess_rows = []
    luns = []
    lun_by_name = {}
    luns_of_sid = {}
    for s in sessions:
        sess_rows.append({"sid": s.sid, "host": s.host, "portal": s.portal, "iqn": s.iqn,
                          "state": s.state, "iface": s.iface, "tpgt": s.tpgt})
        for d in _devices(fs, s):
            row = _lun_row(d, s, map_of, links_of)
            luns.append(row)
            luns_of_sid.setdefault(s.sid, []).append(row)
            if d.name:
                lun_by_name[d.name] = row

    # SCSI disks whose session is gone from the iSCSI classes but whose device still exists.
    ghosts = {}
    known_sids = set(s.sid for s in sessions)
    for name in blocks:
        if name in lun_by_name or not _SD_DISK.match(name):
            continue
        real = fs.realpath("/sys/class/block/%s" % name)
        m = _SESSION_IN_PATH.match(real)
        if not m or int(m.group("sid")) in known_sids:
            continue  # a local disk (no iSCSI session in its device path)
        ghosts.setdefault(m.group("dir"), int(m.group("sid")))
    for sdir, sid in sorted(ghosts.items()):
        ghost = Session(sid=sid, path=sdir)
        for d in _devices(fs, ghost):
            if d.name in lun_by_name:
                continue
            row = _lun_row(d, None, map_of, links_of)
            row["sid"] = sid
            row["session_state"] = None
            _ids_from_links(row, bypath)
            luns.append(row)
            if d.name:
                lun_by_name[d.name] = row
    luns.sort(key=lambda r: (r["sid"] if r["sid"] is not None else -1, r["lun"], r["hctl"]))

    # Multipath maps with their paths.
    map_rows = []
    for dm in sorted(maps, key=lambda x: int(x[3:]) if x[3:].isdigit() else 0):
        m = maps[dm]
        paths = []
        for sd in m.slaves:
            row = lun_by_name.get(sd)
            if row is not None:
                paths.append({"device": "/dev/" + sd, "state": row["path_state"], "dev_state": row["state"],
                              "session_state": row["session_state"], "portal": row["portal"],
                              "hctl": row["hctl"]})
            else:  # not an iSCSI path (FC, SAS...) or not a SCSI disk at all
                st = fs.read("/sys/class/block/%s/device/state" % sd)
                paths.append({"device": "/dev/" + sd, "state": _path_state(st, None), "dev_state": st,
                              "session_state": None, "portal": None, "hctl": None})
        map_rows.append({"name": m.name, "wwid": m.wwid, "dm": m.dev, "uuid": m.uuid, "size": m.size,
                         "paths": paths, "active_paths": sum(1 for p in paths if p["state"] == "active"),
                         "holders": list(m.holders),
                         "by_id": sorted((links_of.get(dm) or {}).get("by_id", []))})

    out = {"root": getattr(fs, "root", "/"), "search_path": SEARCH_PATH, "sessions": sess_rows, "luns": luns,
           "maps": map_rows}
    if vol is not None:
        out["volume"] = _volume(vol, sess_rows, luns, luns_of_sid, map_rows, bypath)
    if orphans:
        found = _orphans(sess_rows, luns, luns_of_sid, map_rows, bypath, byid, exp)
        out["orphans"] = found
        out["degraded"] = _degraded(sess_rows, luns, map_rows)
        out["cleanup"] = cleanup_plan(found, map_rows)
    out["summary"] = summarize(out)
    return out


def _is_normalized(volume):
    return isinstance(volume, dict) and all(isinstance(p, validate.Portal) for p in volume.get("portals") or [None])


def _devices(fs, session):
    """LUN paths of a session with only the details the audit needs (wwid, size).

    Holders are not listed per disk: the multipath map of a path comes from the maps' slaves."""
    out = session_devices(fs, session, with_details=False)
    for d in out:
        d.wwid = udev_wwid(fs.read(d.path + "/wwid"))
        if d.name:
            sectors = fs.read_int("%s/block/%s/size" % (d.path, d.name))
            d.size = sectors * 512 if sectors is not None else None
    return out


def _lun_row(d, s, map_of, links_of):
    mp = map_of.get(d.name)
    links = links_of.get(d.name) or {}
    session_state = s.state if s is not None else None
    return {"hctl": d.hctl, "device": d.dev, "name": d.name, "wwid": d.wwid, "size": d.size,
            "state": d.state,
            "path_state": "failed" if s is None else _path_state(d.state, session_state),
            "sid": s.sid if s is not None else None, "session_state": session_state,
            "portal": s.portal if s is not None else None, "iqn": s.iqn if s is not None else None,
            "lun": d.lun, "map": mp.name if mp else None, "dm": mp.dev if mp else None,
            "by_path": sorted(links.get("by_path", [])), "by_id": sorted(links.get("by_id", []))}


def _ids_from_links(row, bypath):
    """Portal and IQN of a path whose session is gone, from its by-path link (if udev left one)."""
    for name, link, target, tname, alive in bypath:
        if tname == row["name"]:
            p = parse_bypath(name)
            if p and p["part"] is None:
                row["portal"] = "[%s]:%d" % (p["address"], p["port"]) if ":" in p["address"] else \
                    "%s:%d" % (p["address"], p["port"])
                row["iqn"] = p["iqn"]
                row["by_path"] = sorted(set(row["by_path"]) | set([link]))
                return


# -- the volume query ------------------------------------------------------------------------
def _volume(vol, sess_rows, luns, luns_of_sid, map_rows, bypath):
    iqn_l = vol["iqn"].lower()
    lun = vol["lun"]
    wanted = dict((_portal_key(p.host, p.port), p) for p in vol["portals"])
    for p in vol["portals"]:
        for a in (vol.get("aliases") or {}).get(str(p), ()):
            wanted.setdefault(_portal_key(a.host, a.port), p)
    want_wwid = vol.get("wwid")
    map_wwid = dict((m["name"], m["wwid"]) for m in map_rows)
    foreign = []
    per_portal = dict((str(p), {"portal": str(p), "sessions": [], "devices": [], "links": [],
                                "active": False}) for p in vol["portals"])

    sids = []
    empty = []
    for s in sess_rows:
        if (s["iqn"] or "").lower() != iqn_l:
            continue
        p = _session_portal(s)
        if p not in wanted:
            continue
        sids.append(s["sid"])
        per_portal[str(wanted[p])]["sessions"].append({"sid": s["sid"], "state": s["state"]})
        if not luns_of_sid.get(s["sid"]):
            empty.append(s["sid"])

    devices = []
    for r in luns:
        if r["lun"] != lun or (r["iqn"] or "").lower() != iqn_l or r["portal"] is None:
            continue
        key = _row_portal_key(r)
        if key not in wanted:
            continue
        serves = map_wwid.get(r["map"]) if r["map"] else r["wwid"]
        if want_wwid and serves != want_wwid:
            # the array reused this LUN number for another volume (or the path is in another volume's map)
            foreign.append({"device": r["device"], "hctl": r["hctl"], "portal": r["portal"], "wwid": r["wwid"],
                            "map": r["map"], "serves": serves})
            continue
        devices.append({"device": r["device"], "hctl": r["hctl"], "portal": r["portal"], "sid": r["sid"],
                        "state": r["state"], "path_state": r["path_state"], "wwid": r["wwid"],
                        "map": r["map"]})
        pp = per_portal[str(wanted[key])]
        pp["devices"].append(r["device"])
        pp["active"] = pp["active"] or r["path_state"] == "active"

    paths, dangling = [], []
    for name, link, target, tname, alive in bypath:
        p = parse_bypath(name)
        if not p or p["part"] is not None or p["lun"] != lun or p["iqn"].lower() != iqn_l:
            continue
        key = _portal_key(p["address"], p["port"])
        if key not in wanted:
            continue
        if alive and foreign and target in ["/dev/" + (f["device"] or "")[5:] for f in foreign]:
            continue  # the link is right, but the device behind it is another volume now
        if alive:
            paths.append(link)
            per_portal[str(wanted[key])]["links"].append(link)
        else:
            dangling.append(link)

    wwids = sorted(set(d["wwid"] for d in devices if d["wwid"]))
    if want_wwid:
        wwids = [want_wwid]
    map_names = set(d["map"] for d in devices if d["map"])
    vmaps = [m for m in map_rows if m["name"] in map_names or (m["wwid"] and m["wwid"] in wwids)]
    m0 = vmaps[0] if vmaps else None
    leftovers = ([d["device"] for d in devices] + paths + dangling + [m["dm"] for m in vmaps]
                 + ["session %d" % sid for sid in empty])
    return {"portals": [str(p) for p in vol["portals"]], "iqn": vol["iqn"], "lun": lun,
            "search_path": SEARCH_PATH, "paths": sorted(paths), "dangling_links": sorted(dangling),
            "devices": devices, "wwid": wwids[0] if len(wwids) == 1 else (wwids or None),
            "map": m0["name"] if m0 else None, "dm": m0["dm"] if m0 else None,
            "maps": [m["name"] for m in vmaps],
            "sessions": sids, "empty_sessions": empty,
            "path_count": len(devices),
            "active_paths": sum(1 for d in devices if d["path_state"] == "active"),
            "per_portal": [per_portal[str(p)] for p in vol["portals"]],
            "missing_portals": [str(p) for p in vol["portals"] if not per_portal[str(p)]["active"]],
            "exists": bool(devices or paths or dangling or vmaps),
            "foreign_devices": foreign,
            "leftovers": leftovers}


def _session_portal(s):
    p = s["portal"] or ""
    if p.startswith("["):
        host, sep, port = p[1:].partition("]:")
    else:
        host, sep, port = p.rpartition(":")
    return _portal_key(host, port) if sep else _portal_key(p, None)


def _row_portal_key(r):
    return _session_portal({"portal": r["portal"]})


# -- orphans ---------------------------------------------------------------------------------
def _orphans(sess_rows, luns, luns_of_sid, map_rows, bypath, byid, exp):
    out = []
    sess_by_sid = dict((s["sid"], s) for s in sess_rows)
    for r in luns:
        s = sess_by_sid.get(r["sid"])
        if s is not None and s["state"] in SESSION_RECOVERING:
            continue  # degraded, not an orphan: the initiator is still recovering the session
        if s is None or (s["state"] != SESSION_OK and s["state"] not in SESSION_FAILED_STATES):
            why = ("session %s no longer exists" % r["sid"]) if s is None else \
                "session %s is in state %s" % (r["sid"], s["state"] or "unknown")
            out.append(_orphan("device_without_session", "%s (%s): %s" % (r["device"], r["hctl"], why), r))
        elif s["state"] in SESSION_FAILED_STATES:
            out.append(_orphan("device_on_failed_session", "%s (%s): session %d to %s is %s"
                               % (r["device"], r["hctl"], s["sid"], s["portal"], s["state"]), r))
        elif r["state"] in DEAD_DEVICE_STATES:
            out.append(_orphan("device_on_failed_session", "%s (%s): device state is %s"
                               % (r["device"], r["hctl"], r["state"]), r))
    for s in sess_rows:
        if not luns_of_sid.get(s["sid"]):
            out.append({"kind": "session_without_lun",
                        "reason": "session %d to %s %s (state %s) has no SCSI device"
                                  % (s["sid"], s["portal"], s["iqn"], s["state"]),
                        "sid": s["sid"], "portal": s["portal"], "iqn": s["iqn"], "lun": None,
                        "state": s["state"]})
    for m in map_rows:
        if m["active_paths"] or any(p["session_state"] in SESSION_RECOVERING for p in m["paths"]):
            continue
        if not m["paths"]:
            why = "has no path device"
        else:
            why = "has no working path (%s)" % ", ".join(
                "%s %s%s" % (p["device"], p["dev_state"] or "gone",
                             "" if p["session_state"] in (SESSION_OK, None) else "/session " + p["session_state"])
                for p in m["paths"])
        out.append({"kind": "map_without_working_path", "reason": "map %s (%s) %s" % (m["name"], m["dm"], why),
                    "map": m["name"], "dm": m["dm"], "wwid": m["wwid"],
                    "paths": [p["device"] for p in m["paths"]], "holders": list(m["holders"])})
    for entries, where in ((bypath, "by-path"), (byid, "by-id")):
        for name, link, target, tname, alive in entries:
            if alive:
                continue
            o = {"kind": "dangling_link", "reason": "%s link %s points at %s, which does not exist"
                 % (where, link, target), "link": link, "target": target}
            p = parse_bypath(name) if where == "by-path" else None
            if p:
                o.update(iqn=p["iqn"], lun=p["lun"], portal=("[%s]:%d" if ":" in p["address"] else "%s:%d")
                         % (p["address"], p["port"]))
            out.append(o)
    if exp is not None:
        for r in luns:
            if r["iqn"] is None or _expected(r, exp):
                continue
            out.append(_orphan("unexpected_lun", "%s (%s): LUN %d of %s via %s is not in the expected set"
                               % (r["device"], r["hctl"], r["lun"], r["iqn"], r["portal"]), r))
    return out


def _degraded(sess_rows, luns, map_rows):
    """Paths whose session is FAILED (recovery in progress): not orphans, but worth a look."""
    out = []
    recovering = dict((s["sid"], s) for s in sess_rows if s["state"] in SESSION_RECOVERING)
    for r in luns:
        s = recovering.get(r["sid"])
        if s is None:
            continue
        d = {"reason": "%s (%s): session %d to %s is %s (recovery in progress, up to recovery_tmo); the path may "
                       "come back" % (r["device"], r["hctl"], s["sid"], s["portal"], s["state"])}
        d.update(_ids(r))
        d["state"] = r["state"]
        d["session_state"] = s["state"]
        out.append(d)
    return out


def _orphan(kind, reason, row):
    o = {"kind": kind, "reason": reason}
    o.update(_ids(row))
    o["state"] = row["state"]
    o["session_state"] = row["session_state"]
    return o


def _expected(row, exp):
    if row["wwid"] and row["wwid"].lower() in exp["wwids"]:
        return True
    q = (row["iqn"] or "").lower()
    key = _row_portal_key(row) if row["portal"] else None
    for iqn_l, lun, portal in exp["luns"]:
        if iqn_l == q and lun == row["lun"] and (portal is None or _portal_key(portal.host, portal.port) == key):
            return True
    return False


# -- cleanup plan ----------------------------------------------------------------------------
def _serves(o, map_wwid):
    """The WWID the orphan path serves: its map's when it is a path of a map, else its own."""
    if o.get("map") and map_wwid.get(o["map"]):
        return map_wwid[o["map"]]
    return o.get("wwid")


def cleanup_plan(orphans, map_rows=None):
    """Ordered, de-duplicated actions that remove ``orphans`` with the collection's modules.

    1. ``multipath_flush`` for maps without a working path (before their paths go), with the map's WWID;
    2. ``iscsi_volume`` (state absent) per path for dead/failed/sessionless devices, with the WWID the path
       serves (so that only that volume's paths go: a failed path of a map that keeps a working path is
       taken out of the map, the map is never flushed), one action per unexpected volume (all its portals),
       and a ``session_only`` logout per portal for sessions without a LUN;
    3. ``file`` (state absent) for dangling links.
    Orphans that cannot be mapped to an action (no portal/IQN known) go to ``manual`` actions.
    """
    map_wwid = dict((m["name"], m["wwid"]) for m in map_rows or ())
    flush, detach, files, manual = [], [], [], []
    seen = set()
    unexpected = {}
    for o in orphans:
        if o["kind"] == "unexpected_lun":
            g = unexpected.setdefault((o["iqn"], o["lun"], _serves(o, map_wwid)), {"portals": [], "reasons": []})
            if o["portal"] not in g["portals"]:
                g["portals"].append(o["portal"])
            g["reasons"].append(o["reason"])
    covered = set((p, q, n) for (q, n, _w), g in unexpected.items() for p in g["portals"])
    for o in orphans:
        k = o["kind"]
        if k == "map_without_working_path":
            if ("map", o["map"]) not in seen:
                seen.add(("map", o["map"]))
                flush.append({"action": "multipath_flush", "map": o["map"], "wwid": o.get("wwid"), "kinds": [k],
                              "reason": o["reason"]})
        elif k in ("device_without_session", "device_on_failed_session", "session_without_lun"):
            if not o.get("portal") or not o.get("iqn"):
                manual.append({"action": "manual", "kinds": [k], "reason": o["reason"],
                               "device": o.get("device"), "hctl": o.get("hctl")})
                continue
            key = (o["portal"], o["iqn"], o["lun"])
            if key in covered:
                continue
            if ("detach",) + key in seen:
                for a in detach:
                    if (a["portals"][0], a["iqn"], a["lun"]) == key and k not in a["kinds"]:
                        a["kinds"].append(k)
                continue
            seen.add(("detach",) + key)
            a = {"action": "iscsi_volume", "portals": [o["portal"]], "iqn": o["iqn"], "lun": o["lun"],
                 "kinds": [k], "reason": o["reason"]}
            if k == "session_without_lun":
                a["session_only"] = True
            else:
                a["wwid"] = _serves(o, map_wwid)
            detach.append(a)
        elif k == "dangling_link":
            if ("file", o["link"]) not in seen:
                seen.add(("file", o["link"]))
                files.append({"action": "file", "path": o["link"], "kinds": [k], "reason": o["reason"]})
    for (q, n, w), g in sorted(unexpected.items(), key=lambda x: (x[0][0], x[0][1], x[0][2] or "")):
        detach.append({"action": "iscsi_volume", "portals": sorted(g["portals"]), "iqn": q, "lun": n, "wwid": w,
                       "kinds": ["unexpected_lun"], "reason": "; ".join(g["reasons"])})
    return flush + detach + files + manual


def summarize(facts):
    counts = dict((k, 0) for k in KINDS)
    for o in facts.get("orphans") or ():
        counts[o["kind"]] = counts.get(o["kind"], 0) + 1
    return {"sessions": len(facts["sessions"]), "luns": len(facts["luns"]), "maps": len(facts["maps"]),
            "orphans": sum(counts.values()) if "orphans" in facts else None,
            "degraded": len(facts.get("degraded") or ()) if "orphans" in facts else None,
            "counts": counts if "orphans" in facts else None}
