# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""iscsi_volume takes os-brick's and community.general.open_iscsi's option names as aliases, where they do not
clash: every alias is unique, and a task written with them runs (check mode, nothing attached: a detach plan)."""

import json
import os

import pytest

from unit.plugins.modules.modtest_util import REPO, import_collection_module

pytest.importorskip("ansible")

SRC = os.path.join(REPO, "plugins", "modules", "iscsi_volume.py")

ALIASES = {  # option: the names operators already have
    "portals": ["portal", "target_portal", "target_portals"],
    "iqn": ["target_iqn", "target_iqns", "target", "targetname"],
    "lun": ["target_lun", "target_luns"],
    "chap_username": ["auth_username", "node_user"],
    "chap_password": ["auth_password", "node_pass"],
    "chap_username_in": ["auth_username_in", "node_user_in"],
    "chap_password_in": ["auth_password_in", "node_pass_in"],
    "discovery_chap_username": ["discovery_auth_username", "discover_user"],
    "discovery_chap_password": ["discovery_auth_password", "discover_pass"],
}


def spec():
    """{option: [aliases]} of the module's argument spec (the one AnsibleModule gets)."""
    mod = import_collection_module("iscsi_volume")
    return dict((name, list(option.get("aliases", []))) for name, option in mod.argument_spec().items())


def test_aliases_present_and_unique():
    s = spec()
    for opt, names in ALIASES.items():
        assert set(names) <= set(s[opt]), (opt, s[opt])
    every = [n for o, al in s.items() for n in [o] + al]
    assert len(every) == len(set(every)), sorted(n for n in every if every.count(n) > 1)
    # names of open_iscsi that mean something else here are not aliases
    for other in ("discover", "login", "port", "auto_node_startup", "show_nodes", "name"):
        assert other not in every or other in s, other


def test_doc_lists_the_aliases():
    yaml = pytest.importorskip("yaml")
    with open(SRC) as f:
        text = f.read()
    try:
        doc = yaml.safe_load(text.split('DOCUMENTATION = r"""', 1)[1].split('"""', 1)[0])
    except yaml.YAMLError:
        pytest.skip("DOCUMENTATION does not parse here (checked by ansible-test sanity)")
    s = spec()
    for opt in ALIASES:
        assert sorted(doc["options"][opt].get("aliases", [])) == sorted(s[opt]), opt


def test_a_task_with_os_brick_names_runs(capsys, tmp_path):
    mod = import_collection_module("iscsi_volume")
    from ansible.module_utils.testing import patch_module_args
    root = tmp_path / "root"
    for d in ("sys/class/iscsi_session", "sys/block", "dev/disk/by-path", "etc/iscsi/nodes"):
        (root / d).mkdir(parents=True)
    os.environ["BRICK_STORAGE_ROOT"] = str(root)
    try:
        args = {"state": "absent", "target_portal": "192.0.2.10:3260",
                "target_iqn": "iqn.2010-10.org.openstack:volume-1", "target_lun": 3,
                "auth_username": "u", "auth_password": "sEcReT-alias", "lock_dir": str(tmp_path / "lock"),
                "_ansible_check_mode": True}
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                mod.main()
    finally:
        del os.environ["BRICK_STORAGE_ROOT"]
    out = capsys.readouterr().out
    res = json.loads(out)
    assert not res.get("failed"), res
    assert "sEcReT-alias" not in out
