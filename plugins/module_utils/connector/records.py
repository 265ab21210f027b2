# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Which open-iscsi node records the collection created: its ledger.

A record file carries no mark of who made it (``iscsiadm -o update`` rewrites the file from its parsed fields, so a
comment would be lost), so the connector keeps a small ledger of the records it created with ``--op new``:
``/var/lib/brick-storage/iscsi-records.json``, one entry per record file (file, target, portal, iface, and the
fingerprint of the file's content as the collection last wrote it), no setting and never a secret.  A record is
ours only while it is in the ledger AND its file still holds exactly what the collection last wrote: every write of
the collection to an owned record (``--op new``, ``--op update``, the CHAP lines, the boot settings, a restore)
refreshes the fingerprint under the node lock (``refresh``).  An admin's ``--op new`` of the same portal (any
iface), an ``--op update`` of any setting, a discovery that replaces the flat file, or any edit changes the content:
the record is the admin's from then on (its entry is dropped at the next write of the ledger), used as it is, never
rewritten, never deleted.  A rewrite that leaves the very bytes the collection wrote cannot be told apart (it is
the same record); open-iscsi's own ``idbm_rec_write`` writes every key in its order, so it changes the bytes of a
record the collection wrote its lines into.

The fingerprint is HMAC-SHA256 of the file's bytes, keyed by a random 256-bit key of the ledger (``key``, made with
the first entry, gone with the last): a record holds the CHAP secret, and a plain hash of it would let whoever reads
the ledger test guesses of a low-entropy secret offline.  With the key beside it in the same root-only 0600 file the
ledger is no weaker than the record itself, and a copy of the fingerprints alone reveals nothing.  Entries of an
older ledger (version 1, no fingerprint) are not ours any more: the records of an older release are left behind by
a detach (the safe direction; ``iscsiadm -m node -o delete`` removes them).

The ledger is written atomically (``HostFS.write_private``: a new 0600 file, synced, renamed over the old one) by
callers that hold the node lock, bounded in size; a ledger that cannot be read counts as empty, so that a damaged
one can only make the collection leave its own records behind, never delete someone else's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat

LEDGER_DIR = "/var/lib/brick-storage"
LEDGER = LEDGER_DIR + "/iscsi-records.json"
MAX_ENTRIES = 4096
MAX_BYTES = 1 << 20
VERSION = 2
KEY_BYTES = 32


def record_settings(text, keys) -> dict:
    """{key: value} of the ``keys`` lines of record ``text`` (the last line of a key wins; ``<empty>`` is "")."""
    found = {}
    for line in (text or "").splitlines():
        if "=" not in line or line.lstrip().startswith("#"):
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if key in keys:
            found[key] = "" if value == "<empty>" else value
    return found


def record_iface(fs, record: str) -> str:
    """The iface a record file is for (its last ``iface.iscsi_ifacename`` line; ``default`` without one)."""
    key = "iface.iscsi_ifacename"
    return record_settings(fs.read_raw(record), (key,)).get(key) or "default"


class LedgerError(OSError):
    """The ledger could not be written (its directory is not a private directory of ours, or the write failed)."""


class Ledger(object):
    """The node records the collection created, as a list of entries {file, iqn, portal, iface, fingerprint}."""

    def __init__(self, fs, path: str = LEDGER) -> None:
        self.fs = fs
        self.path = path
        self.problem: str | None = None  # why the ledger could not be read, if it could not
        self._key: str | None = None  # the key of the fingerprints (hex), once read or made

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
        key = data.get("key") if isinstance(data, dict) else None
        if isinstance(key, str) and len(key) == 2 * KEY_BYTES and _is_hex(key):
            self._key = key
        keys = ("file", "iqn", "portal", "iface")
        return [entry for entry in nodes[:MAX_ENTRIES] if isinstance(entry, dict)
                and all(isinstance(entry.get(key), str) for key in keys)]

    def fingerprint(self, record: str) -> str | None:
        """HMAC-SHA256 (the ledger's key) of the bytes of record file ``record`` now; None without file or key."""
        if self._key is None:
            return None
        try:
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            handle = os.open(self.fs.path(record), flags)
        except OSError:
            return None
        try:
            content = os.read(handle, MAX_BYTES + 1) if stat.S_ISREG(os.fstat(handle).st_mode) else None
        except OSError:
            content = None
        finally:
            os.close(handle)
        if content is None or len(content) > MAX_BYTES:
            return None  # not a regular file (a link is never followed), or no record of open-iscsi's
        return hmac.new(bytes.fromhex(self._key), content, hashlib.sha256).hexdigest()

    def owns(self, record: str) -> bool:
        """Whether record file ``record`` is one the collection created and still holds what it last wrote."""
        return bool(self.owned([record]))

    def owned(self, records: list[str]) -> list[str]:
        """Those of ``records`` that are ours (see owns()), from one read of the ledger."""
        by_file = dict((entry["file"], entry) for entry in self.entries())
        return [record for record in records if record in by_file and self._current(by_file[record])]

    def _current(self, entry: dict) -> bool:
        """Whether ``entry``'s file holds what the collection last wrote (its fingerprint)."""
        want = entry.get("fingerprint")
        if not isinstance(want, str):
            return False  # an entry of an older ledger (version 1): not ours any more (see the module's doc)
        have = self.fingerprint(entry["file"])
        return have is not None and hmac.compare_digest(have, want)

    def add(self, record: str, iqn: str, portal: str, iface: str) -> None:
        """Enter ``record`` (just written by the collection's ``--op new``) with the fingerprint of its content."""
        entries = [entry for entry in self._live() if entry["file"] != record]
        if len(entries) >= MAX_ENTRIES:
            raise LedgerError("%s holds %d records already" % (self.path, MAX_ENTRIES))
        self._ensure_key()
        entries.append({"file": record, "iqn": iqn, "portal": portal, "iface": iface,
                        "fingerprint": self._fingerprint_of(record)})
        self._write(entries)

    def refresh(self, records: list[str]) -> None:
        """After the collection's own write of ``records`` (owned ones, under the node lock): their entries get the
        fingerprint of what the files hold now.  The caller checked that they were ours before it wrote."""
        listed = self.entries()
        if self.problem is not None:
            raise LedgerError(self.problem)
        if not any(entry["file"] in records for entry in listed):
            return
        self._ensure_key()
        kept = []
        for entry in listed:
            if entry["file"] in records:
                if self.fs.lexists(entry["file"]):
                    kept.append(dict(entry, fingerprint=self._fingerprint_of(entry["file"])))
            elif self.fs.lexists(entry["file"]) and self._current(entry):
                kept.append(entry)
        self._write(kept)

    def drop(self, records: list[str]) -> None:
        """Take ``records`` (and the entries that are nobody's any more) out of the ledger."""
        listed = self.entries()
        if self.problem is not None:
            raise LedgerError(self.problem)
        kept = [entry for entry in self._live() if entry["file"] not in records]
        if kept != listed or (not kept and self.fs.lexists(self.path)):
            self._write(kept)

    def _live(self):
        """The entries still ours: record file there, with what the collection last wrote (the others are the
        admin's, or nobody's, and are dropped lazily at this write)."""
        entries = self.entries()
        if self.problem is not None:
            raise LedgerError(self.problem)
        return [entry for entry in entries if self.fs.lexists(entry["file"]) and self._current(entry)]

    def _ensure_key(self):
        if self._key is None:
            self._key = os.urandom(KEY_BYTES).hex()

    def _fingerprint_of(self, record):
        fingerprint = self.fingerprint(record)
        if fingerprint is None:
            raise LedgerError("the node record %s cannot be read (not a regular file?)" % record)
        return fingerprint

    def _write(self, entries):
        if not entries:
            self.fs.unlink(self.path)
            self._key = None
            _rmdir_if_empty(self.fs, LEDGER_DIR if self.path == LEDGER else os.path.dirname(self.path))
            return
        self._ensure_key()
        _private_dir(self.fs, os.path.dirname(self.path))
        self.fs.write_private(self.path, json.dumps({"version": VERSION, "key": self._key, "nodes": entries},
                                                    indent=1, sort_keys=True) + "\n")


def _is_hex(text):
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


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
