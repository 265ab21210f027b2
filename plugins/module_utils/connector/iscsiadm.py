# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Every iscsiadm command line, and every write to open-iscsi's node records.

``NodeDB`` owns the node database: the argv of each ``iscsiadm -m node`` call, the host-wide lock that serialises
writers (open-iscsi's DB fails with parallel writers, seen on the lab), the record files themselves (found in
both layouts open-iscsi writes), the settings written into them without iscsiadm (CHAP, the next login's
settings), and the saved copies that an attach puts back when it fails.
"""

from __future__ import annotations

import os
import stat
import time

from .errors import AttachError, BrickError
from .records import Ledger, record_iface, record_settings
from .runner import Result

NODE_DIRS = ("/etc/iscsi/nodes", "/var/lib/iscsi/nodes")
SEND_TARGETS_DIRS = ("/etc/iscsi/send_targets", "/var/lib/iscsi/send_targets")
# Exit codes of iscsiadm(8)
RC_IDBM = 6
RC_TIMEOUT = 8
RC_SESS_EXISTS = 15
RC_NO_OBJS = 21
RC_AUTH = 24
# open-iscsi's own node-DB lock (idbm_lock(): link(lock, lock.write), retried every 10 ms; iscsiadm goes on
# without it after 30 s).  Taken around our own writes so that an iscsiadm of the admin never reads half a file.
IDBM_LOCK_DIRS = ("/run/lock/iscsi", "/var/lock/iscsi")
IDBM_POLL = 0.01
# What the node records keep once an attach worked: the settings of the next login, which is iscsid's own at boot
# (node.startup = automatic), not ours.  open-iscsi's defaults (iscsid.conf) for the login bounds, so that a boot
# that finds the target late keeps trying for about 2 minutes; and an automatic LUN scan, so that the volume's
# devices (and every other LUN the target maps to this initiator) come back with the session; manual when the boot
# unit of role initiator is enabled, which scans exactly the recorded LUNs (boot.py).  The attach's own
# bounded login (login_timeout x login_retries) and manual one-LUN scan are set again before each login it makes.
BOOT_SETTINGS = (("node.session.scan", "auto"),
                 ("node.conn[0].timeo.login_timeout", "15"),
                 ("node.session.initial_login_retry_max", "8"))
# The longest login an admin's record may ask for (its login_timeout x its retries): the bound of our wait.
MAX_LOGIN_BUDGET = 1200.0
NOT_OURS_HINT = ("open-iscsi keeps one static record per portal for all ifaces (the flat file nodes/IQN/ADDR,PORT): "
                 "use the iface of that record, or give each iface a discovered record (iscsiadm -m discovery -t "
                 "sendtargets -p PORTAL -I IFACE, which replaces the flat one) and attach again: the attach then "
                 "logs in through it as it is")


def record_with(text, keys, params):
    """The record ``text`` with every line of ``keys`` replaced by ``params`` ((key, value) pairs), written as
    iscsiadm writes them (``key = value``), before ``# END RECORD``.  open-iscsi 2.0/2.1 read a record line by
    line, ``key = value``, blanks around the value dropped; the last line of a key wins."""
    keep = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key in keys:
            continue
        keep.append(line)
    new = ["%s = %s" % (k, v) for k, v in params]
    end = [i for i, line in enumerate(keep) if line.strip() == "# END RECORD"]
    at = end[-1] if end else len(keep)
    return "\n".join(keep[:at] + new + keep[at:]) + "\n"


class IdbmLock(object):
    """open-iscsi's node-DB write lock (``/run/lock/iscsi/lock.write``), bounded by ``timeout`` seconds.

    iscsiadm itself gives up waiting after 30 s and goes on (a crashed iscsiadm leaves the link behind); so do we,
    with a warning, and then leave the link alone."""

    def __init__(self, fs, timeout=30.0, clock=time.monotonic, sleep=time.sleep):
        self.fs = fs
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self.write_path = None
        self.stale = None

    def __enter__(self):
        lock_dir = next((x for x in IDBM_LOCK_DIRS if self.fs.isdir(x)), None)
        if lock_dir is None:
            return self  # no iscsiadm ever ran here: there is nobody to exclude
        lock, write = lock_dir + "/lock", lock_dir + "/lock.write"
        self.fs.create_private(lock)
        deadline = self.clock() + self.timeout
        while not self.fs.link(lock, write):
            if self.clock() >= deadline:
                self.stale = write
                return self
            self.sleep(IDBM_POLL)
        self.write_path = write
        return self

    def __exit__(self, *exc):
        if self.write_path:
            self.fs.unlink(self.write_path)
            self.write_path = None
        return False


# A record write's temporary file goes into the directory that holds ``nodes/`` and ``send_targets/`` (never read
# as a whole by open-iscsi), not beside the record: a write killed before its rename must not leave a file in the
# record tree, where iscsiadm would read it as a record.  Such leftovers are removed by the next record write.
TEMP_LEFTOVER_AGE = 600.0


def record_temp_dir(record: str) -> str | None:
    """Where the temporary file of a write of ``record`` goes: the directory above its record tree."""
    for tree in NODE_DIRS + SEND_TARGETS_DIRS:
        if record.startswith(tree + "/"):
            return tree.rsplit("/", 1)[0]
    return None


def write_record_file(fs, record: str, text: str) -> None:
    """Replace record file ``record`` with ``text`` atomically (see record_temp_dir), and remove the temporary
    files that record writes killed long ago left (a live write finishes within the command timeout)."""
    tmp_dir = record_temp_dir(record)
    fs.write_private(record, text, tmp_dir=tmp_dir)
    if tmp_dir is not None:
        _remove_temp_leftovers(fs, tmp_dir)


def _remove_temp_leftovers(fs, tmp_dir):
    now = time.time()
    for name in fs.listdir(tmp_dir):
        if not (name.startswith(".") and ".brick-" in name):
            continue
        real = fs.path("%s/%s" % (tmp_dir, name))
        try:
            info = os.lstat(real)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > TEMP_LEFTOVER_AGE:
                os.unlink(real)
        except OSError:
            pass


def write_record(fs, path, keys, params):
    """Replace the ``keys`` lines of record file ``path`` by ``params``: a new file (mode 0600) renamed over the
    old one.  Refuses a record that is not a regular file owned by us (a link could point anywhere)."""
    if not fs.is_private_file(path):
        raise AttachError("refusing to write CHAP credentials into %s: it is not a regular file owned by the user "
                          "running the task" % path, hint="check the open-iscsi record directory")
    write_record_file(fs, path, record_with(fs.read_raw(path) or "", keys, params))


def session_logout_argv(session):
    return ["iscsiadm", "-m", "session", "-r", str(session.sid), "--logout"]


def discovery_argv(portal, iface, *rest, record=False):
    """SendTargets discovery on ``portal``: ``-m discovery`` (nothing stored with ``--op nonpersistent``) or, with
    ``record``, ``-m discoverydb`` (acts on the portal's discovery record)."""
    mode = "discoverydb" if record else "discovery"
    return ["iscsiadm", "-m", mode, "-t", "sendtargets", "-p", str(portal), "-I", iface] + list(rest)


class NodeDB(object):
    """open-iscsi's node records of one iface, written under a host-wide lock (``node_lock``)."""

    def __init__(self, conn):
        self.conn = conn  # settings (fs, runner, iface, timeouts, clock, sleep, warnings) and the node_lock

    @property
    def fs(self):
        return self.conn.fs

    # -- iscsiadm ------------------------------------------------------------------------------------------
    def argv(self, path, *rest):
        return ["iscsiadm", "-m", "node", "-T", path.iqn, "-p", str(path.portal),
                "-I", self.conn.iface] + list(rest)

    def run(self, argv, ok=(0,), timeout=None, locked=False):
        """A node DB write: serialised host-wide, retried on IDBM failure (rc 6) with backoff.
        ``locked``: the caller holds the node lock already."""
        conn = self.conn
        if not locked:
            conn.node_lock.acquire()
        try:
            return conn.runner.run(argv, ok_codes=ok, timeout=timeout or conn.command_timeout, retries=3, delay=0.2,
                                   retry_codes=(RC_IDBM,))
        finally:
            if not locked:
                conn.node_lock.release()

    def delete(self, path):
        """Delete the node records of ``path`` (this iface) that the collection created (its ledger), and only
        those: an admin's record is never deleted.  Returns the Result (rc 0 and no command when none is ours)."""
        argv = self.argv(path, "--op", "delete")
        conn = self.conn
        conn.node_lock.acquire()
        try:
            files = self.record_files(path)
            mine = self.owned_files(files)
            if not mine:
                return Result(argv, 0, "", "", 0, 0.0)
            if len(mine) < len(files):
                # an admin's record of the same portal and iface beside ours: iscsiadm would delete both
                with IdbmLock(self.fs, timeout=conn.command_timeout, clock=conn.clock, sleep=conn.sleep):
                    for record in mine:
                        self.fs.unlink(record)
                result = Result(argv, 0, "", "", 0, 0.0)
            else:
                result = self.run(argv, ok=(0, RC_NO_OBJS), locked=True)
            if result.rc in (0, RC_NO_OBJS):
                self._forget([record for record in mine if not self.fs.lexists(record)])
            return result
        finally:
            conn.node_lock.release()

    def _forget(self, files):
        if not files:
            return
        try:
            self.ledger().drop(files)
        except (IOError, OSError) as err:
            self.conn.warnings.append("the ledger of node records %s could not be updated (%s)" % (
                self.ledger().path, err))

    def login_budget(self, path):
        """Seconds a login of ``path`` may take: ours (login_timeout x login_retries), or what the admin's record
        asks for when the login goes through an admin's record (bounded by MAX_LOGIN_BUDGET)."""
        conn = self.conn
        budget = conn.login_timeout * (max(1, conn.login_retries) + 1) + 10
        keys = ("node.conn[0].timeo.login_timeout", "node.session.initial_login_retry_max")
        for record in self.not_ours(path):
            found = record_settings(self.fs.read_raw(record), keys)
            try:
                theirs = float(found.get(keys[0]) or 15) * (max(1, int(found.get(keys[1]) or 8)) + 1) + 10
            except ValueError:
                continue
            budget = max(budget, min(theirs, MAX_LOGIN_BUDGET))
        return budget

    def login(self, path):
        """Log in; returns (rc, message).  Bounded by the node's login settings and our timeout."""
        conn = self.conn
        budget = self.login_budget(path)
        try:
            result = conn.runner.run(self.argv(path, "--login"), ok_codes=(0, RC_SESS_EXISTS),
                                     timeout=budget, check=False)
        except BrickError as e:
            return None, str(e)
        if result.timed_out:
            return None, "login did not finish within %ss" % budget
        lines = (result.stderr or result.stdout or "").strip().splitlines()
        return result.rc, (lines[-1] if lines else "")

    def logout_path(self, path):
        conn = self.conn
        return conn.runner.run(self.argv(path, "--logout"), ok_codes=(0, RC_NO_OBJS), timeout=conn.command_timeout,
                               check=False)

    def logout_session(self, session, retries=0):
        """Log out one session by id (bounded).  Returns the Result."""
        conn = self.conn
        return conn.runner.run(session_logout_argv(session), ok_codes=(0, RC_NO_OBJS), timeout=conn.command_timeout,
                               retries=retries, delay=1.0, check=False)

    # -- record files --------------------------------------------------------------------------------------
    def record_files(self, path):
        """The files of the node records of ``path`` on this iface, in both layouts open-iscsi writes: a static
        record is a flat file ``nodes/IQN/ADDR,PORT`` (open-iscsi 2.1 for ``--op new``) or
        ``nodes/IQN/ADDR,PORT,TPGT/IFACE`` (a discovered one, and the simulator's)."""
        out = []
        want = (path.portal.host.lower(), str(path.portal.port))
        for nodes_dir in NODE_DIRS:
            base = "%s/%s" % (nodes_dir, path.iqn)
            for entry in self.fs.listdir(base):
                parts = entry.split(",")
                if len(parts) not in (2, 3) or (parts[0].lower(), parts[1]) != want:
                    continue
                full = "%s/%s" % (base, entry)
                if len(parts) == 3 and self.fs.isdir(full):
                    if self.fs.lexists("%s/%s" % (full, self.conn.iface)):
                        out.append("%s/%s" % (full, self.conn.iface))
                elif len(parts) == 2 and not self.fs.isdir(full) and self._iface_of(full) == self.conn.iface:
                    out.append(full)
        return out

    def _iface_of(self, record):
        iface = None
        for line in (self.fs.read_raw(record) or "").splitlines():
            if line.startswith("iface.iscsi_ifacename"):
                iface = line.split("=", 1)[1].strip()
        return iface or "default"

    def exists(self, path):
        """Whether ``path`` has a node record on this iface (a record of the same portal under another iface is
        another record)."""
        return bool(self.record_files(path))

    # -- whose records ---------------------------------------------------------------------------------------
    def ledger(self):
        return Ledger(self.fs)

    def owned_files(self, files):
        """Those of record ``files`` that the collection created (records.py)."""
        if not files:
            return []
        return self.ledger().owned(files)

    def ours(self, path):
        """Whether ``path`` (target, portal, this iface) has a node record that the collection created."""
        return bool(self.owned_files(self.record_files(path)))

    def not_ours(self, path):
        """The record files of ``path`` on this iface that the collection did not create: the admin's."""
        files = self.record_files(path)
        mine = self.owned_files(files)
        return [record for record in files if record not in mine]

    def check_before_attach(self, paths, auth_params):
        """Refuse, before any command runs, an attach that would have to rewrite or overwrite a record the
        collection did not create (see _check)."""
        for path in paths:
            if not self.conn.sessions_for(path):
                self._check(path, auth_params)

    def _check(self, path, auth_params):
        """The admin's records of ``path`` (used as they are), after two refusals: CHAP settings of the volume
        that the admin's record does not have (the attach never rewrites it), and an ``--op new`` that would
        overwrite the flat record another iface has (open-iscsi writes one flat file per portal, any iface)."""
        theirs = self.not_ours(path)
        if theirs and auth_params:
            self._check_auth(path, theirs, auth_params)
        if theirs or self.record_files(path):
            return theirs
        for nodes_dir in NODE_DIRS:
            flat = "%s/%s/%s,%d" % (nodes_dir, path.iqn, path.portal.host, path.portal.port)
            if self.fs.lexists(flat) and not self.fs.isdir(flat):
                other = record_iface(self.fs, flat)
                whose = "a record brick.storage made" if self.owned_files([flat]) else "a record of the admin's"
                raise AttachError("cannot create the node record of %s on iface %s: %s is %s for iface %s, and "
                                  "iscsiadm --op new would overwrite it; nothing was changed" % (
                                      path, self.conn.iface, flat, whose, other), hint=NOT_OURS_HINT)
        return []

    def _check_auth(self, path, theirs, auth_params):
        from .chap import NODE_AUTH_KEYS
        want = dict(auth_params)
        for record in theirs:
            have = record_settings(self.fs.read_raw(record), NODE_AUTH_KEYS)
            differ = [key.rsplit(".", 1)[-1] for key in NODE_AUTH_KEYS
                      if _auth_value(key, have.get(key)) != _auth_value(key, want.get(key))]
            if differ:
                raise AttachError(
                    "the node record %s of %s was not created by brick.storage and has other CHAP settings than "
                    "the volume's (%s differ): the attach does not rewrite an admin's record; nothing was "
                    "changed" % (record, path, ", ".join(differ)),
                    hint="put the volume's CHAP settings into that record (iscsiadm -m node -T %s -p %s -I %s "
                         "-o update ...), or delete it so that the attach makes its own (iscsiadm ... -o delete), "
                         "or attach without CHAP options to log in with the record as it is"
                         % (path.iqn, path.portal, self.conn.iface))

    def write_records(self, files, keys, params):
        """Write ``params`` into every record of ``files``; the caller holds the node lock."""
        conn = self.conn
        with IdbmLock(self.fs, timeout=conn.command_timeout, clock=conn.clock, sleep=conn.sleep) as idbm:
            for f in files:
                write_record(self.fs, f, keys, params)
        if idbm.stale:
            conn.warnings.append("open-iscsi's node DB lock %s was held for %ss (a crashed iscsiadm?): the record "
                                 "was written without it" % (idbm.stale, conn.command_timeout))

    # -- what an attach does to the records ------------------------------------------------------------------
    def prepare(self, path, journal, auth_params):
        """The record of ``path`` for the attach's own login: created when missing (``--op new``, entered in the
        ledger), else saved in the ``journal`` first; then manual scan, startup and the bounded login settings in
        ONE ``--op update``, and the CHAP lines written into the record file (never on a command line).  A record
        the collection did not create (the admin's) is used as it is: nothing is written, a warning says so."""
        conn = self.conn
        theirs = self._check(path, auth_params)
        if theirs:
            conn.warnings.append("the node record %s was not created by brick.storage: the login uses it as it is "
                                 "(its startup, login timeouts, LUN scan and CHAP settings are the admin's: the "
                                 "attach's startup, login_timeout and login_retries do not apply, and with its "
                                 "node.session.scan = auto the login brings every LUN of the target)" % ", ".join(theirs))
            return
        existing = self.record_files(path)
        if not existing:
            self._create(path, journal)
        else:
            # a record of ours that was there before (an earlier attach's): put back as it was if this attach
            # fails, or if this portal does not work
            journal.saved.extend((path, f, self.fs.read_raw(f)) for f in existing)
        settings = [("node.session.scan", "manual"),
                    ("node.startup", conn.startup),
                    ("node.conn[0].timeo.login_timeout", str(int(conn.login_timeout))),
                    ("node.session.initial_login_retry_max", str(int(conn.login_retries)))]
        argv = self.argv(path, "--op", "update")
        for key, value in settings:
            argv += ["-n", key, "-v", value]
        self._update_owned(path, argv, auth_params)

    def _create(self, path, journal):
        """``--op new`` (the flat file nodes/IQN/ADDR,PORT), entered in the ledger under the same lock.  A record
        that cannot be entered is deleted again: the collection never leaves a record it could not tell is its."""
        conn = self.conn
        conn.node_lock.acquire()
        try:
            self.run(self.argv(path, "--op", "new"), locked=True)
            journal.nodes.append(path)
            try:
                for record in self.record_files(path):
                    self.ledger().add(record, path.iqn, str(path.portal), conn.iface)
            except (IOError, OSError) as err:
                self.run(self.argv(path, "--op", "delete"), ok=(0, RC_NO_OBJS), locked=True)
                journal.nodes.remove(path)
                raise AttachError("the node record of %s could not be entered in the ledger of the records "
                                  "brick.storage made (%s): it was deleted again" % (path, err),
                                  hint="check %s (a private directory of root's); a damaged ledger may be "
                                       "removed: the records it listed are then left alone, as an admin's"
                                  % self.ledger().path) from err
        finally:
            conn.node_lock.release()

    def _update_owned(self, path, argv, auth_params):
        """The attach's settings (``--op update``) and, with CHAP, the credentials written into the record file
        itself (mode 0600), never on a command line, where any local user could read them in /proc/PID/cmdline.
        Under the node lock: the records are checked to be still ours first (an admin's iscsiadm since the check
        makes them theirs), and the ledger gets their new fingerprints after (records.py)."""
        from .chap import NODE_AUTH_KEYS
        self.conn.node_lock.acquire()
        try:
            files = self.record_files(path)
            if not files:
                raise AttachError("the node record of %s was not found after it was written: its settings cannot "
                                  "be set" % path, hint="check /etc/iscsi/nodes (or /var/lib/iscsi/nodes)")
            mine = self.owned_files(files)
            theirs = [record for record in files if record not in mine]
            if theirs:
                raise AttachError("the node record %s of %s was changed by someone else while the attach prepared "
                                  "it: it is the admin's now and is not rewritten" % (", ".join(theirs), path),
                                  hint="run the attach again: it then uses that record as it is")
            try:
                self.run(argv, locked=True)
                if auth_params:
                    self.write_records(files, NODE_AUTH_KEYS, auth_params)
            finally:
                self._refresh(files)
        finally:
            self.conn.node_lock.release()

    def _refresh(self, files):
        """After the collection's own write of ``files`` (records it owned just before, node lock held): their
        ledger entries get the fingerprint of what they hold now, so that they stay ours."""
        if not files:
            return
        ledger = self.ledger()
        try:
            ledger.refresh(files)
        except (IOError, OSError) as err:
            self.conn.warnings.append("the ledger of node records %s could not be updated (%s): the records %s now "
                                      "count as the admin's (a detach leaves them behind)" % (
                                          ledger.path, err, ", ".join(files)))

    def restore(self, journal, path=None):
        """Put back the records saved by prepare() (all, or those of ``path``): byte for byte."""
        todo = [x for x in journal.saved if path is None or x[0] is path]
        if not todo:
            return []
        conn = self.conn
        left = []
        conn.node_lock.acquire()
        try:
            with IdbmLock(self.fs, timeout=conn.command_timeout, clock=conn.clock, sleep=conn.sleep):
                for item in todo:
                    _path, record, text = item
                    try:
                        if text is not None and self.fs.is_private_file(record) and self.fs.read_raw(record) != text:
                            if not self.ledger().owns(record):
                                raise OSError("it was changed by someone else meanwhile: it is the admin's now")
                            write_record_file(self.fs, record, text)
                            self._refresh([record])
                    except (IOError, OSError) as e:
                        left.append("node record %s (not restored: %s)" % (record, e))
                    journal.saved.remove(item)
        finally:
            conn.node_lock.release()
        return left

    def persist_boot_settings(self, paths):
        """The records of the paths that work get the settings of the next login (BOOT_SETTINGS): no command.
        With the boot unit of role initiator enabled (boot.py) and ``startup: automatic``, their LUNs are recorded
        for it first and the records get ``node.session.scan = manual``: after a reboot only those LUNs come back
        (the unit scans them), not every LUN of the target."""
        from . import boot
        every = [f for p in paths for f in self.record_files(p)]
        if not every:
            return
        conn = self.conn
        settings = list(BOOT_SETTINGS)
        conn.node_lock.acquire()
        try:
            files = self.owned_files(every)  # never an admin's record (its LUN is still recorded for the boot unit)
            if conn.startup == "automatic" and boot.boot_unit_enabled(self.fs):
                try:
                    boot.record_paths(conn, paths)
                    settings = [(key, "manual" if key == "node.session.scan" else value) for key, value in settings]
                except (IOError, OSError) as e:
                    conn.warnings.append("the LUN is not recorded for the boot unit (%s): after a reboot every LUN "
                                         "of the target comes back (node.session.scan = auto)" % e)
            if files:
                try:
                    self.write_records(files, [key for key, _value in settings], settings)
                finally:
                    self._refresh(files)
        except (IOError, OSError, BrickError) as e:
            conn.warnings.append("the node records keep the attach's short login bounds (%s): a boot that finds the "
                                 "target late may give up" % e)
        finally:
            conn.node_lock.release()


def _auth_value(key, value):
    """A CHAP setting as iscsid reads it: no value is "", an authmethod is case-blind and None by default."""
    value = (value or "").strip()
    if key.endswith("authmethod"):
        return (value or "None").lower()
    return value
