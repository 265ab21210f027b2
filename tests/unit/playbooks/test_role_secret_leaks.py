# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 14: no role prints a CHAP secret, at -vvv, when its argument validation fails or its tasks fail.

ansible-core renders Jinja in role argument-spec descriptions into the validation error, so a description that
mentions ``{{ brick_volumes }}`` printed every volume with its secrets on any typo.  The specs hold no Jinja now,
and the tasks whose loop item or registered result holds a secret have no_log.  These tests run ansible-playbook
(local connection) and search the whole output for the secrets.
"""

import glob
import os
import shutil
import time

import pytest
import yaml

from connector import iscsi
from playbook_runner import play
from sim import SimHost

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not installed")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
IQN = "iqn.2003-01.org.example.array:vol1"
IQN2 = "iqn.2003-01.org.example.array:vol2"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
SECRETS = {"chap_password": "Role-chap-S3cret-1", "chap_password_in": "Role-mutual-S3cret-2",
           "typo": "Role-typo-S3cret-3"}
ROLES = sorted(os.path.basename(os.path.dirname(os.path.dirname(p)))
               for p in glob.glob(os.path.join(REPO, "roles", "*", "meta", "argument_specs.yml")))


def volume(**kw):
    v = {"name": "data", "portals": [P1, P2], "iqn": IQN, "lun": 0, "chap_username": "alice",
         "chap_password": SECRETS["chap_password"], "chap_username_in": "array",
         "chap_password_in": SECRETS["chap_password_in"]}
    v.update(kw)
    return v


def assert_no_secret(out):
    for name, s in SECRETS.items():
        assert s not in out, "%s printed:\n%s" % (name, "\n".join(ln for ln in out.splitlines() if s in ln))


def test_role_argument_specs_hold_no_jinja():
    for path in glob.glob(os.path.join(REPO, "roles", "*", "meta", "*.yml")):
        text = open(path).read()
        assert "{{" not in text and "{%" not in text, "Jinja in %s: ansible-core renders it into errors" % path


# one bad option per role: its validation fails while the secrets are in the play's variables
BAD = {
    "attach": {"brick_attach_volumes": [volume(lun="zero", chap_pasword_in=SECRETS["typo"])]},
    "detach": {"brick_detach_volumes": [volume(lun="zero", chap_pasword_in=SECRETS["typo"])]},
    "partition": {"brick_partitions": [{"number": "one"}], "brick_partition_device": "/dev/sdz"},
    "wait_idle": {"brick_wait_idle_device": "/dev/sdz", "brick_wait_idle_interval": "soon"},
    "orphan_audit": {"brick_orphan_audit_force": "maybe"},
}


def bad_vars(role):
    """The case above, or (a role added later) a wrong value for its first bool/int/float option."""
    if role in BAD:
        return BAD[role]
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) as f:
        opts = yaml.safe_load(f)["argument_specs"]["main"].get("options") or {}
    for name, spec in sorted(opts.items()):
        if (spec or {}).get("type") in ("bool", "int", "float"):
            return {name: "not-%s-at-all" % spec["type"]}
    pytest.fail("role %s has no bool/int/float option: add a case to BAD" % role)


def test_every_roles_validation_failure_prints_no_secret(tmp_path):
    tasks = []
    for role in ROLES:
        tasks.append({"name": "role %s" % role, "block": [
            {"name": "include %s" % role, "ansible.builtin.include_role": {"name": "brick.storage." + role},
             "vars": bad_vars(role)}],
            "rescue": [{"name": "go on after %s" % role, "ansible.builtin.meta": "noop"}]})
    playbook = [{"hosts": "node", "gather_facts": False, "tasks": tasks}]
    # the shared volume list, with secrets and a typo, is in every role's scope (as in an inventory)
    shared = [volume(lun="zero", chap_pasword_in=SECRETS["typo"])]
    rc, out = play(str(tmp_path), playbook, {"brick_volumes": shared})
    assert_no_secret(out)
    assert out.count("Validation of arguments failed") >= len(ROLES), out[-3000:]
    for role in ROLES:  # each role's own validation failed (its validate_args_context is in the output)
        assert '"name": "%s"' % role in out, role


def test_role_validation_leak_test_would_catch_jinja(tmp_path):
    """The check above is real: the same play with a description that renders the volumes prints the secret."""
    role = tmp_path / "roles" / "leaky" / "meta"
    role.mkdir(parents=True)
    (role / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: x\n    options:\n      brick_volumes:\n"
        "        description: 'default is {{ brick_volumes }}'\n        type: list\n        elements: dict\n"
        "        options:\n          lun: {type: int}\n")
    (tmp_path / "roles" / "leaky" / "tasks").mkdir()
    (tmp_path / "roles" / "leaky" / "tasks" / "main.yml").write_text("- ansible.builtin.meta: noop\n")
    playbook = [{"hosts": "node", "gather_facts": False, "roles": ["leaky"]}]
    rc, out = play(str(tmp_path), playbook, {"brick_volumes": [{"lun": "zero",
                                                                "chap_password": SECRETS["chap_password"]}]})
    assert rc != 0 and SECRETS["chap_password"] in out


def sim_host(top):
    h = SimHost(os.path.join(top, "host"))
    h.set_fault("time_scale", 0.01)
    for iqn in (IQN, IQN2):
        h.add_target(iqn, portals=[P1, P2], luns={0: 64}, chap=("alice", SECRETS["chap_password"]),
                     mutual_chap=("array", SECRETS["chap_password_in"]))
    env = h.env()
    return h, {"brick_storage_environment": {"BRICK_STORAGE_ROOT": h.root, "BRICK_SIM_ROOT": h.root,
                                             "PATH": env["PATH"]}}


def test_attach_and_detach_roles_print_no_secret_at_vvv(tmp_path):
    """At -vvv, on the simulator: a CHAP attach that fails (wrong secret: the no_log task, then the report of
    its failure), a CHAP attach that finds the volume attached (the no_log task's results feed the checks and
    the published facts), and a detach in check mode, with the secrets in the shared volume list.  The secrets
    are in no task output, loop label, registered result or failure message, and on no command line.

    (Modules started by ansible-playbook write sysfs through a plain HostFS, which does not drive the simulated
    kernel: the volume is attached beforehand through the simulator's own file system.)"""
    top = str(tmp_path)
    h, hv = sim_host(top)
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), device_wait=2.0,
                        multipath_wait=2.0, auth=iscsi.Auth("alice", SECRETS["chap_password"], "array",
                                                            SECRETS["chap_password_in"]))
    c.connect(iscsi.build_paths([P1, P2], [IQN], [0]))
    h.reset_commands()
    wrong = volume(name="wrong", iqn=IQN2, chap_password="Role-wrong-S3cret-4")
    SECRETS["wrong"] = "Role-wrong-S3cret-4"
    try:
        playbook = [
            {"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
                {"name": "attach with a wrong secret", "block": [
                    {"name": "attach wrong", "ansible.builtin.include_role": {"name": "brick.storage.attach"},
                     "vars": {"brick_attach_volumes": [wrong], "brick_attach_device_wait_timeout": 3,
                              "brick_attach_multipath_wait_timeout": 3}}],
                 "rescue": [{"name": "the wrong secret failed", "ansible.builtin.meta": "noop"}]},
                {"name": "attach", "ansible.builtin.include_role": {"name": "brick.storage.attach"},
                 # (the role's check stats the device on this host's /dev, not the simulator's)
                 "vars": {"brick_attach_verify": False}},
                {"name": "show what the attach published", "ansible.builtin.debug": {"var": "brick_attached"}}]},
            {"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}",
             "check_mode": True, "tasks": [
                 {"name": "detach", "ansible.builtin.include_role": {"name": "brick.storage.detach"},
                  "vars": {"brick_detach_verify": False}}]},
        ]
        rc, out = play(top, playbook, dict(hv, brick_volumes=[volume()]))
        assert rc == 0, out[-4000:]
        assert "volume wrong:" in out and "authentication failed" in out  # the failure was reported
        assert "rescued=1" in out and '"device": "/dev/dm-' in out and "would detach" in out
        assert_no_secret(out)
        # and no fake tool was ever started with a secret on its command line
        argv = "\n".join(" ".join(a) for a in h.commands())
        assert "iscsiadm" in argv
        assert_no_secret(argv)
    finally:
        SECRETS.pop("wrong", None)
