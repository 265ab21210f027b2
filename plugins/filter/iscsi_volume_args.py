# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filter ``brick.storage.iscsi_volume_args``: os-brick / Ironic / Cinder ``connection_properties`` to the
arguments of ``brick.storage.iscsi_volume`` or to a volume of the roles' ``brick_volumes`` list.

Documentation: iscsi_volume_args.yml next to this file (``ansible-doc -t filter brick.storage.iscsi_volume_args``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display

_NO_AUTH = (None, "", "none")
display = Display()


class _Err(AnsibleFilterError):
    pass


def _fail(msg):
    raise _Err("iscsi_volume_args: " + msg)


def _is_list(v):
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _text(v, key):
    if isinstance(v, bool) or v is None or _is_list(v) or isinstance(v, Mapping):
        _fail("%s must be a string, not %s" % (key, type(v).__name__))
    s = str(v).strip()
    if not s:
        _fail("%s is empty" % key)
    return s


def _lun(v, key):
    if isinstance(v, bool):
        _fail("%s must be an integer, not a boolean" % key)
    try:
        n = int(str(v).strip())
    except (TypeError, ValueError):
        _fail("%s must be an integer, not %r" % (key, v))
    if n < 0:
        _fail("%s must not be negative" % key)
    return n


def _list(props, key, conv):
    v = props[key]
    if not _is_list(v):
        v = [v]
    if not v:
        _fail("%s is an empty list" % key)
    return [conv(x, "%s[%d]" % (key, i)) for i, x in enumerate(v)]


def _auth(props, method_key, user_key, pass_key):
    """(username, password) of a CHAP setting, or (None, None) when the method is none/unset.

    Never puts a secret into a message."""
    method = props.get(method_key)
    user, secret = props.get(user_key), props.get(pass_key)
    if method is None or str(method).strip().lower() in _NO_AUTH:
        if user or secret:
            # as os-brick: credentials count only with auth_method CHAP
            display.warning("iscsi_volume_args: %s is %s, so %s/%s are not used"
                            % (method_key, "not set" if method is None else repr(str(method)), user_key, pass_key))
        return None, None
    if str(method).strip().upper() != "CHAP":
        _fail("%s %r is not supported (only CHAP or None)" % (method_key, str(method)))
    if not user or not secret:
        _fail("%s is CHAP but %s" % (method_key, "%s is missing" % (user_key if not user else pass_key)))
    return _text(user, user_key), str(secret)


def iscsi_volume_args(props, format="module", name=None, multipath=None, wwid=None):
    """Turn a connection_properties dict into iscsi_volume module arguments (format=module) or a role volume
    (format=role). See iscsi_volume_args.yml."""
    if format not in ("module", "role"):
        _fail("format must be 'module' or 'role', not %r" % (format,))
    if not isinstance(props, Mapping):
        _fail("expected a dict (connection_properties or a connection_info with 'data'), got %s"
              % type(props).__name__)
    # a whole connection_info: {"driver_volume_type": "iscsi", "data": {...}}
    if "data" in props and isinstance(props.get("data"), Mapping) and "target_portal" not in props \
            and "target_portals" not in props:
        dvt = props.get("driver_volume_type")
        if dvt is not None and str(dvt).lower() != "iscsi":
            _fail("driver_volume_type is %r: only iscsi volumes can be attached" % (dvt,))
        props = props["data"]
    if multipath is not None and not isinstance(multipath, bool):
        _fail("multipath must be true, false or omitted")

    # -- paths: the plural (multipath) form wins when both portals and IQNs are given, as in os-brick
    plural = "target_portals" in props and "target_iqns" in props
    if "target_portals" in props and props["target_portals"] and (plural or "target_portal" not in props):
        portals = _list(props, "target_portals", _text)
    elif "target_portal" in props:
        portals = [_text(props["target_portal"], "target_portal")]
    else:
        _fail("no target_portal or target_portals")
    if plural:
        iqns = _list(props, "target_iqns", _text)
    elif props.get("target_iqn") is not None:
        iqns = [_text(props["target_iqn"], "target_iqn")]
    elif props.get("target_iqns"):
        iqns = _list(props, "target_iqns", _text)
    else:
        iqns = []  # the module discovers the target on the first portal
    if props.get("target_luns") is not None and (plural or props.get("target_lun") is None):
        luns = _list(props, "target_luns", _lun)
    elif props.get("target_lun") is not None:
        luns = [_lun(props["target_lun"], "target_lun")]
    else:
        luns = [0]
    n = len(portals)
    for key, vals in (("target_iqns", iqns), ("target_luns", luns)):
        if len(vals) > 1 and len(vals) != n:
            _fail("%s has %d entries for %d portal(s): give one per portal, or one for all"
                  % (key, len(vals), n))
    per_portal = iqns if len(iqns) == n else (iqns or [""]) * n
    if len(set(zip([p.lower() for p in portals], per_portal))) != n:
        _fail("target_portals lists the same portal twice for the same target")

    user, secret = _auth(props, "auth_method", "auth_username", "auth_password")
    user_in = props.get("auth_username_in")
    secret_in = props.get("auth_password_in")
    if (user_in or secret_in) and not user:
        _fail("auth_username_in/auth_password_in (mutual CHAP) need auth_method: CHAP with auth_username")
    if bool(user_in) != bool(secret_in):
        _fail("mutual CHAP needs both auth_username_in and auth_password_in")
    d_user, d_secret = _auth(props, "discovery_auth_method", "discovery_auth_username", "discovery_auth_password")
    if props.get("discovery_auth_username_in") or props.get("discovery_auth_password_in"):
        _fail("mutual CHAP for the discovery (discovery_auth_username_in) is not supported by iscsi_volume")

    out = {"portals": portals}
    if iqns:
        if len(set(iqns)) == 1:
            iqns = iqns[:1]
        if format == "module":
            out["iqn"] = iqns
        elif len(iqns) == 1:
            out["iqn"] = iqns[0]
        else:
            out["iqns"] = iqns
    if len(set(luns)) == 1:
        luns = luns[:1]
    if format == "module":
        out["lun"] = luns
    elif len(luns) == 1:
        out["lun"] = luns[0]
    else:
        out["luns"] = luns
    if user:
        out["chap_username"] = user
        out["chap_password"] = secret
    if user_in:
        out["chap_username_in"] = _text(user_in, "auth_username_in")
        out["chap_password_in"] = str(secret_in)
    if d_user:
        out["discovery_chap_username"] = d_user
        out["discovery_chap_password"] = d_secret
    if multipath is True:
        if n == 1:
            # os-brick with use_multipath and one portal finds the target's other portals by discovery
            out["discover"] = "always"
    elif multipath is False:
        out["multipath"] = "off"
    if wwid:
        out["wwid"] = _text(wwid, "wwid")
    if format == "role":
        if not name:
            _fail("format=role needs name= (the volume's name in brick_volumes)")
        out["name"] = _text(name, "name")
    elif name:
        _fail("name= only applies to format=role")
    return out


class FilterModule(object):
    """brick.storage filters."""

    def filters(self):
        return {"iscsi_volume_args": iscsi_volume_args}
