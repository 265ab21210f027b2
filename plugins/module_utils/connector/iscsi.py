# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""iSCSI attach and detach.

Attach (``connect``): node records are created without discovery when portal and IQN are known,
with manual LUN scan and bounded login timeouts set in ONE ``--op update`` call (CHAP credentials are
written into the record file, never on a command line: see ``write_record``); logins run in parallel;
only the wanted LUN is scanned through sysfs; devices, WWID and the multipath map are found through
sysfs.  A re-run that finds the volume attached runs no command at all.

Detach (``disconnect``) is stateless: sessions, this volume's devices, other LUNs on the same
sessions and the map are all read from sysfs.  The flush is the data barrier: when it fails
nothing is removed (unless ``force``).  Sessions are logged out only when they carry no other LUN.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import threading
import time

from . import detach
from . import multipath as mp
from . import scsi
from . import validate
from .errors import (AttachError, BrickError, CommandError, InvalidInput, LoginError,
                     VolumeMismatch)

NODE_DIRS = ("/etc/iscsi/nodes", "/var/lib/iscsi/nodes")
# Exit codes of iscsiadm(8)
RC_IDBM = 6
RC_TIMEOUT = 8
RC_SESS_EXISTS = 15
RC_NO_OBJS = 21
RC_AUTH = 24
# Rescans of a LUN that has not appeared yet, in seconds after the first one.
RESCAN_AT = (1.0, 3.0, 7.0, 15.0)
# What the node records keep once an attach worked: the settings of the next login, which is iscsid's own at boot
# (node.startup = automatic), not ours.  open-iscsi's defaults (iscsid.conf) for the login bounds, so that a boot
# that finds the target late keeps trying for about 2 minutes; and an automatic LUN scan, so that the volume's
# devices (and every other LUN the target maps to this initiator) come back with the session.  The attach's own
# bounded login (login_timeout x login_retries) and manual one-LUN scan are set again before each login it makes.
BOOT_SETTINGS = (("node.session.scan", "auto"),
                 ("node.conn[0].timeo.login_timeout", "15"),
                 ("node.session.initial_login_retry_max", "8"))


class Path(object):
    """One (portal, iqn, lun) of a volume.  ``aliases`` are the other addresses of a portal given
    as a host name (sessions on any of them are this path's); ``lun`` is None for a session-only
    logout."""

    __slots__ = ("portal", "iqn", "lun", "aliases", "name")

    def __init__(self, portal, iqn, lun, aliases=(), name=None):
        self.portal = portal
        self.iqn = iqn
        self.lun = lun
        self.aliases = list(aliases)
        self.name = name  # the host name the portal was given as, if any

    def addresses(self):
        return ([self.portal] if self.portal is not None else []) + [a for a in self.aliases if a != self.portal]

    def key(self):
        if self.portal is None:
            return (None, self.iqn.lower())
        return (detach.address_key(self.portal.host), self.portal.port, self.iqn.lower())

    def __repr__(self):
        if self.lun is None:
            return "%s %s" % (self.portal, self.iqn)
        return "%s %s lun %d" % (self.portal, self.iqn, self.lun)


class Auth(object):
    """CHAP credentials.  Secrets are registered with the runner so they are masked everywhere, and they never go
    on a command line: they are written into the node (or discovery) record files (see :func:`write_record`)."""

    def __init__(self, username=None, password=None, username_in=None, password_in=None,
                 discovery_username=None, discovery_password=None):
        self.username = username
        self.password = password
        self.username_in = username_in
        self.password_in = password_in
        self.discovery_username = discovery_username
        self.discovery_password = discovery_password
        for user, secret, what in ((username, password, "chap"),
                                   (username_in, password_in, "mutual chap"),
                                   (discovery_username, discovery_password, "discovery chap")):
            if secret and not user:
                raise InvalidInput("a %s secret was given without a user name" % what)
            if user and not secret:
                raise InvalidInput("a %s user name was given without a secret" % what)
            if user or secret:
                validate.chap_user(user, "%s user name" % what)
                validate.chap_secret(secret, "%s secret" % what)
        if username_in and not username:
            raise InvalidInput("mutual CHAP needs session CHAP (username/password) too")

    def secrets(self):
        return [s for s in (self.password, self.password_in, self.discovery_password) if s]

    def node_params(self):
        """The node record's auth settings as (key, value) pairs (written to the record file, never to argv)."""
        if not self.username:
            return []
        p = [("node.session.auth.authmethod", "CHAP"),
             ("node.session.auth.username", self.username),
             ("node.session.auth.password", self.password)]
        if self.username_in:
            p += [("node.session.auth.username_in", self.username_in),
                  ("node.session.auth.password_in", self.password_in)]
        return p

    def discovery_params(self):
        """The discovery record's auth settings as (key, value) pairs."""
        if not self.discovery_username:
            return []
        return [("discovery.sendtargets.auth.authmethod", "CHAP"),
                ("discovery.sendtargets.auth.username", self.discovery_username),
                ("discovery.sendtargets.auth.password", self.discovery_password)]


# -- records written without iscsiadm ---------------------------------------------------------------
# Every auth key of a record: the lines we write replace all of them (a stale mutual CHAP pair must not survive).
NODE_AUTH_KEYS = ("node.session.auth.authmethod", "node.session.auth.username", "node.session.auth.password",
                  "node.session.auth.username_in", "node.session.auth.password_in")
DISCOVERY_AUTH_KEYS = ("discovery.sendtargets.auth.authmethod", "discovery.sendtargets.auth.username",
                       "discovery.sendtargets.auth.password", "discovery.sendtargets.auth.username_in",
                       "discovery.sendtargets.auth.password_in")
SEND_TARGETS_DIRS = ("/etc/iscsi/send_targets", "/var/lib/iscsi/send_targets")
# open-iscsi's own node-DB lock (idbm_lock(): link(lock, lock.write), retried every 10 ms; iscsiadm goes on
# without it after 30 s).  Taken around our own writes so that an iscsiadm of the admin never reads half a file.
IDBM_LOCK_DIRS = ("/run/lock/iscsi", "/var/lock/iscsi")
IDBM_POLL = 0.01


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
        d = next((x for x in IDBM_LOCK_DIRS if self.fs.isdir(x)), None)
        if d is None:
            return self  # no iscsiadm ever ran here: there is nobody to exclude
        lock, write = d + "/lock", d + "/lock.write"
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


class Connector(object):
    def __init__(self, fs, runner, iface="default", login_timeout=5, login_retries=1,
                 device_wait=20.0, multipath="auto", multipath_wait=10.0, auth=None,
                 startup="automatic", node_lock=None, clock=time.monotonic, sleep=time.sleep,
                 poll=0.05, link_wait=0.0, command_timeout=30.0, wwid=None, rescan_timeout=10.0,
                 skip_failed_for=0.0, failure_log=None, wall_clock=time.time, lun_addressing="auto"):
        self.fs = fs
        if str(lun_addressing).lower() not in scsi.LUN_ADDRESSING:
            raise InvalidInput("lun_addressing '%s' is not one of %s" % (
                lun_addressing, ", ".join(sorted(scsi.LUN_ADDRESSING))))
        self.lun_addressing = scsi.LUN_ADDRESSING[str(lun_addressing).lower()]
        # A portal whose login failed less than skip_failed_for seconds ago (recorded in failure_log, a JSON
        # file in the root-only lock directory) is not tried again by a re-run: for fleets where a portal is
        # down for hours, each re-run would otherwise pay the whole login budget to leave the host as it was.
        self.skip_failed_for = float(skip_failed_for or 0)
        self.failure_log = failure_log
        self.wall_clock = wall_clock
        self.runner = runner
        self.iface = iface
        self.login_timeout = login_timeout
        self.login_retries = login_retries
        self.device_wait = device_wait
        self.multipath = multipath
        self.multipath_wait = multipath_wait
        self.auth = auth or Auth()
        for s in self.auth.secrets():
            runner.protect_secret(s)
        self.startup = startup
        # open-iscsi's node DB is not safe for parallel writers: writes are serialised with this
        # (a host-wide lock object with acquire()/release(), or a threading lock by default).
        self.node_lock = node_lock or threading.Lock()
        self.clock = clock
        self.sleep = sleep
        self.poll = poll
        self.link_wait = link_wait
        self.command_timeout = command_timeout
        # The WWID the volume must have (normalised), or None: then its paths must agree on one.
        self.wwid = validate.wwid(wwid) if wwid else None
        self.rescan_timeout = rescan_timeout
        self.failed_paths = []
        self.warnings = []

    # ------------------------------------------------------------------ helpers: sysfs state
    def kernel_lun(self, path, session, devs=None):
        """The kernel's LUN number for ``path`` on ``session`` (LUN addressing; "auto" looks at the session)."""
        if path.lun is None:
            return None
        luns = ()
        if self.lun_addressing == "auto" and path.lun < scsi.FLAT_BASE:
            devs = scsi.session_devices(self.fs, session, with_details=False) if devs is None else devs
            luns = [d.lun for d in devs]
        return scsi.kernel_lun(path.lun, self.lun_addressing, luns)

    def sessions_for(self, path, sessions=None):
        """Sessions of ``path`` (target, any of the portal's addresses, this connector's iface)."""
        sessions = scsi.iscsi_sessions(self.fs) if sessions is None else sessions
        return [s for s in sessions if detach.session_matches(s, path, self.iface)]

    _sessions_for = sessions_for

    def node_exists(self, path):
        """Whether ``path`` has a node record on this connector's iface (both record layouts; a record of the
        same portal under another iface is another record)."""
        return bool(self.record_files(path))

    def state(self, paths):
        """What of the volume is attached right now (sysfs only)."""
        sessions = scsi.iscsi_sessions(self.fs)
        out = []
        for p in paths:
            for s in self._sessions_for(p, sessions):
                devs = scsi.session_devices(self.fs, s)
                kl = self.kernel_lun(p, s, devs)
                mine = [d for d in devs if d.lun == kl]
                others = [d for d in devs if d.lun != kl]
                out.append({"path": p, "session": s, "devices": mine, "others": others})
        return out

    # ------------------------------------------------------------------ iscsiadm
    def _node_argv(self, path, *rest):
        return ["iscsiadm", "-m", "node", "-T", path.iqn, "-p", str(path.portal),
                "-I", self.iface] + list(rest)

    def _node_db(self, argv, ok=(0,), timeout=None, locked=False):
        """A node DB write: serialised host-wide, retried on IDBM failure (rc 6) with backoff.
        ``locked``: the caller holds the node lock already."""
        if not locked:
            self.node_lock.acquire()
        try:
            return self.runner.run(argv, ok_codes=ok, timeout=timeout or self.command_timeout, retries=3, delay=0.2,
                                   retry_codes=(RC_IDBM,))
        finally:
            if not locked:
                self.node_lock.release()

    def record_files(self, path):
        """The files of the node records of ``path`` on this iface, in both layouts open-iscsi writes: a static
        record is a flat file ``nodes/IQN/ADDR,PORT`` (open-iscsi 2.1 for ``--op new``) or
        ``nodes/IQN/ADDR,PORT,TPGT/IFACE`` (a discovered one, and the simulator's)."""
        out = []
        want = (path.portal.host.lower(), str(path.portal.port))
        for d in NODE_DIRS:
            base = "%s/%s" % (d, path.iqn)
            for e in self.fs.listdir(base):
                parts = e.split(",")
                if len(parts) not in (2, 3) or (parts[0].lower(), parts[1]) != want:
                    continue
                full = "%s/%s" % (base, e)
                if len(parts) == 3 and self.fs.isdir(full):
                    if self.fs.lexists("%s/%s" % (full, self.iface)):
                        out.append("%s/%s" % (full, self.iface))
                elif len(parts) == 2 and not self.fs.isdir(full):
                    iface = None
                    for line in (self.fs.read_raw(full) or "").splitlines():
                        if line.startswith("iface.iscsi_ifacename"):
                            iface = line.split("=", 1)[1].strip()
                    if (iface or "default") == self.iface:
                        out.append(full)
        return out

    def _write_records(self, files, keys, params):
        """Write ``params`` into every record of ``files``; the caller holds the node lock."""
        with IdbmLock(self.fs, timeout=self.command_timeout, clock=self.clock, sleep=self.sleep) as il:
            for f in files:
                write_record(self.fs, f, keys, params)
        if il.stale:
            self.warnings.append("open-iscsi's node DB lock %s was held for %ss (a crashed iscsiadm?): the record "
                                 "was written without it" % (il.stale, self.command_timeout))

    def _prepare_node(self, path, created):
        existing = self.record_files(path)
        if not existing:
            self._node_db(self._node_argv(path, "--op", "new"))
            created["nodes"].append(path)
        else:
            # a record that was there before (the admin's, or an earlier attach's): put back as it was if this
            # attach fails, or if this portal does not work
            for f in existing:
                created.setdefault("saved", []).append((path, f, self.fs.read_raw(f)))
        params = [("node.session.scan", "manual"),
                  ("node.startup", self.startup),
                  ("node.conn[0].timeo.login_timeout", str(int(self.login_timeout))),
                  ("node.session.initial_login_retry_max", str(int(self.login_retries)))]
        argv = self._node_argv(path, "--op", "update")
        for k, v in params:
            argv += ["-n", k, "-v", v]
        auth = self.auth.node_params()
        if not auth:
            self._node_db(argv)
            return
        # CHAP: the credentials go into the record file itself (mode 0600), never on a command line, where any
        # local user could read them in /proc/PID/cmdline.  Same lock as iscsiadm's writes, and open-iscsi's own.
        self.node_lock.acquire()
        try:
            self._node_db(argv, locked=True)
            files = self.record_files(path)
            if not files:
                raise AttachError("the node record of %s was not found after it was written: its CHAP credentials "
                                  "cannot be set" % path, hint="check /etc/iscsi/nodes (or /var/lib/iscsi/nodes)")
            self._write_records(files, NODE_AUTH_KEYS, auth)
        finally:
            self.node_lock.release()

    def _restore_records(self, created, path=None):
        """Put back the records saved by _prepare_node (all, or those of ``path``): byte for byte."""
        todo = [x for x in created.get("saved") or () if path is None or x[0] is path]
        if not todo:
            return []
        left = []
        self.node_lock.acquire()
        try:
            with IdbmLock(self.fs, timeout=self.command_timeout, clock=self.clock, sleep=self.sleep):
                for p, f, text in todo:
                    try:
                        if text is not None and self.fs.is_private_file(f):
                            self.fs.write_private(f, text)
                    except (IOError, OSError) as e:
                        left.append("node record %s (not restored: %s)" % (f, e))
                    created["saved"].remove((p, f, text))
        finally:
            self.node_lock.release()
        return left

    def _persist_boot_settings(self, paths):
        """The records of the paths that work get the settings of the next login (BOOT_SETTINGS): no command."""
        files = [f for p in paths for f in self.record_files(p)]
        if not files:
            return
        self.node_lock.acquire()
        try:
            self._write_records(files, [k for k, _v in BOOT_SETTINGS], list(BOOT_SETTINGS))
        except (IOError, OSError, BrickError) as e:
            self.warnings.append("the node records keep the attach's short login bounds (%s): a boot that finds the "
                                 "target late may give up" % e)
        finally:
            self.node_lock.release()

    def _login(self, path):
        """Log in; returns (rc, message).  Bounded by the node's login settings and our timeout."""
        budget = self.login_timeout * (max(1, self.login_retries) + 1) + 10
        try:
            r = self.runner.run(self._node_argv(path, "--login"), ok_codes=(0, RC_SESS_EXISTS),
                                timeout=budget, check=False)
        except BrickError as e:
            return None, str(e)
        if r.timed_out:
            return None, "login did not finish within %ss" % budget
        msg = (r.stderr or r.stdout or "").strip().splitlines()
        return r.rc, (msg[-1] if msg else "")

    # ------------------------------------------------------------------ discovery
    def discovery_record(self, portal):
        """The file of the SendTargets discovery record of ``portal`` (``send_targets/ADDR,PORT/st_config``),
        or None."""
        for d in SEND_TARGETS_DIRS:
            f = "%s/%s,%d/st_config" % (d, portal.host, portal.port)
            if self.fs.lexists(f):
                return f
        return None

    def discover(self, portal):
        """SendTargets discovery on ``portal`` that stores nothing in the node DB and leaves every record it did
        not create as it was.  Returns a list of (Portal-string, iqn).

        Without discovery CHAP: ``iscsiadm -m discovery ... --op nonpersistent`` (it reads no record and writes
        none).  With discovery CHAP, iscsiadm reads the credentials from the portal's discovery record, so:
        when there is none, one is made (``--op new``), the credentials are written into its file, the discovery
        runs ``--op nonpersistent`` and the record is deleted again; when the admin has one, its file is saved,
        our credentials are written into it for the discovery, and its exact bytes are put back afterwards.  The
        node lock is held throughout, so two of our discoveries never see each other's credentials."""
        timeout = self.login_timeout * 2 + 10
        a = self.auth
        if not a.discovery_username:
            r = self.runner.run(["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", str(portal),
                                 "-I", self.iface, "--op", "nonpersistent"], timeout=timeout)
            return self._parse_discovery(r)
        argv_base = ["iscsiadm", "-m", "discoverydb", "-t", "sendtargets", "-p", str(portal), "-I", self.iface]
        self.node_lock.acquire()
        try:
            rec = self.discovery_record(portal)
            saved = None if rec is None else self.fs.read_raw(rec)
            if rec is not None and saved is None:
                raise AttachError("cannot read the discovery record %s" % rec)
            try:
                if rec is None:
                    self._node_db(argv_base + ["--op", "new"], locked=True)
                rec_now = self.discovery_record(portal)
                if rec_now is None:
                    raise AttachError("the discovery record of %s was not found after it was created: the discovery "
                                      "CHAP credentials cannot be set" % portal,
                                      hint="check /etc/iscsi/send_targets (or /var/lib/iscsi/send_targets)")
                self._write_records([rec_now], DISCOVERY_AUTH_KEYS, a.discovery_params())
                r = self.runner.run(argv_base + ["--discover", "--op", "nonpersistent"], timeout=timeout)
            finally:
                self._restore_discovery(portal, argv_base, rec, saved)
        finally:
            self.node_lock.release()
        return self._parse_discovery(r)

    def _restore_discovery(self, portal, argv_base, rec, saved):
        """Put the discovery record back as it was: the admin's bytes, or no record at all (ours is deleted, and
        only when nothing was found through it, so no node record goes with it)."""
        now = self.discovery_record(portal)
        if rec is not None:
            with IdbmLock(self.fs, timeout=self.command_timeout, clock=self.clock, sleep=self.sleep):
                self.fs.write_private(rec, saved)
            return
        if now is None:
            return
        others = [e for e in self.fs.listdir(now.rsplit("/", 1)[0]) if e != "st_config"]
        if others:
            # someone discovered through this portal meanwhile: keep their links, drop only our credentials
            self._write_records([now], DISCOVERY_AUTH_KEYS, [("discovery.sendtargets.auth.authmethod", "None")])
            self.warnings.append("the discovery record of %s made for this discovery was kept: %s" % (
                portal, ", ".join(others)))
            return
        self._node_db(argv_base + ["--op", "delete"], ok=(0, RC_NO_OBJS), locked=True)

    @staticmethod
    def _parse_discovery(r):
        found = []
        for line in (r.stdout or "").splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            addr = parts[0].rsplit(",", 1)[0]
            found.append((addr, parts[1]))
        return found

    # ------------------------------------------------------------------ connect
    def _scan(self, session, scan, deadline):
        """One LUN scan write, bounded by the device wait's deadline (a scan on a session that went into recovery
        blocks in the kernel)."""
        err = scsi.bounded_writes(self.fs, [("/sys/class/scsi_host/host%d/scan" % session.host, scan)],
                                  max(1.0, deadline - self.clock()))
        if err:
            self.warnings.append("LUN scan on host%d (%s): %s" % (session.host, scan, list(err.values())[0]))

    def _wait_device(self, path, session, deadline):
        """Scan exactly this LUN on the session's host and wait for its block device.

        With ``lun_addressing: auto`` and nothing on the session that tells the addressing, the LUN is scanned
        in peripheral form first; only if it has not appeared by the first rescan is its flat-space number
        (16384 + n) scanned too (an array that answers both forms has answered the first one by then)."""
        fs = self.fs
        c, t = scsi.session_target(fs, session)
        kl = self.kernel_lun(path, session)
        cands = [kl]
        if self.lun_addressing == "auto" and kl == path.lun and path.lun < scsi.FLAT_BASE:
            cands.append(scsi.FLAT_BASE + path.lun)
        prefix = "%s %s " % ("-" if c is None else c, "-" if t is None else t)
        start = self.clock()
        rescans = list(RESCAN_AT)
        self._scan(session, prefix + str(kl), deadline)
        while True:
            devs = [d for d in scsi.session_devices(fs, session) if d.name and d.lun in cands]
            if devs:
                return sorted(devs, key=lambda d: cands.index(d.lun))[0]
            now = self.clock()
            if now >= deadline:
                return None
            if rescans and now - start >= rescans[0]:
                rescans.pop(0)
                for x in cands:
                    self._scan(session, prefix + str(x), deadline)
            self.sleep(self.poll)

    def _connect_one(self, path, result, created, deadline):
        """Login (if needed) + scan one portal.  Fills ``result``; never raises."""
        try:
            sessions = self._sessions_for(path)
            if not sessions:
                rc, msg = self._login(path)
                sessions = self._sessions_for(path)
                if not sessions and path.aliases:
                    rc, msg, sessions = self._login_other_address(path, created, rc, msg)
                if not sessions:
                    reason = {RC_AUTH: "authentication failed", RC_TIMEOUT: "connection timed out",
                              None: "login timed out"}.get(rc, "iscsiadm exit code %s" % rc)
                    result["error"] = "login to %s failed: %s (%s)" % (path.portal, reason, msg)
                    result["rc"] = rc
                    return
                created["sessions"].extend(sessions)
            s = sessions[0]
            result["session"] = s
            existing = [d for d in scsi.session_devices(self.fs, s, lun=self.kernel_lun(path, s)) if d.name]
            if existing:
                result["device"] = existing[0]
                return
            d = self._wait_device(path, s, deadline)
            if d is None:
                result["error"] = "LUN %d did not appear behind %s on %s within %ss" % (
                    path.lun, path.iqn, path.portal, self.device_wait)
                return
            created["devices"].append(d.name)
            created["refs"].append(detach.DeviceRef(d, s, None, path))
            result["device"] = d
        except Exception as e:  # a thread must report, never die silently
            result["error"] = "%s: %s" % (path.portal, e)

    def _login_other_address(self, path, created, rc, msg):
        """A portal given as a host name with several addresses: when the login to the first one fails, try
        the others in order (a name with an IPv6 address the target does not listen on, say).  The node
        record made for a failed address is dropped again."""
        for addr in path.aliases:
            if addr == path.portal:
                continue
            self.warnings.append("login to %s (%s) failed: %s; trying %s, another address of the name" % (
                path.portal, path.iqn, msg or "iscsiadm exit code %s" % rc, addr))
            other = Path(addr, path.iqn, path.lun)
            self._prepare_node(other, created)
            rc, msg = self._login(other)
            sessions = self._sessions_for(path)
            if sessions:
                if path in created["nodes"]:
                    self.delete_node(path)
                    created["nodes"].remove(path)
                return rc, msg, sessions
        return rc, msg, []

    def find_attached(self, paths):
        """(devices, map) when the volume is fully attached as requested, else None (sysfs only)."""
        st = self.state(paths)
        by_key = {}
        for e in st:
            live = [d for d in e["devices"] if d.name]
            if live:
                by_key.setdefault(e["path"].key(), live[0])
        if not by_key:
            return None
        devs = list(by_key.values())
        m = scsi.multipath_of(self.fs, devs[0].name)
        if self.multipath == "off" and len(paths) > 1:
            return (devs, m) if len(devs) >= 1 else None
        if len(by_key) < len(paths):
            return None
        if self.multipath == "required" and m is None:
            return None
        return devs, m

    _attached = find_attached

    def verify_identity(self, devs, m, fresh=(), rescan=True):
        """Check that ``devs`` (and their map ``m``) serve one volume, the expected one when a WWID was given.

        The kernel keeps a device's identity from its first scan: when the array maps another volume at the
        same LUN number, the old sdX silently reads and writes the new volume.  So the devices this call did
        not scan itself (``fresh``) are rescanned first (one sysfs write each, no command; multipathd then
        drops a path whose WWID changed from its map), and their WWIDs are read again.  Raises
        VolumeMismatch, naming every device and WWID, when they disagree."""
        stale = [d for d in devs if d.name not in fresh]
        if rescan and stale:
            slow = scsi.rescan(self.fs, stale, timeout=self.rescan_timeout)
            if slow:
                self.warnings.append("rescan of %s did not finish within %ss: their WWID was not re-read" % (
                    ", ".join(slow), self.rescan_timeout))
            for d in stale:
                d.wwid = scsi.read_wwid(self.fs, d)
        want = self.wwid or (m.wwid if m is not None else None)
        wwids = sorted(set(d.wwid for d in devs if d.wwid))
        bad = [d for d in devs if d.wwid and want and d.wwid != want]
        if not bad and len(wwids) <= 1 and not (self.wwid and m is not None and m.wwid != self.wwid) \
                and not (self.wwid and not wwids):
            return wwids[0] if wwids else None
        parts = ["%s (%s) reports %s" % (d.dev, d.hctl, d.wwid or "no WWID") for d in devs]
        if m is not None:
            parts.append("map %s serves %s" % (m.name, m.wwid))
        head = "expected WWID %s, but " % self.wwid if self.wwid else "the paths of this volume disagree: "
        raise VolumeMismatch(
            head + "; ".join(parts) + ". The array has probably mapped another volume at this LUN number",
            hint="nothing of the other volume was touched; detach the stale paths with state=absent and the "
                 "old wwid, then attach again (or correct wwid)",
            expected_wwid=self.wwid, wwids=dict((d.dev, d.wwid) for d in devs),
            map_wwid=m.wwid if m is not None else None)

    def attached_result(self, paths, check_mode=False, resize=True):
        """The result of an attach that has nothing to do (identity verified), or None when there is work.

        Reads sysfs and rescans the existing paths (no command, no lock needed): this is a re-run's whole cost.
        A map that must be resized (the LUN grew) is resized only with ``resize`` (the caller holds the target
        lock); without it the result says ``resized.pending``."""
        have = self.find_attached(paths)
        if have is None:
            return None
        devs, m = have
        sizes = dict((d.name, self._size(d.name)) for d in devs)
        # check mode changes nothing, not even the kernel's view of the LUN: it compares sysfs as it is
        self.verify_identity(devs, m, rescan=not check_mode)
        grown = self.grow(devs, m, sizes, check_mode, resize)
        res = self.describe(paths, devs, m, changed=bool(grown))
        if grown:
            res["resized"] = grown
        return res

    def _size(self, name):
        sectors = self.fs.read_int("/sys/class/block/%s/size" % name)
        return sectors * 512 if sectors is not None else None

    def grow(self, devs, m, before, check_mode=False, resize=True):
        """Online extend: the paths were rescanned (verify_identity); when the LUN grew on the array, make the
        host use the new size.  A single path already has it (the rescan re-read the capacity: no command); a
        multipath map is resized (``multipathd resize map``) once every working path shows the new size.  Never
        shrinks.  Returns {"old_size", "new_size"} when the volume grew (or would, in check mode), else None."""
        now = dict((d.name, self._size(d.name)) for d in devs)
        if m is None:
            d = devs[0]
            old, new = before.get(d.name), now.get(d.name)
            if old and new and new > old:
                return {"old_size": old, "new_size": new, "how": "rescan"}
            if old and new and new < old:
                self.warnings.append("%s now reports %d bytes, less than the %d it had: the LUN shrank on the array"
                                     % (d.dev, new, old))
            return None
        cur = scsi.dm_map(self.fs, m.dm)
        map_size = cur.size if cur is not None else m.size
        live = [now[d.name] for d in devs if d.state == "running" and now.get(d.name)]
        if not live or not map_size:
            return None
        if min(live) < map_size:
            if max(live) > map_size:
                self.warnings.append("the paths of %s disagree on the size (%s): not resized until every working path "
                                     "shows the new size" % (m.name, ", ".join("%s=%s" % kv for kv in sorted(now.items()))))
            elif min(live) < map_size:
                self.warnings.append("a path of %s reports %d bytes, less than the map's %d: never shrunk"
                                     % (m.name, min(live), map_size))
            return None
        if min(live) == map_size:
            return None
        if check_mode:
            return {"old_size": map_size, "new_size": min(live), "how": "multipathd resize map (check mode: not done)"}
        if not resize:
            return {"old_size": map_size, "new_size": min(live), "how": "multipathd resize map", "pending": True}
        mp.resize_map(self.runner, m.name)
        after = scsi.dm_map(self.fs, m.dm)
        new = after.size if after is not None else None
        if not new or new <= map_size:
            raise AttachError("multipathd did not resize map %s from %d to %d bytes" % (m.name, map_size, min(live)),
                              hint="check multipathd (journalctl -u multipathd) and run multipathd resize map %s"
                                   % m.name)
        return {"old_size": map_size, "new_size": new, "how": "multipathd resize map"}

    def connect(self, paths, check_mode=False):
        """Attach the volume reached through ``paths``.  Returns a result dict."""
        if not paths:
            raise InvalidInput("no portal/IQN/LUN to attach")
        done = self.attached_result(paths, check_mode)
        if done is not None:
            return done
        if check_mode:
            return {"changed": True, "msg": "would attach %s" % ", ".join(repr(p) for p in paths),
                    "would_login": [str(p.portal) for p in paths if not self.sessions_for(p)]}
        use_mp = self.multipath != "off"
        if use_mp and not mp.daemon_running(self.fs, self.runner):
            if self.multipath == "required":
                raise AttachError("multipath is required but multipathd is not running",
                                  hint="start multipathd (systemctl start multipathd) or use multipath: auto")
            if len(paths) > 1:
                self.warnings.append("multipathd is not running: attaching a single path only")
            use_mp = False
        created = {"nodes": [], "sessions": [], "devices": [], "refs": [], "wwid": None}
        before = self._fingerprint(paths)
        try:
            res = self._do_connect(paths, use_mp, created)
            # a re-run that could not heal a dead portal leaves the host as it was: that is no change
            res["changed"] = self._fingerprint(paths) != before
            return res
        except BaseException as e:
            leftovers = self._rollback(created)
            if isinstance(e, BrickError):
                if leftovers:
                    e.details["leftovers"] = leftovers
                raise
            raise AttachError("attach failed: %s" % e, leftovers=leftovers)

    def _fingerprint(self, paths):
        """What of the volume exists (sessions, devices, map), to tell a real change from a re-run."""
        out = []
        for e in self.state(paths):
            out.append(("session", e["session"].sid))
            for d in e["devices"]:
                out.append(("device", d.path))
                m = scsi.multipath_of(self.fs, d.name) if d.name else None
                if m is not None:
                    out.append(("map", m.uuid, tuple(sorted(m.slaves))))
        return sorted(set(out))

    def _failure_key(self, p):
        return "%s|%s|%s" % (self.iface, detach.address_key(p.portal.host) + ":%d" % p.portal.port, p.iqn.lower())

    def _recent_failures(self):
        if not self.failure_log or self.skip_failed_for <= 0:
            return {}
        return _read_state(self.failure_log)

    def _record_failures(self, results):
        """Remember when each portal's login failed (and forget it once one works), for skip_failed_for."""
        if not self.failure_log or self.skip_failed_for <= 0:
            return
        now = self.wall_clock()
        self.node_lock.acquire()
        try:
            data = self._recent_failures()
            for r in results:
                key = self._failure_key(r["path"])
                if r.get("skipped"):
                    continue
                if r.get("session") is None and r.get("error"):
                    data[key] = now
                else:
                    data.pop(key, None)
            data = dict((k, v) for k, v in data.items() if now - v < 86400)
            _write_state(self.failure_log, data)
        except (IOError, OSError) as e:
            self.warnings.append("could not record failed portals in %s: %s" % (self.failure_log, e))
        finally:
            self.node_lock.release()

    def _skipped(self, p, failures, r):
        """True (and ``r`` filled in) when portal ``p`` failed recently and has no session: not tried again."""
        t = failures.get(self._failure_key(p))
        if t is None or self.sessions_for(p):
            return False
        age = self.wall_clock() - t
        if age >= self.skip_failed_for:
            return False
        r["skipped"] = True
        r["error"] = "login to %s (%s) skipped: it failed %ds ago (skip_failed_portals_for=%ds)" % (
            p.portal, p.iqn, int(age), int(self.skip_failed_for))
        return True

    def _do_connect(self, paths, use_mp, created):
        results = []
        failures = self._recent_failures()
        try:
            self._connect_all(paths, use_mp, created, results, failures)
        finally:
            self._record_failures(results)
        return self._finish_connect(paths, use_mp, created, results)

    def _connect_all(self, paths, use_mp, created, results, failures):
        if use_mp:
            todo = []
            for p in paths:
                r = {"path": p}
                results.append(r)
                if not self._skipped(p, failures, r):
                    todo.append((p, r))
            # node records first, one after the other (open-iscsi's DB fails with parallel writers)
            for p, r in todo:
                if not self._sessions_for(p):
                    self._prepare_node(p, created)
            # every portal at once; each one's device wait counts from its own login.  The joins are bounded
            # too: a thread stuck in the kernel must not hold the whole attach past its deadline.
            threads = []
            for p, r in todo:
                t = threading.Thread(target=lambda p=p, r=r: self._connect_one(
                    p, r, created, self.clock() + self.device_wait))
                t.daemon = True
                threads.append((t, r))
                t.start()
            budget = self.login_timeout * (max(1, self.login_retries) + 1) + 10 + self.device_wait + 5
            deadline = self.clock() + budget
            for t, r in threads:
                t.join(max(0.0, deadline - self.clock()))
                if t.is_alive():
                    r.setdefault("error", "%s: no answer within %ss (login + LUN scan)" % (r["path"].portal, budget))
        else:
            # single path: portals in order, first device wins
            for p in paths:
                r = {"path": p}
                results.append(r)
                if self._skipped(p, failures, r):
                    continue
                if not self._sessions_for(p):
                    self._prepare_node(p, created)
                self._connect_one(p, r, created, self.clock() + self.device_wait)
                if r.get("device") is not None:
                    break

    def _finish_connect(self, paths, use_mp, created, results):
        good = [r for r in results if r.get("device") is not None]
        failed = [r for r in results if r.get("device") is None]
        if not good:
            errs = "; ".join(r.get("error", "no device") for r in failed)
            if all(r.get("session") is None for r in failed):
                raise LoginError("could not log in to any portal: %s" % errs,
                                 hint="check portal addresses, the target ACL and CHAP settings")
            raise AttachError("volume not attached: %s" % errs,
                              hint="check that the LUN is mapped to this initiator, %s, in the target's ACL" % (
                                  ([line.split("=", 1)[1].strip() for line in (self.fs.read(
                                      "/etc/iscsi/initiatorname.iscsi", "") or "").splitlines()
                                    if line.strip().startswith("InitiatorName=")] or [
                                      "whose name is unknown (/etc/iscsi/initiatorname.iscsi has no InitiatorName)"])[-1]))
        devs = [r["device"] for r in good]
        self.verify_identity(devs, None, fresh=created["devices"])
        for r in failed:
            err = r.get("error", "path %s failed" % r["path"])
            self.warnings.append(err)
            self.failed_paths.append({"portal": str(r["path"].portal), "iqn": r["path"].iqn,
                                      "lun": r["path"].lun, "error": err, "skipped": bool(r.get("skipped"))})
            self._forget_path(r, created)
        devs = [r["device"] for r in good]
        m = None
        if use_mp and len(paths) == 1 and self.multipath == "auto" and not mp.wwid_known(self.fs, devs[0].wwid):
            # one portal: find_multipaths builds no map for a single new path, and auto does not
            # force one (multipath=required does)
            use_mp = scsi.multipath_of(self.fs, devs[0].name) is not None
        if use_mp:
            m = self._wait_map(devs, created, len(good))
            if m is None:
                msg = "no multipath map formed for %s (%d path(s))" % (devs[0].wwid, len(devs))
                if self.multipath == "required":
                    raise AttachError(msg, hint="check multipathd and /etc/multipath.conf (blacklist, find_multipaths)")
                self.warnings.append(msg + ": returning a single path device, performance and resilience are degraded")
                devs = devs[:1]
        self._persist_boot_settings([r["path"] for r in good])
        return self.describe(paths, devs, m, changed=True)

    def _forget_path(self, r, created):
        """Drop what we created for a failed portal (node record; a session without our LUN)."""
        p = r["path"]
        s = r.get("session")
        if s is not None and s in created["sessions"]:
            others = scsi.session_devices(self.fs, s)
            if not others:
                self.runner.run(self._node_argv(p, "--logout"), ok_codes=(0, RC_NO_OBJS), timeout=self.command_timeout, check=False)
                created["sessions"].remove(s)
        if p in created["nodes"] and not self._sessions_for(p):
            self._node_db(self._node_argv(p, "--op", "delete"), ok=(0, RC_NO_OBJS))
            created["nodes"].remove(p)
        if not self._sessions_for(p):
            self._restore_records(created, p)

    def _wait_map(self, devs, created, live):
        fs = self.fs
        names = [d.name for d in devs]
        wwid = devs[0].wwid
        deadline = self.clock() + self.multipath_wait
        asked = False
        m = None
        while True:
            m = None
            for n in names:
                m = scsi.multipath_of(fs, n)
                if m:
                    break
            if m is not None:
                # wait (bounded) for every live path to join and the map to be ready
                if set(names) <= set(m.slaves) and mp.map_ready(fs, m):
                    return m
            elif not asked and live < 2 and wwid:
                # find_multipaths builds a map on its own once two paths share a WWID; for a
                # single live path it needs to be told (multipath -a + add path)
                if not mp.wwid_known(fs, wwid):
                    created["wwid"] = wwid
                mp.ensure_map(fs, self.runner, wwid, names)
                asked = True
            if self.clock() >= deadline:
                if m is not None and mp.map_ready(fs, m):
                    missing = sorted(set(names) - set(m.slaves))
                    if missing:
                        self.warnings.append("paths %s did not join map %s in time" % (", ".join(missing), m.name))
                    return m
                return None
            self.sleep(self.poll)

    def _rollback(self, created):
        """Remove every leftover this call created; return what could not be removed."""
        fs = self.fs
        left = []
        for name in created["devices"]:
            m = scsi.multipath_of(fs, name)
            if m is not None:
                try:
                    mp.flush(self.runner, m.name, retries=2, delay=0.5)
                except BrickError:
                    pass
        refs = [r for r in created.get("refs") or () if fs.exists(r.ident)]
        scsi.bounded_writes(fs, [("%s/delete" % r.ident, "1") for r in refs], 10)
        gone_wait = scsi.wait_gone(fs, [r.ident for r in refs], 10, sleep=self.sleep, clock=self.clock)
        left += ["device %s" % (r.dev.dev or r.dev.hctl) for r in refs if r.ident in gone_wait]
        for s in list(created["sessions"]):
            if scsi.session_devices(fs, s):
                left.append("session %d (carries other LUNs)" % s.sid)
                continue
            argv = ["iscsiadm", "-m", "session", "-r", str(s.sid), "--logout"]
            r = self.runner.run(argv, ok_codes=(0, RC_NO_OBJS), timeout=self.command_timeout, check=False)
            if r.rc not in (0, RC_NO_OBJS):
                left.append("session %d" % s.sid)
        for p in created["nodes"]:
            r = self._node_db(self._node_argv(p, "--op", "delete"), ok=(0, RC_NO_OBJS))
            if r.rc not in (0, RC_NO_OBJS):
                left.append("node record %s" % p)
        left += self._restore_records(created)
        if created.get("wwid"):
            mp.forget_wwid(self.runner, created["wwid"])
        gone = detach.DetachPlan()
        gone.remove = list(created.get("refs") or [])
        detach.remove_stale_links(fs, gone)
        return left

    def _first_link(self, cands, device, wait):
        """First of ``cands`` that resolves to ``device``; polls up to ``wait`` seconds."""
        deadline = self.clock() + wait
        while True:
            for c in cands:
                if self.fs.exists(c) and self.fs.realpath(c) == device:
                    return c
            if self.clock() >= deadline:
                return None
            self.sleep(max(self.poll, 0.1))

    def _map_size(self, m):
        cur = scsi.dm_map(self.fs, m.dm)
        return cur.size if cur is not None else m.size

    def describe(self, paths, devs, m, changed):
        fs = self.fs
        wwid = devs[0].wwid if devs else None
        sessions = []
        path_info = []
        for e in self.state(paths):
            s = e["session"]
            sessions.append({"portal": s.portal, "iqn": s.iqn, "sid": s.sid, "state": s.state,
                             "iface": s.iface})
            for d in e["devices"]:
                path_info.append({"portal": s.portal, "iqn": s.iqn, "lun": d.lun, "device": d.dev,
                                  "hctl": d.hctl, "state": d.state, "sid": s.sid,
                                  "in_map": bool(m and d.name in m.slaves)})
        # udev makes the links asynchronously (about 0.8 s after the disk on the lab): the kernel device
        # is usable at once, so the attach does not wait for them unless link_wait says so
        if m is not None:
            device = m.dev
            cands = ["/dev/disk/by-id/dm-uuid-mpath-%s" % m.wwid, "/dev/mapper/%s" % m.name]
        else:
            device = devs[0].dev
            cands = ["/dev/disk/by-id/scsi-%s" % wwid] if wwid else []
        stable = self._first_link(cands, device, self.link_wait if changed else 0)
        if stable is None and m is None:
            for link in scsi.links_to(fs, "/dev/disk/by-path", [devs[0].name]):
                stable = link
                break
        return {"changed": changed, "device": device, "stable_path": stable, "wwid": wwid,
                "failed_paths": list(self.failed_paths),
                "wwn": wwid, "multipath": m is not None,
                "multipath_map": m.name if m is not None else None,
                "size": (self._map_size(m) if m is not None else self._size(devs[0].name)) if devs else None,
                "sessions": sessions, "paths": path_info}

    # ------------------------------------------------------------------ disconnect
    def iscsiadm_logout(self, session):
        """Log out one session by id (bounded, one retry).  Returns the Result."""
        return self.runner.run(["iscsiadm", "-m", "session", "-r", str(session.sid), "--logout"],
                               ok_codes=(0, RC_NO_OBJS), timeout=self.command_timeout, retries=1, delay=1.0,
                               check=False)

    def delete_node(self, path):
        return self._node_db(self._node_argv(path, "--op", "delete"), ok=(0, RC_NO_OBJS))

    def plan_disconnect(self, paths, session_only=False):
        """What a detach of ``paths`` would remove and keep, and why (sysfs only): a DetachPlan."""
        return detach.plan_detach(self.fs, paths, iface=self.iface, wwid=self.wwid, session_only=session_only,
                                  node_exists=self.node_exists, kernel_lun=self.kernel_lun)

    def disconnect(self, paths, force=False, ignore_errors=False, check_mode=False, busy_check=None,
                   session_only=False):
        """Detach the volume: plan, verify, execute (see detach.py).  The caller holds the target lock(s).

        ``busy_check(dev) -> [blocker]`` replaces the built-in check (openers, mounts, swap, holders)."""
        d = detach.Detacher(self, paths, wwid=self.wwid, force=force, ignore_errors=ignore_errors,
                            session_only=session_only, busy_check=busy_check)
        plan = d.plan()
        if plan.empty():
            what = "no session of it carries nothing" if session_only else "volume is not attached"
            if plan.kept_devices:
                what = "nothing of volume %s is attached here (kept: %s)" % (
                    plan.wwid, "; ".join("%s: %s" % (r.label, why) for r, why in plan.kept_devices))
            return {"changed": False, "msg": what, "removed": plan.to_dict()}
        if check_mode:
            return {"changed": True, "msg": "would detach", "removed": plan.to_dict()}
        d.verify(plan)
        return d.execute(plan)


def _read_state(path):
    """A JSON state file of the collection's own (in the root-only lock directory, not under the host root)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path, data):
    """Replace a state file atomically, readable by its owner only (0600)."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, json.dumps(data, sort_keys=True).encode("utf-8"))
    finally:
        os.close(fd)
    os.rename(tmp, path)


def check_portals(portals, resolver=None):
    """Validate portals (strings or Portals) and resolve host names: a list of [Portal, *other addresses]."""
    ports = [p if isinstance(p, validate.Portal) else validate.portal(p) for p in portals or ()]
    resolved = [validate.resolve_portal(p, resolver=resolver) for p in ports]
    keys = [detach.address_key(r[0].host) + ":%d" % r[0].port for r in resolved]
    if len(set(keys)) != len(keys):
        raise InvalidInput("the same portal is listed twice (%s)" % ", ".join(
            str(p) for p, k in zip(ports, keys) if keys.count(k) > 1))
    return resolved


def build_paths(portals, iqns, luns, resolver=None, session_only=False):
    """Validated list of Path from the module's lists (IQN/LUN lists of length 1 apply to all).

    Portals given as host names are resolved here, before anything runs: the kernel shows sessions with
    numeric addresses only.  A new login uses the first address; sessions on any address of the name
    belong to the path.  ``session_only`` paths carry no LUN (``luns`` must be empty or None)."""
    ports = [validate.portal(p) for p in (portals or [])]
    iqns = [validate.iqn(i) for i in (iqns or [])]
    if session_only:
        if luns and any(x is not None for x in luns):
            raise InvalidInput("a session-only logout takes no LUN")
        luns = [None]
    else:
        luns = [validate.lun(x) for x in (luns if luns is not None else [0])] or [0]
    if not ports:
        if len(iqns) != 1:
            raise InvalidInput("without portals, give exactly one target IQN")
        return [Path(None, iqns[0], luns[0])]
    resolved = check_portals(ports, resolver)
    n = len(ports)
    if len(iqns) not in (1, n):
        raise InvalidInput("give one target IQN, or one per portal (%d portals, %d IQNs)" % (n, len(iqns)))
    if len(luns) not in (1, n):
        raise InvalidInput("give one LUN, or one per portal (%d portals, %d LUNs)" % (n, len(luns)))
    iqns = iqns * n if len(iqns) == 1 else iqns
    luns = luns * n if len(luns) == 1 else luns
    return [Path(resolved[i][0], iqns[i], luns[i], aliases=resolved[i][1:],
                 name=None if resolved[i][0].host == ports[i].host.lower() else ports[i].host) for i in range(n)]


__all__ = ["Auth", "Connector", "Path", "build_paths", "CommandError"]
