# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Which sessions belong to a path: IQN, one of the portal's addresses (numeric or by name), port and iface."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .iscsi import Path
    from .scsi import Session

import socket


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
