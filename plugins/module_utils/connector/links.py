# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""udev links named for what a detach (or a failed attach) removed, matched by what they resolve to.

A link is valid when the device it resolves to is what its name says: by-path, the session's portal, IQN and the
LUN; by-id, the WWID.  Never by device name alone: a new device may have got the old ``sdX``.
"""

from __future__ import annotations

from . import scsi
from .matching import address_key

BY_PATH = "/dev/disk/by-path"
BY_ID = "/dev/disk/by-id"


def _link_names(plan):
    """Links that described what the plan removes: by-path names of each removed path (and its partitions),
    by-id names of the volume's WWID when its map goes (or when it had no map)."""
    bypath = []
    for r in plan.remove:
        addr = r.session.address
        portal = "%s:%s" % (addr, r.session.port)
        bypath.append(scsi.bypath_name(portal, r.session.iqn, r.dev.lun))
    byid = []
    w = plan.wwid
    if w and (plan.flush_maps or not plan.kept_maps):
        byid = ["scsi-%s" % w, "wwn-0x%s" % w[1:], "dm-uuid-mpath-%s" % w]
        byid += ["dm-name-%s" % m.name for m in plan.flush_maps]
    return bypath, byid


def _bypath_valid(fs, link_name, target_name):
    """A by-path link is valid when the device it resolves to is that path: same portal, IQN and LUN."""
    info = scsi.parse_bypath(link_name)
    if info is None or not target_name or not fs.exists("/sys/class/block/%s" % target_name):
        return False
    base = target_name
    part = fs.read("/sys/class/block/%s/partition" % target_name)
    if part:
        base = scsi.parent_of_partition(fs, target_name) or target_name
    real = fs.realpath("/sys/class/block/%s" % base)
    for s in scsi.iscsi_sessions(fs):
        if not real.startswith(s.path + "/"):
            continue
        d = [x for x in scsi.session_devices(fs, s, with_details=False) if x.name == base]
        return bool(d) and d[0].lun == info["lun"] and (s.iqn or "") == info["iqn"] and \
            address_key(s.address) == address_key(info["address"]) and int(s.port) == info["port"]
    return False


def _byid_valid(fs, link_name, target_name, wwid):
    """A by-id link is valid when the device it resolves to serves ``wwid``.  A partition (``sdb1``) has no
    ``device/wwid`` in sysfs, on the real kernel too: it is judged by its disk (``/sys/class/block/sdb1/..``)."""
    if not target_name or not fs.exists("/sys/class/block/%s" % target_name):
        return False
    if target_name.startswith("dm-"):
        m = scsi.dm_map(fs, target_name)
        return m is not None and (m.wwid == wwid or (m.uuid or "").endswith("mpath-" + wwid))
    disk = scsi.parent_of_partition(fs, target_name) or target_name
    return scsi.udev_wwid(fs.read("/sys/class/block/%s/device/wwid" % disk)) == wwid


def stale_links(fs, plan):
    """Links named for what the plan removed that are dangling or now point at another device."""
    bypath, byid = _link_names(plan)
    out = []
    for e in fs.listdir(BY_PATH):
        if not any(e == n or e.startswith(n + "-part") for n in bypath):
            continue
        link = "%s/%s" % (BY_PATH, e)
        if not _bypath_valid(fs, e, fs.basename_of_link(link)):
            out.append(link)
    for e in fs.listdir(BY_ID):
        if not any(e == n or e.startswith(n + "-part") for n in byid):
            continue
        link = "%s/%s" % (BY_ID, e)
        if not _byid_valid(fs, e, fs.basename_of_link(link), plan.wwid):
            out.append(link)
    return out


def remove_stale_links(fs, plan):
    removed = []
    for link in stale_links(fs, plan):
        try:
            if fs.unlink(link):
                removed.append(link)
        except (IOError, OSError):
            pass
    return removed
