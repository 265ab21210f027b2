# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Detach a volume: decide, then do.

1. **Plan** (:func:`plan_detach`, sysfs only, no command): which SCSI devices belong to the volume and
   will be deleted, which of them leave a multipath map that stays (``multipathd del path``), which maps
   lose every path and are flushed, which sessions will carry nothing afterwards and are logged out, which
   node records go, and what is *kept* and why (another LUN, another path of a map that stays, a device
   whose WWID differs from the volume's).
2. **Verify** (:meth:`Detacher.verify`, under the target lock, just before acting): the plan is made
   again from a fresh look at sysfs, every device that will be deleted (a path of a map that is flushed
   too) is checked for openers, mounts, swap and holders other than its own map and multipathd's path
   checker, and multipathd must run when a path has to leave a map that stays.
3. **Execute** (:meth:`Detacher.execute`): flush the buffers of standalone devices, flush the maps that
   go (the data barrier: when it fails nothing more is removed unless ``force``), take paths out of the
   maps that stay, delete the devices, remove the links that described them, log out each session whose
   last device went (looking again right before each logout), delete the node records, and check by
   identity that nothing of the volume is left.

A device is identified by its sysfs directory (``.../hostH/sessionS/targetH:C:T/H:C:T:L``): session ids
are never reused by the kernel, so a new device that got the same ``sdX`` name or the same H:C:T:L after a
re-login is never mistaken for the one that was removed.  A volume is identified by its WWID.
"""

from __future__ import annotations

import threading

from . import kernel_writes, scsi
from . import multipath as mp
from .detach_plan import DetachPlan, DeviceRef, plan_detach
from .errors import BrickError, DetachError, DeviceBusy, FlushError, VolumeMismatch
from .matching import address_key, session_matches

# iscsiadm exit codes (iscsiadm(8))
RC_NO_OBJS = 21
DELETE_WAIT = 30.0
PATH_LEAVE_WAIT = 10.0


def _blocker_str(blocker):
    if isinstance(blocker, dict):
        if blocker.get("kind") == "process" or blocker.get("pid"):
            who = ", user %s" % blocker["user"] if blocker.get("user") else ""
            return "pid %s (%s%s)" % (blocker.get("pid"), blocker.get("comm") or "?", who)
        if blocker.get("mountpoint"):
            return "%s mounted on %s" % (blocker.get("device") or "it", blocker["mountpoint"])
        if blocker.get("holder"):
            return "%s held by %s" % (blocker.get("device") or "it", blocker.get("holder_name") or blocker["holder"])
        return "%s (%s)" % (blocker.get("kind", "?"), blocker.get("device") or "")
    return str(blocker)


class Detacher(object):
    """Runs one detach: verify (under the caller's lock), execute, check what is left."""

    def __init__(self, conn, paths, wwid=None, force=False, ignore_errors=False, session_only=False,
                 busy_check=None):
        self.conn = conn
        self.fs = conn.fs
        self.runner = conn.runner
        self.paths = paths
        self.wwid = wwid
        self.force = force
        self.ignore_errors = ignore_errors
        self.session_only = session_only
        self.busy_check = busy_check or self._busy
        self.problems = []
        self.kept_at_logout = []
        self.forced_maps = []
        self.logged_out = []        # sessions this run logged out
        self.deleted_records = []   # node records this run deleted

    # -- helpers
    def plan(self):
        return plan_detach(self.fs, self.paths, iface=self.conn.iface, wwid=self.wwid,
                           session_only=self.session_only, node_exists=self.conn.node_exists,
                           kernel_lun=getattr(self.conn, "kernel_lun", None))

    def _daemon_pid(self):
        pid = self.fs.read(mp.PIDFILE)
        return int(pid) if pid and pid.isdigit() else None

    def _busy(self, dev):
        try:
            from . import idle  # only when there is a device to check
            return idle.inspect(dev, use_fuser="never", fs=self.fs, runner=self.runner)["blockers"]
        except BrickError:
            return []

    def _problem(self, exc):
        if self.force or self.ignore_errors:
            self.problems.append(str(exc))
        else:
            raise exc

    def _refuse(self, ref, blockers, plan):
        what = "a path of map %s, which stays" % ref.map.name if ref in plan.paths_out else (
            "outside any multipath map" if ref.map is None else "a path of map %s" % ref.map.name)
        exc = DeviceBusy("%s (%s) is in use by %s; nothing was removed" % (
            ref.dev.dev, what, ", ".join(_blocker_str(blocker) for blocker in blockers)),
            hint="unmount / close it first, or use force and accept data loss", blockers=blockers,
            device=ref.dev.dev)
        if not self.force:
            raise exc
        self.problems.append(exc.msg.replace("nothing was removed", "force: going on, data may be lost"))

    def _users(self, ref, daemon):
        """Blockers of a device that will be deleted, but its own map (flushed, or left with ``multipathd del
        path``) and multipathd's path checker, which keeps every path open."""
        allowed_holders = set([ref.map.dm]) if ref.map is not None else set()
        blockers = []
        for blocker in self.busy_check(ref.dev.dev) or []:
            if blocker.get("kind") == "holder" and blocker.get("holder") in allowed_holders:
                continue
            if blocker.get("kind") == "process" and daemon is not None and blocker.get("pid") == daemon:
                continue
            blockers.append(blocker)
        return blockers

    # -- verify
    def verify(self, plan):
        """Refuse, before anything is touched, what would harm a user of the volume."""
        daemon = self._daemon_pid()
        for ref in plan.remove:
            if ref.dev.name:
                # every device that is deleted, a path of a map that is flushed too: the flush checks the map,
                # not a process that holds /dev/sdX of one of its paths open (the delete would pull it away)
                blockers = self._users(ref, daemon)
                if blockers:
                    self._refuse(ref, blockers, plan)
        if plan.paths_out and not mp.daemon_running(self.fs, self.runner):
            what = (", ".join(ref.dev.dev for ref in plan.paths_out), ", ".join(dm_map.name for dm_map, _s in plan.kept_maps))
            exc = DetachError("multipathd is not running: %s cannot be taken out of map(s) %s, which keep other "
                              "paths; nothing was removed" % what,
                              hint="start multipathd (systemctl start multipathd), or use force: the kernel "
                                   "then fails those paths in the map when they are deleted")
            if not self.force:
                raise exc
            self.problems.append(str(exc).replace("nothing was removed", "force: deleting them anyway"))

    # -- execute
    def execute(self, plan):
        """Carry out a verified plan.  Returns the result dict: ``removed`` is what really went (a session that
        got a new LUN before its logout stays, and so does its record), ``changed`` whether anything did."""
        self._barriers(plan)
        self._paths_out(plan)
        gone = self._delete(plan)
        self._drop_failed_maps(plan)
        self._logout(plan)
        self._nodes(plan)
        from .boot import forget_devices  # the boot unit no longer scans the LUNs whose devices are gone
        self.problems.extend(forget_devices(self.fs, [ref for ref in plan.remove if not self.fs.exists(ref.ident)]))
        from .links import remove_stale_links  # only a detach that removes something needs it
        removed_links = remove_stale_links(self.fs, plan)
        leftovers = self.leftovers(plan)
        done = self._done(plan)
        removed = done.to_dict()
        removed["links"] = removed_links
        if self.kept_at_logout:
            removed["kept_sessions"] = removed["kept_sessions"] + self.kept_at_logout
        changed = not done.empty() or bool(done.paths_out or removed_links)
        out = {"changed": changed, "removed": removed, "leftovers": leftovers, "problems": list(self.problems),
               "deleted": gone}
        if leftovers:
            msg = "detach left %s" % "; ".join(leftovers)
            if not self.ignore_errors:
                raise DetachError(msg, hint="see the leftovers; re-run with force to clean up",
                                  leftovers=leftovers, problems=list(self.problems), removed=removed)
            self.conn.warnings.append(msg)
        for problem in self.problems:
            self.conn.warnings.append(problem)
        return out

    def _barriers(self, plan):
        """Data barriers first: buffers of standalone devices, then the maps that lose every path."""
        for ref in plan.standalone():
            if not ref.dev.name:
                continue
            try:
                mp.flush_buffers(self.runner, ref.dev.dev)
            except FlushError as err:
                if not self.force:
                    raise
                self.problems.append(str(err) + " (force: going on, data may be lost)")
        for dm_map in plan.flush_maps:
            try:
                mp.flush(self.runner, dm_map.name)
            except FlushError as err:
                blockers = []
                if err.details.get("reason") == "in_use":
                    blockers = self.busy_check(dm_map.dev) or []
                    if blockers:
                        err.details["blockers"] = blockers
                        err.msg += "; in use by: " + ", ".join(_blocker_str(blocker) for blocker in blockers)
                if not self.force:
                    raise
                self._force_map(dm_map, err, blockers)

    def _force_map(self, dm_map, err, blockers):
        """``force`` on a map that could not be flushed: stop queueing first, so that I/O of whoever still
        holds it fails instead of hanging forever once its last path is gone."""
        self.forced_maps.append(dm_map.name)
        queueing = mp.disable_queueing(self.fs, self.runner, dm_map)
        msg = "%s (force: going on" % err.msg
        if blockers:
            msg += "; still used by %s" % ", ".join(_blocker_str(blocker) for blocker in blockers)
        msg += "; queueing disabled: I/O to %s now fails instead of hanging" % dm_map.name if queueing else \
            "; could not disable queueing of %s: I/O to it may hang" % dm_map.name
        self.problems.append(msg + "; data may be lost)")

    def _paths_out(self, plan):
        """Take paths out of maps that keep other paths (the map keeps serving I/O)."""
        if not plan.paths_out:
            return
        for ref in plan.paths_out:
            mp.del_path(self.runner, ref.dev.name)
        left = mp.wait_paths_left(self.fs, [(ref.map.dm, ref.dev.name) for ref in plan.paths_out], PATH_LEAVE_WAIT,
                                  sleep=self.conn.sleep, clock=self.conn.clock)
        if left:
            self._problem(DetachError("%s did not leave its map within %ss" % (", ".join(left), PATH_LEAVE_WAIT),
                                      hint="check multipathd (journalctl -u multipathd)"))

    def _delete(self, plan):
        """Delete every planned device at once and wait (bounded) for each to go, by identity.

        Each ``delete`` write runs in a forked writer bounded by DELETE_WAIT (kernel_writes.bounded_writes): on a dead
        session the kernel's SYNCHRONIZE CACHE may block it, and nothing may hold the module past its bound.  A
        device whose session is not logged in but which is still "running" is set offline first, so that the
        kernel fails its I/O at once (the kernel refuses that for a "blocked" device: EINVAL, ignored)."""
        start = self.conn.clock()
        dead = [ref for ref in plan.remove if ref.session.state != "LOGGED_IN" and ref.dev.state == "running"]
        if dead:
            kernel_writes.bounded_writes(self.fs, [("%s/state" % ref.dev.path, "offline") for ref in dead], 5.0)
        errors = kernel_writes.bounded_writes(self.fs, [("%s/delete" % ref.dev.path, "1") for ref in plan.remove], DELETE_WAIT)
        for ref in plan.remove:
            err = errors.get("%s/delete" % ref.dev.path)
            if err and err != "timeout" and self.fs.exists(ref.dev.path):
                self._problem(DetachError("could not delete %s: %s" % (ref.dev.dev or ref.dev.hctl, err)))
        left = kernel_writes.wait_gone(self.fs, [ref.ident for ref in plan.remove],
                                       max(1.0, DELETE_WAIT - (self.conn.clock() - start)), sleep=self.conn.sleep,
                                       clock=self.conn.clock)
        if left:
            self._problem(DetachError("devices still present after %ss: %s" % (DELETE_WAIT, ", ".join(
                ref.dev.dev or ref.dev.hctl for ref in plan.remove if ref.ident in left))))
        return [ref.dev.dev for ref in plan.remove if ref.ident not in left and ref.dev.dev]

    def _drop_failed_maps(self, plan):
        """A map whose flush failed under force: ask multipathd to drop it now that its paths are gone; if it
        is still open, make sure its queueing is off for good (multipathd turned it back on when it reloaded
        the map without its last path), so that its holders get I/O errors instead of a hang."""
        for m in plan.flush_maps:
            now = scsi.dm_map(self.fs, m.dm)
            if now is None or now.uuid != m.uuid:
                continue
            mp.del_map(self.runner, m.name)
            now = scsi.dm_map(self.fs, m.dm)
            if now is not None and now.uuid == m.uuid and m.name in self.forced_maps:
                if not mp.disable_queueing(self.fs, self.runner, m, message=True):
                    self.problems.append("could not disable queueing of %s once its paths were gone: I/O to it "
                                         "may hang until multipathd's no_path_retry runs out" % m.name)

    def _logout(self, plan):
        """Log out each planned session, looking again right before: a LUN that appeared meanwhile keeps it."""
        outs = []
        threads = []

        def one(s):
            rest = scsi.session_devices(self.fs, s, with_details=False)
            if rest:
                self.kept_at_logout.append("%s %s (a device appeared before the logout: %s)" % (
                    s.portal, s.iqn, ", ".join(device.dev or device.hctl for device in rest)))
                outs.append((s, None))
                return
            outs.append((s, self.conn.iscsiadm_logout(s)))

        for s in plan.logout:
            thread = threading.Thread(target=one, args=(s,))
            thread.daemon = True
            threads.append(thread)
            thread.start()
        for thread in threads:
            thread.join()
        for session, result in outs:
            if result is not None and result.rc not in (0, RC_NO_OBJS):
                self._problem(DetachError("logout of session %d (%s) failed: %s" % (
                    session.sid, session.portal, (result.stderr or result.stdout or "timeout").strip())))
        kept = set(id(session) for session, result in outs if result is None)
        plan.logout = [s for s in plan.logout if id(s) not in kept]
        # rc 21: the session was gone already (not logged out by this run)
        self.logged_out = [s for s, result in outs if result is not None and result.rc == 0]

    def _nodes(self, plan):
        for path in plan.node_records:
            if self.conn.sessions_for(path):
                continue  # a session of it stays (a LUN appeared before its logout): so does its record
            result = self.conn.delete_node(path)
            if getattr(result, "rc", 0) == 0:  # rc 21: there was no such record any more
                self.deleted_records.append(path)

    def _done(self, plan):
        """The part of ``plan`` that really happened: devices and maps that are gone, sessions logged out,
        records deleted (what the result reports as removed)."""
        done = DetachPlan(plan.wwid)
        done.remove = [ref for ref in plan.remove if not self.fs.exists(ref.ident)]
        done.paths_out = [ref for ref in plan.paths_out if ref in done.remove]
        for dm_map in plan.flush_maps:
            now = scsi.dm_map(self.fs, dm_map.dm)
            if now is None or now.uuid != dm_map.uuid:
                done.flush_maps.append(dm_map)
        done.kept_maps, done.kept_devices, done.kept_sessions = plan.kept_maps, plan.kept_devices, plan.kept_sessions
        done.logout = [s for s in plan.logout if s in self.logged_out]
        done.node_records = list(self.deleted_records)
        return done

    # -- what is left
    def leftovers(self, plan):
        fs = self.fs
        left = []
        sids = set(session.sid for session in scsi.iscsi_sessions(fs))
        for session in plan.logout:
            if session.sid in sids:
                left.append("session %d to %s" % (session.sid, session.portal))
        for ref in plan.remove:
            if fs.exists(ref.ident):
                left.append("device %s" % (ref.dev.dev or ref.dev.hctl))
        for m in plan.flush_maps:
            now = scsi.dm_map(fs, m.dm)
            if now is not None and now.uuid == m.uuid:
                left.append("multipath map %s (%s)" % (m.name, m.dev))
        from .links import stale_links
        for link in stale_links(fs, plan):
            left.append("link %s" % link)
        return left


__all__ = ["DetachPlan", "Detacher", "DeviceRef", "address_key", "plan_detach", "session_matches", "VolumeMismatch"]
