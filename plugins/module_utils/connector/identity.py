# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Is it still the same volume, and has it grown?  Checks of an attached volume's paths (no command).

The kernel keeps a device's identity (its WWID, from the VPD pages) and its size from its first scan.  When the
array maps another volume at the same LUN number, the old sdX silently reads and writes the new volume; when the
LUN grows, the host goes on using the old size.  A rescan (``device/rescan``, one kernel write per path) makes the
kernel read both again; these functions compare what it says then.
"""

from __future__ import annotations

from . import multipath as mp
from . import kernel_writes, scsi
from .errors import AttachError, VolumeMismatch


def verify(conn, devs, dm_map, fresh=(), rescan=True, maps=()):
    """Check that ``devs`` (and their map ``dm_map``, and every other map in ``maps``) serve one volume,
    ``conn.wwid`` when it was given.

    The devices this call did not scan itself (``fresh``) are rescanned first, and their WWIDs read again.  A map
    serves the WWID it was made for (its uuid): a map whose WWID is not the volume's is another volume's, even when
    the devices in it now report the volume's WWID (a LUN the array reused behind an old map).
    Raises VolumeMismatch, naming every device, map and WWID, when they disagree; returns the WWID."""
    all_maps = ([dm_map] if dm_map is not None else []) + [
        m for m in maps if m is not None and (dm_map is None or m.dm != dm_map.dm)]
    expected = conn.wwid
    others = [m for m in all_maps if expected and m.wwid != expected]
    if others:
        # a map of another WWID holds these devices: another volume's, refused before the rescan (a rescan that
        # finds a new WWID makes multipathd take the path out of that map, and flush it when nothing uses it)
        raise VolumeMismatch(
            "expected WWID %s, but %s: another volume's map; nothing was changed (not even a rescan)" % (
                expected, "; ".join("map %s (%s) serves %s and holds %s" % (m.name, m.dev, m.wwid, ", ".join(
                    sorted(d.dev for d in devs if d.name in m.slaves))) for m in others)),
            hint="if the array re-mapped the LUN, detach the old volume with state=absent and its wwid (%s), then "
                 "attach again; else correct wwid" % others[0].wwid,
            expected_wwid=expected, wwids=dict((d.dev, d.wwid) for d in devs), map_wwid=others[0].wwid)
    stale = [d for d in devs if d.name not in fresh]
    if rescan and stale:
        slow = kernel_writes.rescan(conn.fs, stale, timeout=conn.rescan_timeout)
        if slow:
            conn.warnings.append("rescan of %s did not finish within %ss: their WWID was not re-read" % (
                ", ".join(slow), conn.rescan_timeout))
        for dev in stale:
            dev.wwid = scsi.read_wwid(conn.fs, dev)
    want = expected or (all_maps[0].wwid if all_maps else None)
    wwids = sorted(set(d.wwid for d in devs if d.wwid))
    bad = [d for d in devs if d.wwid and want and d.wwid != want]
    map_differs = bool(want and any(m.wwid != want for m in all_maps))
    if not bad and len(wwids) <= 1 and not map_differs and not (expected and not wwids):
        return wwids[0] if wwids else None
    parts = ["%s (%s) reports %s" % (d.dev, d.hctl, d.wwid or "no WWID") for d in devs]
    parts += ["map %s serves %s" % (m.name, m.wwid) for m in all_maps]
    head = "expected WWID %s, but " % expected if expected else "the paths of this volume disagree: "
    raise VolumeMismatch(
        head + "; ".join(parts) + ". The array has probably mapped another volume at this LUN number",
        hint="nothing of the other volume was touched; detach the stale paths with state=absent and the "
             "old wwid, then attach again (or correct wwid)",
        expected_wwid=expected, wwids=dict((d.dev, d.wwid) for d in devs),
        map_wwid=all_maps[0].wwid if all_maps else None)


def maps_of(fs, devs):
    """The multipath maps holding ``devs`` (each map once, in the order of the devices)."""
    out = []
    for dev in devs:
        dm_map = scsi.multipath_of(fs, dev.name) if dev.name else None
        if dm_map is not None and all(m.dm != dm_map.dm for m in out):
            out.append(dm_map)
    return out


def size_of(fs, name):
    """Size in bytes of block device ``name`` (sysfs), or None."""
    sectors = fs.read_int("/sys/class/block/%s/size" % name)
    return sectors * 512 if sectors is not None else None


def map_size(fs, dm_map):
    current = scsi.dm_map(fs, dm_map.dm)
    return current.size if current is not None else dm_map.size


def grow(conn, devs, dm_map, before, check_mode=False, resize=True):
    """Online extend, after verify() rescanned the paths: when the LUN grew on the array, make the host use the
    new size.  A single path already has it (no command); a multipath map is resized (``multipathd resize map``)
    once every working path shows the new size, and only with ``resize`` (the caller holds the target lock; else
    the result says ``pending``).  Never shrinks.  Returns {"old_size", "new_size", "how"} or None."""
    now = dict((d.name, size_of(conn.fs, d.name)) for d in devs)
    if dm_map is None:
        return _grown_path(conn, devs[0], before.get(devs[0].name), now.get(devs[0].name))
    old = map_size(conn.fs, dm_map)
    live = [now[d.name] for d in devs if d.state == "running" and now.get(d.name)]
    if not live or not old or not _map_may_grow(conn, dm_map, now, live, old):
        return None
    new = min(live)
    if check_mode:
        return {"old_size": old, "new_size": new, "how": "multipathd resize map (check mode: not done)"}
    if not resize:
        return {"old_size": old, "new_size": new, "how": "multipathd resize map", "pending": True}
    mp.resize_map(conn.runner, dm_map.name)
    after = scsi.dm_map(conn.fs, dm_map.dm)
    grown = after.size if after is not None else None
    if not grown or grown <= old:
        raise AttachError("multipathd did not resize map %s from %d to %d bytes" % (dm_map.name, old, new),
                          hint="check multipathd (journalctl -u multipathd) and run multipathd resize map %s"
                               % dm_map.name)
    return {"old_size": old, "new_size": grown, "how": "multipathd resize map"}


def _grown_path(conn, dev, old, new):
    if old and new and new > old:
        return {"old_size": old, "new_size": new, "how": "rescan"}
    if old and new and new < old:
        conn.warnings.append("%s now reports %d bytes, less than the %d it had: the LUN shrank on the array"
                             % (dev.dev, new, old))
    return None


def _map_may_grow(conn, dm_map, now, live, old):
    """True when every working path of the map shows more than the map has; warns when they disagree or shrank."""
    if min(live) >= old:
        return min(live) > old
    if max(live) > old:
        conn.warnings.append("the paths of %s disagree on the size (%s): not resized until every working path shows "
                             "the new size" % (dm_map.name, ", ".join("%s=%s" % kv for kv in sorted(now.items()))))
    else:
        conn.warnings.append("a path of %s reports %d bytes, less than the map's %d: never shrunk"
                             % (dm_map.name, min(live), old))
    return False
