# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""What volume_paths_facts is asked about: one volume, and the LUNs a host is expected to have.

Bad input fails here, with InvalidInput, before anything is read.
"""

from __future__ import annotations

from . import validate
from .errors import InvalidInput


def normalize_volume(volume):
    """``{portals, iqn, lun}`` -> ``{portals: [Portal], iqn, lun}``; raises InvalidInput."""
    if volume is None:
        return None
    if not isinstance(volume, dict):
        raise InvalidInput("volume must be a dictionary with portals, iqn and lun")
    unknown = sorted(set(volume) - set(("portals", "portal", "iqn", "lun", "wwid", "iface")))
    if unknown:
        raise InvalidInput("volume has unknown key(s): %s" % ", ".join(unknown),
                           hint="use portals (list), iqn, lun and optionally wwid and iface")
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
        addrs = _addresses(pv, what)
        if addrs[0] not in out:
            out.append(addrs[0])
            aliases[str(addrs[0])] = addrs[1:]
        else:
            aliases[str(addrs[0])] += [a for a in addrs[1:] if a not in aliases[str(addrs[0])]]
    if volume.get("lun") is None:
        raise InvalidInput("volume.lun is missing")
    wwid = volume.get("wwid")
    iface = volume.get("iface")
    return {"portals": out, "aliases": aliases, "iqn": validate.iqn(volume.get("iqn"), "volume.iqn"),
            "lun": validate.lun(volume.get("lun"), "volume.lun"),
            "wwid": validate.wwid(wwid, "volume.wwid") if wwid not in (None, "") else None,
            "iface": validate.name(iface, "volume.iface") if iface not in (None, "") else None}


def _addresses(portal, what):
    """A portal's numeric addresses (a host name resolved, bounded: validate.resolve_portal), then the host name
    itself: a session made with ``iscsiadm -p NAME`` shows NAME as its persistent address (and its by-path links
    are named for it), the connection's address is a number."""
    addrs = validate.resolve_portal(portal, what)
    if addrs != [portal]:
        addrs = addrs + [validate.Portal(portal.host.lower(), portal.port)]
    return addrs


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
                where = "%s.portals[%d]" % (what, j)
                # every address of a host name, and the name (see _addresses): a session is matched on any
                luns.extend((q, n, address) for address in _addresses(validate.portal(p, where), where))
        else:
            luns.append((q, n, None))
        if item.get("wwid") is not None:
            wwids.add(_norm_wwid(item["wwid"], what + ".wwid"))
    return {"wwids": wwids, "luns": luns}
