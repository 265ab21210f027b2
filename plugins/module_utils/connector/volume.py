# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""What a volume is made of, at the bottom of the connector: its paths (portal, target IQN, LUN).

``path_objects()`` is the one query of "which sessions and LUN devices are this volume's paths'": the attach's view
of the volume (``Connector.state``) and the detach plan both ask it, and no other code matches sessions to paths.

This module imports only ``scsi`` (the sysfs reader, which imports nothing of ours back) and, for type checking,
``validate``: every other module may import it, and none of them is imported back
(tests/unit/plugins/module_utils/connector/test_import_graph.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import socket

from . import scsi

if TYPE_CHECKING:
    from .hostfs import HostFS
    from .scsi import ScsiDevice, Session
    from .validate import Portal


class Path(object):
    """One (portal, iqn, lun) of a volume.  ``aliases`` are the other addresses of a portal given as a host name
    (sessions on any of them are this path's); ``lun`` is None for a session-only logout."""

    __slots__ = ("portal", "iqn", "lun", "aliases", "name")

    def __init__(self, portal: Portal | None, iqn: str, lun: int | None, aliases: Iterable[Portal] = (),
                 name: str | None = None) -> None:
        self.portal = portal
        self.iqn = iqn
        self.lun = lun
        self.aliases = list(aliases)
        self.name = name  # the host name the portal was given as, if any

    def addresses(self) -> list[Portal]:
        return ([self.portal] if self.portal is not None else []) + [address for address in self.aliases if address != self.portal]

    def key(self) -> tuple:
        if self.portal is None:
            return (None, self.iqn.lower())
        return (address_key(self.portal.host), self.portal.port, self.iqn.lower())

    def __repr__(self):
        if self.lun is None:
            return "%s %s" % (self.portal, self.iqn)
        return "%s %s lun %d" % (self.portal, self.iqn, self.lun)


def address_key(address: object) -> str:
    """Comparable form of an IP address (IPv6 compressed and lower-cased)."""
    a = str(address or "").strip().lower()
    if a.startswith("[") and a.endswith("]"):
        a = a[1:-1]
    if ":" in a:
        try:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, a.split("%", 1)[0]))
        except (OSError, ValueError):
            return a
    return a


def session_matches(session: Session, path: Path, iface: str | None) -> bool:
    """True when ``session`` is a session of ``path`` (target IQN, one of the portal's addresses, iface)."""
    if (session.iqn or "").lower() != path.iqn.lower():
        return False
    if (session.iface or "default") != (iface or "default"):
        return False
    if path.portal is None:
        return True
    if str(session.port) != str(path.portal.port):
        return False
    # a session made by someone else with a host name shows that name as its persistent address (lab: iscsiadm
    # -p localhost gives persistent_address "localhost", address 127.0.0.1): compare both with every address
    have = set(address_key(a) for a in (session.address, session.conn_address) if a)
    want = set(address_key(a.host) for a in path.addresses())
    if getattr(path, "name", None):
        want.add(str(path.name).lower())
    return bool(have & want)


class PathObjects(object):
    """One session of a path, with the devices of the path's LUN on it (``devices``) and, when asked, the other
    LUNs the session carries (``others``: another volume's, never this one's)."""

    __slots__ = ("path", "session", "devices", "others")

    def __init__(self, path: Path, session: Session, devices: list[ScsiDevice], others: list[ScsiDevice]) -> None:
        self.path = path
        self.session = session
        self.devices = devices
        self.others = others


def path_objects(fs: HostFS, paths: Iterable[Path], iface: str | None, kernel_lun: Callable,
                 sessions: list[Session] | None = None, devices: bool = True, others: bool = True) -> list[PathObjects]:
    """The sessions of ``paths`` on ``iface`` (``session_matches``) and on each, the devices of the path's LUN in
    the form the session shows it (``kernel_lun(path, session, session_devices)``); a path without a LUN (a
    session-only logout) or ``devices=False`` gets none.  ``others=False`` reads only the LUN's devices (a detach
    needs no details of the other LUNs: one sysfs listing per session)."""
    sessions = scsi.iscsi_sessions(fs) if sessions is None else sessions
    out = []
    for path in paths:
        for session in sessions:
            if not session_matches(session, path, iface):
                continue
            if not devices or path.lun is None:
                out.append(PathObjects(path, session, [], []))
                continue
            found = scsi.session_devices(fs, session, with_details=others)
            lun = kernel_lun(path, session, found)
            if others:
                out.append(PathObjects(path, session, [dev for dev in found if dev.lun == lun],
                                       [dev for dev in found if dev.lun != lun]))
            else:
                out.append(PathObjects(path, session, scsi.session_devices(fs, session, lun=lun), []))
    return out
