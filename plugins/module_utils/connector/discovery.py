# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""SendTargets discovery that stores nothing and leaves every record it did not create as it was."""

from __future__ import annotations

from .chap import DISCOVERY_AUTH_KEYS
from .errors import AttachError
from .iscsiadm import RC_NO_OBJS, SEND_TARGETS_DIRS, IdbmLock, discovery_argv, write_record_file


def discovery_record(fs, portal):
    """The file of the SendTargets discovery record of ``portal`` (``send_targets/ADDR,PORT/st_config``), or
    None."""
    for st_dir in SEND_TARGETS_DIRS:
        record = "%s/%s,%d/st_config" % (st_dir, portal.host, portal.port)
        if fs.lexists(record):
            return record
    return None


def parse_targets(result):
    """(portal, iqn) pairs of a discovery's output."""
    found = []
    for line in (result.stdout or "").splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        found.append((parts[0].rsplit(",", 1)[0], parts[1]))
    return found


def discover(db, portal, auth):
    """SendTargets discovery on ``portal`` through NodeDB ``db``.  Returns a list of (Portal-string, iqn).

    Without discovery CHAP: ``iscsiadm -m discovery ... --op nonpersistent`` (it reads no record and writes none).
    With discovery CHAP, iscsiadm reads the credentials from the portal's discovery record, so: when there is
    none, one is made (``--op new``), the credentials are written into its file, the discovery runs ``--op
    nonpersistent`` and the record is deleted again; when the admin has one, its file is saved, our credentials
    are written into it for the discovery, and its exact bytes are put back afterwards.  The node lock is held
    throughout, so two of our discoveries never see each other's credentials."""
    conn = db.conn
    timeout = conn.login_timeout * 2 + 10
    if not auth.discovery_username:
        result = conn.runner.run(discovery_argv(portal, conn.iface, "--op", "nonpersistent"), timeout=timeout)
        return parse_targets(result)
    argv_base = discovery_argv(portal, conn.iface, record=True)
    conn.node_lock.acquire()
    try:
        record = discovery_record(db.fs, portal)
        saved = None if record is None else db.fs.read_raw(record)
        if record is not None and saved is None:
            raise AttachError("cannot read the discovery record %s" % record)
        try:
            result = _discover_with_chap(db, portal, auth, argv_base, record, timeout)
        finally:
            _restore(db, portal, argv_base, record, saved)
    finally:
        conn.node_lock.release()
    return parse_targets(result)


def _discover_with_chap(db, portal, auth, argv_base, record, timeout):
    if record is None:
        db.run(argv_base + ["--op", "new"], locked=True)
    record_now = discovery_record(db.fs, portal)
    if record_now is None:
        raise AttachError("the discovery record of %s was not found after it was created: the discovery CHAP "
                          "credentials cannot be set" % portal,
                          hint="check /etc/iscsi/send_targets (or /var/lib/iscsi/send_targets)")
    db.write_records([record_now], DISCOVERY_AUTH_KEYS, auth.discovery_params())
    return db.conn.runner.run(argv_base + ["--discover", "--op", "nonpersistent"], timeout=timeout)


def _restore(db, portal, argv_base, record, saved):
    """Put the discovery record back as it was: the admin's bytes, or no record at all (ours is deleted, and only
    when nothing was found through it, so no node record goes with it)."""
    conn = db.conn
    now = discovery_record(db.fs, portal)
    if record is not None:
        with IdbmLock(db.fs, timeout=conn.command_timeout, clock=conn.clock, sleep=conn.sleep):
            write_record_file(db.fs, record, saved)
        return
    if now is None:
        return
    others = [e for e in db.fs.listdir(now.rsplit("/", 1)[0]) if e != "st_config"]
    if others:
        # someone discovered through this portal meanwhile: keep their links, drop only our credentials
        db.write_records([now], DISCOVERY_AUTH_KEYS, [("discovery.sendtargets.auth.authmethod", "None")])
        conn.warnings.append("the discovery record of %s made for this discovery was kept: %s" % (
            portal, ", ".join(others)))
        return
    db.run(argv_base + ["--op", "delete"], ok=(0, RC_NO_OBJS), locked=True)
