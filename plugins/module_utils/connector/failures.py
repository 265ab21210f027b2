# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Portals whose login failed recently, remembered between runs (``skip_failed_portals_for``).

For fleets where a portal is down for hours, each re-run would otherwise pay the whole login budget to leave the
host as it was.  Failures are remembered whenever the connector has a log (skipping needs ``skip_failed_for``):
check mode reads them to predict that a re-run whose portal failed last time changes nothing.  The failures live
in a small JSON file of the collection's own, in the root-only lock directory (a tmpfs: a reboot forgets them),
not under the host root of HostFS.
"""

from __future__ import annotations

import json
import os

# A failure older than this is forgotten anyway.
FORGET_AFTER = 86400


def read_state(path):
    """A JSON state file of the collection's own, or {}."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(path, data):
    """Replace a state file atomically, readable by its owner only (0600)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(tmp, path)


class PortalFailures(object):
    """The failure log of one connector: which portals to skip, and what to remember after an attach."""

    def __init__(self, conn):
        self.conn = conn
        self.enabled = bool(conn.failure_log)
        self.skipping = self.enabled and conn.skip_failed_for > 0
        self.known = read_state(conn.failure_log) if self.enabled else {}

    def key(self, path):
        from .matching import address_key
        return "%s|%s|%s" % (self.conn.iface, address_key(path.portal.host) + ":%d" % path.portal.port,
                             path.iqn.lower())

    def skipped(self, path, result):
        """True (and ``result`` filled in) when ``path`` failed recently and has no session: not tried again."""
        conn = self.conn
        when = self.known.get(self.key(path)) if self.skipping else None
        if when is None or conn.sessions_for(path):
            return False
        age = conn.wall_clock() - when
        if age >= conn.skip_failed_for:
            return False
        result["skipped"] = True
        result["error"] = "login to %s (%s) skipped: it failed %ds ago (skip_failed_portals_for=%ds)" % (
            path.portal, path.iqn, int(age), int(conn.skip_failed_for))
        return True

    def last_failure(self, path) -> float | None:
        """When the last login to ``path`` failed (wall clock), or None when it worked or was never tried."""
        when = self.known.get(self.key(path))
        return when if isinstance(when, (int, float)) else None

    def record(self, results):
        """Remember when each portal's login failed (and forget it once one works)."""
        if not self.enabled:
            return
        conn = self.conn
        now = conn.wall_clock()
        failed = [result for result in results if result.get("session") is None and result.get("error")
                  and not result.get("skipped")]
        if not failed and not any(self.key(result["path"]) in self.known for result in results):
            return  # nothing to remember and nothing to forget: no write
        conn.node_lock.acquire()
        try:
            data = read_state(conn.failure_log)
            for result in results:
                if result.get("skipped"):
                    continue
                key = self.key(result["path"])
                if result.get("session") is None and result.get("error"):
                    data[key] = now
                else:
                    data.pop(key, None)
            data = dict((k, v) for k, v in data.items() if now - v < FORGET_AFTER)
            if data != read_state(conn.failure_log):
                write_state(conn.failure_log, data)
        except (IOError, OSError) as e:
            conn.warnings.append("could not record failed portals in %s: %s" % (conn.failure_log, e))
        finally:
            conn.node_lock.release()
