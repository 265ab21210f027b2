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

import time

from .errors import AttachError, BrickError

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
# devices (and every other LUN the target maps to this initiator) come back with the session.  The attach's own
# bounded login (login_timeout x login_retries) and manual one-LUN scan are set again before each login it makes.
BOOT_SETTINGS = (("node.session.scan", "auto"),
                 ("node.conn[0].timeo.login_timeout", "15"),
                 ("node.session.initial_login_retry_max", "8"))


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


def write_record(fs, path, keys, params):
    """Replace the ``keys`` lines of record file ``path`` by ``params``: a new file (mode 0600) renamed over the
    old one.  Refuses a record that is not a regular file owned by us (a link could point anywhere)."""
    if not fs.is_private_file(path):
        raise AttachError("refusing to write CHAP credentials into %s: it is not a regular file owned by the user "
                          "running the task" % path, hint="check the open-iscsi record directory")
    fs.write_private(path, record_with(fs.read_raw(path) or "", keys, params))


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
        return self.run(self.argv(path, "--op", "delete"), ok=(0, RC_NO_OBJS))

    def login(self, path):
        """Log in; returns (rc, message).  Bounded by the node's login settings and our timeout."""
        conn = self.conn
        budget = conn.login_timeout * (max(1, conn.login_retries) + 1) + 10
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
        """The record of ``path`` for the attach's own login: created when missing (``--op new``), else saved in
        the ``journal`` first; then manual scan, startup and the bounded login settings in ONE ``--op update``,
        and the CHAP lines written into the record file (never on a command line)."""
        conn = self.conn
        existing = self.record_files(path)
        if not existing:
            self.run(self.argv(path, "--op", "new"))
            journal.nodes.append(path)
        else:
            # a record that was there before (the admin's, or an earlier attach's): put back as it was if this
            # attach fails, or if this portal does not work
            journal.saved.extend((path, f, self.fs.read_raw(f)) for f in existing)
        settings = [("node.session.scan", "manual"),
                    ("node.startup", conn.startup),
                    ("node.conn[0].timeo.login_timeout", str(int(conn.login_timeout))),
                    ("node.session.initial_login_retry_max", str(int(conn.login_retries)))]
        argv = self.argv(path, "--op", "update")
        for key, value in settings:
            argv += ["-n", key, "-v", value]
        if not auth_params:
            self.run(argv)
            return
        self._update_with_auth(path, argv, auth_params)

    def _update_with_auth(self, path, argv, auth_params):
        """CHAP: the credentials go into the record file itself (mode 0600), never on a command line, where any
        local user could read them in /proc/PID/cmdline.  Same lock as iscsiadm's writes, and open-iscsi's own."""
        from .chap import NODE_AUTH_KEYS
        self.conn.node_lock.acquire()
        try:
            self.run(argv, locked=True)
            files = self.record_files(path)
            if not files:
                raise AttachError("the node record of %s was not found after it was written: its CHAP credentials "
                                  "cannot be set" % path, hint="check /etc/iscsi/nodes (or /var/lib/iscsi/nodes)")
            self.write_records(files, NODE_AUTH_KEYS, auth_params)
        finally:
            self.conn.node_lock.release()

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
                        if text is not None and self.fs.is_private_file(record):
                            self.fs.write_private(record, text)
                    except (IOError, OSError) as e:
                        left.append("node record %s (not restored: %s)" % (record, e))
                    journal.saved.remove(item)
        finally:
            conn.node_lock.release()
        return left

    def persist_boot_settings(self, paths):
        """The records of the paths that work get the settings of the next login (BOOT_SETTINGS): no command."""
        files = [f for p in paths for f in self.record_files(p)]
        if not files:
            return
        conn = self.conn
        conn.node_lock.acquire()
        try:
            self.write_records(files, [key for key, _value in BOOT_SETTINGS], list(BOOT_SETTINGS))
        except (IOError, OSError, BrickError) as e:
            conn.warnings.append("the node records keep the attach's short login bounds (%s): a boot that finds the "
                                 "target late may give up" % e)
        finally:
            conn.node_lock.release()
