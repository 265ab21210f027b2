# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Orphans of a host's volume paths, the degraded ones, and the plan that cleans the orphans up.

Works on the rows ``paths.gather()`` read (dictionaries), never on the host itself.
"""

from __future__ import annotations

from .scsi import parse_bypath

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
DETACH_KINDS = ("device_without_session", "device_on_failed_session", "session_without_lun")


def ids(row):
    """Identifying fields of a LUN path, for orphans and cleanup actions."""
    return {"device": row["device"], "hctl": row["hctl"], "sid": row["sid"], "portal": row["portal"],
            "iface": row.get("iface"), "iqn": row["iqn"], "lun": row["lun"], "wwid": row["wwid"], "map": row["map"]}


def _orphan(kind, reason, row):
    found = {"kind": kind, "reason": reason}
    found.update(ids(row))
    found["state"] = row["state"]
    found["session_state"] = row["session_state"]
    return found


def find(inv, expected, expected_match):
    """Every orphan of inventory ``inv`` (see paths._Inventory); ``expected_match(row)`` for unexpected LUNs."""
    out = _device_orphans(inv)
    out += [_lunless(s) for s in inv.sessions if not inv.luns_of_sid.get(s["sid"])]
    out += [_dead_map(m) for m in inv.maps if _map_is_dead(m)]
    out += _dangling(inv.bypath, "by-path") + _dangling(inv.byid, "by-id")
    if expected is not None:
        for row in inv.luns:
            if row["iqn"] is not None and not expected_match(row):
                out.append(_orphan("unexpected_lun", "%s (%s): LUN %d of %s via %s is not in the expected set"
                                   % (row["device"], row["hctl"], row["lun"], row["iqn"], row["portal"]), row))
    return out


def _device_orphans(inv):
    out = []
    session_of = dict((s["sid"], s) for s in inv.sessions)
    for row in inv.luns:
        session = session_of.get(row["sid"])
        if session is not None and session["state"] in SESSION_RECOVERING:
            continue  # degraded, not an orphan: the initiator is still recovering the session
        where = "%s (%s)" % (row["device"], row["hctl"])
        if session is None or (session["state"] != SESSION_OK and session["state"] not in SESSION_FAILED_STATES):
            why = ("session %s no longer exists" % row["sid"]) if session is None else \
                "session %s is in state %s" % (row["sid"], session["state"] or "unknown")
            out.append(_orphan("device_without_session", "%s: %s" % (where, why), row))
        elif session["state"] in SESSION_FAILED_STATES:
            out.append(_orphan("device_on_failed_session", "%s: session %d to %s is %s"
                               % (where, session["sid"], session["portal"], session["state"]), row))
        elif row["state"] in DEAD_DEVICE_STATES:
            out.append(_orphan("device_on_failed_session", "%s: device state is %s" % (where, row["state"]), row))
    return out


def _lunless(session):
    return {"kind": "session_without_lun",
            "reason": "session %d to %s %s (state %s) has no SCSI device"
                      % (session["sid"], session["portal"], session["iqn"], session["state"]),
            "sid": session["sid"], "portal": session["portal"], "iface": session.get("iface"), "iqn": session["iqn"],
            "lun": None, "state": session["state"]}


def _map_is_dead(row):
    """No path works, none may come back by itself (iSCSI session or NVMe controller in recovery), and none is
    of a kind whose state could not be judged: a map with a working path is never planned for a flush."""
    return not row["active_paths"] and not any(
        p["session_state"] in SESSION_RECOVERING or p.get("recovering") or p["state"] not in ("active", "failed")
        for p in row["paths"])


def _dead_map(row):
    if not row["paths"]:
        why = "has no path device"
    else:
        why = "has no working path (%s)" % ", ".join(
            "%s %s%s" % (p["device"], p["dev_state"] or "gone",
                         "" if p["session_state"] in (SESSION_OK, None) else "/session " + p["session_state"])
            for p in row["paths"])
    return {"kind": "map_without_working_path", "reason": "map %s (%s) %s" % (row["name"], row["dm"], why),
            "map": row["name"], "dm": row["dm"], "wwid": row["wwid"],
            "paths": [p["device"] for p in row["paths"]], "holders": list(row["holders"])}


def _dangling(entries, where):
    out = []
    for name, link, target, _tname, alive in entries:
        if alive:
            continue
        found = {"kind": "dangling_link", "reason": "%s link %s points at %s, which does not exist"
                 % (where, link, target), "link": link, "target": target}
        parsed = parse_bypath(name) if where == "by-path" else None
        if parsed:
            found.update(iqn=parsed["iqn"], lun=parsed["lun"],
                         portal=("[%s]:%d" if ":" in parsed["address"] else "%s:%d")
                         % (parsed["address"], parsed["port"]))
        out.append(found)
    return out


def degraded(inv):
    """Paths whose session is FAILED (recovery in progress): not orphans, but worth a look."""
    out = []
    recovering = dict((s["sid"], s) for s in inv.sessions if s["state"] in SESSION_RECOVERING)
    for row in inv.luns:
        session = recovering.get(row["sid"])
        if session is None:
            continue
        entry = {"reason": "%s (%s): session %d to %s is %s (recovery in progress, up to recovery_tmo); the path "
                           "may come back" % (row["device"], row["hctl"], session["sid"], session["portal"],
                                              session["state"])}
        entry.update(ids(row))
        entry["state"] = row["state"]
        entry["session_state"] = session["state"]
        out.append(entry)
    return out


# -- cleanup plan ----------------------------------------------------------------------------
def _serves(orphan, map_wwid):
    """The WWID the orphan path serves: its map's when it is a path of a map, else its own."""
    if orphan.get("map") and map_wwid.get(orphan["map"]):
        return map_wwid[orphan["map"]]
    return orphan.get("wwid")


class _Plan(object):
    def __init__(self, orphans, map_rows):
        self.map_wwid = dict((m["name"], m["wwid"]) for m in map_rows or ())
        self.flush, self.detach, self.files, self.manual = [], [], [], []
        self.seen = set()
        # (portal, iqn, lun, iface) -> its detach action: one per path, found without a scan.  The iface is part
        # of every key: two sessions to one portal on two ifaces are two paths, and a detach runs on one iface.
        self.detach_of = {}
        self.unexpected = {}
        for orphan in orphans:
            if orphan["kind"] == "unexpected_lun":
                key = (orphan["iqn"], orphan["lun"], _serves(orphan, self.map_wwid), orphan.get("iface"))
                group = self.unexpected.setdefault(key, {"portals": [], "reasons": []})
                if orphan["portal"] not in group["portals"]:
                    group["portals"].append(orphan["portal"])
                group["reasons"].append(orphan["reason"])
        self.covered = set((p, iqn, lun, iface) for (iqn, lun, _w, iface), g in self.unexpected.items()
                           for p in g["portals"])

    def add(self, orphan):
        kind = orphan["kind"]
        if kind == "map_without_working_path" and ("map", orphan["map"]) not in self.seen:
            self.seen.add(("map", orphan["map"]))
            self.flush.append({"action": "multipath_flush", "map": orphan["map"], "wwid": orphan.get("wwid"),
                               "kinds": [kind], "reason": orphan["reason"]})
        elif kind in DETACH_KINDS:
            self._detach(orphan, kind)
        elif kind == "dangling_link" and ("file", orphan["link"]) not in self.seen:
            self.seen.add(("file", orphan["link"]))
            self.files.append({"action": "file", "path": orphan["link"], "kinds": [kind], "reason": orphan["reason"]})

    def _detach(self, orphan, kind):
        if not orphan.get("portal") or not orphan.get("iqn"):
            self.manual.append({"action": "manual", "kinds": [kind], "reason": orphan["reason"],
                                "device": orphan.get("device"), "hctl": orphan.get("hctl")})
            return
        key = (orphan["portal"], orphan["iqn"], orphan["lun"], orphan.get("iface"))
        if key in self.covered:
            return
        action = self.detach_of.get(key)
        if action is not None:
            if kind not in action["kinds"]:
                action["kinds"].append(kind)
            return
        action = {"action": "iscsi_volume", "portals": [orphan["portal"]], "iqn": orphan["iqn"], "lun": orphan["lun"],
                  "iface": orphan.get("iface"), "kinds": [kind], "reason": orphan["reason"]}
        if kind == "session_without_lun":
            action["session_only"] = True
        else:
            action["wwid"] = _serves(orphan, self.map_wwid)
        self.detach.append(action)
        self.detach_of[key] = action

    def actions(self):
        for (iqn, lun, wwid, iface), group in sorted(self.unexpected.items(),
                                                     key=lambda x: (x[0][0], x[0][1], x[0][2] or "", x[0][3] or "")):
            self.detach.append({"action": "iscsi_volume", "portals": sorted(group["portals"]), "iqn": iqn, "lun": lun,
                                "iface": iface, "wwid": wwid, "kinds": ["unexpected_lun"],
                                "reason": "; ".join(group["reasons"])})
        return self.flush + self.detach + self.files + self.manual


def cleanup_plan(orphans, map_rows=None):
    """Ordered, de-duplicated actions that remove ``orphans`` with the collection's modules.

    1. ``multipath_flush`` for maps without a working path (before their paths go), with the map's WWID;
    2. ``iscsi_volume`` (state absent) per path for dead/failed/sessionless devices, with the WWID the path
       serves (so that only that volume's paths go: a failed path of a map that keeps a working path is
       taken out of the map, the map is never flushed), one action per unexpected volume and iface (all its
       portals), and a ``session_only`` logout per portal for sessions without a LUN; every one names the
       ``iface`` of its session(s) (None when no session is known: a device whose session is gone);
    3. ``file`` (state absent) for dangling links.
    Orphans that cannot be mapped to an action (no portal/IQN known) go to ``manual`` actions.
    """
    plan = _Plan(orphans, map_rows)
    for orphan in orphans:
        plan.add(orphan)
    return plan.actions()


def summarize(facts):
    counts = dict((k, 0) for k in KINDS)
    for found in facts.get("orphans") or ():
        counts[found["kind"]] = counts.get(found["kind"], 0) + 1
    audited = "orphans" in facts
    return {"sessions": len(facts["sessions"]), "luns": len(facts["luns"]), "maps": len(facts["maps"]),
            "orphans": sum(counts.values()) if audited else None,
            "degraded": len(facts.get("degraded") or ()) if audited else None,
            "counts": counts if audited else None}
