# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Attach a volume: node records without discovery, parallel logins, a one-LUN scan, identity, the map.

Everything the attach creates goes into an ``AttachJournal``; when anything fails, ``AttachJournal.rollback()``
removes exactly that (and puts back the records that were there before), so a failed attach leaves nothing
half-done and never touches what was there already: a map that existed before the attach is never flushed (a
device the attach scanned is taken out of it with ``multipathd del path``, then deleted), and a map is the volume's
only when it serves the volume's WWID (a LUN the array reused behind an old map is a VolumeMismatch that leaves the
old map as it is).
"""

from __future__ import annotations

import threading

from . import identity, kernel_writes, scsi
from . import luns as lun_numbers
from . import multipath as mp
from .errors import AttachError, BrickError, LockTimeout, LoginError
from .failures import PortalFailures
from .iscsiadm import RC_AUTH, RC_NO_OBJS, RC_TIMEOUT

# Rescans of a LUN that has not appeared yet, in seconds after the first one.
RESCAN_AT = (1.0, 3.0, 7.0, 15.0)


class AttachJournal(object):
    """What one attach created (and saved), so that a failure can undo exactly that."""

    def __init__(self):
        self.nodes = []      # [Path] node records made with --op new
        self.saved = []      # [(Path, record file, text)] records that were there before
        self.sessions = []   # [Session] logged in by this call
        self.devices = []    # [str] sd names scanned by this call
        self.refs = []       # [DeviceRef] the same devices, by identity
        self.wwid = None     # WWID added to /etc/multipath/wwids by this call
        self.maps_before = None  # {(dm, uuid)} of the multipath maps there before the attach; None: not known

    def remember_maps(self, fs):
        """Note the multipath maps that exist before the attach makes anything: the rollback never flushes them."""
        self.maps_before = set((dm_map.dm, dm_map.uuid) for dm_map in scsi.dm_maps(fs))

    def made_map(self, dm_map):
        """Whether ``dm_map`` was formed during this attach (a map of unknown age counts as there before)."""
        return self.maps_before is not None and (dm_map.dm, dm_map.uuid) not in self.maps_before

    def rollback(self, conn, db):
        """Remove every leftover this call created; return what could not be removed."""
        from .detach_plan import DetachPlan
        from .links import remove_stale_links
        fs = conn.fs
        left = []
        self._leave_maps(conn)
        refs = [ref for ref in self.refs if fs.exists(ref.ident)]
        kernel_writes.bounded_writes(fs, [("%s/delete" % ref.ident, "1") for ref in refs], 10)
        gone_wait = kernel_writes.wait_gone(fs, [ref.ident for ref in refs], 10, sleep=conn.sleep, clock=conn.clock)
        left += ["device %s" % (ref.dev.dev or ref.dev.hctl) for ref in refs if ref.ident in gone_wait]
        left += self._logout(conn, db)
        for path in self.nodes:
            result = db.delete(path)
            if result.rc not in (0, RC_NO_OBJS):
                left.append("node record %s" % path)
        left += db.restore(self)
        if self.wwid:
            mp.forget_wwid(conn.runner, self.wwid)
        gone = DetachPlan()
        gone.remove = list(self.refs)
        remove_stale_links(fs, gone)
        return left

    def _leave_maps(self, conn):
        """The maps the scanned devices are in: one that this attach formed is flushed (best effort: the devices
        are deleted anyway); from one that was there before (another volume's, or this volume's own map on other
        paths) the devices are only taken out (``multipathd del path``), and the map keeps its other paths."""
        out_of = []
        for name in self.devices:
            dm_map = scsi.multipath_of(conn.fs, name)
            if dm_map is None:
                continue
            if self.made_map(dm_map):
                try:
                    mp.flush(conn.runner, dm_map.name, retries=2, delay=0.5)
                except BrickError:
                    pass
                continue
            mp.del_path(conn.runner, name)
            out_of.append((dm_map.dm, name))
        if out_of:
            mp.wait_paths_left(conn.fs, out_of, 10, sleep=conn.sleep, clock=conn.clock)

    def _logout(self, conn, db):
        left = []
        for session in list(self.sessions):
            if scsi.session_devices(conn.fs, session):
                left.append("session %d (carries other LUNs)" % session.sid)
                continue
            result = db.logout_session(session)
            if result.rc not in (0, RC_NO_OBJS):
                left.append("session %d" % session.sid)
        return left


class Attacher(object):
    """One attach of ``paths``: log in (in parallel with multipath), scan the LUN, check identity, wait for the
    map, persist the next login's settings.  ``run()`` returns the result dict; the caller rolls back on error."""

    def __init__(self, conn, db, paths, use_mp, journal):
        self.conn = conn
        self.db = db
        self.paths = paths
        self.use_mp = use_mp
        self.journal = journal
        journal.remember_maps(conn.fs)
        # the login threads share the node lock: they wait for each other instead of failing on a lock object
        # that one of them holds (the modules' HostLock is not re-entrant)
        conn.node_lock = ThreadSharedLock.around(conn.node_lock)
        self.results = []
        self.persisted = []  # the paths whose records have the boot settings already

    def run(self):
        self.db.check_before_attach(self.paths, self.conn.auth.node_params())  # records: nothing has run yet
        failures = PortalFailures(self.conn)
        try:
            if self.use_mp:
                self._connect_all(failures)
            else:
                self._connect_in_order(failures)
        finally:
            failures.record(self.results)
        return self._finish()

    # -- logins and scans ------------------------------------------------------------------------------------
    def _connect_all(self, failures):
        """Multipath: node records first, one after the other (open-iscsi's DB fails with parallel writers);
        then every portal at once, each one's device wait counted from its own login.  The joins are bounded
        too: a thread stuck in the kernel must not hold the whole attach past its deadline."""
        conn = self.conn
        todo = []
        for path in self.paths:
            result = {"path": path}
            self.results.append(result)
            if not failures.skipped(path, result):
                todo.append((path, result))
        for path, _result in todo:
            if not conn.sessions_for(path):
                self.db.prepare(path, self.journal, conn.auth.node_params())
        threads = []
        for path, result in todo:
            thread = threading.Thread(target=self._connect_one, args=(path, result, conn.clock() + conn.device_wait))
            thread.daemon = True
            threads.append((thread, result))
            thread.start()
        budget = max([self.db.login_budget(path) for path, _result in todo] or [0]) + conn.device_wait + 5
        deadline = conn.clock() + budget
        for thread, result in threads:
            thread.join(max(0.0, deadline - conn.clock()))
            if thread.is_alive():
                result.setdefault("error", "%s: no answer within %ss (login + LUN scan)"
                                  % (result["path"].portal, budget))

    def _connect_in_order(self, failures):
        """Single path: portals in order, the first device wins."""
        conn = self.conn
        for path in self.paths:
            result = {"path": path}
            self.results.append(result)
            if failures.skipped(path, result):
                continue
            if not conn.sessions_for(path):
                self.db.prepare(path, self.journal, conn.auth.node_params())
            self._connect_one(path, result, conn.clock() + conn.device_wait)
            if result.get("device") is not None:
                break

    def _connect_one(self, path, result, deadline):
        """Login (if needed) + scan one portal.  Fills ``result``; never raises."""
        conn = self.conn
        try:
            sessions = conn.sessions_for(path)
            if not sessions:
                sessions = self._login(path, result)
                if not sessions:
                    return
                self.journal.sessions.extend(sessions)
            session = sessions[0]
            result["session"] = session
            existing = [device for device in scsi.session_devices(conn.fs, session, lun=conn.kernel_lun(path, session)) if device.name]
            if existing:
                result["device"] = existing[0]
                return
            dev = self._wait_device(path, session, deadline)
            if dev is None:
                result["error"] = "LUN %d did not appear behind %s on %s within %ss" % (
                    path.lun, path.iqn, path.portal, conn.device_wait)
                return
            from .detach_plan import DeviceRef
            self.journal.devices.append(dev.name)
            self.journal.refs.append(DeviceRef(dev, session, None, path))
            result["device"] = dev
        except Exception as e:  # a thread must report, never die silently
            result["error"] = "%s: %s" % (path.portal, e)

    def _login(self, path, result):
        rc, msg = self.db.login(path)
        sessions = self.conn.sessions_for(path)
        if not sessions and path.aliases:
            rc, msg, sessions = self._login_other_address(path, rc, msg)
        if not sessions:
            reason = {RC_AUTH: "authentication failed", RC_TIMEOUT: "connection timed out",
                      None: "login timed out"}.get(rc, "iscsiadm exit code %s" % rc)
            result["error"] = "login to %s failed: %s (%s)" % (path.portal, reason, msg)
            result["rc"] = rc
        return sessions

    def _login_other_address(self, path, rc, msg):
        """A portal given as a host name with several addresses: when the login to the first one fails, try the
        others in order (a name with an IPv6 address the target does not listen on, say).  The node record made
        for a failed address is dropped again."""
        from .volume import Path
        conn = self.conn
        for addr in path.aliases:
            if addr == path.portal:
                continue
            conn.warnings.append("login to %s (%s) failed: %s; trying %s, another address of the name" % (
                path.portal, path.iqn, msg or "iscsiadm exit code %s" % rc, addr))
            other = Path(addr, path.iqn, path.lun)
            self.db.prepare(other, self.journal, conn.auth.node_params())
            rc, msg = self.db.login(other)
            sessions = conn.sessions_for(path)
            if sessions:
                if path in self.journal.nodes:
                    self.db.delete(path)
                    self.journal.nodes.remove(path)
                return rc, msg, sessions
        return rc, msg, []

    def _scan(self, session, scan, deadline, meanwhile=None):
        """One LUN scan write, bounded by the device wait's deadline (a scan on a session that went into recovery
        blocks in the kernel).  ``meanwhile`` runs while the kernel scans (the scan is in a forked writer)."""
        conn = self.conn
        pending = kernel_writes.start_writes(conn.fs, [("/sys/class/scsi_host/host%d/scan" % session.host, scan)])
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            errors = pending.wait(max(1.0, deadline - conn.clock()))
        if errors:
            conn.warnings.append("LUN scan on host%d (%s): %s" % (session.host, scan, list(errors.values())[0]))

    def _wait_device(self, path, session, deadline):
        """Scan exactly this LUN on the session's host and wait for its block device.

        With ``lun_addressing: auto`` and nothing on the session that tells the addressing, the LUN is scanned in
        peripheral form first; only if it has not appeared by the first rescan is its flat-space number
        (16384 + n) scanned too (an array that answers both forms has answered the first one by then)."""
        conn = self.conn
        channel, target = scsi.session_target(conn.fs, session)
        kernel_lun = conn.kernel_lun(path, session)
        candidates = [kernel_lun]
        if conn.lun_addressing == "auto" and kernel_lun == path.lun and path.lun < lun_numbers.FLAT_BASE:
            candidates.append(lun_numbers.FLAT_BASE + path.lun)
        prefix = "%s %s " % ("-" if channel is None else channel, "-" if target is None else target)
        start = conn.clock()
        rescans = list(RESCAN_AT)
        pauses = backoff(conn.poll)
        # one path at a time: the boot settings go into the record while the kernel scans (a record write is an
        # fsync: tens of ms in a VM); a path whose LUN then does not appear gets its record back as it was
        # (_forget_path).  Portals attached in parallel threads get theirs in _finish, from one thread: the node
        # lock (a HostLock in the modules) is one object, held by one thread at a time.
        meanwhile = (lambda: self._persist([path])) if self._one_at_a_time() else None
        self._scan(session, prefix + str(kernel_lun), deadline, meanwhile=meanwhile)
        while True:
            devs = [device for device in scsi.session_devices(conn.fs, session) if device.name and device.lun in candidates]
            if devs:
                return sorted(devs, key=lambda device: candidates.index(device.lun))[0]
            now = conn.clock()
            if now >= deadline:
                return None
            if rescans and now - start >= rescans[0]:
                rescans.pop(0)
                for number in candidates:
                    self._scan(session, prefix + str(number), deadline)
            conn.sleep(next(pauses))

    # -- the result ---------------------------------------------------------------------------------------------
    def _finish(self):
        conn = self.conn
        good = [outcome for outcome in self.results if outcome.get("device") is not None]
        failed = [outcome for outcome in self.results if outcome.get("device") is None]
        if not good:
            self._fail(failed)
        devs = [outcome["device"] for outcome in good]
        # the maps the devices are in count too: a map of another WWID (a LUN the array reused behind an old map)
        # is another volume's, refused before anything else is done
        identity.verify(conn, devs, None, fresh=self.journal.devices, maps=identity.maps_of(conn.fs, devs))
        for result in failed:
            self._forget_path(result)
        dm_map = None
        use_mp = self.use_mp
        if use_mp and len(self.paths) == 1 and conn.multipath == "auto" and not mp.wwid_known(conn.fs, devs[0].wwid):
            # one portal: find_multipaths builds no map for a single new path, and auto does not force one
            # (multipath=required does)
            use_mp = scsi.multipath_of(conn.fs, devs[0].name) is not None
        if use_mp:
            dm_map = self._wait_map(devs, len(good))
            if dm_map is None:
                # a map of another WWID may have taken a device meanwhile: refused, never returned
                identity.verify(conn, devs, None, fresh=[device.name for device in devs],
                                maps=identity.maps_of(conn.fs, devs))
                msg = "no multipath map formed for %s (%d path(s))" % (devs[0].wwid, len(devs))
                if conn.multipath == "required":
                    raise AttachError(msg, hint="check multipathd and /etc/multipath.conf (blacklist, find_multipaths)")
                conn.warnings.append(msg + ": returning a single path device, performance and resilience are degraded")
                devs = devs[:1]
        self._persist([outcome["path"] for outcome in good])
        return conn.describe(self.paths, devs, dm_map, changed=True)

    def _fail(self, failed):
        errors = "; ".join(r.get("error", "no device") for r in failed)
        if all(r.get("session") is None for r in failed):
            raise LoginError("could not log in to any portal: %s" % errors,
                             hint="check portal addresses, the target ACL and CHAP settings")
        raise AttachError("volume not attached: %s" % errors,
                          hint="check that the LUN is mapped to this initiator, %s, in the target's ACL"
                               % initiator_name(self.conn.fs))

    def _one_at_a_time(self):
        """Whether the paths are attached one after the other (no other thread of this attach runs)."""
        return not self.use_mp or len(self.paths) == 1

    def _persist(self, paths):
        """The next login's settings into the records of ``paths``, once per path (no command)."""
        todo = [path for path in paths if path not in self.persisted]
        self.persisted.extend(todo)
        if not todo:
            return
        for path in todo:
            # a record that prepare() did not save (its session was up already): saved now, so that a failure
            # puts it back as it was
            if path not in self.journal.nodes and not any(item[0] is path for item in self.journal.saved):
                self.journal.saved.extend((path, f, self.conn.fs.read_raw(f)) for f in self.db.record_files(path))
        self.db.persist_boot_settings(todo)

    def _forget_path(self, result):
        """A portal that failed: report it, and drop what we created for it (node record; a session without our
        LUN), putting back the record that was there before."""
        conn = self.conn
        path = result["path"]
        error = result.get("error", "path %s failed" % path)
        conn.warnings.append(error)
        conn.failed_paths.append({"portal": str(path.portal), "iqn": path.iqn, "lun": path.lun, "error": error,
                                  "skipped": bool(result.get("skipped"))})
        session = result.get("session")
        if session is not None and session in self.journal.sessions and not scsi.session_devices(conn.fs, session):
            self.db.logout_path(path)
            self.journal.sessions.remove(session)
        if path in self.journal.nodes and not conn.sessions_for(path):
            self.db.delete(path)
            self.journal.nodes.remove(path)
        if not conn.sessions_for(path) or path in self.persisted:
            # (a record that got the boot settings while its LUN was scanned is put back even when a session of
            # someone else's stays on it: the record is theirs)
            self.db.restore(self.journal, path)

    def _wait_map(self, devs, live):
        """Wait (bounded) for multipathd's map with every live path.  find_multipaths builds a map on its own once
        two paths share a WWID; for a single live path it needs to be told (multipath -a + add path).

        Only a map of the devices' WWID (verified) is the volume's: when a device is in a map of another WWID, there
        is no map to wait for (None, and nothing asked of multipathd)."""
        conn = self.conn
        names = [device.name for device in devs]
        wwid = devs[0].wwid
        deadline = conn.clock() + conn.multipath_wait
        asked = False
        pauses = backoff(conn.poll)
        while True:
            maps = identity.maps_of(conn.fs, devs)
            if wwid and any(m.wwid != wwid for m in maps):
                return None
            dm_map = maps[0] if maps else None
            if dm_map is not None and set(names) <= set(dm_map.slaves) and mp.map_ready(conn.fs, dm_map):
                return dm_map
            if dm_map is None and not asked and live < 2 and wwid:
                if not mp.wwid_known(conn.fs, wwid):
                    self.journal.wwid = wwid
                mp.ensure_map(conn.fs, conn.runner, wwid, names)
                asked = True
            if conn.clock() >= deadline:
                if dm_map is not None and mp.map_ready(conn.fs, dm_map):
                    missing = sorted(set(names) - set(dm_map.slaves))
                    if missing:
                        conn.warnings.append("paths %s did not join map %s in time" % (", ".join(missing),
                                                                                       dm_map.name))
                    return dm_map
                return None
            conn.sleep(next(pauses))


class ThreadSharedLock(object):
    """The node lock shared by the threads of one process: a thread waits (at most ``timeout`` seconds) until no
    other thread of the process holds it, then takes the host-wide lock ``inner`` (a ``HostLock``, which one object
    can hold only once, or any lock with acquire()/release()).  Threads of one attach thus take turns, and other
    processes are still excluded by ``inner`` itself.

    The wait for another thread is ``timeout`` when given, else ``inner``'s own lock timeout kept between
    MIN_WAIT and MAX_WAIT (a thread holds the lock for one node-DB write, each bounded by the command timeout;
    lock_timeout 0, "do not queue behind other processes", must not make the threads of one attach fail, and a
    patient lock still gets a bound)."""

    MIN_WAIT = 30.0
    MAX_WAIT = 300.0

    def __init__(self, inner, timeout: float | None = None) -> None:
        self.inner = inner
        if timeout is None:
            own = getattr(inner, "timeout", None)
            if isinstance(own, bool) or not isinstance(own, (int, float)) or not own >= 0:
                own = self.MAX_WAIT
            timeout = max(self.MIN_WAIT, min(float(own), self.MAX_WAIT))
        self.timeout = min(max(0.0, float(timeout)), threading.TIMEOUT_MAX)
        self._turn = threading.Lock()

    @classmethod
    def around(cls, lock) -> ThreadSharedLock:
        """``lock`` shared between threads (itself when it is shared already)."""
        return lock if isinstance(lock, cls) else cls(lock)

    def acquire(self):
        if not self._turn.acquire(timeout=self.timeout):
            name = getattr(self.inner, "name", "node-DB")
            raise LockTimeout("lock '%s': another thread of this task held it for more than %ss" % (name, self.timeout),
                              hint="a node-DB write of this task did not finish: check iscsiadm and the lock "
                                   "directory (%s)" % getattr(self.inner, "lock_dir", "in memory"),
                              lock=name, waited=self.timeout)
        try:
            return self.inner.acquire()
        except BaseException:
            self._turn.release()
            raise

    def release(self):
        try:
            self.inner.release()
        finally:
            self._turn.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def backoff(poll, first=0.005):
    """Pauses of a wait for the kernel: ``first`` seconds, doubling up to ``poll``.  A LUN that answers its scan
    has its block device within a few ms of the write, so a flat ``poll`` (50 ms) would be most of the wait; a
    slow one is still looked at only every ``poll`` seconds."""
    pause = min(first, poll)
    while True:
        yield pause
        pause = min(pause * 2, poll)


def initiator_name(fs):
    """This host's initiator IQN (/etc/iscsi/initiatorname.iscsi), or a sentence saying it is unknown."""
    names = [line.split("=", 1)[1].strip() for line in (fs.read("/etc/iscsi/initiatorname.iscsi", "") or "")
             .splitlines() if line.strip().startswith("InitiatorName=")]
    return names[-1] if names else "whose name is unknown (/etc/iscsi/initiatorname.iscsi has no InitiatorName)"
