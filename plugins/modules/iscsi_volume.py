#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: iscsi_volume
short_description: Attach or detach an iSCSI volume, single path or dm-multipath
version_added: 0.1.0
description:
  - Attaches (O(state=present)) an iSCSI volume reached through one or more portals and returns its block
    device, preferring the dm-multipath map when at least one path works.
  - Node records are created without discovery when portal and IQN are known, with manual LUN scan, CHAP and
    bounded login timeouts set in one call; logins to all portals run in parallel; only the wanted LUN is
    scanned (C(/sys/class/scsi_host/hostH/scan)), never the whole session.
  - Devices, WWID and the map are found through sysfs, so a re-run that finds the volume attached runs no
    external command and reports no change.
  - On any failure of an attach, everything the call created (sessions, node records, SCSI devices) is removed
    before the module fails.
  - Detaches (O(state=absent)) without needing anything from the attach; sessions, this volume's devices, other
    LUNs on the same sessions and the map are read from sysfs. The map (or, for a single path, the device
    buffers) is flushed first; if that fails nothing is removed unless O(force=true). Sessions are logged out
    only when they carry no other LUN. Before reporting success the detach checks that no session, device, map
    or link of the volume is left.
author:
  - brick.storage maintainers (@brick-storage)
extends_documentation_fragment:
  - brick.storage.lock
attributes:
  check_mode:
    description: Can run in check mode and predict whether it would change something, without changing anything.
    support: full
    details: Reads sysfs only and reports what it would attach or remove; no command that changes anything runs.
  diff_mode:
    description: Would show the changes it makes as a diff in diff mode.
    support: none
  platform:
    description: The target operating systems the module runs on.
    support: full
    platforms: linux
    details: Needs open-iscsi (C(iscsiadm), C(iscsid)); dm-multipath needs multipath-tools (C(multipathd)).
options:
  state:
    description: V(present) attaches the volume, V(absent) detaches it.
    type: str
    choices: [present, absent]
    default: present
  portals:
    description:
      - Target portals as C(host:port), C(host) (port 3260) or C([IPv6]:port).
      - With O(state=absent) they may be omitted; then every session to O(iqn) is considered.
      - The aliases are the names of os-brick's connection properties (C(target_portal), C(target_portals)) and of
        community.general.open_iscsi (C(portal)).
    type: list
    elements: str
    aliases: [portal, target_portal, target_portals]
  iqn:
    description:
      - Target IQN, or one IQN per portal in the same order.
      - When omitted, a SendTargets discovery on the first portal finds it (it must find exactly one target).
      - The aliases are os-brick's (C(target_iqn), C(target_iqns)) and community.general.open_iscsi's (C(target),
        C(targetname)) names.
    type: list
    elements: str
    aliases: [target_iqn, target_iqns, target, targetname]
  lun:
    description:
      - LUN number, or one per portal in the same order. LUNs above 255 are supported.
      - Defaults to V([0]). Not allowed with O(session_only=true).
      - The aliases C(target_lun) and C(target_luns) are os-brick's names.
    type: list
    elements: int
    aliases: [luns, target_lun, target_luns]
  wwid:
    description:
      - The WWID the volume must have, as udev and multipath show it (C(3600140...)), in the sysfs form
        (C(naa.600140...)) or as a WWN (C(0x600140...)).
      - With O(state=present), every path device must report it (existing paths are rescanned first, so a LUN
        number the array reused for another volume is noticed); a device that reports another WWID is never
        returned and the module fails with both WWIDs, touching nothing of the other volume.
      - With O(state=absent), only the paths (and the map) of this WWID are removed; devices at the same
        LUN that report another WWID are kept and listed in RV(removed.kept_devices).
      - Without it, the paths of the volume must agree on one WWID, else the module fails (it never picks one).
    type: str
    aliases: [wwn]
  session_only:
    description:
      - With O(state=absent), log out the sessions of the portals and IQN only if they carry no SCSI device at
        all (checked again under the target lock, right before each logout), and delete their node records.
        No LUN is touched. This is how the orphan audit cleans up a session without LUN.
    type: bool
    default: false
  multipath:
    description:
      - V(auto) logs in to every portal and returns the dm-multipath map when multipathd runs, a single path
        with a warning otherwise.
      - V(required) fails (after cleaning up) when no map can be formed.
      - V(off) logs in to the portals in order and returns the first path device.
    type: str
    choices: [auto, required, 'off']
    default: auto
  discover:
    description:
      - V(auto) runs a SendTargets discovery only when O(iqn) is not given.
      - V(always) also uses every portal the discovery returns for the target (multipath).
      - Discovery never stores records for targets that are not attached.
    type: str
    choices: [auto, always]
    default: auto
  chap_username:
    description:
      - CHAP user name for the session (the target authenticates the initiator).
      - Aliases - os-brick's C(auth_username) (os-brick sets it only with C(auth_method=CHAP); the filter
        P(brick.storage.iscsi_volume_args#filter) turns a whole connection_properties dict into this module's
        arguments) and community.general.open_iscsi's C(node_user).
    type: str
    aliases: [auth_username, node_user]
  chap_password:
    description: CHAP secret for the session. Aliases - C(auth_password) (os-brick), C(node_pass) (open_iscsi).
    type: str
    aliases: [auth_password, node_pass]
  chap_username_in:
    description:
      - Mutual CHAP user name (the initiator authenticates the target). Needs O(chap_username).
      - Aliases - C(auth_username_in), C(node_user_in) (open_iscsi).
    type: str
    aliases: [auth_username_in, node_user_in]
  chap_password_in:
    description: Mutual CHAP secret. Aliases - C(auth_password_in), C(node_pass_in) (open_iscsi).
    type: str
    aliases: [auth_password_in, node_pass_in]
  discovery_chap_username:
    description:
      - CHAP user name for the SendTargets discovery.
      - Aliases - C(discovery_auth_username) (os-brick), C(discover_user) (open_iscsi).
    type: str
    aliases: [discovery_auth_username, discover_user]
  discovery_chap_password:
    description:
      - CHAP secret for the SendTargets discovery.
      - Aliases - C(discovery_auth_password) (os-brick), C(discover_pass) (open_iscsi).
    type: str
    aliases: [discovery_auth_password, discover_pass]
  iface:
    description: open-iscsi interface (C(iscsiadm -I)), which selects the transport (tcp, iser, offload).
    type: str
    default: default
  login_timeout:
    description:
      - Seconds one login attempt may take (C(node.conn[0].timeo.login_timeout)).
      - A dead portal costs about O(login_timeout) x (O(login_retries) + 1) seconds, not minutes.
    type: int
    default: 5
  login_retries:
    description: Login retries per portal (C(node.session.initial_login_retry_max)).
    type: int
    default: 1
  device_wait_timeout:
    description: Seconds to wait for the LUN's block device after login (the LUN is rescanned meanwhile).
    type: float
    default: 20
  multipath_wait_timeout:
    description: Seconds to wait for multipathd to build the map and for every live path to join it.
    type: float
    default: 10
  startup:
    description: C(node.startup) of the node records, that is whether the session comes back after a reboot.
    type: str
    choices: [automatic, manual]
    default: automatic
  lun_addressing:
    description:
      - How the array numbers its LUNs (SAM LUN addressing), that is which LUN number the kernel sees for O(lun).
      - V(peripheral) (os-brick's C(SAM) or C(transparent)) uses O(lun) as it is. V(flat) (os-brick's
        C(SAM3-flat)) uses flat space addressing, which the kernel sees as 16384 + O(lun). V(sam2) (os-brick's
        C(SAM2)) uses peripheral addressing below 256 and flat space from 256.
      - V(auto) uses flat space when another LUN of the session already shows that the array does (the kernel
        tells), else peripheral; when nothing tells and the LUN does not appear in peripheral form by the first
        rescan, its flat-space number is scanned too.
      - The orphan audit reports the kernel's LUN numbers; a number of 16384 or more is used as it is.
    type: str
    choices: [auto, peripheral, flat, sam2, SAM, transparent, SAM2, SAM3-flat]
    default: auto
  skip_failed_portals_for:
    description:
      - Seconds during which a portal whose login failed is not tried again by a re-run (V(0), the default, always
        tries). For fleets where a portal is down for hours; each skipped portal is reported in
        RV(failed_paths) with C(skipped=true) and as a warning. The failures are remembered in
        C(failed-portals.json) in O(lock_dir) (a tmpfs, so forgotten at reboot).
      - Whatever this option, a re-run that cannot heal a dead portal reports no change.
    type: float
    default: 0
  force:
    description:
      - With O(state=absent), go on when a device is in use or a flush fails, and remove every path, session
        and record of the volume.
      - B(Data written to the volume and not yet on the target may be lost.) A multipath map that is still open
        (mounted, held by a process) cannot be removed, so its queueing is disabled first
        (C(multipathd disablequeueing map)), so that I/O of whoever holds it fails at once instead of hanging
        forever once its last path is gone; the map is reported as a leftover (with its holders) until it is
        closed. See docs/detach.md.
    type: bool
    default: false
  ignore_errors:
    description: With O(state=absent), report problems and leftovers as warnings instead of failing.
    type: bool
    default: false
notes:
  - Secrets are never logged, returned or shown in warnings and errors, and never put on a command line (where
    every local user could read them in C(/proc/PID/cmdline)). The CHAP credentials are written straight into
    the node record file (mode 0600, under open-iscsi's node-DB lock) after C(iscsiadm --op new); with
    discovery CHAP, into the discovery record, which is put back exactly as it was (or deleted, when the
    module made it) right after the discovery. See SECURITY.md.
  - Every text option is checked before anything runs (no control characters anywhere; IQNs as RFC 3720 defines
    them; CHAP user names and secrets as open-iscsi can store them, at most 255 bytes with no surrounding blanks).
  - Portals may be host names; they are resolved (every address) before anything runs, because the kernel shows
    sessions with numeric addresses only. A new login uses the first address; a session on any address of the
    name belongs to the portal.
  - One attach or detach per target at a time. The IQNs are resolved first (discovery), then every target IQN
    involved is locked, in sorted order.
  - Node DB writes are serialised host-wide, as open-iscsi's DB fails with parallel writers.
seealso:
  - module: brick.storage.multipath_flush
  - module: brick.storage.volume_paths_facts
"""

EXAMPLES = r"""
- name: Attach LUN 0 over two portals with dm-multipath
  brick.storage.iscsi_volume:
    portals: [127.0.0.1:3260, 127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0
  register: vol

- name: Show the device to use
  ansible.builtin.debug:
    msg: "{{ vol.device }} ({{ vol.stable_path }}, WWID {{ vol.wwid }})"

- name: Attach LUN 1 on one portal with CHAP, no multipath
  brick.storage.iscsi_volume:
    portals: 127.0.0.1:3260
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 1
    multipath: "off"
    chap_username: user
    chap_password: "{{ vault_chap_secret }}"
  when: vault_chap_secret is defined

- name: Detach LUN 0 (nothing needed from the attach)
  brick.storage.iscsi_volume:
    state: absent
    portals: [127.0.0.1:3260, 127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0

- name: Detach only the paths of one volume (the array may have reused its LUN number)
  brick.storage.iscsi_volume:
    state: absent
    portals: [127.0.0.1:3260, 127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0
    wwid: "{{ vol.wwid }}"
  when: vol.wwid is defined

- name: Take one portal's path out of a multipath map (the map keeps serving I/O on the other)
  brick.storage.iscsi_volume:
    state: absent
    portals: [127.0.0.2:3260]
    iqn: iqn.2003-01.org.linux-iscsi.lab:target1
    lun: 0
    wwid: "{{ vol.wwid }}"
  when: vol.wwid is defined
"""

RETURN = r"""
device:
  description: Block device to use (C(/dev/dm-N) for a multipath map, else C(/dev/sdX)).
  returned: state=present, not in check mode
  type: str
  sample: /dev/dm-0
stable_path:
  description:
    - A path that survives renumbering (C(/dev/disk/by-id/dm-uuid-mpath-WWID), C(scsi-WWID) or by-path).
    - Null when udev has not made the link yet (udev works asynchronously; the attach does not wait for it,
      RV(device) is usable at once, and a re-run returns the link).
  returned: state=present, not in check mode
  type: str
  sample: /dev/disk/by-id/dm-uuid-mpath-36001405f3a2b4c5d6e7f8091a2b3c4d5
wwid:
  description: WWID of the volume as udev and multipath name it.
  returned: state=present, not in check mode
  type: str
  sample: 36001405f3a2b4c5d6e7f8091a2b3c4d5
wwn:
  description: Same as RV(wwid) (os-brick calls it C(scsi_wwn)).
  returned: state=present, not in check mode
  type: str
multipath:
  description: Whether RV(device) is a dm-multipath map.
  returned: state=present, not in check mode
  type: bool
multipath_map:
  description: Name of the multipath map, or null.
  returned: state=present, not in check mode
  type: str
size:
  description: Size of the volume in bytes.
  returned: state=present, not in check mode
  type: int
sessions:
  description: iSCSI sessions of the volume, one per portal.
  returned: state=present, not in check mode
  type: list
  elements: dict
  contains:
    portal:
      description: Portal.
      type: str
    iqn:
      description: Target IQN.
      type: str
    sid:
      description: Session id.
      type: int
    state:
      description: Session state (C(LOGGED_IN), C(FAILED), C(FREE)).
      type: str
    iface:
      description: open-iscsi interface.
      type: str
paths:
  description: One entry per SCSI path device of the volume.
  returned: state=present, not in check mode
  type: list
  elements: dict
  contains:
    portal:
      description: Portal.
      type: str
    device:
      description: Path device.
      type: str
      sample: /dev/sdb
    hctl:
      description: SCSI address.
      type: str
      sample: "2:0:0:0"
    state:
      description: SCSI device state.
      type: str
      sample: running
    in_map:
      description: Whether the path is part of the map.
      type: bool
resized:
  description:
    - Set when the LUN grew on the array (online extend). A re-run rescans each path (C(/sys/block/sdX/device/rescan)),
      then, for a multipath map, runs C(multipathd resize map) once every working path shows the new size. A single
      path needs no command. The volume is never shrunk. In check mode nothing is resized (C(how) says so).
  returned: state=present, when the volume grew
  type: dict
  contains:
    old_size:
      description: Size in bytes before.
      type: int
    new_size:
      description: Size in bytes after.
      type: int
    how:
      description: C(rescan) or C(multipathd resize map).
      type: str
failed_paths:
  description: Portals that could not be used by this attach, each with the reason (the map works without them).
  returned: state=present, not in check mode
  type: list
  elements: dict
  contains:
    portal:
      description: Portal.
      type: str
    iqn:
      description: Target IQN.
      type: str
    lun:
      description: LUN.
      type: int
    error:
      description: Why the path failed.
      type: str
    skipped:
      description: True when the portal was not tried (O(skip_failed_portals_for)).
      type: bool
removed:
  description:
    - The detach plan, carried out (or, in check mode, what would be done) - what is removed, what is kept and why.
  returned: state=absent
  type: dict
  contains:
    wwid:
      description: The WWID of the volume that was detached.
      type: str
    maps:
      description: Multipath maps flushed and removed (every path of them went).
      type: list
      elements: str
    devices:
      description: SCSI path devices deleted.
      type: list
      elements: str
    paths_out_of_map:
      description: Paths taken out of a map that keeps its other paths (C(multipathd del path)).
      type: list
      elements: str
    logout:
      description: Sessions logged out (they carried nothing else).
      type: list
      elements: str
    node_records:
      description: Node records deleted.
      type: list
      elements: str
    kept_maps:
      description: Maps that stay, with the paths that stay in them.
      type: list
      elements: str
    kept_devices:
      description: Devices at the same LUN that were kept, and why (another WWID, a path of another map).
      type: list
      elements: str
    kept_sessions:
      description: Sessions that stay, and why (other LUNs on them).
      type: list
      elements: str
leftovers:
  description: What of the volume is still present after the detach (empty on success).
  returned: state=absent and something was detached
  type: list
  elements: str
problems:
  description: What went wrong but was passed over because of O(force) or O(ignore_errors) (also shown as warnings).
  returned: state=absent and something was detached
  type: list
  elements: str
commands:
  description: Number of external commands the module ran.
  returned: always
  type: int
  sample: 3
lock_wait:
  description: Seconds spent waiting for the host lock.
  returned: when a lock was taken
  type: float
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.brick.storage.plugins.module_utils.connector.errors import BrickError
from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS
from ansible_collections.brick.storage.plugins.module_utils.connector.runner import Runner
from ansible_collections.brick.storage.plugins.module_utils.connector import iscsi
from ansible_collections.brick.storage.plugins.module_utils.connector.validate import relaxed_spec


def _warn(module, warnings):
    for w in warnings:
        module.warn(w)


def _fail(module, runner, e):
    res = {"msg": str(e), "commands": len(runner.history) if runner else 0, "error": type(e).__name__}
    if isinstance(e, BrickError):
        for k, v in e.details.items():
            if k not in ("cmd",):
                res[k] = v
    module.fail_json(**res)


def _discover(module, conn, paths, p):
    """Resolve the target IQN(s) by SendTargets discovery (before any lock: it stores nothing)."""
    if not p["iqn"]:
        found = conn.discover(paths[0].portal)
        iqns = sorted(set(i for _addr, i in found))
        if len(iqns) != 1:
            module.fail_json(msg="discovery on %s found %d targets (%s): give iqn" % (
                paths[0].portal, len(iqns), ", ".join(iqns) or "none"), commands=len(conn.runner.history),
                error="DiscoveryAmbiguous")
        portals = [str(paths[0].portal)]
        if p["discover"] == "always" and p["multipath"] != "off":
            portals = [a for a, i in found if i == iqns[0]]
        return iscsi.build_paths(portals, iqns, [paths[0].lun])
    if p["discover"] == "always" and p["multipath"] != "off":
        from ansible_collections.brick.storage.plugins.module_utils.connector import validate
        found = conn.discover(paths[0].portal)
        extra = [a for a, i in found if i == paths[0].iqn]
        known = [x.portal for x in paths]
        portals = [str(x.portal) for x in paths] + [a for a in extra if validate.portal(a) not in known]
        return iscsi.build_paths(portals, [paths[0].iqn], [paths[0].lun])
    return paths


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
    spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        portals=dict(type="list", elements="str", aliases=["portal", "target_portal", "target_portals"]),
        iqn=dict(type="list", elements="str", aliases=["target_iqn", "target_iqns", "target", "targetname"]),
        lun=dict(type="list", elements="int", aliases=["luns", "target_lun", "target_luns"]),
        wwid=dict(type="str", aliases=["wwn"]),
        session_only=dict(type="bool", default=False),
        multipath=dict(type="str", choices=["auto", "required", "off"], default="auto"),
        discover=dict(type="str", choices=["auto", "always"], default="auto"),
        chap_username=dict(type="str", aliases=["auth_username", "node_user"]),
        chap_password=dict(type="str", no_log=True, aliases=["auth_password", "node_pass"]),
        chap_username_in=dict(type="str", aliases=["auth_username_in", "node_user_in"]),
        chap_password_in=dict(type="str", no_log=True, aliases=["auth_password_in", "node_pass_in"]),
        discovery_chap_username=dict(type="str", aliases=["discovery_auth_username", "discover_user"]),
        discovery_chap_password=dict(type="str", no_log=True, aliases=["discovery_auth_password", "discover_pass"]),
        iface=dict(type="str", default="default"),
        login_timeout=dict(type="int", default=5),
        login_retries=dict(type="int", default=1),
        device_wait_timeout=dict(type="float", default=20),
        multipath_wait_timeout=dict(type="float", default=10),
        startup=dict(type="str", choices=["automatic", "manual"], default="automatic"),
        skip_failed_portals_for=dict(type="float", default=0),
        lun_addressing=dict(type="str", default="auto",
                            choices=["auto", "peripheral", "flat", "sam2", "SAM", "transparent", "SAM2", "SAM3-flat"]),
        force=dict(type="bool", default=False),
        ignore_errors=dict(type="bool", default=False),
        lock_timeout=dict(type="raw", default=300),
        lock_dir=dict(type="path", default="/run/brick-storage"),
    )
    module = _module(argument_spec=spec, supports_check_mode=True)
    p = module.params
    runner = None
    try:
        from ansible_collections.brick.storage.plugins.module_utils.connector import validate
        from ansible_collections.brick.storage.plugins.module_utils.connector.lock import (
            HostLock, LockSet, parse_lock_timeout, target_lock_name)
        # -- all input checks before any command runs
        auth = iscsi.Auth(p["chap_username"], p["chap_password"], p["chap_username_in"], p["chap_password_in"],
                          p["discovery_chap_username"], p["discovery_chap_password"])
        validate.name(p["iface"], "iface")
        if p["login_timeout"] < 1 or p["login_retries"] < 0 or p["device_wait_timeout"] <= 0:
            module.fail_json(msg="login_timeout must be >= 1, login_retries >= 0 and device_wait_timeout > 0")
        validate.count(p["login_timeout"], "login_timeout", 1, 3600)
        validate.count(p["login_retries"], "login_retries", 0, 100)
        validate.seconds(p["device_wait_timeout"], "device_wait_timeout", maximum=86400, zero_ok=False)
        validate.seconds(p["multipath_wait_timeout"], "multipath_wait_timeout", maximum=86400)
        validate.lock_dir(p["lock_dir"])
        validate.seconds(p["skip_failed_portals_for"], "skip_failed_portals_for", maximum=7 * 86400)
        lock_timeout = parse_lock_timeout(p["lock_timeout"])
        wwid = validate.wwid(p["wwid"]) if p["wwid"] is not None else None
        if p["session_only"] and p["state"] != "absent":
            module.fail_json(msg="session_only is a logout: it needs state=absent")
        if p["session_only"] and (p["lun"] is not None or p["wwid"] is not None):
            module.fail_json(msg="session_only touches no LUN: do not give lun or wwid with it")
        if p["state"] == "present" and not p["portals"]:
            module.fail_json(msg="state=present needs at least one portal")
        if not p["iqn"] and not p["portals"]:
            module.fail_json(msg="give the target IQN, portals, or both")
        if not p["iqn"] and p["state"] == "absent":
            module.fail_json(msg="state=absent needs the target IQN (a detach never runs a discovery)")
        luns = p["lun"] if p["lun"] is not None else (None if p["session_only"] else [0])
        if p["iqn"]:
            paths = iscsi.build_paths(p["portals"], p["iqn"], luns, session_only=p["session_only"])
        else:  # the portals alone are checked now; the IQN comes from the discovery
            first = iscsi.check_portals(p["portals"])[0]
            paths = [iscsi.Path(first[0], None, validate.lun((luns or [0])[0]), aliases=first[1:])]
        runner = Runner()
        fs = HostFS()
        conn = iscsi.Connector(fs, runner, iface=p["iface"], login_timeout=p["login_timeout"],
                               login_retries=p["login_retries"], device_wait=p["device_wait_timeout"],
                               multipath=p["multipath"], multipath_wait=p["multipath_wait_timeout"],
                               auth=auth, startup=p["startup"], wwid=wwid,
                               skip_failed_for=p["skip_failed_portals_for"], lun_addressing=p["lun_addressing"],
                               failure_log=os.path.join(p["lock_dir"], "failed-portals.json"))
        # -- fast path: nothing to do is decided from sysfs (and a rescan of the paths), without lock or command;
        # a map to resize (the LUN grew) goes on to the locked part
        if p["state"] == "present" and p["iqn"]:
            res = conn.attached_result(paths, check_mode=module.check_mode, resize=False)
            if res is not None and not (res.get("resized") or {}).get("pending"):
                _warn(module, conn.warnings)
                module.exit_json(commands=len(runner.history), **res)
        if module.check_mode:
            if not p["iqn"]:
                module.exit_json(changed=True, msg="would discover the target on %s and attach it" % paths[0].portal,
                                 commands=0)
            res = conn.connect(paths, check_mode=True) if p["state"] == "present" else \
                conn.disconnect(paths, check_mode=True, session_only=p["session_only"])
            module.exit_json(commands=len(runner.history), **res)
        if p["state"] == "present":
            # a discovery with CHAP writes the discovery record: under the node-DB lock of every brick.storage task
            conn.node_lock = HostLock("iscsi-node-db", lock_dir=p["lock_dir"], timeout=lock_timeout,
                                      info="brick.storage.iscsi_volume discovery on %s" % paths[0].portal)
            paths = _discover(module, conn, paths, p)
        # Every target involved is locked (sorted: no deadlock between callers); open-iscsi's node DB,
        # shared by all targets, is written under a host-wide lock held only for each write.
        iqns = sorted(set(x.iqn.lower() for x in paths))
        info = "brick.storage.iscsi_volume state=%s %s" % (p["state"], " ".join(iqns))
        lock = LockSet([target_lock_name(i) for i in iqns], lock_dir=p["lock_dir"], timeout=lock_timeout, info=info)
        conn.node_lock = HostLock("iscsi-node-db", lock_dir=p["lock_dir"], timeout=lock_timeout, info=info)
        waited = lock.acquire()
        try:
            if p["state"] == "present":
                res = conn.connect(paths)
            else:
                res = conn.disconnect(paths, force=p["force"], ignore_errors=p["ignore_errors"],
                                      session_only=p["session_only"])
        finally:
            lock.release()
        _warn(module, conn.warnings)
        module.exit_json(commands=len(runner.history), lock_wait=round(waited, 3), **res)
    except BrickError as e:
        _fail(module, runner, e)
    except Exception as e:  # pylint: disable=broad-except
        # no input may end in a traceback: a bug is reported as one, with a message that carries no secret
        from ansible_collections.brick.storage.plugins.module_utils.connector.errors import InternalError
        msg = "internal error (%s): %s" % (type(e).__name__, e)
        _fail(module, runner, InternalError(runner.mask(msg) if runner else _mask_params(module, msg)))


def _mask_params(module, text):
    """``text`` with the values of every secret option masked."""
    for k in ("chap_password", "chap_password_in", "discovery_chap_password"):
        v = module.params.get(k)
        if v:
            text = text.replace(str(v), "********")
    return text


if __name__ == "__main__":
    main()
