# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 21, item 1: the orphan_audit role's cleanup and the detach role run on the iface of the session they are
about, with ansible-playbook against a simulated host.

Modules started by ansible-playbook read the sim's tree through a plain HostFS, whose sysfs writes do not act like
the kernel, so the runs are in check mode: the module then reports what it would remove, from sysfs.  One portal,
LUN 0 on iface ``default`` (sda) and on ``eth1`` (sdb): two paths of one map.
"""

import json
import os
import re
import shutil

import pytest
import yaml

from playbook_runner import play
from sim import SimHost

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not installed")

IQN = "iqn.2003-01.org.example.array:vol1"
P1 = "10.0.0.1:3260"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def two_iface_host(top):
    h = SimHost(os.path.join(top, "host"))
    h.set_fault("time_scale", 0.01)
    h.add_target(IQN, portals=[P1], luns={0: 64})
    with open(h.fs.path("/etc/iscsi/ifaces/eth1"), "w") as f:
        f.write("# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = eth1\niface.transport_name = tcp\n# END RECORD\n")
    h.login(IQN, P1)
    h.login(IQN, P1, iface="eth1")
    env = h.env()
    return h, {"brick_storage_environment": {"BRICK_STORAGE_ROOT": h.root, "BRICK_SIM_ROOT": h.root,
                                             "PATH": env["PATH"]},
               "brick_lock_dir": os.path.join(h.root, "run", "lock")}


def device_of(h, iface):
    (s,) = [s for s in h.sessions(IQN) if s["iface"] == iface]
    (name,) = [n for n, d in h.state()["disks"].items() if d["sid"] == s["sid"]]
    return "/dev/" + name


def shown(out):
    """The JSON document the play's last task printed between RESULT= and =END."""
    found = re.findall(r"RESULT=(.*?)=END", out)
    assert found, out[-4000:]
    return json.loads(found[-1].replace('\\"', '"'))


def test_the_audit_cleanup_of_a_free_session_on_a_second_iface_touches_only_that_iface(tmp_path):
    h, hv = two_iface_host(str(tmp_path))
    h.path_fail(P1, session_state="FREE", iface="eth1")
    dead, healthy = device_of(h, "eth1"), device_of(h, "default")
    snap = h.snapshot()
    playbook = [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
        {"name": "audit", "ansible.builtin.include_role": {"name": "brick.storage.orphan_audit"},
         "vars": {"brick_orphan_audit_cleanup": True, "brick_orphan_audit_report_dir": str(tmp_path / "report"),
                  "brick_orphan_audit_set_stats": False}},
        {"name": "show", "ansible.builtin.debug": {"msg": "RESULT={{ brick_orphan_audit_detached.results | "
                                                          "map(attribute='removed', default={}) | list | to_json }}=END"}}]}]
    rc, out = play(str(tmp_path), playbook, hv, "--check")
    assert rc == 0, out[-4000:]
    (removed,) = shown(out)
    # the path of the FREE eth1 session leaves the map; the healthy default path is not named at all
    assert removed["devices"] == [dead] and removed["paths_out_of_map"] and healthy not in json.dumps(removed)
    assert removed["logout"] and removed["maps"] == []
    assert h.snapshot() == snap
    with open(os.path.join(str(tmp_path), "report", "orphan-report.json")) as f:
        (action,) = json.load(f)["hosts"]["node"]["cleanup"]["actions"]
    assert action["iface"] == "eth1"


def detach_play(volume, **role_vars):
    return [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
        {"name": "detach", "ansible.builtin.include_role": {"name": "brick.storage.detach"},
         "vars": dict({"brick_detach_volumes": [volume], "brick_detach_lock_timeout": 10}, **role_vars)},
        {"name": "show", "ansible.builtin.debug": {"msg": "RESULT={{ __brick_detach_out.results | "
                                                          "map(attribute='removed', default={}) | list | to_json }}=END"}}]}]


@pytest.mark.parametrize("where", ["volume", "role"])
def test_the_detach_role_detaches_a_volume_attached_on_a_second_iface(tmp_path, where):
    h, hv = two_iface_host(str(tmp_path))
    vol = {"name": "data", "portals": [P1], "iqn": IQN, "lun": 0}
    extra = {}
    if where == "volume":
        vol["iface"] = "eth1"
    else:
        extra["brick_detach_iface"] = "eth1"
    snap = h.snapshot()
    rc, out = play(str(tmp_path), detach_play(vol, **extra), hv, "--check")
    assert rc == 0, out[-4000:]
    (removed,) = shown(out)
    assert removed["devices"] == [device_of(h, "eth1")] and removed["logout"], removed
    assert device_of(h, "default") not in json.dumps(removed)
    assert h.snapshot() == snap


def _module_tasks(role, module):
    with open(os.path.join(REPO, "roles", role, "tasks", "main.yml")) as f:
        return [t for t in yaml.safe_load(f) if module in t]


@pytest.mark.parametrize("role,module,path,expression", [
    ("attach", "brick.storage.iscsi_volume", (), "__brick_attach_volume.iface | default(brick_attach_iface)"),
    ("detach", "brick.storage.iscsi_volume", (), "__brick_detach_volume.iface | default(brick_detach_iface)"),
    ("detach", "brick.storage.volume_paths_facts", ("volume",),
     "__brick_detach_volume.iface | default(brick_detach_iface)"),
], ids=["attach", "detach", "detach-check"])
def test_every_module_task_of_the_role_passes_the_iface(role, module, path, expression):
    tasks = _module_tasks(role, module)
    assert tasks
    for task in tasks:
        args = task[module]
        for key in path:
            args = args[key]
        assert args.get("iface") == "{{ %s }}" % expression, task["name"]


def test_the_audit_cleanup_passes_each_actions_iface():
    with open(os.path.join(REPO, "roles", "orphan_audit", "tasks", "cleanup.yml")) as f:
        (task,) = [t for t in yaml.safe_load(f) if "brick.storage.iscsi_volume" in t]
    assert task["brick.storage.iscsi_volume"]["iface"] == "{{ item.iface | default(omit, true) }}"
