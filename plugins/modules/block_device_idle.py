#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)

DOCUMENTATION = r"""
---
module: block_device_idle
short_description: Wait until a block device and its partitions are no longer in use
version_added: 0.1.0
description:
  - Checks whether a block device is idle and, if it is not, checks again every O(interval) seconds
    until it is, or until O(max_retries) (or O(timeout)) is exhausted.
  - The first check runs at once, so an idle device costs no waiting at all (unlike a fixed sleep).
  - "A device is idle when, for the device B(and each of its partitions): no process has it open;
    no other block device (LVM/device-mapper, md raid) is stacked on it; it is not mounted; it is not an
    active swap area; and, with O(exclusive_open=true), an exclusive C(O_EXCL) open succeeds."
  - Partitions are read from sysfs (C(sdb1), C(nvme0n1p1)...); for a device-mapper map they are the kpartx
    partition maps that hold it (C(/dev/mapper/<name>-part1)). A busy partition makes the device busy.
  - Open files are found with C(fuser) when it is installed, otherwise by scanning C(/proc/*/fd) (see O(use_fuser)).
  - The module never changes anything; it always returns RV(ignore:changed=false).
author:
  - brick.storage maintainers (@brick-storage)
extends_documentation_fragment:
  - brick.storage.attributes
options:
  device:
    description:
      - The block device. A path under C(/dev), for example C(/dev/sdb), C(/dev/nvme0n1), C(/dev/dm-3), or a link
        such as C(/dev/mapper/mpatha), C(/dev/disk/by-id/...) or C(/dev/disk/by-path/...).
      - "The path must be normalised (no C(.), C(..) or C(//)) and may only contain letters, digits and C(_ . / : + @ = , -).
        Anything else fails before a command runs."
    type: path
    required: true
  interval:
    description:
      - Seconds between two checks. Checks run on a fixed schedule (0, O(interval), 2 x O(interval), ...), so the module
        returns at most one O(interval) after the device became idle.
    type: float
    default: 1.0
  max_retries:
    description:
      - How many checks may follow the first one before the module fails. The longest wait is therefore
        O(interval) x O(max_retries) seconds (20 s with the defaults, as Ironic's C(check_device_max_retries)).
      - Ignored when O(timeout) is set.
    type: int
    default: 20
  timeout:
    description:
      - Upper bound, in seconds, of the whole wait. When set it replaces O(max_retries); the module keeps checking every
        O(interval) until O(timeout) seconds have passed, with one last check at the deadline.
      - V(0) means a single check.
    type: float
  exclusive_open:
    description:
      - Also require that an exclusive (C(O_EXCL)) open of the device and of each partition succeeds. This catches kernel
        users that no process, holder or mount table shows.
      - The open is read-only and tried only when every other check passed. A device-mapper map whose kpartx partition
        maps exist is skipped (those maps claim it by design); the partition maps themselves are tried.
    type: bool
    default: false
  use_fuser:
    description:
      - How to find processes that have the device open.
      - V(auto) runs C(fuser) (psmisc or busybox) when it is on C(PATH) and otherwise scans C(/proc/*/fd); a failing
        or hanging C(fuser) also falls back to the scan. RV(method) tells which one was used.
      - V(always) requires C(fuser) and fails with a clear message when it is missing.
      - V(never) always scans C(/proc/*/fd).
    type: str
    choices: [auto, always, never]
    default: auto
  show_cmdline:
    description:
      - Also return the whole command line of each process that has the device open (RV(blockers[].cmdline)),
        and show it in the failure message.
      - B(Another user's command line may carry a secret) (a password given as an argument, for example); by
        default a process is named by pid, process name and user only. Turn it on only to debug, and keep the
        output private.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - In check mode the module checks once and does not wait. A busy device does not fail the task; it is reported
        with RV(idle=false) and RV(blockers), and a warning. A bad path or a missing device still fails.
  diff_mode:
    support: N/A
    details: The module changes nothing.
  platform:
    details:
      - Linux only (reads sysfs and C(/proc)).
notes:
  - Run as root. Without root neither C(fuser) nor the C(/proc) scan can see other users' processes.
  - The environment variable E(BRICK_STORAGE_ROOT) makes the module read sysfs, C(/dev) and C(/proc) below another root
    directory (used by the simulated host of the tests).
  - Memory mappings of the device (C(/proc/<pid>/maps)) are not inspected by the C(/proc) scan; C(fuser) does see them.
seealso:
  - name: brick.storage docs - block_device_idle
    description: What idle means, failure messages and what to do about them.
    link: https://github.com/brick-storage/brick.storage/blob/main/docs/block_device_idle.md
"""

EXAMPLES = r"""
- name: Wait until the new disk is idle after partitioning
  brick.storage.block_device_idle:
    device: /dev/sdb

- name: Wait at most 60 s, checking every half second, and also require an exclusive open
  brick.storage.block_device_idle:
    device: /dev/disk/by-id/dm-name-mpatha
    interval: 0.5
    timeout: 60
    exclusive_open: true
  register: idle

- name: Show the partitions of the device
  ansible.builtin.debug:
    var: idle.partitions

- name: Only report whether the device is busy, never wait and never fail for a busy device
  brick.storage.block_device_idle:
    device: /dev/sdb
  check_mode: true
  register: probe
"""

RETURN = r"""
msg:
  description: In check mode, why the device is not idle (check mode inspects once and does not wait).
  returned: in check mode, when the device is busy
  type: str
  sample: "device /dev/sdb is busy now (1 blocker(s)); check mode does not wait"
idle:
  description: Whether the device was idle at the last check. Always V(true) outside check mode (a busy device fails).
  returned: always
  type: bool
  sample: true
device:
  description: The device after following links, under C(/dev).
  returned: always
  type: str
  sample: /dev/dm-3
waited:
  description: Seconds from the first check until the device was seen idle (or until the last check).
  returned: always
  type: float
  sample: 2.503
checks:
  description: How many checks ran (1 = idle at once).
  returned: always
  type: int
  sample: 6
method:
  description: How open files were found at the last check, V(fuser) or V(proc) (the C(/proc/*/fd) scan).
  returned: always
  type: str
  sample: fuser
blockers:
  description:
    - What kept the device busy at the last check (empty when idle). On failure the same list is returned.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(process), V(holder), V(mount), V(swap) or V(exclusive_open).
      type: str
    device:
      description: The device or partition concerned.
      type: str
    pid:
      description: Process id (kind V(process)).
      type: int
    comm:
      description: Process name (kind V(process)).
      type: str
    uid:
      description: Real user id of the process (kind V(process)), when C(/proc) shows it.
      type: int
    user:
      description: User name of the process (kind V(process)), when C(/proc) shows it.
      type: str
    cmdline:
      description: Command line of the process (kind V(process)), only with O(show_cmdline=true).
      type: str
    holder:
      description: Kernel name of the stacked device, for example C(dm-5) or C(md0) (kind V(holder)).
      type: str
    holder_name:
      description: Device-mapper name of the holder, when it has one (kind V(holder)).
      type: str
    mountpoint:
      description: Where it is mounted (kind V(mount)).
      type: str
    error:
      description: Why the exclusive open failed, for example C(EBUSY) (kind V(exclusive_open)).
      type: str
  sample:
    - kind: process
      device: /dev/sdb1
      pid: 4242
      comm: dd
      uid: 0
      user: root
partitions:
  description: Device paths of the partitions of the device (kpartx maps as C(/dev/mapper/<name>-partN)).
  returned: always
  type: list
  elements: str
  sample: [/dev/sdb1, /dev/sdb2]
"""

from ansible_collections.brick.storage.plugins.module_utils.brick_module import ModuleErrors, new_module
from ansible_collections.brick.storage.plugins.module_utils.connector.idle import inspect, wait_idle


def argument_spec():
    return dict(
        device=dict(type="path", required=True),
        interval=dict(type="float", default=1.0),
        max_retries=dict(type="int", default=20),
        timeout=dict(type="float"),
        exclusive_open=dict(type="bool", default=False),
        use_fuser=dict(type="str", default="auto", choices=["auto", "always", "never"]),
        show_cmdline=dict(type="bool", default=False),
    )


def main():
    module = new_module(argument_spec())
    with ModuleErrors(module):
        result = _check_once(module) if module.check_mode else _wait(module.params)
    module.exit_json(changed=False, **result)


def _check_once(module):
    """Check mode: one check, no wait; a busy device is reported (and warned about), not a failure."""
    params = module.params
    result = inspect(params["device"], exclusive=params["exclusive_open"], use_fuser=params["use_fuser"],
                     cmdline=params["show_cmdline"])
    result.update(waited=0.0, checks=1)
    if not result["idle"]:
        result["msg"] = "device %s is busy now (%d blocker(s)); check mode does not wait" % (
            result["device"], len(result["blockers"]))
        module.warn(result["msg"])
    return result


def _wait(params):
    """Check every interval until the device is idle; a DeviceBusy (with the blockers) when it never was."""
    return wait_idle(params["device"], interval=params["interval"], max_retries=params["max_retries"],
                     timeout=params["timeout"], exclusive=params["exclusive_open"], use_fuser=params["use_fuser"],
                     cmdline=params["show_cmdline"])


if __name__ == "__main__":
    main()
