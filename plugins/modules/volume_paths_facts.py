#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)

DOCUMENTATION = r"""
---
module: volume_paths_facts
short_description: Report the iSCSI volume paths of a host and the orphaned ones
version_added: 0.1.0
description:
  - Reads sysfs and C(/dev) to describe the iSCSI sessions, LUN paths (SCSI disks), dm-multipath maps and udev
    links of the host, and sets them as the fact C(ansible_facts.volume_paths).
  - Given O(volume), also reports which paths of that one volume exist on the host (by-path links, SCSI
    devices, the map, sessions). That verifies an attach (every portal has a working path) or a detach
    (nothing of the volume is left).
  - With O(gather_orphans=true) (the default) it lists orphans, each with a kind and a reason. V(dangling_link) is
    a by-path or by-id link whose target is gone. V(device_without_session) is a SCSI disk whose iSCSI session
    is gone. V(device_on_failed_session) is a disk whose session is FREE (the kernel gave up recovering it) or
    whose device state is C(offline)/C(transport-offline). A session that is FAILED (the initiator is still recovering it, within
    its recovery timeout) is not an orphan; its paths are listed in RV(ansible_facts.volume_paths.degraded).
    V(map_without_working_path) is a multipath map with no path in a working
    state. V(session_without_lun) is a session that carries no SCSI disk. V(unexpected_lun) is a LUN that is not
    in O(expected), when O(expected) is given.
  - It also returns a cleanup plan that the C(brick.storage.orphan_audit) role carries out with the collection's
    data-safe modules.
  - No external command runs (no C(iscsiadm), C(multipath) or C(lsscsi)), so the module is cheap enough to run on
    every host of a fleet. It never changes anything and always returns RV(ignore:changed=false).
author:
  - brick.storage maintainers (@brick-storage)
extends_documentation_fragment:
  - brick.storage.attributes
  - brick.storage.attributes.facts
options:
  volume:
    description:
      - One volume whose existing paths are wanted, as the attach and detach modules name it.
      - The paths are matched by portal, IQN and LUN on the live sessions and on the by-path links; the map is
        found through the matching devices.
      - A session matches a portal by its persistent address (a host name when it was logged in with
        C(iscsiadm -p NAME)) or by its connection's address, so a portal given by number or by name finds it.
    type: dict
    suboptions:
      portals:
        description:
          - Portals of the volume as C(address:port), C(address) (port 3260) or C([IPv6]:port).
          - A host name is resolved (every address of it, bounded), as the kernel shows sessions with numeric
            addresses; a session whose persistent address is that name matches too.
        type: list
        elements: str
        required: true
        aliases: [portal]
      iface:
        description:
          - Only the sessions of this open-iscsi interface (as O(brick.storage.iscsi_volume#module:iface)). Unset,
            the sessions of every interface.
        type: str
      iqn:
        description: Target IQN of the volume.
        type: str
        required: true
      lun:
        description: LUN number of the volume.
        type: int
        required: true
      wwid:
        description:
          - WWID of the volume (C(3600140...), C(naa.600140...) or C(0x600140...)). Devices at the same portal,
            IQN and LUN that serve another WWID (the array reused the LUN number) are not counted as paths of
            the volume; they are listed in C(foreign_devices).
        type: str
  expected:
    description:
      - The LUNs this host is meant to have. When given, every iSCSI LUN path that matches none of the entries is
        reported as an V(unexpected_lun) orphan.
      - Each entry is either a WWID string (multipath form C(3600140...) or sysfs form C(naa.600140...)), or a
        dictionary with C(iqn) and C(lun) and optionally C(portal) or C(portals) (to expect only some paths),
        or a dictionary with C(wwid).
      - A portal given by host name is resolved (bounded; a name that does not resolve fails the module) and
        matches a session on any of its addresses, or whose persistent address is the name.
      - Leave it unset for no comparison. An empty list means the host should have no iSCSI LUN at all.
      - Typically comes from an inventory variable of the host.
    type: list
    elements: raw
  gather_orphans:
    description:
      - Whether to look for orphans and build the cleanup plan.
      - With V(false), RV(ansible_facts.volume_paths.orphans) and RV(ansible_facts.volume_paths.cleanup) are not
        returned; the inventory and O(volume) are.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: The module only reads, so it behaves the same in check mode.
  diff_mode:
    support: N/A
    details: The module changes nothing.
  platform:
    details:
      - Linux only (reads sysfs and C(/dev/disk)).
notes:
  - Run as root for complete results; most of sysfs is world readable, but not every setup allows that.
  - The environment variable E(BRICK_STORAGE_ROOT) makes the module read sysfs and C(/dev) below another root
    directory (used by the simulated hosts of the tests).
  - A C(blocked) device (session recovery in progress) counts as a failed path of its map but is not by itself an
    orphan; it becomes one when the kernel gives up (C(transport-offline)).
  - A session that was just logged in and whose LUN was not scanned yet shows up as V(session_without_lun); do not
    run a cleanup while attaches are in progress.
seealso:
  - module: brick.storage.iscsi_volume
  - module: brick.storage.multipath_flush
  - name: brick.storage docs - orphan audit
    description: What each orphan kind means and what to do about it.
    link: https://github.com/brick-storage/brick.storage/blob/main/docs/orphan_audit.md
"""

EXAMPLES = r"""
- name: Inventory of the host's volume paths and orphans
  brick.storage.volume_paths_facts:

- name: Show the orphans and why each one is one
  ansible.builtin.debug:
    msg: "{{ ansible_facts.volume_paths.orphans | map(attribute='reason') | list }}"

- name: Paths of one volume (for example after an attach or a detach)
  brick.storage.volume_paths_facts:
    volume:
      portals: [10.0.0.1:3260, 10.0.0.2:3260]
      iqn: iqn.2003-01.org.linux-iscsi.lab:target1
      lun: 0
    gather_orphans: false

- name: Fail when the detached volume left anything behind
  ansible.builtin.assert:
    that: ansible_facts.volume_paths.volume.leftovers | length == 0
    fail_msg: "left over: {{ ansible_facts.volume_paths.volume.leftovers | join(', ') }}"

- name: Compare with the LUNs the inventory says the host should have
  brick.storage.volume_paths_facts:
    expected:
      - 36001405f3a2b4c5d6e7f8091a2b3c4d5
      - {iqn: iqn.2003-01.org.linux-iscsi.lab:target1, lun: 1}
      - {iqn: iqn.2003-01.org.linux-iscsi.lab:target2, lun: 0, portal: 10.0.0.1:3260}
"""

RETURN = r"""
ansible_facts:
  description: Facts set by the module.
  returned: always
  type: dict
  contains:
    volume_paths:
      description: Volume paths of the host.
      returned: always
      type: dict
      contains:
        search_path:
          description: Where the per-path udev links live.
          type: str
          sample: /dev/disk/by-path
        sessions:
          description: iSCSI sessions.
          type: list
          elements: dict
          contains:
            sid: {description: Session id., type: int}
            host: {description: SCSI host number., type: int}
            portal: {description: "Portal (C(addr:port), IPv6 in brackets): the persistent address, a host name for a
                     session logged in with C(iscsiadm -p NAME).", type: str}
            address: {description: "The connection's (numeric) address.", type: str}
            iqn: {description: Target IQN., type: str}
            state: {description: "C(LOGGED_IN), C(FAILED) or C(FREE).", type: str}
            iface: {description: open-iscsi interface., type: str}
            tpgt: {description: Target portal group tag., type: int}
        luns:
          description: LUN paths (one SCSI disk per session and LUN).
          type: list
          elements: dict
          contains:
            hctl: {description: SCSI address., type: str, sample: "3:0:0:1"}
            device: {description: Block device., type: str, sample: /dev/sdc}
            name: {description: Kernel name of the disk., type: str}
            wwid: {description: WWID in udev/multipath form., type: str}
            size: {description: Size in bytes., type: int}
            state: {description: "SCSI device state (C(running), C(offline), C(transport-offline), C(blocked)).", type: str}
            path_state: {description: "V(active) when the device runs on a logged-in session, else V(failed).", type: str}
            sid: {description: Session id., type: int}
            session_state: {description: State of the session (null when it is gone)., type: str}
            portal: {description: Portal of the session., type: str}
            address: {description: "The session connection's address (null when the session is gone).", type: str}
            iface: {description: "open-iscsi interface of the session (null when the session is gone).", type: str}
            iqn: {description: Target IQN., type: str}
            lun: {description: LUN number., type: int}
            map: {description: "Name of the multipath map holding the path, or null.", type: str}
            dm: {description: Device of that map (C(/dev/dm-N))., type: str}
            by_path: {description: by-path links to the disk., type: list, elements: str}
            by_id: {description: by-id links to the disk., type: list, elements: str}
        maps:
          description: dm-multipath maps.
          type: list
          elements: dict
          contains:
            name: {description: Map name., type: str}
            wwid: {description: WWID., type: str}
            dm: {description: Map device (C(/dev/dm-N))., type: str}
            size: {description: Size in bytes., type: int}
            paths:
              description: "Path devices with V(active)/V(failed) RV(ansible_facts.volume_paths.maps[].paths[].state),
                the SCSI device state (C(dev_state)), the session state and portal."
              type: list
              elements: dict
              contains:
                device: {description: Path device., type: str, sample: /dev/sdc}
                state:
                  description:
                    - V(active) when the path works, V(failed) when it does not, V(unknown) when its state cannot be
                      read (a map with such a path is never reported as without working path).
                    - Each transport by its own states (C(transport)); an NVMe namespace works when its controller
                      is C(live).
                  type: str
                dev_state: {description: "SCSI device state, or the NVMe controller's (null when it cannot be read).",
                            type: str}
                transport: {description: "V(iscsi), V(scsi) (another SCSI transport: FC, SAS...) or V(nvme).", type: str}
                recovering:
                  description: "The path may come back by itself: its iSCSI session is FAILED (recovery) or its NVMe
                    controller is C(connecting)/C(resetting)."
                  type: bool
                session_state: {description: "State of the iSCSI session (null when it is gone or not iSCSI).", type: str}
                portal: {description: "Portal of the session (null when not iSCSI).", type: str}
                hctl: {description: "SCSI address (null when not iSCSI).", type: str}
            active_paths: {description: Number of working paths., type: int}
            holders: {description: Devices stacked on the map., type: list, elements: str}
            by_id: {description: by-id links to the map., type: list, elements: str}
        volume:
          description: The paths of O(volume) that exist on the host.
          returned: when O(volume) is given
          type: dict
          contains:
            paths: {description: by-path links of the volume whose device exists., type: list, elements: str}
            dangling_links: {description: by-path links of the volume whose device is gone., type: list, elements: str}
            devices:
              description: SCSI disks of the volume (device, hctl, portal, address, iface, sid, state, path_state, wwid, map).
              type: list
              elements: dict
            wwid: {description: WWID of the volume (a list if the paths disagree)., type: raw}
            map: {description: "Multipath map of the volume, or null.", type: str}
            dm: {description: Device of the map., type: str}
            sessions: {description: Ids of the sessions to the volume's portals and IQN., type: list, elements: int}
            empty_sessions: {description: Those of RV(ansible_facts.volume_paths.volume.sessions) with no SCSI disk at all., type: list, elements: int}
            path_count: {description: Number of SCSI disks of the volume., type: int}
            active_paths: {description: Number of working ones., type: int}
            per_portal: {description: "For each portal: sessions, devices, links and whether a working path exists.", type: list, elements: dict}
            missing_portals: {description: Portals without a working path., type: list, elements: str}
            exists: {description: "Whether any device, link or map of the volume exists.", type: bool}
            foreign_devices:
              description: "Devices at the volume's portals, IQN and LUN that serve another WWID than
                O(volume.wwid) (C(device), C(hctl), C(portal), C(wwid), C(map), C(serves)): not the volume's paths."
              type: list
              elements: dict
            leftovers: {description: "Everything of the volume still present, for a detach check: devices, links,
                       maps and sessions with no disk.", type: list, elements: str}
        orphans:
          description: Orphans found, each with C(kind), a readable C(reason) and the ids that apply (C(device),
            C(hctl), C(sid), C(portal), C(iface), C(iqn), C(lun), C(wwid), C(map), C(dm), C(link), C(target)).
          returned: when O(gather_orphans=true)
          type: list
          elements: dict
          sample:
            - kind: device_on_failed_session
              reason: "/dev/sdc (3:0:0:0): session 2 to 10.0.0.2:3260 is FREE"
              device: /dev/sdc
              hctl: "3:0:0:0"
              sid: 2
              portal: 10.0.0.2:3260
              iqn: iqn.2003-01.org.linux-iscsi.lab:target1
              lun: 0
        degraded:
          description:
            - Paths whose session is FAILED, that is still inside its recovery window (the path may come back on
              its own). Not orphans, never cleaned up; same fields as RV(ansible_facts.volume_paths.orphans).
          returned: when O(gather_orphans=true)
          type: list
          elements: dict
        cleanup:
          description:
            - Ordered actions that would remove the orphans. C(action) is V(multipath_flush) (with C(map) and its
              C(wwid)), V(iscsi_volume) (with C(portals), C(iqn), C(lun) and the C(wwid) the paths serve, so that a
              dead path of a map that keeps a working path is taken out of the map and the map is never flushed;
              a session without LUN gets C(session_only=true) and a null C(lun)),
              V(file) (with C(path)) or V(manual) (no safe automatic action). Each names the orphan C(kinds) and a
              C(reason).
            - An V(iscsi_volume) action names the C(iface) of its session(s) (null when no session is known, for
              a disk whose session is gone). The detach must run on that interface, or it would act on the
              session of another interface to the same portal.
          returned: when O(gather_orphans=true)
          type: list
          elements: dict
        summary:
          description: Counts of sessions, LUN paths, maps and orphans (in total and per kind).
          type: dict
          sample: {sessions: 2, luns: 2, maps: 1, orphans: 0,
                   counts: {dangling_link: 0, device_without_session: 0, device_on_failed_session: 0,
                            map_without_working_path: 0, session_without_lun: 0, unexpected_lun: 0}}
"""

from ansible_collections.brick.storage.plugins.module_utils.brick_module import ModuleErrors, new_module
from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS
from ansible_collections.brick.storage.plugins.module_utils.connector.paths import gather, normalize_expected, normalize_volume


def argument_spec():
    return dict(
        volume=dict(type="dict", options=dict(
            portals=dict(type="list", elements="str", required=True, aliases=["portal"]),
            iqn=dict(type="str", required=True),
            lun=dict(type="int", required=True),
            wwid=dict(type="str"),
            iface=dict(type="str"),
        )),
        expected=dict(type="list", elements="raw"),
        gather_orphans=dict(type="bool", default=True),
    )


def main():
    module = new_module(argument_spec())
    params = module.params
    with ModuleErrors(module, msg_prefix="invalid input: ", during="while checking the input"):
        volume = normalize_volume(params["volume"]) if params["volume"] is not None else None
        expected = normalize_expected(params["expected"])
    with ModuleErrors(module):
        facts = gather(HostFS(), volume=volume, expected=expected, orphans=params["gather_orphans"])
    module.exit_json(changed=False, ansible_facts={"volume_paths": facts})


if __name__ == "__main__":
    main()
