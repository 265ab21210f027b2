# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The iSCSI connector: one volume's paths (``Path``), and ``Connector``, what modules and tools call.

``Connector`` holds the settings of one operation and reads the volume's state from sysfs; the work is done by
one file per concern:

* ``attach.py``     connect: node records, parallel logins, a one-LUN scan, the map, rollback on failure;
* ``identity.py``   is it still the same volume (WWID), has it grown (online extend);
* ``detach.py``     disconnect: plan, verify, execute;
* ``iscsiadm.py``   every iscsiadm command line and node-record write; ``discovery.py`` SendTargets;
* ``scsi.py`` / ``multipath.py`` the kernel's view (sysfs) and multipath commands.

A re-run that finds the volume attached runs no command at all.  ``attach``, ``detach`` and ``discovery`` are
imported when they are used: a module run that finds nothing to do does not import (and, without a bytecode
cache, compile) them.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable, Iterable

from . import identity, scsi, validate
from . import luns as lun_numbers
from . import multipath as mp
from .chap import Auth
from .errors import AttachError, BrickError, CommandError, InvalidInput
from .iscsiadm import NodeDB
from .matching import address_key, session_matches
from .volume import Path, path_objects

if TYPE_CHECKING:
    from .detach_plan import DetachPlan
    from .runner import Result
    from .scsi import DmMap, ScsiDevice, Session
    from .validate import Portal


class Connector(object):
    """The settings of one attach or detach, and the volume's state as sysfs shows it."""

    def __init__(self, fs, runner, iface="default", login_timeout=5, login_retries=1,
                 device_wait=20.0, multipath="auto", multipath_wait=10.0, auth=None,
                 startup="automatic", node_lock=None, clock=time.monotonic, sleep=time.sleep,
                 poll=0.05, link_wait=0.0, command_timeout=30.0, wwid=None, rescan_timeout=10.0,
                 skip_failed_for=0.0, failure_log=None, wall_clock=time.time, lun_addressing="auto"):
        if str(lun_addressing).lower() not in lun_numbers.LUN_ADDRESSING:
            raise InvalidInput("lun_addressing '%s' is not one of %s" % (
                lun_addressing, ", ".join(sorted(lun_numbers.LUN_ADDRESSING))))
        self.fs = fs
        self.runner = runner
        self.iface = iface
        self.lun_addressing = lun_numbers.LUN_ADDRESSING[str(lun_addressing).lower()]
        self.login_timeout = login_timeout
        self.login_retries = login_retries
        self.device_wait = device_wait
        self.multipath = multipath
        self.multipath_wait = multipath_wait
        self.auth = auth or Auth()
        for secret in self.auth.secrets():
            runner.protect_secret(secret)
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
        # A portal whose login failed less than skip_failed_for seconds ago is not tried again (failures.py).
        self.skip_failed_for = float(skip_failed_for or 0)
        self.failure_log = failure_log
        self.wall_clock = wall_clock
        self.failed_paths = []
        self.warnings = []
        self.db = NodeDB(self)

    # -- the volume's state (sysfs only) ------------------------------------------------------------------------
    def kernel_lun(self, path: Path, session: Session, devs: list[ScsiDevice] | None = None) -> int | None:
        """The kernel's LUN number for ``path`` on ``session`` (LUN addressing; "auto" looks at the session)."""
        if path.lun is None:
            return None
        luns: list[int] = []
        if self.lun_addressing == "auto" and path.lun < lun_numbers.FLAT_BASE:
            devs = scsi.session_devices(self.fs, session, with_details=False) if devs is None else devs
            luns = [device.lun for device in devs]
        return lun_numbers.kernel_lun(path.lun, self.lun_addressing, luns)

    def sessions_for(self, path: Path, sessions: list[Session] | None = None) -> list[Session]:
        """Sessions of ``path`` (target, any of the portal's addresses, this connector's iface)."""
        sessions = scsi.iscsi_sessions(self.fs) if sessions is None else sessions
        return [s for s in sessions if session_matches(s, path, self.iface)]

    def node_exists(self, path: Path) -> bool:
        """Whether ``path`` has a node record on this connector's iface that the collection created (its ledger,
        records.py): the only records a detach may delete."""
        return self.db.ours(path)

    def record_files(self, path: Path) -> list[str]:
        return self.db.record_files(path)

    def state(self, paths: list[Path]) -> list[dict]:
        """What of the volume is attached right now: per (path, session), its devices and the other LUNs."""
        return [{"path": found.path, "session": found.session, "devices": found.devices, "others": found.others}
                for found in path_objects(self.fs, paths, self.iface, self.kernel_lun)]

    def find_attached(self, paths: list[Path]) -> tuple[list[ScsiDevice], DmMap | None] | None:
        """(devices, map) when the volume is fully attached as requested, else None (sysfs only)."""
        by_key: dict[tuple, ScsiDevice] = {}
        for entry in self.state(paths):
            live = [device for device in entry["devices"] if device.name]
            if live:
                by_key.setdefault(entry["path"].key(), live[0])
        if not by_key:
            return None
        devs = list(by_key.values())
        dm_map = scsi.multipath_of(self.fs, str(devs[0].name))  # live devices have a name
        if self.multipath == "off" and len(paths) > 1:
            return devs, dm_map
        if len(by_key) < len(paths):
            return None
        if self.multipath == "required" and dm_map is None:
            return None
        return devs, dm_map

    def _fingerprint(self, paths):
        """What of the volume exists (sessions, devices with the WWID and size the kernel shows, map), to tell a
        real change from a re-run (a rescan that found a re-mapped LUN changes the device, not its path)."""
        out = []
        for entry in self.state(paths):
            out.append(("session", entry["session"].sid))
            for dev in entry["devices"]:
                out.append(("device", dev.path, dev.wwid or "", identity.size_of(self.fs, dev.name) if dev.name else 0))
                dm_map = scsi.multipath_of(self.fs, dev.name) if dev.name else None
                if dm_map is not None:
                    out.append(("map", dm_map.uuid, tuple(sorted(dm_map.slaves))))
        return sorted(set(out))

    # -- attach -----------------------------------------------------------------------------------------------
    def verify_identity(self, devs, dm_map, fresh=(), rescan=True):
        return identity.verify(self, devs, dm_map, fresh=fresh, rescan=rescan)

    def attached_result(self, paths: list[Path], check_mode: bool = False, resize: bool = True) -> dict | None:
        """The result of an attach that has nothing to do (identity verified), or None when there is work.

        Reads sysfs and rescans the existing paths (no command, no lock needed): this is a re-run's whole cost.
        A map that must be resized (the LUN grew) is resized only with ``resize`` (the caller holds the target
        lock); without it the result says ``resized.pending``."""
        have = self.find_attached(paths)
        if have is None:
            return None
        devs, dm_map = have
        sizes = dict((device.name, identity.size_of(self.fs, device.name)) for device in devs)
        known = dict((device.path, device.wwid) for device in devs)
        # check mode changes nothing, not even the kernel's view of the LUN: it compares sysfs as it is
        identity.verify(self, devs, dm_map, rescan=not check_mode, maps=identity.maps_of(self.fs, devs))
        remapped = self._remapped(devs, known)
        grown = identity.grow(self, devs, dm_map, sizes, check_mode, resize)
        res = self.describe(paths, devs, dm_map, changed=bool(grown or remapped))
        if grown:
            res["resized"] = grown
        if remapped:
            res["remapped"] = remapped
        return res

    def _remapped(self, devs: list[ScsiDevice], known: dict) -> list[dict]:
        """The paths whose WWID the rescan changed: the array mapped another volume at the LUN number (no ``wwid``
        was given, else verify() refused).  The kernel now serves the new volume through them: a change, loudly."""
        out = []
        for device in devs:
            old = known.get(device.path)
            if old and device.wwid and device.wwid != old:
                out.append({"device": device.dev, "old_wwid": old, "new_wwid": device.wwid})
                self.warnings.append(
                    "%s (%s) reported WWID %s and now reports %s: the array mapped another volume at this LUN "
                    "number, and this path serves it now; give wwid to refuse such a change" % (
                        device.dev, device.hctl, old, device.wwid))
        return out

    def connect(self, paths: list[Path], check_mode: bool = False) -> dict:
        """Attach the volume reached through ``paths``.  Returns a result dict."""
        if not paths:
            raise InvalidInput("no portal/IQN/LUN to attach")
        done = self.attached_result(paths, check_mode)
        if done is not None:
            return done
        if check_mode:
            self.db.check_before_attach(paths, self.auth.node_params())  # the real run's refusals (records)
            return self._predicted_attach(paths)
        from . import attach
        journal = attach.AttachJournal()
        before = self._fingerprint(paths)
        try:
            res = attach.Attacher(self, self.db, paths, self._use_multipath(paths), journal).run()
            # a re-run that could not heal a dead portal leaves the host as it was: that is no change (an attach
            # that logged in or scanned a device changed the host: no second look needed)
            made = journal.sessions or journal.devices or journal.wwid  # (wwid: added to /etc/multipath/wwids)
            res["changed"] = bool(made) or self._fingerprint(paths) != before
            return res
        except BaseException as err:
            leftovers = journal.rollback(self, self.db)
            if isinstance(err, BrickError):
                if leftovers:
                    err.details["leftovers"] = leftovers
                raise
            raise AttachError("attach failed: %s" % err, leftovers=leftovers) from err

    def _predicted_attach(self, paths: list[Path]) -> dict:
        """Check mode: the portals the attach would log in to, and whether the host would change.  A portal whose
        last login failed (the failure log) is predicted to fail again: a re-run that can only retry it changes
        nothing, as the real run then reports (a warning says the prediction rests on that log)."""
        from .failures import PortalFailures
        failures = PortalFailures(self)
        login = [path for path in paths if not self.sessions_for(path)]
        failing = [path for path in login if failures.last_failure(path) is not None]
        for path in failing:
            self.warnings.append("the last login to %s (%s) failed %ds ago: check mode expects it to fail again and "
                                 "the host to stay as it is" % (path.portal, path.iqn,
                                                                int(self.wall_clock() - failures.last_failure(path))))
        state = self.state(paths)
        with_device = set(entry["path"].key() for entry in state if entry["devices"])
        live = set(entry["path"].key() for entry in state if entry["session"].state == "LOGGED_IN")
        to_scan = [path for path in paths if path not in login and path.key() not in with_device]
        for path in [path for path in to_scan if path.key() not in live]:
            # a LUN scan on a session in recovery (FAILED) finds nothing: the kernel cannot ask the target
            self.warnings.append("the session to %s (%s) is %s: check mode expects the LUN scan there to find "
                                 "nothing until it recovers" % (path.portal, path.iqn, ", ".join(sorted(set(
                                     entry["session"].state or "unknown" for entry in state
                                     if entry["path"].key() == path.key())))))
        to_scan = [path for path in to_scan if path.key() in live]
        changed = len(failing) < len(login) or bool(to_scan)
        what = login or paths
        return {"changed": changed, "msg": "would attach %s" % ", ".join(repr(path) for path in what),
                "would_login": [str(path.portal) for path in login]}

    def _use_multipath(self, paths):
        if self.multipath == "off":
            return False
        if mp.daemon_running(self.fs, self.runner):
            return True
        if self.multipath == "required":
            raise AttachError("multipath is required but multipathd is not running",
                              hint="start multipathd (systemctl start multipathd) or use multipath: auto")
        if len(paths) > 1:
            self.warnings.append("multipathd is not running: attaching a single path only")
        return False

    def discover(self, portal: Portal) -> list[tuple[str, str]]:
        """SendTargets discovery on ``portal`` that stores nothing: [(portal, iqn)] (see discovery.py)."""
        from . import discovery
        return discovery.discover(self.db, portal, self.auth)

    # -- the result of an attach ------------------------------------------------------------------------------
    def _first_link(self, candidates, device, wait):
        """First of ``candidates`` that resolves to ``device``; polls up to ``wait`` seconds."""
        deadline = self.clock() + wait
        while True:
            for link in candidates:
                if self.fs.exists(link) and self.fs.realpath(link) == device:
                    return link
            if self.clock() >= deadline:
                return None
            self.sleep(max(self.poll, 0.1))

    def describe(self, paths: list[Path], devs: list[ScsiDevice], dm_map: DmMap | None, changed: bool) -> dict:
        wwid = devs[0].wwid if devs else None
        sessions, path_info = [], []
        for entry in self.state(paths):
            session = entry["session"]
            sessions.append({"portal": session.portal, "iqn": session.iqn, "sid": session.sid,
                             "state": session.state, "iface": session.iface})
            for dev in entry["devices"]:
                path_info.append({"portal": session.portal, "iqn": session.iqn, "lun": dev.lun, "device": dev.dev,
                                  "hctl": dev.hctl, "state": dev.state, "sid": session.sid,
                                  "in_map": bool(dm_map and dev.name in dm_map.slaves)})
        return {"changed": changed, "device": dm_map.dev if dm_map is not None else devs[0].dev,
                "stable_path": self._stable_path(devs, dm_map, wwid, changed), "wwid": wwid,
                "failed_paths": list(self.failed_paths), "wwn": wwid, "multipath": dm_map is not None,
                "multipath_map": dm_map.name if dm_map is not None else None,
                "size": (identity.map_size(self.fs, dm_map) if dm_map is not None
                         else identity.size_of(self.fs, devs[0].name)) if devs else None,
                "sessions": sessions, "paths": path_info}

    def _stable_path(self, devs, dm_map, wwid, changed):
        """A link that survives renumbering.  udev makes the links asynchronously (about 0.8 s after the disk on
        the lab): the kernel device is usable at once, so the attach does not wait for them unless link_wait
        says so."""
        if dm_map is not None:
            device = dm_map.dev
            candidates = ["/dev/disk/by-id/dm-uuid-mpath-%s" % dm_map.wwid, "/dev/mapper/%s" % dm_map.name]
        else:
            device = devs[0].dev
            candidates = ["/dev/disk/by-id/scsi-%s" % wwid] if wwid else []
        stable = self._first_link(candidates, device, self.link_wait if changed else 0)
        if stable is None and dm_map is None:
            stable = next(iter(scsi.links_to(self.fs, "/dev/disk/by-path", [devs[0].name])), None)
        return stable

    # -- detach -----------------------------------------------------------------------------------------------
    def iscsiadm_logout(self, session: Session) -> Result:
        """Log out one session by id (bounded, one retry).  Returns the Result."""
        return self.db.logout_session(session, retries=1)

    def delete_node(self, path: Path) -> Result:
        return self.db.delete(path)

    def plan_disconnect(self, paths: list[Path], session_only: bool = False) -> DetachPlan:
        """What a detach of ``paths`` would remove and keep, and why (sysfs only): a DetachPlan."""
        from .detach_plan import plan_detach
        return plan_detach(self.fs, paths, iface=self.iface, wwid=self.wwid, session_only=session_only,
                           node_exists=self.node_exists, kernel_lun=self.kernel_lun)

    def disconnect(self, paths: list[Path], force: bool = False, ignore_errors: bool = False, check_mode: bool = False,
                   busy_check: Callable[[str], list[dict]] | None = None, session_only: bool = False) -> dict:
        """Detach the volume: plan, verify, execute (see detach.py).  The caller holds the target lock(s).

        ``busy_check(dev) -> [blocker]`` replaces the built-in check (openers, mounts, swap, holders)."""
        from .detach import Detacher
        detacher = Detacher(self, paths, wwid=self.wwid, force=force, ignore_errors=ignore_errors,
                            session_only=session_only, busy_check=busy_check)
        plan = detacher.plan()
        if plan.empty():
            what = "no session of it carries nothing" if session_only else "volume is not attached"
            if plan.kept_devices:
                what = "nothing of volume %s is attached here (kept: %s)" % (
                    plan.wwid, "; ".join("%s: %s" % (ref.label, why) for ref, why in plan.kept_devices))
            return {"changed": False, "msg": what, "removed": plan.to_dict()}
        if check_mode:
            return {"changed": True, "msg": "would detach", "removed": plan.to_dict()}
        detacher.verify(plan)
        return detacher.execute(plan)


def check_portals(portals: Iterable[str | Portal] | None, resolver: Callable | None = None) -> list[list[Portal]]:
    """Validate portals (strings or Portals) and resolve host names: a list of [Portal, *other addresses]."""
    ports = [p if isinstance(p, validate.Portal) else validate.portal(p) for p in portals or ()]
    resolved = [validate.resolve_portal(p, resolver=resolver) for p in ports]
    keys = [address_key(r[0].host) + ":%d" % r[0].port for r in resolved]
    if len(set(keys)) != len(keys):
        raise InvalidInput("the same portal is listed twice (%s)" % ", ".join(
            str(p) for p, k in zip(ports, keys) if keys.count(k) > 1))
    return resolved


def build_paths(portals: list[str] | None, iqns: list[str] | None, luns: list[int] | list[None] | None,
                resolver: Callable | None = None, session_only: bool = False) -> list[Path]:
    """Validated list of Path from the module's lists (IQN/LUN lists of length 1 apply to all).

    Portals given as host names are resolved here, before anything runs: the kernel shows sessions with numeric
    addresses only.  A new login uses the first address; sessions on any address of the name belong to the path.
    ``session_only`` paths carry no LUN (``luns`` must be empty or None).  Without portals (a detach), every LUN
    given is a path of its own on every session of the target (a LUN listed twice is one path)."""
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
        unique = [lun for index, lun in enumerate(luns) if lun not in luns[:index]]
        return [Path(None, iqns[0], lun) for lun in unique]
    resolved = check_portals(ports, resolver)
    count = len(ports)
    if len(iqns) not in (1, count):
        raise InvalidInput("give one target IQN, or one per portal (%d portals, %d IQNs)" % (count, len(iqns)))
    if len(luns) not in (1, count):
        raise InvalidInput("give one LUN, or one per portal (%d portals, %d LUNs)" % (count, len(luns)))
    iqns = iqns * count if len(iqns) == 1 else iqns
    luns = luns * count if len(luns) == 1 else luns
    return [Path(resolved[i][0], iqns[i], luns[i], aliases=resolved[i][1:],
                 name=None if resolved[i][0].host == ports[i].host.lower() else ports[i].host) for i in range(count)]


__all__ = ["Auth", "Connector", "Path", "build_paths", "check_portals", "CommandError"]
