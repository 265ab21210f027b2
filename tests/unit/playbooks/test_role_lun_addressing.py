# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 15: the attach and detach roles pass a volume's lun_addressing (and the attach role's default and
skip_failed_portals_for) to the module, on the simulated host.

A flat-space array shows LUN 7 as kernel LUN 16391.  The volume is attached beforehand through the simulator's
own file system (modules started by ansible-playbook do not drive the simulated kernel), so a role run that
finds it attached proves the LUN number was translated as asked, and one that does not (peripheral addressing:
kernel LUN 7) fails to find it.
"""

import os
import shutil
import time

import pytest
import yaml

from connector import iscsi
from playbook_runner import play
from sim import SimHost

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not installed")

IQN = "iqn.2003-01.org.example.array:flat"
P1 = "10.0.0.1:3260"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def flat_host(top):
    h = SimHost(os.path.join(top, "host"))
    h.set_fault("time_scale", 0.01)
    h.add_target(IQN, portals=[P1], luns={7: 16}, lun_addressing="flat")
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), device_wait=2.0,
                        multipath="off", lun_addressing="flat")
    dev = c.connect(iscsi.build_paths([P1], [IQN], [7]))["device"]
    h.reset_commands()
    env = h.env()
    return h, dev, {"brick_storage_environment": {"BRICK_STORAGE_ROOT": h.root, "BRICK_SIM_ROOT": h.root,
                                                  "PATH": env["PATH"]}}


def attach_play(volume, **role_vars):
    return [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
        {"name": "attach", "ansible.builtin.include_role": {"name": "brick.storage.attach"},
         "vars": dict({"brick_attach_volumes": [volume], "brick_attach_verify": False,
                       "brick_attach_device_wait_timeout": 2, "brick_attach_lock_timeout": 10}, **role_vars)},
        {"name": "show", "ansible.builtin.debug": {"msg": "DEVICE={{ brick_attached.data.device }}"}}]}]


def test_the_volumes_lun_addressing_overrides_the_roles_default(tmp_path):
    h, dev, hv = flat_host(str(tmp_path))
    vol = {"name": "data", "portals": [P1], "iqn": IQN, "lun": 7, "multipath": "off", "lun_addressing": "flat"}
    rc, out = play(str(tmp_path), attach_play(vol, brick_attach_lun_addressing="peripheral",
                                              brick_attach_skip_failed_portals_for=600), hv)
    assert rc == 0, out[-4000:]
    assert "DEVICE=%s" % dev in out and "changed=0" in out
    assert h.commands() == []  # found attached from sysfs: no command


def _module_tasks(role):
    with open(os.path.join(REPO, "roles", role, "tasks", "main.yml")) as f:
        return [t for t in yaml.safe_load(f) if "brick.storage.iscsi_volume" in t]


@pytest.mark.parametrize("role,option,expression", [
    ("attach", "lun_addressing", "__brick_attach_volume.lun_addressing | default(brick_attach_lun_addressing)"),
    ("attach", "skip_failed_portals_for", "brick_attach_skip_failed_portals_for"),
    ("detach", "lun_addressing", "__brick_detach_volume.lun_addressing | default(omit)"),
], ids=["attach-lun_addressing", "attach-skip_failed_portals_for", "detach-lun_addressing"])
def test_every_module_task_of_the_role_passes_the_option(role, option, expression):
    """(ansible-core 2.21 no longer prints a module's invocation, so the option's value on the way to the
    module is checked in the role's tasks; the defaults and the argument specs must know the variable too.)"""
    tasks = _module_tasks(role)
    assert tasks
    for task in tasks:
        assert task["brick.storage.iscsi_volume"].get(option) == "{{ %s }}" % expression, task["name"]
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)["argument_specs"]["main"]["options"]
    variable = expression.split(" | ")[-1].replace("default(", "").rstrip(")")
    if variable.startswith("brick_"):
        with open(os.path.join(REPO, "roles", role, "defaults", "main.yml")) as f:
            assert variable in yaml.safe_load(f)
        assert variable in spec
    volumes = spec["brick_volumes"]["options"]
    if option == "lun_addressing":
        assert "flat" in volumes[option]["choices"]


def test_the_roles_default_addressing_is_used_by_a_volume_that_sets_none(tmp_path):
    h, _dev, hv = flat_host(str(tmp_path))
    vol = {"name": "data", "portals": [P1], "iqn": IQN, "lun": 7, "multipath": "off"}
    rc, out = play(str(tmp_path), attach_play(vol, brick_attach_lun_addressing="peripheral"), hv)
    # peripheral addressing means kernel LUN 7, which this array does not have: the LUN never appears
    assert rc != 0 and "did not appear" in out, out[-4000:]


def test_the_detach_role_passes_lun_addressing(tmp_path):
    h, dev, hv = flat_host(str(tmp_path))
    vol = {"name": "data", "portals": [P1], "iqn": IQN, "lun": 7, "lun_addressing": "flat"}
    playbook = [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}",
                 "check_mode": True, "tasks": [
                     {"name": "detach", "ansible.builtin.include_role": {"name": "brick.storage.detach"},
                      "vars": {"brick_detach_volumes": [vol], "brick_detach_verify": False}}]}]
    rc, out = play(str(tmp_path), playbook, hv)
    assert rc == 0, out[-4000:]
    assert '"lun_addressing": "flat"' in out and "would detach" in out and dev in out
