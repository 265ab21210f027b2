#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

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
  - brick.storage.attributes
  - brick.storage.lock
attributes:
  check_mode:
    support: full
    details: Reads sysfs only and reports what it would attach or remove; no command that changes anything runs.
  diff_mode:
    support: partial
    details:
      - The diff shows the volume's sessions (C(portal iqn)), SCSI path devices and multipath maps before and after;
        in check mode, after is the prediction (a device or map the attach would make is named by what it would be,
        for example C(a device for LUN 0 via 10.0.0.1:3260)).
      - Node records are not shown. In check mode without O(iqn) (the target would be found by a discovery) there is
        no diff.
  platform:
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
      - Without O(portals) (a detach), each LUN given is looked for on every session of O(iqn), and all of them are
        detached; they must be paths of one volume (one WWID), else the detach fails and changes nothing (give
        O(wwid) to detach only that volume's paths, or run one task per volume).
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
      - V(auto) finds the LUN in the form the session shows it (O(lun) first, then 16384 + O(lun)); another LUN
        never decides where a LUN that is there is found (a V(sam2) array shows LUN 1 as 1 beside LUN 300 in flat
        space). Only for a LUN the session does not show yet (the attach's scan) it uses flat space when another
        LUN of the session is in flat space, else peripheral; when the LUN does not appear in peripheral form by
        the first rescan, its flat-space number is scanned too.
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
remapped:
  description:
    - Set when a re-run without O(wwid) found that the array mapped another volume at the LUN number of an attached
      single path (the rescan made the kernel read a new WWID). The path now serves that volume; the result says
      C(changed) and a warning names both WWIDs. With O(wwid) such a re-run fails instead.
  returned: state=present, when a path's WWID changed
  type: list
  elements: dict
  contains:
    device:
      description: The path device.
      type: str
    old_wwid:
      description: The WWID it reported before.
      type: str
    new_wwid:
      description: The WWID it reports now.
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

from ansible_collections.brick.storage.plugins.module_utils.brick_module import LOCK_OPTIONS, ModuleErrors, diff, new_module, options
from ansible_collections.brick.storage.plugins.module_utils.connector import iscsi, scsi, validate
from ansible_collections.brick.storage.plugins.module_utils.connector.errors import BrickError, InvalidInput
from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS
from ansible_collections.brick.storage.plugins.module_utils.connector.lock import HostLock, LockSet, parse_lock_timeout
from ansible_collections.brick.storage.plugins.module_utils.connector.lockdir import lock_dir_for, target_lock_name
from ansible_collections.brick.storage.plugins.module_utils.connector.runner import Runner

# Rules between options that ansible-core checks before main() goes on, with its own messages. The connector
# checks the CHAP pairs again (iscsi.Auth), and Request what ansible-core counts as given (an empty or null list
# of portals, a session_only that is false by default).
RULES = dict(
    required_together=[["chap_username", "chap_password"], ["chap_username_in", "chap_password_in"],
                       ["discovery_chap_username", "discovery_chap_password"]],
    required_if=[["state", "present", ["portals"]]],
)


def argument_spec():
    return options(dict(
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
    ), LOCK_OPTIONS)


class DiscoveryAmbiguous(BrickError):
    """The SendTargets discovery (no iqn given) found no target, or several."""


# -- the input: every check runs before any command ----------------------------------------------------------
class Request(object):
    """The checked input of one run: the credentials, the lock settings, the expected WWID and the paths."""

    def __init__(self, params):
        self.params = params
        self.state = params["state"]
        self.auth = iscsi.Auth(params["chap_username"], params["chap_password"], params["chap_username_in"],
                               params["chap_password_in"], params["discovery_chap_username"],
                               params["discovery_chap_password"])
        _check_settings(params)
        self.lock_timeout = parse_lock_timeout(params["lock_timeout"])
        self.wwid = validate.wwid(params["wwid"]) if params["wwid"] is not None else None
        _check_rules(params)
        self.paths = _paths(params)
        self.discovers_iqn = not params["iqn"]


def _check_settings(params):
    """The interface, the timeouts, the retries and the lock directory."""
    validate.name(params["iface"], "iface")
    if params["login_timeout"] < 1 or params["login_retries"] < 0 or params["device_wait_timeout"] <= 0:
        raise InvalidInput("login_timeout must be >= 1, login_retries >= 0 and device_wait_timeout > 0")
    validate.count(params["login_timeout"], "login_timeout", 1, 3600)
    validate.count(params["login_retries"], "login_retries", 0, 100)
    validate.seconds(params["device_wait_timeout"], "device_wait_timeout", maximum=86400, zero_ok=False)
    validate.seconds(params["multipath_wait_timeout"], "multipath_wait_timeout", maximum=86400)
    validate.lock_dir(params["lock_dir"])
    validate.seconds(params["skip_failed_portals_for"], "skip_failed_portals_for", maximum=7 * 86400)


def _check_rules(params):
    """What the options mean together, beyond RULES."""
    if params["session_only"] and params["state"] != "absent":
        raise InvalidInput("session_only is a logout: it needs state=absent")
    if params["session_only"] and (params["lun"] is not None or params["wwid"] is not None):
        raise InvalidInput("session_only touches no LUN: do not give lun or wwid with it")
    if params["state"] == "present" and not params["portals"]:
        raise InvalidInput("state=present needs at least one portal")
    if not params["iqn"] and not params["portals"]:
        raise InvalidInput("give the target IQN, portals, or both")
    if not params["iqn"] and params["state"] == "absent":
        raise InvalidInput("state=absent needs the target IQN (a detach never runs a discovery)")


def _paths(params):
    """The volume's paths; without an IQN only the first portal (checked now: the discovery gives the IQN)."""
    luns = params["lun"] if params["lun"] is not None else (None if params["session_only"] else [0])
    if params["iqn"]:
        return iscsi.build_paths(params["portals"], params["iqn"], luns, session_only=params["session_only"])
    first = iscsi.check_portals(params["portals"])[0]
    return [iscsi.Path(first[0], None, validate.lun((luns or [0])[0]), aliases=first[1:])]


def _connector(request):
    params = request.params
    return iscsi.Connector(HostFS(), Runner(), iface=params["iface"], login_timeout=params["login_timeout"],
                           login_retries=params["login_retries"], device_wait=params["device_wait_timeout"],
                           multipath=params["multipath"], multipath_wait=params["multipath_wait_timeout"],
                           auth=request.auth, startup=params["startup"], wwid=request.wwid,
                           skip_failed_for=params["skip_failed_portals_for"], lun_addressing=params["lun_addressing"],
                           failure_log=os.path.join(lock_dir_for(params["lock_dir"]), "failed-portals.json"))


# -- the run ---------------------------------------------------------------------------------------------------
def main():
    module = new_module(argument_spec(), **RULES)
    with ModuleErrors(module, commands=True) as errors:
        request = Request(module.params)
        conn = _connector(request)
        errors.runner = conn.runner
        result = _run(module, conn, request)
        for warning in conn.warnings:
            module.warn(warning)
        module.exit_json(commands=len(conn.runner.history), **result)


def _run(module, conn, request):
    """Nothing to do (decided from sysfs and a rescan of the paths, without lock or command), the prediction of
    check mode, or the work under the locks."""
    if request.state == "present" and not request.discovers_iqn:
        result = _already_attached(module, conn, request)
        if result is not None:
            return result
    if module.check_mode:
        return _predict(module, conn, request)
    return _under_locks(module, conn, request)


def _already_attached(module, conn, request):
    """The result of a re-run that finds the volume attached, or None; a map to resize (the LUN grew) is a command,
    left to the part under the locks."""
    result = conn.attached_result(request.paths, check_mode=module.check_mode, resize=False)
    if result is None or (result.get("resized") or {}).get("pending"):
        return None
    if module._diff:
        view = _volume_view(conn, request.paths)
        result["diff"] = diff(view, view, _volume_name(request.paths))
    return result


def _predict(module, conn, request):
    """Check mode: what the attach or detach would do (sysfs only)."""
    if request.discovers_iqn:
        return dict(changed=True, msg="would discover the target on %s and attach it" % request.paths[0].portal)
    paths = request.paths
    before = _volume_view(conn, paths) if module._diff else None
    if request.state == "present":
        result = conn.connect(paths, check_mode=True)
    else:
        result = conn.disconnect(paths, check_mode=True, session_only=request.params["session_only"])
    if before is not None:
        if request.state == "present":
            after = _predicted_attach(conn, paths, before, result)
        else:
            before, after = _detach_views(before, result["removed"])
        result["diff"] = diff(before, after, _volume_name(paths))
    return result


def _under_locks(module, conn, request):
    """The discovery (before any lock: it stores nothing), then the attach or detach under the lock of every target
    involved (sorted: no deadlock between callers).  open-iscsi's node DB, shared by all targets, is written under
    a host-wide lock held only for each write."""
    lock_dir, timeout = request.params["lock_dir"], request.lock_timeout
    paths = request.paths
    if request.state == "present":
        # a discovery with CHAP writes the discovery record: under the node-DB lock of every brick.storage task
        conn.node_lock = HostLock("iscsi-node-db", lock_dir=lock_dir, timeout=timeout,
                                  info="brick.storage.iscsi_volume discovery on %s" % paths[0].portal)
        paths = _discover(conn, request)
    iqns = sorted(set(path.iqn.lower() for path in paths))
    info = "brick.storage.iscsi_volume state=%s %s" % (request.state, " ".join(iqns))
    lock = LockSet([target_lock_name(iqn) for iqn in iqns], lock_dir=lock_dir, timeout=timeout, info=info)
    conn.node_lock = HostLock("iscsi-node-db", lock_dir=lock_dir, timeout=timeout, info=info)
    waited = lock.acquire()
    try:
        result = _act(module, conn, paths, request)
    finally:
        lock.release()
    result["lock_wait"] = round(waited, 3)
    return result


def _discover(conn, request):
    """The paths with their target IQN(s): from a SendTargets discovery when no IQN is given, and with every portal
    of the target it returns with discover=always (unless multipath=off)."""
    paths, params = request.paths, request.params
    every_portal = params["discover"] == "always" and params["multipath"] != "off"
    if request.discovers_iqn:
        found = conn.discover(paths[0].portal)
        iqns = sorted(set(iqn for _address, iqn in found))
        if len(iqns) != 1:
            raise DiscoveryAmbiguous("discovery on %s found %d targets (%s): give iqn" % (
                paths[0].portal, len(iqns), ", ".join(iqns) or "none"))
        portals = [address for address, iqn in found if iqn == iqns[0]] if every_portal else [str(paths[0].portal)]
        return iscsi.build_paths(portals, iqns, [paths[0].lun])
    if every_portal:
        found = conn.discover(paths[0].portal)
        known = [path.portal for path in paths]
        more = [address for address, iqn in found if iqn == paths[0].iqn and validate.portal(address) not in known]
        return iscsi.build_paths([str(path.portal) for path in paths] + more, [paths[0].iqn], [paths[0].lun])
    return paths


def _act(module, conn, paths, request):
    """The attach or the detach (the caller holds the locks), with its diff in diff mode."""
    params = request.params
    before = _volume_view(conn, paths) if module._diff else None
    if request.state == "present":
        result = conn.connect(paths)
    else:
        result = conn.disconnect(paths, force=params["force"], ignore_errors=params["ignore_errors"],
                                 session_only=params["session_only"])
    if before is not None:
        if "removed" in result:
            before = _detach_views(before, result["removed"])[0]
        result["diff"] = diff(before, _volume_view(conn, paths, maps=before["maps"]), _volume_name(paths))
    return result


# -- diff mode: the volume's sessions, path devices and maps -------------------------------------------------------
def _view(sessions, devices, maps):
    return {"sessions": sorted(set(sessions)), "devices": sorted(set(devices)), "maps": sorted(set(maps))}


def _volume_view(conn, paths, maps=()):
    """What of the volume is on the host (sysfs only), named as the detach plan names it (DetachPlan.to_dict):
    sessions as "portal iqn", the volume's path devices, their maps, and those of ``maps`` that are still there
    (a map that keeps its other paths when these leave it)."""
    sessions, devices = [], []
    maps = [name for name in maps if scsi.find_map(conn.fs, name) is not None]
    for entry in conn.state(paths):
        sessions.append("%s %s" % (entry["session"].portal, entry["session"].iqn))
        for dev in entry["devices"]:
            devices.append(dev.dev or dev.hctl)
            dm_map = scsi.multipath_of(conn.fs, dev.name) if dev.name else None
            if dm_map is not None:
                maps.append(dm_map.name)
    return _view(sessions, devices, maps)


def _predicted_attach(conn, paths, before, result):
    """Check mode: the sessions the attach would log in, a device per path that has none, and a map (multipath=auto
    makes one only when multipathd runs, which check mode does not ask; multipath=off stops at the first portal
    that works: the first one is shown)."""
    if "would_login" not in result or not result["changed"]:
        # attached already (a map to resize), or only portals whose last login failed: nothing comes or goes
        return before
    if conn.multipath == "off":
        paths = paths[:1]
    state = conn.state(paths)
    with_session = set(entry["path"].key() for entry in state)
    with_device = set(entry["path"].key() for entry in state if entry["devices"])
    sessions = before["sessions"] + ["%s %s" % (path.portal, path.iqn) for path in paths
                                     if path.key() not in with_session]
    devices = before["devices"] + ["a device for LUN %s via %s" % (path.lun, path.portal) for path in paths
                                   if path.key() not in with_device]
    maps = before["maps"]
    if not maps and conn.multipath != "off":
        maps = ["a map of the volume" + (" (when multipathd runs)" if conn.multipath == "auto" else "")]
    return _view(sessions, devices, maps)


def _detach_views(before, removed):
    """Before (what sysfs shows, and what the plan removes: a map left without paths is in the plan only) and after
    (what remains once the plan is carried out)."""
    sessions, devices, maps = removed["logout"], removed["devices"], removed["maps"]
    before = _view(before["sessions"] + sessions, before["devices"] + devices, before["maps"] + maps)
    after = _view([x for x in before["sessions"] if x not in sessions], [x for x in before["devices"] if x not in devices],
                  [x for x in before["maps"] if x not in maps])
    return before, after


def _volume_name(paths):
    luns = sorted(set(str(path.lun) for path in paths if path.lun is not None))
    what = "LUN %s" % ", ".join(luns) if luns else "sessions"
    return "%s %s" % (" ".join(sorted(set(path.iqn for path in paths))), what)


if __name__ == "__main__":
    main()
