# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""What a volume is made of, at the bottom of the connector: its paths (portal, target IQN, LUN).

This module imports no other module of the connector (``scsi`` and ``validate`` for type checking only): every
other module may import it, and none of them is imported back (tests/unit/.../test_import_graph.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import socket

if TYPE_CHECKING:
    from .scsi import Session
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
