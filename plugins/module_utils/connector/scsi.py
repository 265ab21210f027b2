# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Read-only view of iSCSI sessions, SCSI devices and block devices, from sysfs and /dev only.

No external command runs here: this is what makes re-runs, detaches and fleet audits cheap.
Layout: docs/dev/sysfs-layout.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .hostfs import HostFS

import os
import re

# LUN numbers live in their own file; these names stay importable from here.  The kernel writes (scan, delete,
# rescan) are in kernel_writes.py, which only what writes imports (a facts run reads).
from .luns import bypath_lun, lun_from_bypath  # noqa: F401

_SESSION_DIR = re.compile(r"^session(\d+)$")
_HOST_DIR = re.compile(r"^host(\d+)$")
_HCTL = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_BYPATH = re.compile(r"^(?:(?P<pci>.+)-)?ip-(?P<addr>.+):(?P<port>\d+)-iscsi-(?P<iqn>.+)-lun-(?P<lun>\d+|0x[0-9a-fA-F]+)"
                     r"(?:-part(?P<part>\d+))?$")

SEARCH_PATH = "/dev/disk/by-path"


def udev_wwid(sysfs_wwid: str | None) -> str | None:
    """Turn the sysfs ``device/wwid`` (``naa.600140...``) into the udev/multipath WWID (``3600140...``)."""
    if not sysfs_wwid:
        return None
    w = sysfs_wwid.strip()
    for prefix, digit in (("naa.", "3"), ("eui.", "2"), ("t10.", "1")):
        if w.startswith(prefix):
            return digit + w[len(prefix):]
    return "8" + w


def portal_str(addr: str | None, port: int | str | None) -> str:
    """iscsiadm's portal form: IPv6 in brackets."""
    if addr and ":" in addr:
        return "[%s]:%s" % (addr, port)
    return "%s:%s" % (addr, port)


class Session(object):
    # ``address`` is the persistent (configured) address, which is a host name when the record was made with
    # one (iscsiadm -p localhost); ``conn_address`` is the connection's numeric address.
    __slots__ = ("sid", "host", "iqn", "state", "tpgt", "iface", "address", "port", "path", "conn_address")
    sid: int
    host: int | None
    iqn: str | None
    state: str | None
    tpgt: int | None
    iface: str | None
    address: str | None
    port: int | str | None
    path: str
    conn_address: str | None

    def __init__(self, **kw) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def portal(self) -> str:
        return portal_str(self.address, self.port)

    def to_dict(self):
        return {"sid": self.sid, "host": self.host, "iqn": self.iqn, "state": self.state,
                "tpgt": self.tpgt, "iface": self.iface, "portal": self.portal}


class ScsiDevice(object):
    __slots__ = ("hctl", "host", "lun", "name", "state", "wwid", "size", "vendor", "model",
                 "holders", "sid", "path")
    hctl: str
    host: int
    lun: int
    name: str | None
    state: str | None
    wwid: str | None
    size: int | None
    vendor: str | None
    model: str | None
    holders: list[str] | None
    sid: int | None
    path: str  # the device's sysfs directory: its identity (session ids are never reused)

    def __init__(self, **kw) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def dev(self) -> str | None:
        return "/dev/%s" % self.name if self.name else None

    def to_dict(self):
        return {"hctl": self.hctl, "lun": self.lun, "device": self.dev, "name": self.name,
                "state": self.state, "wwid": self.wwid, "size": self.size,
                "vendor": self.vendor, "model": self.model, "holders": list(self.holders or []),
                "sid": self.sid}


class DmMap(object):
    __slots__ = ("dm", "name", "uuid", "wwid", "slaves", "holders", "size")
    dm: str
    name: str | None
    uuid: str | None
    wwid: str | None
    slaves: list[str]
    holders: list[str]
    size: int | None

    def __init__(self, **kw) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    @property
    def dev(self) -> str:
        return "/dev/%s" % self.dm

    @property
    def is_multipath(self):
        return bool(self.uuid and self.uuid.startswith("mpath-"))

    def to_dict(self):
        return {"dm": self.dm, "device": self.dev, "name": self.name, "uuid": self.uuid,
                "wwid": self.wwid, "slaves": list(self.slaves), "holders": list(self.holders),
                "size": self.size}


def _session_from_dir(fs, host, sid, sdir):
    """``sdir`` is the session device dir (/sys/devices/platform/hostH/sessionS)."""
    attrs = "%s/iscsi_session/session%d" % (sdir, sid)
    conn = "%s/connection%d:0/iscsi_connection/connection%d:0" % (sdir, sid, sid)
    current = fs.read(conn + "/address")
    addr = fs.read(conn + "/persistent_address") or current
    port = fs.read(conn + "/persistent_port") or fs.read(conn + "/port")
    return Session(sid=sid, host=host, iqn=fs.read(attrs + "/targetname"),
                   state=fs.read(attrs + "/state"), tpgt=fs.read_int(attrs + "/tpgt"),
                   iface=fs.read(attrs + "/ifacename") or "default", address=addr,
                   port=int(port) if port and port.isdigit() else port, path=sdir, conn_address=current)


def _host_dir(fs, h):
    """The device directory of iSCSI host ``h`` (``host2``): its class link is ``../../devices/.../host2/iscsi_host/
    host2``, so the directory is two levels up, found with one readlink (a realpath costs a stat per component, per
    session, which a host with thousands of sessions and the slow lab guest feel); anything else is resolved."""
    target = fs.readlink("/sys/class/iscsi_host/%s" % h)
    if target and target.startswith("../../devices/") and target.endswith("/%s/iscsi_host/%s" % (h, h)) \
            and "/../" not in target[6:] and "/./" not in target:
        return "/sys/" + target[6:-len("/iscsi_host/%s" % h)]
    return fs.realpath("/sys/class/iscsi_host/%s/device" % h)


def iscsi_sessions(fs: HostFS) -> list[Session]:
    """Every iSCSI session on the host, ordered by session id."""
    out = []
    for h in fs.listdir("/sys/class/iscsi_host"):
        m = _HOST_DIR.match(h)
        if not m:
            continue
        host = int(m.group(1))
        hdir = _host_dir(fs, h)
        for e in fs.listdir(hdir):
            sm = _SESSION_DIR.match(e)
            if sm:
                out.append(_session_from_dir(fs, host, int(sm.group(1)), "%s/%s" % (hdir, e)))
    # Sessions whose host is gone from iscsi_host but still listed under iscsi_session.
    known = set(s.sid for s in out)
    for e in fs.listdir("/sys/class/iscsi_session"):
        sm = _SESSION_DIR.match(e)
        if sm and int(sm.group(1)) not in known:
            sdir = fs.realpath("/sys/class/iscsi_session/%s/device" % e)
            hm = _HOST_DIR.match(os.path.basename(os.path.dirname(sdir)))
            out.append(_session_from_dir(fs, int(hm.group(1)) if hm else None, int(sm.group(1)), sdir))
    out.sort(key=lambda s: s.sid)
    return out


def holders(fs: HostFS, name: str) -> list[str]:
    return fs.listdir("/sys/class/block/%s/holders" % name)


def slaves(fs: HostFS, name: str) -> list[str]:
    return fs.listdir("/sys/class/block/%s/slaves" % name)


def _device_from_dir(fs, ddir, hctl, sid=None, with_details=True, names=None):
    m = _HCTL.match(hctl)
    if names is None:
        blocks = fs.listdir(ddir + "/block")
        name = blocks[0] if blocks else None
    else:
        name = names.get(ddir)
    dev = ScsiDevice(hctl=hctl, host=int(m.group(1)), lun=int(m.group(4)), name=name, sid=sid,
                     path=ddir, state=fs.read(ddir + "/state"))
    if with_details:
        dev.wwid = udev_wwid(fs.read(ddir + "/wwid"))
        dev.vendor = fs.read(ddir + "/vendor")
        dev.model = fs.read(ddir + "/model")
        if name:
            sectors = fs.read_int("/sys/class/block/%s/size" % name)
            dev.size = sectors * 512 if sectors is not None else None
            dev.holders = holders(fs, name)
        else:
            dev.holders = []
    return dev


def session_devices(fs: HostFS, session: Session, lun: int | None = None, with_details: bool = True,
                    names: dict[str, str] | None = None) -> list[ScsiDevice]:
    """SCSI devices (LUNs) of one session; only ``lun`` when given.  ``names`` ({device dir: block name}, see
    block_names()) saves a directory listing per device when the caller reads a whole host."""
    out = []
    sdir = session.path
    for t in fs.match(sdir, "target*"):
        tdir = "%s/%s" % (sdir, t)
        for e in fs.listdir(tdir):
            m = _HCTL.match(e)
            if not m or (lun is not None and int(m.group(4)) != lun):
                continue
            out.append(_device_from_dir(fs, "%s/%s" % (tdir, e), e, session.sid, with_details, names))
    return out


def block_names(fs: HostFS, entries: list[str]) -> dict[str, str]:
    """{SCSI device dir: block name} of the disks among ``entries`` of /sys/class/block (their class links are
    ``../../devices/.../H:C:T:L/block/sdX``): one readlink per disk instead of a listing of each device's block/."""
    out = {}
    for name in entries:
        if not name.startswith("sd") or not name[2:].isalpha():
            continue
        target = fs.readlink("/sys/class/block/%s" % name)
        if target and target.startswith("../../devices/") and target.endswith("/block/" + name) \
                and "/../" not in target[6:] and "/./" not in target:
            out["/sys/" + target[6:-len("/block/" + name)]] = name
        else:
            real = fs.realpath("/sys/class/block/%s" % name)
            out[os.path.dirname(os.path.dirname(real))] = name
    return out


def session_target(fs: HostFS, session: Session) -> tuple[int | None, int | None]:
    """(channel, target) of a logged-in session, or (None, None) when no target dir exists yet."""
    for t in fs.match(session.path, "target*"):
        parts = t[len("target"):].split(":")
        if len(parts) == 3:
            return int(parts[1]), int(parts[2])
    return None, None


def dm_map(fs: HostFS, dm: str) -> DmMap | None:
    """A device-mapper device by kernel name (``dm-3``), or None."""
    base = "/sys/class/block/%s" % dm
    uuid = fs.read(base + "/dm/uuid")
    if uuid is None and not fs.exists(base + "/dm"):
        return None
    wwid = uuid[len("mpath-"):] if uuid and uuid.startswith("mpath-") else None
    sectors = fs.read_int(base + "/size")
    return DmMap(dm=dm, name=fs.read(base + "/dm/name"), uuid=uuid, wwid=wwid,
                 slaves=slaves(fs, dm), holders=holders(fs, dm),
                 size=sectors * 512 if sectors is not None else None)


def dm_maps(fs: HostFS, multipath_only: bool = True) -> list[DmMap]:
    out = []
    for e in fs.match("/sys/class/block", "dm-*"):
        m = dm_map(fs, e)
        if m and (m.is_multipath or not multipath_only):
            out.append(m)
    return out


def multipath_of(fs: HostFS, name: str) -> DmMap | None:
    """The multipath map (DmMap) holding block device ``name`` (``sdb``), or None."""
    for h in holders(fs, name):
        if h.startswith("dm-"):
            m = dm_map(fs, h)
            if m and m.is_multipath:
                return m
    return None


def find_map(fs: HostFS, ref: str) -> DmMap | None:
    """Find a multipath map by name, WWID, /dev/dm-N, /dev/mapper/NAME or a by-id link."""
    if ref.startswith("/dev/"):
        if not fs.lexists(ref):
            return None
        real = fs.realpath(ref)
        base = os.path.basename(real)
        if base.startswith("dm-"):
            m = dm_map(fs, base)
            if m and m.is_multipath:
                return m
            # a partition (kpartx) or other dm on top: walk down to the multipath map
            for s in (m.slaves if m else []):
                mm = dm_map(fs, s)
                if mm and mm.is_multipath:
                    return mm
            return None
        return multipath_of(fs, base)
    for m in dm_maps(fs):
        if ref in (m.name, m.wwid, m.uuid):
            return m
    return None


def parse_bypath(name: str) -> dict | None:
    """Split a by-path link name into a dict, or None if it is not an iSCSI LUN link."""
    m = _BYPATH.match(name)
    if not m:
        return None
    lun = lun_from_bypath(m.group("lun"))
    return {"address": m.group("addr"), "port": int(m.group("port")), "iqn": m.group("iqn"),
            "lun": lun, "part": int(m.group("part")) if m.group("part") else None,
            "offload": m.group("pci")}


def bypath_name(bypath_portal: str, iqn: str, lun: int) -> str:
    """udev's by-path name of an iSCSI LUN (software initiator)."""
    return "ip-%s-iscsi-%s-lun-%s" % (bypath_portal, iqn, bypath_lun(lun))


def links_to(fs: HostFS, directory: str, names: list[str]) -> list[str]:
    """Links in ``directory`` that point at one of the block device ``names`` (base names)."""
    wanted = set(names)
    out = []
    for entry in fs.listdir(directory):
        if fs.basename_of_link("%s/%s" % (directory, entry)) in wanted:
            out.append("%s/%s" % (directory, entry))
    return out


def parent_of_partition(fs: HostFS, name: str) -> str | None:
    """``sdb`` for partition ``sdb1`` (from sysfs), or None when ``name`` is not a partition."""
    if not fs.exists("/sys/class/block/%s/partition" % name):
        return None
    return os.path.basename(os.path.dirname(fs.realpath("/sys/class/block/%s" % name)))


def read_wwid(fs: HostFS, dev: ScsiDevice) -> str | None:
    """The WWID a SCSI device reports now (udev/multipath form), from sysfs."""
    return udev_wwid(fs.read(dev.path + "/wwid"))
