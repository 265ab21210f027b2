#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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
  - brick.storage.lock
attributes:
  check_mode:
    description: Can run in check mode and predict whether it would change something, without changing anything.
    support: full
    details: Reports whether the map exists and what would block the flush; runs nothing.
  diff_mode:
    description: Would show the changes it makes as a diff in diff mode.
    support: none
  platform:
    description: The target operating systems the module runs on.
    support: full
    platforms: linux
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.brick.storage.plugins.module_utils.connector.errors import BrickError
from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS
from ansible_collections.brick.storage.plugins.module_utils.connector.runner import Runner
from ansible_collections.brick.storage.plugins.module_utils.connector import scsi
from ansible_collections.brick.storage.plugins.module_utils.connector.validate import relaxed_spec


def _target_iqns(fs, m):
    """IQNs of the iSCSI sessions that carry a path of map ``m`` (sysfs only)."""
    iqns = set()
    for s in scsi.iscsi_sessions(fs):
        for d in scsi.session_devices(fs, s, with_details=False):
            if d.name in m.slaves:
                iqns.add((s.iqn or "").lower())
    return sorted(i for i in iqns if i)


def _find(module, fs, ref, wwid):
    m = scsi.find_map(fs, ref)
    if m is not None and wwid and m.wwid != wwid:
        module.fail_json(msg="map %s (%s) serves WWID %s, not %s; nothing was flushed" % (m.name, m.dev, m.wwid, wwid),
                         map=m.name, dm=m.dm, map_wwid=m.wwid, expected_wwid=wwid)
    return m


def _module(**kw):
    """AnsibleModule(**kw); when ansible-core's own argument checking raises instead of failing with a message
    (``check_type_int('inf')`` raises OverflowError), the arguments are read again unchecked, only to fail with
    a message: no input ends in a traceback."""
    try:
        return AnsibleModule(**kw)
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError) as e:
        module = AnsibleModule(argument_spec=relaxed_spec(kw["argument_spec"]), supports_check_mode=True)
        module.fail_json(msg="invalid input: the arguments could not be checked: %s" % e, error="InvalidInput",
                         changed=False)


def main():
    module = _module(
        argument_spec=dict(
            map=dict(type="str", required=True, aliases=["name", "device"]),
            wwid=dict(type="str", aliases=["wwn"]),
            force=dict(type="bool", default=False),
            retries=dict(type="int", default=2),
            delay=dict(type="float", default=1),
            timeout=dict(type="float", default=60),
            lock_timeout=dict(type="raw", default=300),
            lock_dir=dict(type="path", default="/run/brick-storage"),
            show_cmdline=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    p = module.params
    runner = Runner()
    try:
        from ansible_collections.brick.storage.plugins.module_utils.connector import validate, multipath as mp, idle
        from ansible_collections.brick.storage.plugins.module_utils.connector.lock import (
            LockSet, parse_lock_timeout, target_lock_name, HOST_LOCK)
        ref = p["map"]
        if not isinstance(ref, str) or not ref:
            validate.name(ref, "map")
        if ref.startswith("/"):
            validate.device_path(ref, "map")
        else:
            validate.name(ref, "map")
        wwid = validate.wwid(p["wwid"]) if p["wwid"] is not None else None
        if p["retries"] < 0 or p["delay"] < 0 or p["timeout"] <= 0:
            module.fail_json(msg="retries and delay must be >= 0 and timeout > 0")
        validate.count(p["retries"], "retries", 0, 100)
        validate.seconds(p["delay"], "delay", maximum=3600)
        validate.seconds(p["timeout"], "timeout", maximum=86400, zero_ok=False)
        validate.lock_dir(p["lock_dir"])
        lock_timeout = parse_lock_timeout(p["lock_timeout"])
        fs = HostFS()
        m = _find(module, fs, ref, wwid)
        if m is None:
            module.exit_json(changed=False, map=None, msg="no multipath map matches %s" % ref)
        if module.check_mode:
            info = idle.inspect(m.dev, use_fuser="never", fs=fs, runner=runner, cmdline=p["show_cmdline"])
            blockers = info["blockers"]
            if blockers and not p["force"]:
                module.fail_json(msg="map %s (%s) is in use: %s; nothing was flushed" % (
                    m.name, m.dev, "; ".join(idle.describe(b) for b in blockers)),
                    map=m.name, dm=m.dm, blockers=blockers)
            module.exit_json(changed=True, map=m.name, dm=m.dm, blockers=blockers,
                             msg="would flush %s" % m.name)
        # the same locks as an attach/detach of the targets behind the map, then a fresh look at it
        names = [target_lock_name(i) for i in _target_iqns(fs, m)] or [HOST_LOCK]
        lock = LockSet(names, lock_dir=p["lock_dir"], timeout=lock_timeout,
                       info="brick.storage.multipath_flush %s" % m.name)
        waited = lock.acquire()
        try:
            m = _find(module, fs, ref, wwid)
            if m is None:
                module.exit_json(changed=False, map=None, lock_wait=round(waited, 3),
                                 msg="no multipath map matches %s (it went while waiting for the lock)" % ref)
            blockers = idle.inspect(m.dev, use_fuser="never", fs=fs, runner=runner,
                                    cmdline=p["show_cmdline"])["blockers"]
            if blockers and not p["force"]:
                module.fail_json(msg="map %s (%s) is in use: %s; nothing was flushed" % (
                    m.name, m.dev, "; ".join(idle.describe(b) for b in blockers)),
                    map=m.name, dm=m.dm, blockers=blockers, lock_wait=round(waited, 3))
            t0 = time.monotonic()
            res = mp.flush(runner, m.name, retries=p["retries"], delay=p["delay"], timeout=p["timeout"])
            elapsed = time.monotonic() - t0
        finally:
            lock.release()
        module.exit_json(changed=True, map=m.name, dm=m.dm, attempts=res.attempts, elapsed=round(elapsed, 3),
                         lock_wait=round(waited, 3), blockers=blockers)
    except BrickError as e:
        res = dict(msg=str(e), error=type(e).__name__)
        res.update({k: v for k, v in e.details.items() if k != "cmd"})
        module.fail_json(**res)
    except Exception as e:  # pylint: disable=broad-except
        # no input may end in a traceback: a bug is reported as one
        module.fail_json(msg="internal error (%s): %s" % (type(e).__name__, e), error="InternalError")


if __name__ == "__main__":
    main()
