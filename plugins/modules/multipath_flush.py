#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

DOCUMENTATION = r"""
---
module: multipath_flush
short_description: Flush one dm-multipath map safely
version_added: 0.1.0
description:
  - Flushes and removes one dm-multipath map given by name, WWID or device path (C(multipath -f)).
  - Refuses a map that is in use (stacked devices such as kpartx partitions or LVM, mounts, processes holding it
    open) unless O(force=true), and names what uses it.
  - Retries with exponential backoff; every attempt is bounded by O(timeout). Reports the attempts and the time taken.
  - Takes the target lock of every iSCSI target whose sessions carry a path of the map (the same locks as
    M(brick.storage.iscsi_volume)), in sorted order, and looks at the map again under them before flushing.
  - The SCSI path devices under the map are left in place (use M(brick.storage.iscsi_volume) with
    O(brick.storage.iscsi_volume#module:state=absent) to detach a volume completely).
author:
  - brick.storage maintainers (@brick-storage)
extends_documentation_fragment:
  - brick.storage.attributes
  - brick.storage.lock
attributes:
  check_mode:
    support: full
    details: Reports whether the map exists and what would block the flush; runs nothing.
  diff_mode:
    support: full
    details: The diff shows the map and its path devices before and after (the path devices stay).
  platform:
    details: Needs dm-multipath (multipath-tools).
options:
  map:
    description: Map name, WWID, C(/dev/dm-N), C(/dev/mapper/NAME) or a C(/dev/disk/by-id) link of the map.
    type: str
    required: true
    aliases: [name, device]
  wwid:
    description:
      - The WWID the map must serve (C(3600140...), C(naa.600140...) or C(0x600140...)). When the map found
        through O(map) serves another WWID (a C(/dev/dm-N) number that now belongs to another volume, say), the
        module fails and flushes nothing.
    type: str
    aliases: [wwn]
  force:
    description: Try the flush even when the map is in use (the kernel still refuses while it is open).
    type: bool
    default: false
  retries:
    description: Flush attempts after the first one.
    type: int
    default: 2
  delay:
    description: Seconds before the first retry; each further wait doubles.
    type: float
    default: 1
  timeout:
    description: Seconds one C(multipath -f) call may take before it is killed.
    type: float
    default: 60
  show_cmdline:
    description:
      - Also return the whole command line of each process that holds the map open (C(cmdline) in RV(blockers)).
      - B(Another user's command line may carry a secret) (a password given as an argument); the default names a
        process by pid, process name and user only. Turn it on only to debug, and keep the output private.
    type: bool
    default: false
"""

EXAMPLES = r"""
# These run as written on the embedded lab (tests/lab: its target serves LUN 0 on both portals);
# tests/integration/lab/test_module_examples_lab.py runs them.
- name: Attach a volume over two portals; the result names its dm-multipath map
  brick.storage.iscsi_volume:
    portals: [127.0.0.1:3260, 127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0
    multipath: required
  register: vol

- name: Flush the volume's map by its WWID (the SCSI path devices stay)
  brick.storage.multipath_flush:
    map: "{{ vol.wwid }}"
  register: flushed

- name: Flush by device path with a patient lock, only while it is still that volume's map (gone now, no change)
  brick.storage.multipath_flush:
    map: "{{ vol.device }}"
    wwid: "{{ vol.wwid }}"
    lock_timeout: patient

- name: Detach the volume (its paths, sessions and node records)
  brick.storage.iscsi_volume:
    state: absent
    portals: [127.0.0.1:3260, 127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0
    wwid: "{{ vol.wwid }}"
"""

RETURN = r"""
map:
  description: Name of the map that was (or would be) flushed; null when no such map exists.
  returned: always
  type: str
dm:
  description: Kernel name of the map (C(dm-N)).
  returned: when the map existed
  type: str
attempts:
  description: Number of C(multipath -f) attempts.
  returned: when a flush ran
  type: int
elapsed:
  description: Seconds the flush took.
  returned: when a flush ran
  type: float
blockers:
  description:
    - What uses the map (kind, device, mount point, stacked device; for a process its C(pid), process name C(comm),
      C(uid) and C(user), and its C(cmdline) only with O(show_cmdline=true)).
  returned: when the map is in use
  type: list
  elements: dict
lock_wait:
  description: Seconds spent waiting for the host lock.
  returned: when a flush ran
  type: float
"""

import time

from ansible_collections.brick.storage.plugins.module_utils.brick_module import LOCK_OPTIONS, ModuleErrors, diff, new_module, options
from ansible_collections.brick.storage.plugins.module_utils.connector import idle, scsi, validate
from ansible_collections.brick.storage.plugins.module_utils.connector import multipath as mp
from ansible_collections.brick.storage.plugins.module_utils.connector.errors import DeviceBusy, InvalidInput, VolumeMismatch
from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS
from ansible_collections.brick.storage.plugins.module_utils.connector.lock import HOST_LOCK, LockSet, parse_lock_timeout
from ansible_collections.brick.storage.plugins.module_utils.connector.lockdir import target_lock_name
from ansible_collections.brick.storage.plugins.module_utils.connector.runner import Runner


def argument_spec():
    return options(dict(
        map=dict(type="str", required=True, aliases=["name", "device"]),
        wwid=dict(type="str", aliases=["wwn"]),
        force=dict(type="bool", default=False),
        retries=dict(type="int", default=2),
        delay=dict(type="float", default=1),
        timeout=dict(type="float", default=60),
        show_cmdline=dict(type="bool", default=False),
    ), LOCK_OPTIONS)


class Request(object):
    """The checked input of one run (every check runs before any command)."""

    def __init__(self, params):
        self.params = params
        self.ref = _checked_ref(params["map"])
        self.wwid = validate.wwid(params["wwid"]) if params["wwid"] is not None else None
        if params["retries"] < 0 or params["delay"] < 0 or params["timeout"] <= 0:
            raise InvalidInput("retries and delay must be >= 0 and timeout > 0")
        validate.count(params["retries"], "retries", 0, 100)
        validate.seconds(params["delay"], "delay", maximum=3600)
        validate.seconds(params["timeout"], "timeout", maximum=86400, zero_ok=False)
        validate.lock_dir(params["lock_dir"])
        self.lock_timeout = parse_lock_timeout(params["lock_timeout"])


def _checked_ref(ref):
    """The map reference: a device path, or a name or WWID."""
    if not isinstance(ref, str) or not ref:
        validate.name(ref, "map")
    if ref.startswith("/"):
        validate.device_path(ref, "map")
    else:
        validate.name(ref, "map")
    return ref


def main():
    module = new_module(argument_spec())
    runner = Runner()
    with ModuleErrors(module) as errors:
        errors.runner = runner
        request = Request(module.params)
        fs = HostFS()
        dm_map = _find(fs, request)
        if dm_map is None:
            module.exit_json(**_no_map(module, request, "no multipath map matches %s" % request.ref))
        if module.check_mode:
            module.exit_json(**_predict(module, fs, runner, dm_map, request))
        module.exit_json(**_flush_under_locks(module, fs, runner, dm_map, request))


def _find(fs, request):
    """The map ``request.ref`` names, or None; a VolumeMismatch when it serves another WWID than ``request.wwid``."""
    dm_map = scsi.find_map(fs, request.ref)
    if dm_map is not None and request.wwid and dm_map.wwid != request.wwid:
        raise VolumeMismatch("map %s (%s) serves WWID %s, not %s; nothing was flushed" % (
            dm_map.name, dm_map.dev, dm_map.wwid, request.wwid),
            map=dm_map.name, dm=dm_map.dm, map_wwid=dm_map.wwid, expected_wwid=request.wwid)
    return dm_map


def _no_map(module, request, msg, **extra):
    result = dict(changed=False, map=None, msg=msg, **extra)
    if module._diff:
        result["diff"] = diff(_map_view(None), _map_view(None), "multipath map %s" % request.ref)
    return result


def _blockers(fs, runner, dm_map, request, **extra):
    """What uses the map; a DeviceBusy (nothing flushed) when something does, unless force."""
    blockers = idle.inspect(dm_map.dev, use_fuser="never", fs=fs, runner=runner,
                            cmdline=request.params["show_cmdline"])["blockers"]
    if blockers and not request.params["force"]:
        raise DeviceBusy("map %s (%s) is in use: %s; nothing was flushed" % (
            dm_map.name, dm_map.dev, "; ".join(idle.describe(blocker) for blocker in blockers)),
            map=dm_map.name, dm=dm_map.dm, blockers=blockers, **extra)
    return blockers


def _predict(module, fs, runner, dm_map, request):
    """Check mode: whether the flush would run, and what uses the map (nothing runs)."""
    blockers = _blockers(fs, runner, dm_map, request)
    result = dict(changed=True, map=dm_map.name, dm=dm_map.dm, blockers=blockers, msg="would flush %s" % dm_map.name)
    if module._diff:
        before = _map_view(dm_map)
        result["diff"] = diff(before, dict(before, maps=[]), "multipath map %s" % dm_map.name)
    return result


def _flush_under_locks(module, fs, runner, dm_map, request):
    """The flush under the same locks as an attach or detach of the targets behind the map, after a fresh look."""
    names = [target_lock_name(iqn) for iqn in _target_iqns(fs, dm_map)] or [HOST_LOCK]
    lock = LockSet(names, lock_dir=request.params["lock_dir"], timeout=request.lock_timeout,
                   info="brick.storage.multipath_flush %s" % dm_map.name)
    waited = lock.acquire()
    try:
        return _flush(module, fs, runner, request, round(waited, 3))
    finally:
        lock.release()


def _target_iqns(fs, dm_map):
    """IQNs of the iSCSI sessions that carry a path of the map (sysfs only)."""
    iqns = set()
    for session in scsi.iscsi_sessions(fs):
        for dev in scsi.session_devices(fs, session, with_details=False):
            if dev.name in dm_map.slaves:
                iqns.add((session.iqn or "").lower())
    return sorted(iqn for iqn in iqns if iqn)


def _flush(module, fs, runner, request, lock_wait):
    """``multipath -f`` of the map as it is now (the caller holds the locks)."""
    dm_map = _find(fs, request)
    if dm_map is None:
        return _no_map(module, request, "no multipath map matches %s (it went while waiting for the lock)" % request.ref,
                       lock_wait=lock_wait)
    blockers = _blockers(fs, runner, dm_map, request, lock_wait=lock_wait)
    before = _map_view(dm_map)
    started = time.monotonic()
    flushed = mp.flush(runner, dm_map.name, retries=request.params["retries"], delay=request.params["delay"],
                       timeout=request.params["timeout"])
    result = dict(changed=True, map=dm_map.name, dm=dm_map.dm, attempts=flushed.attempts,
                  elapsed=round(time.monotonic() - started, 3), lock_wait=lock_wait, blockers=blockers)
    if module._diff:
        result["diff"] = diff(before, _view_now(fs, dm_map), "multipath map %s" % dm_map.name)
    return result


# -- diff mode: the map and its path devices (which stay) ------------------------------------------------------
def _map_view(dm_map):
    if dm_map is None:
        return {"maps": [], "devices": []}
    return {"maps": ["%s (%s)" % (dm_map.name, dm_map.dev)], "devices": sorted("/dev/%s" % name for name in dm_map.slaves)}


def _view_now(fs, dm_map):
    """The map (if it is still there) and those of its former path devices that still exist."""
    now = scsi.find_map(fs, dm_map.name)
    view = _map_view(now)
    view["devices"] = sorted("/dev/%s" % name for name in dm_map.slaves if fs.exists("/sys/block/%s" % name))
    return view


if __name__ == "__main__":
    main()
