# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Input validation shared by every module: bad input fails here, before any command runs."""

from __future__ import annotations

import math
import re
import socket
import threading

from .errors import InvalidInput

DEFAULT_PORT = 3260
MAX_LUN = 0xFFFFFFFF

# RFC 3720 section 3.2.6: "iqn." yyyy-mm "." reversed domain name of the naming authority, then optionally ":"
# and a string of the characters an iSCSI name may hold (RFC 3722 stringprep output: ASCII letters, digits,
# '-', '.', ':'; letters are compared lower-cased).  Unicode characters RFC 3722 would allow are refused: a
# name ends up in file names and command lines.  223 bytes at most.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_IQN = re.compile(r"^iqn\.[0-9]{4}-(?:0[1-9]|1[0-2])\." + _LABEL + r"(?:\." + _LABEL + r")*(?::[a-z0-9.:-]+)?\Z")
_EUI = re.compile(r"^eui\.[0-9A-Fa-f]{16}\Z")
_NAA = re.compile(r"^naa\.(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{32})\Z")
MAX_ISCSI_NAME = 223
# Control characters (C0, DEL, C1): never accepted in any input (NUL makes a command line impossible, newlines
# forge log lines and record lines, escapes drive terminals).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# What may surround a value and is trimmed (and nothing else).
_TRIM = " \t\r\n"
# open-iscsi keeps CHAP user names and secrets in char[256] fields of its records.
MAX_CHAP = 255
MAX_PATH = 4096
_HOSTNAME = re.compile(r"^(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\Z")
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\Z")
_IPV6_CHARS = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\Z")
# Names of devices, maps and ifaces: no shell metacharacters, no white space, no traversal.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+@=-]*\Z")
_SAFE_PATH_CHARS = re.compile(r"^/[A-Za-z0-9_./:+@=,-]*\Z")
# WWIDs as udev/multipath write them (3600140...), as sysfs does (naa.600140...), or as a wwn (0x600140...).
_WWID_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*\Z")
_SYSFS_WWID_PREFIX = (("naa.", "3"), ("eui.", "2"), ("t10.", "1"))
RESOLVE_TIMEOUT = 5.0


def show(value, limit=80):
    """``value`` as it may appear in a message: control characters escaped, long values cut."""
    if not isinstance(value, str):
        value = repr(value)
    if _CONTROL.search(value):
        value = value.encode("unicode_escape").decode("ascii")
    if len(value) > limit:
        value = value[:limit - 3] + "..."
    return value


def has_control(value):
    """True if the string ``value`` holds a control character (NUL, newline, escape, DEL, C1...)."""
    return bool(_CONTROL.search(value))


def text(value, what, empty_ok=False, max_len=255):
    """A string option without control characters, trimmed of surrounding blanks."""
    if value is None and empty_ok:
        return None
    if not isinstance(value, str):
        raise InvalidInput("%s must be a string, got %s" % (what, type(value).__name__))
    v = value.strip(_TRIM)
    if not v and not empty_ok:
        raise InvalidInput("%s is empty" % what)
    if has_control(v):
        raise InvalidInput("%s '%s' contains control characters" % (what, show(v)))
    if len(v) > max_len:
        raise InvalidInput("%s is longer than %d characters" % (what, max_len))
    return v


def iqn(value: object, what: str = "target IQN") -> str:
    if value is not None and not isinstance(value, str):
        raise InvalidInput("%s must be a string, got %s" % (what, type(value).__name__))
    v = (value or "").strip(_TRIM)
    if not v:
        raise InvalidInput("%s is empty" % what)
    low = v.lower()
    bad = has_control(v) or len(v.encode("utf-8")) > MAX_ISCSI_NAME
    if low.startswith("iqn."):
        # RFC 3720: case-insensitive, so the check is on the lower-cased name.  '..' is refused too (an empty
        # label of the naming authority, and nothing an array hands out after the colon).
        if bad or not _IQN.match(low) or ".." in low:
            raise InvalidInput("%s '%s' is malformed" % (what, show(v)),
                               hint="expected iqn.YYYY-MM.reversed.domain[:identifier] (RFC 3720): letters, "
                                    "digits, '-', '.' and ':' only, at most %d bytes" % MAX_ISCSI_NAME)
        return v
    if not bad and (_EUI.match(v) or _NAA.match(v)):
        return v
    raise InvalidInput("%s '%s' is malformed" % (what, show(v)),
                       hint="expected iqn.YYYY-MM.domain[:id], eui.<16 hex> or naa.<16|32 hex>")


def chap_user(value, what="CHAP user name"):
    """A CHAP user name as open-iscsi stores it: 1-255 bytes, no control characters, no surrounding blanks
    (open-iscsi's record parser would drop them)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("%s must be a non-empty string" % what)
    if has_control(value):
        raise InvalidInput("%s '%s' contains control characters" % (what, show(value)))
    if value != value.strip() or value == "<empty>" or len(value.encode("utf-8")) > MAX_CHAP:
        raise InvalidInput("%s '%s' cannot be stored in an open-iscsi record" % (what, show(value)),
                           hint="at most %d bytes, no leading or trailing blanks" % MAX_CHAP)
    return value


def chap_secret(value, what="CHAP secret"):
    """A CHAP secret open-iscsi can store and read back unchanged.  The messages never show the value."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("%s must be a non-empty string" % what)
    if has_control(value):
        raise InvalidInput("%s contains control characters (a newline, NUL, tab...); they cannot be stored" % what)
    if value != value.strip() or value == "<empty>" or len(value.encode("utf-8")) > MAX_CHAP:
        raise InvalidInput("%s cannot be stored in an open-iscsi record" % what,
                           hint="at most %d bytes, no leading or trailing blanks (open-iscsi drops them)" % MAX_CHAP)
    return value


def lock_dir(value, what="lock_dir"):
    """An absolute directory path without control characters (the lock directory)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("%s must be a non-empty path" % what)
    if has_control(value):
        raise InvalidInput("%s '%s' contains control characters" % (what, show(value)))
    if not value.startswith("/") or len(value) > MAX_PATH:
        raise InvalidInput("%s '%s' is not an absolute path" % (what, show(value)),
                           hint="use a directory only root can write, such as /run/brick-storage")
    if "\x00" in value or ".." in value.split("/"):
        raise InvalidInput("%s '%s' is not a normalised path (no '..')" % (what, show(value)))
    return value


def seconds(value, what, minimum=0.0, maximum=86400.0, zero_ok=True):
    """A finite number of seconds in [minimum, maximum] (0 allowed only with ``zero_ok``)."""
    if isinstance(value, bool):
        raise InvalidInput("%s must be a number of seconds, not a boolean" % what)
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("%s '%s' is not a number" % (what, show(value))) from None
    if math.isnan(f) or math.isinf(f) or f < minimum or f > maximum or (f == 0 and not zero_ok):
        low = ">= %g" % minimum if (zero_ok or minimum > 0) else "greater than 0"
        raise InvalidInput("%s must be %s and at most %g seconds, got %s" % (what, low, maximum, show(value)))
    return f


def count(value, what, minimum=0, maximum=1000):
    """An integer in [minimum, maximum]."""
    if isinstance(value, bool):
        raise InvalidInput("%s must be an integer, not a boolean" % what)
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except (TypeError, ValueError):
            raise InvalidInput("%s '%s' is not an integer" % (what, show(value))) from None
    if not minimum <= value <= maximum:
        raise InvalidInput("%s %s is out of range %d-%d" % (what, value, minimum, maximum))
    return value


def _is_ipv6(addr):
    if not _IPV6_CHARS.match(addr) or addr.count(":") < 2:
        return False
    core = addr.split("%", 1)[0]
    if core.count("::") > 1:
        return False
    groups = core.split(":")
    if "." in groups[-1]:
        if not _IPV4.match(groups[-1]):
            return False
        groups = groups[:-1] + ["0", "0"]
    if "::" not in core and len(groups) != 8:
        return False
    return all(len(g) <= 4 and all(c in "0123456789abcdefABCDEF" for c in g) for g in groups if g)


def _is_ipv4(addr):
    m = _IPV4.match(addr)
    return bool(m) and all(0 <= int(g) <= 255 for g in m.groups())


def port(value: object, what: str = "port") -> int:
    try:
        p = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput("%s '%s' is not a number" % (what, value)) from None
    if not 1 <= p <= 65535:
        raise InvalidInput("%s %s is out of range 1-65535" % (what, p))
    return p


class Portal(object):
    """A validated portal.  ``str(portal)`` is iscsiadm's form (``[addr]:port`` for IPv6)."""

    __slots__ = ("host", "port", "ipv6")

    def __init__(self, host: str, port_: int, ipv6: bool = False) -> None:
        self.host = host
        self.port = port_
        self.ipv6 = ipv6

    def __str__(self) -> str:
        if self.ipv6:
            return "[%s]:%d" % (self.host, self.port)
        return "%s:%d" % (self.host, self.port)

    __repr__ = __str__

    @property
    def bypath(self):
        """Form used by udev in /dev/disk/by-path names (IPv6 without brackets)."""
        return "%s:%d" % (self.host, self.port)

    def __eq__(self, other):
        return isinstance(other, Portal) and (self.host.lower(), self.port) == (other.host.lower(), other.port)

    def __hash__(self):
        return hash((self.host.lower(), self.port))


def portal(value: object, what: str = "portal") -> Portal:
    v = (value or "").strip(_TRIM) if isinstance(value, str) else value
    if not v or not isinstance(v, str):
        raise InvalidInput("%s is empty" % what)
    if has_control(v) or len(v) > 300:
        raise InvalidInput("%s '%s' contains characters that are not allowed" % (what, show(v)))
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            raise InvalidInput("%s '%s' has an unclosed '['" % (what, v))
        host, rest = v[1:end], v[end + 1:]
        if not _is_ipv6(host):
            raise InvalidInput("%s '%s': '%s' is not an IPv6 address" % (what, v, host))
        if rest and not rest.startswith(":"):
            raise InvalidInput("%s '%s' is malformed" % (what, v), hint="use [addr]:port")
        return Portal(host.lower(), port(rest[1:], what + " port") if rest else DEFAULT_PORT, True)
    if v.count(":") > 1:
        if _is_ipv6(v):
            return Portal(v.lower(), DEFAULT_PORT, True)
        raise InvalidInput("%s '%s' is malformed" % (what, v),
                           hint="write IPv6 portals in brackets: [addr]:port")
    host, sep, p = v.partition(":")
    if _IPV4.match(host):
        if not _is_ipv4(host):
            raise InvalidInput("%s '%s': '%s' is not a valid IPv4 address" % (what, v, host))
    elif not _HOSTNAME.match(host):
        raise InvalidInput("%s '%s': '%s' is not a valid address or host name" % (what, v, host))
    if sep and not p:
        raise InvalidInput("%s '%s' has an empty port" % (what, v))
    return Portal(host, port(p, what + " port") if p else DEFAULT_PORT, False)


def lun(value: object, what: str = "LUN") -> int:
    if isinstance(value, bool):
        raise InvalidInput("%s must be an integer, not a boolean" % what)
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput("%s '%s' is not an integer" % (what, value)) from None
    if not 0 <= n <= MAX_LUN:
        raise InvalidInput("%s %s is out of range 0-%d" % (what, n, MAX_LUN))
    return n


def name(value: object, what: str = "name") -> str:
    v = (value or "")
    if not isinstance(v, str) or not _SAFE_NAME.match(v) or len(v) > 255:
        raise InvalidInput("%s '%s' contains characters that are not allowed" % (what, show(value)))
    return v


def device_path(value: object, what: str = "device") -> str:
    """A block device path: must be absolute, under /dev, normalised, with no metacharacters."""
    v = value if isinstance(value, str) else ""
    if not v:
        raise InvalidInput("%s is empty" % what)
    if "\x00" in v or len(v) > MAX_PATH or not _SAFE_PATH_CHARS.match(v):
        raise InvalidInput("%s '%s' contains characters that are not allowed" % (what, show(value)),
                           hint="give a path such as /dev/sdb or /dev/disk/by-id/...")
    parts = v.split("/")
    if ".." in parts or "." in parts or "//" in v:
        raise InvalidInput("%s '%s' is not a normalised path (no '.', '..' or '//')" % (what, v))
    if not v.startswith("/dev/") or v == "/dev/":
        raise InvalidInput("%s '%s' is not under /dev" % (what, v))
    return v.rstrip("/")


def wwid(value: object, what: str = "wwid") -> str:
    """A volume's WWID in the form udev and multipath use (``3600140...``), lower-cased.

    Accepts that form, the sysfs form (``naa.600140...``, ``eui.``, ``t10.``) and a ``wwn-0x``/``0x`` WWN
    (taken as an NAA identifier).  Raises InvalidInput for anything else."""
    v = value.strip(_TRIM) if isinstance(value, str) else ""
    if not v or len(v) > 256 or has_control(v) or not _WWID_CHARS.match(v):
        raise InvalidInput("%s '%s' is not a WWID" % (what, show(value)),
                           hint="use the multipath/udev WWID (3600140...), the sysfs form (naa.600140...) "
                                "or the WWN (0x600140...)")
    low = v.lower()
    for prefix, digit in _SYSFS_WWID_PREFIX:
        if low.startswith(prefix):
            return digit + low[len(prefix):]
    if low.startswith("wwn-0x"):
        return "3" + low[6:]
    if low.startswith("0x"):
        return "3" + low[2:]
    return low


def resolve_portal(p, what="portal", resolver=None, timeout=RESOLVE_TIMEOUT):
    """Every address of a portal given as a host name, as numeric Portals (same port).

    A numeric portal comes back as it is.  The kernel shows sessions with numeric addresses only, so a
    portal given by name must be resolved before it can be matched with sysfs.  The lookup is bounded
    by ``timeout`` (a dead DNS server must not hang the module) and fails with a clear message."""
    if p.ipv6 or _is_ipv4(p.host):
        return [p]
    resolver = resolver or socket.getaddrinfo
    box = {}

    def lookup():
        try:
            box["infos"] = resolver(p.host, p.port, 0, socket.SOCK_STREAM)
        except Exception as e:  # socket.gaierror, UnicodeError...
            box["error"] = e
    t = threading.Thread(target=lookup)
    t.daemon = True
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise InvalidInput("%s '%s': looking up host name '%s' did not finish within %ss" % (what, p, p.host, timeout),
                           hint="check the DNS/hosts configuration, or give the portal's IP address")
    if "error" in box:
        raise InvalidInput("%s '%s': host name '%s' does not resolve (%s)" % (what, p, p.host, box["error"]),
                           hint="check the name, or give the portal's IP address")
    out = []
    for info in box.get("infos") or ():
        family, addr = info[0], info[4][0]
        addr = addr.split("%", 1)[0] if family == socket.AF_INET6 else addr
        q = Portal(addr.lower(), p.port, family == socket.AF_INET6)
        if q not in out:
            out.append(q)
    if not out:
        raise InvalidInput("%s '%s': host name '%s' has no address" % (what, p, p.host),
                           hint="give the portal's IP address")
    return out
