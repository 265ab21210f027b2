# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Which open-iscsi node records the collection created: its ledger.

A record file carries no mark of who made it (``iscsiadm -o update`` rewrites the file from its parsed fields, so a
comment would be lost), so the connector keeps a small ledger of the records it created with ``--op new``:
``/var/lib/brick-storage/iscsi-records.json``, one entry per record file (file, target, portal, iface), no setting
and never a secret.  A record is ours only while it is in the ledger AND its file is still there for the same iface
(an admin's ``--op new`` for another iface, or a discovery, replaces open-iscsi's flat record file: then it is
theirs).  Everything else is the admin's: used as it is, never rewritten, never deleted.

The ledger is written atomically (``HostFS.write_private``: a new 0600 file, synced, renamed over the old one) by
callers that hold the node lock, bounded in size; a ledger that cannot be read counts as empty, so that a damaged
one can only make the collection leave its own records behind, never delete someone else's.
"""

from __future__ import annotations

import json
import os
import stat

LEDGER_DIR = "/var/lib/brick-storage"
LEDGER = LEDGER_DIR + "/iscsi-records.json"
MAX_ENTRIES = 4096
MAX_BYTES = 1 << 20
VERSION = 1


def record_iface(fs, record: str) -> str:
    """The iface a record file is for (its last ``iface.iscsi_ifacename`` line; ``default`` without one)."""
    iface = None
    for line in (fs.read_raw(record) or "").splitlines():
        if line.split("=", 1)[0].strip() == "iface.iscsi_ifacename" and "=" in line:
            iface = line.split("=", 1)[1].strip()
    return iface or "default"


class LedgerError(OSError):
    """The ledger could not be written (its directory is not a private directory of ours, or the write failed)."""


class Ledger(object):
    """The node records the collection created, as a list of entries {file, iqn, portal, iface}."""

    def __init__(self, fs, path: str = LEDGER) -> None:
        self.fs = fs
        self.path = path
        self.problem: str | None = None  # why the ledger could not be read, if it could not

    def entries(self) -> list[dict]:
        """The ledger's entries; [] (and ``problem`` set) when it is missing, too big or not ours."""
        text = self.fs.read_raw(self.path)
        if text is None:
            if self.fs.lexists(self.path):
                self.problem = "%s cannot be read" % self.path
            return []
        try:
            data = json.loads(text) if len(text) <= MAX_BYTES else None
        except ValueError:
            data = None
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, list) or not self.fs.is_private_file(self.path):
            self.problem = "%s is not a ledger of brick.storage (damaged, too big, or not a private file)" % self.path
            return []
        keys = ("file", "iqn", "portal", "iface")
        return [entry for entry in nodes[:MAX_ENTRIES] if isinstance(entry, dict)
                and all(isinstance(entry.get(key), str) for key in keys)]

    def owns(self, record: str) -> bool:
        """Whether record file ``record`` is one the collection created (and still is: same file, same iface)."""
        for entry in self.entries():
            if entry["file"] == record:
                return self.fs.lexists(record) and record_iface(self.fs, record) == entry["iface"]
        return False

    def add(self, record: str, iqn: str, portal: str, iface: str) -> None:
        entries = [entry for entry in self._live() if entry["file"] != record]
        if len(entries) >= MAX_ENTRIES:
            raise LedgerError("%s holds %d records already" % (self.path, MAX_ENTRIES))
        entries.append({"file": record, "iqn": iqn, "portal": portal, "iface": iface})
        self._write(entries)

    def drop(self, records: list[str]) -> None:
        """Take ``records`` (and the entries whose file is gone) out of the ledger."""
        listed = self.entries()
        if self.problem is not None:
            raise LedgerError(self.problem)
        kept = [entry for entry in self._live() if entry["file"] not in records]
        if kept != listed or (not kept and self.fs.lexists(self.path)):
            self._write(kept)

    def _live(self):
        """The entries whose record file is still there (the others are nobody's any more)."""
        entries = self.entries()
        if self.problem is not None:
            raise LedgerError(self.problem)
        return [entry for entry in entries if self.fs.lexists(entry["file"])]

    def _write(self, entries):
        if not entries:
            self.fs.unlink(self.path)
            _rmdir_if_empty(self.fs, LEDGER_DIR if self.path == LEDGER else os.path.dirname(self.path))
            return
        _private_dir(self.fs, os.path.dirname(self.path))
        self.fs.write_private(self.path, json.dumps({"version": VERSION, "nodes": entries}, indent=1,
                                                    sort_keys=True) + "\n")


def _private_dir(fs, directory):
    """Make ``directory`` (mode 0700) unless it is there; refuse a link or a directory someone else could change."""
    real = fs.path(directory)
    try:
        os.mkdir(real, 0o700)
    except OSError:
        pass
    try:
        info = os.lstat(real)
    except OSError as err:
        raise LedgerError("cannot make %s: %s" % (directory, err)) from err
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise LedgerError("%s is not a directory of the user running the task that only it can write to" % directory)


def _rmdir_if_empty(fs, directory):
    try:
        os.rmdir(fs.path(directory))
    except OSError:
        pass
