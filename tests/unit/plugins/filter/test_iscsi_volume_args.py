# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.iscsi_volume_args on connection properties shaped as os-brick, Cinder and Ironic give them."""

import copy
import importlib.util
import os

import pytest

pytest.importorskip("ansible")
from ansible.errors import AnsibleFilterError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
_spec = importlib.util.spec_from_file_location(
    "brick_filter_iscsi_volume_args", os.path.join(REPO, "plugins", "filter", "iscsi_volume_args.py"))
mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mod)
f = mod.iscsi_volume_args

IQN = "iqn.2010-10.org.openstack:volume-7b3cd3f0-3c59-4f1e-9a39-0d1b2f0b4c11"
IQN_A = "iqn.1992-04.com.emc:cx.apm00123.a0"
IQN_B = "iqn.1992-04.com.emc:cx.apm00123.b0"

# Cinder LVM/LIO driver, single path (os-brick's single form), no CHAP
LVM_SINGLE = {
    "target_discovered": False, "target_portal": "192.0.2.10:3260", "target_iqn": IQN, "target_lun": 0,
    "volume_id": "7b3cd3f0-3c59-4f1e-9a39-0d1b2f0b4c11", "auth_method": None, "encrypted": False,
    "qos_specs": None, "access_mode": "rw", "cacheable": False,
}
# Cinder with CHAP (as the LVM driver returns it: auth_method CHAP, user and secret)
LVM_CHAP = dict(LVM_SINGLE, auth_method="CHAP", auth_username="KeJ2vh8X", auth_password="sEcReT-9f4b")
# os-brick multipath form: same target on two portals (plus the single keys, as drivers send both)
MP_SAME = {
    "target_discovered": False, "target_portal": "192.0.2.10:3260", "target_iqn": IQN, "target_lun": 1,
    "target_portals": ["192.0.2.10:3260", "198.51.100.10:3260"], "target_iqns": [IQN, IQN], "target_luns": [1, 1],
    "volume_id": "7b3cd3f0", "auth_method": "CHAP", "auth_username": "u1", "auth_password": "p1-secret",
    "discard": True,
}
# os-brick multipath form: one IQN per portal (one target per array controller), different LUN numbers
MP_PER_PORTAL = {
    "target_portal": "10.0.0.1:3260", "target_iqn": IQN_A, "target_lun": 4,
    "target_portals": ["10.0.0.1:3260", "10.0.1.1:3260", "[2001:db8::1]:3260"],
    "target_iqns": [IQN_A, IQN_B, IQN_B], "target_luns": [4, 5, 5],
    "auth_method": "chap", "auth_username": "u", "auth_password": "p-secret",
    "discovery_auth_method": "CHAP", "discovery_auth_username": "du", "discovery_auth_password": "dp-secret",
}
# Ironic volume target properties (openstack baremetal volume target show): mutual CHAP ("CHAP in")
IRONIC = {
    "target_iqn": IQN, "target_lun": "3", "target_portal": "203.0.113.5:3260",
    "auth_method": "CHAP", "auth_username": "node-1", "auth_password": "n1-secret",
    "auth_username_in": "array-1", "auth_password_in": "a1-secret",
}
# a whole connection_info as Nova / cinderclient hand it over
CONN_INFO = {"driver_volume_type": "iscsi", "data": copy.deepcopy(LVM_CHAP), "serial": "7b3cd3f0"}


CASES = [
    pytest.param(LVM_SINGLE, {}, {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0]},
                 id="cinder-lvm-single-path-no-chap"),
    pytest.param(LVM_CHAP, {}, {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0],
                                "chap_username": "KeJ2vh8X", "chap_password": "sEcReT-9f4b"},
                 id="cinder-single-path-chap"),
    pytest.param(CONN_INFO, {}, {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0],
                                 "chap_username": "KeJ2vh8X", "chap_password": "sEcReT-9f4b"},
                 id="whole-connection-info"),
    pytest.param(MP_SAME, {}, {"portals": ["192.0.2.10:3260", "198.51.100.10:3260"], "iqn": [IQN], "lun": [1],
                               "chap_username": "u1", "chap_password": "p1-secret"},
                 id="multipath-same-target-two-portals"),
    pytest.param(MP_PER_PORTAL, {}, {
        "portals": ["10.0.0.1:3260", "10.0.1.1:3260", "[2001:db8::1]:3260"], "iqn": [IQN_A, IQN_B, IQN_B],
        "lun": [4, 5, 5], "chap_username": "u", "chap_password": "p-secret",
        "discovery_chap_username": "du", "discovery_chap_password": "dp-secret"},
        id="multipath-iqn-per-portal-discovery-chap"),
    pytest.param(IRONIC, {}, {"portals": ["203.0.113.5:3260"], "iqn": [IQN], "lun": [3],
                              "chap_username": "node-1", "chap_password": "n1-secret",
                              "chap_username_in": "array-1", "chap_password_in": "a1-secret"},
                 id="ironic-volume-target-mutual-chap"),
    pytest.param(LVM_SINGLE, {"multipath": True}, {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0],
                                                   "discover": "always"},
                 id="single-form-multipath-discovers-the-other-portals"),
    pytest.param(MP_SAME, {"multipath": False}, {
        "portals": ["192.0.2.10:3260", "198.51.100.10:3260"], "iqn": [IQN], "lun": [1], "multipath": "off",
        "chap_username": "u1", "chap_password": "p1-secret"}, id="multipath-form-without-multipath"),
    pytest.param({"target_portal": "192.0.2.10", "target_lun": 2}, {},
                 {"portals": ["192.0.2.10"], "lun": [2]}, id="no-iqn-the-module-discovers"),
    pytest.param({"target_portal": "192.0.2.10:3260", "target_iqn": IQN, "auth_method": "None",
                  "auth_username": "stack", "auth_password": "password"}, {},
                 {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0]},
                 id="auth-method-None-string-ignores-the-credentials"),
    pytest.param({"target_portal": "192.0.2.10:3260", "target_iqn": IQN, "target_lun": 0}, {"wwid": "36001405abc"},
                 {"portals": ["192.0.2.10:3260"], "iqn": [IQN], "lun": [0], "wwid": "36001405abc"},
                 id="wwid-passed-in"),
]


@pytest.mark.parametrize("props, kwargs, expected", CASES)
def test_module_args(props, kwargs, expected):
    before = copy.deepcopy(props)
    assert f(props, **kwargs) == expected
    assert props == before  # the input is not modified


ROLE_CASES = [
    pytest.param(LVM_CHAP, {"name": "data"}, {
        "name": "data", "portals": ["192.0.2.10:3260"], "iqn": IQN, "lun": 0,
        "chap_username": "KeJ2vh8X", "chap_password": "sEcReT-9f4b"}, id="role-single"),
    pytest.param(MP_PER_PORTAL, {"name": "root"}, {
        "name": "root", "portals": ["10.0.0.1:3260", "10.0.1.1:3260", "[2001:db8::1]:3260"],
        "iqns": [IQN_A, IQN_B, IQN_B], "luns": [4, 5, 5], "chap_username": "u", "chap_password": "p-secret",
        "discovery_chap_username": "du", "discovery_chap_password": "dp-secret"}, id="role-iqns-luns-per-portal"),
    pytest.param(MP_SAME, {"name": "db", "wwid": "3600a0b80001"}, {
        "name": "db", "portals": ["192.0.2.10:3260", "198.51.100.10:3260"], "iqn": IQN, "lun": 1,
        "chap_username": "u1", "chap_password": "p1-secret", "wwid": "3600a0b80001"}, id="role-multipath-same"),
    pytest.param(IRONIC, {"name": "root", "multipath": True}, {
        "name": "root", "portals": ["203.0.113.5:3260"], "iqn": IQN, "lun": 3, "discover": "always",
        "chap_username": "node-1", "chap_password": "n1-secret",
        "chap_username_in": "array-1", "chap_password_in": "a1-secret"}, id="role-ironic-discover"),
]


@pytest.mark.parametrize("props, kwargs, expected", ROLE_CASES)
def test_role_volume(props, kwargs, expected):
    assert f(props, format="role", **kwargs) == expected


ERRORS = [
    pytest.param("not a dict", {}, "expected a dict", id="not-a-dict"),
    pytest.param({"target_iqn": IQN}, {}, "no target_portal", id="no-portal"),
    pytest.param({"driver_volume_type": "rbd", "data": {"name": "vol"}}, {}, "only iscsi", id="not-iscsi"),
    pytest.param(dict(MP_SAME, target_iqns=[IQN, IQN, IQN]), {}, "target_iqns has 3 entries for 2 portal(s)",
                 id="iqns-length"),
    pytest.param(dict(MP_SAME, target_luns=[1, 2, 3]), {}, "target_luns has 3 entries for 2 portal(s)",
                 id="luns-length"),
    pytest.param(dict(MP_SAME, target_portals=["192.0.2.10:3260", "192.0.2.10:3260"]), {}, "same portal twice",
                 id="duplicate-portal"),
    pytest.param(dict(LVM_SINGLE, target_lun="x"), {}, "target_lun must be an integer", id="lun-not-int"),
    pytest.param(dict(LVM_SINGLE, target_lun=-1), {}, "must not be negative", id="lun-negative"),
    pytest.param(dict(LVM_SINGLE, target_lun=True), {}, "not a boolean", id="lun-bool"),
    pytest.param(dict(LVM_SINGLE, target_iqn=""), {}, "target_iqn is empty", id="empty-iqn"),
    pytest.param(dict(LVM_SINGLE, auth_method="CHAP", auth_username="u"), {}, "auth_password is missing",
                 id="chap-without-secret"),
    pytest.param(dict(LVM_SINGLE, auth_method="KRB5", auth_username="u", auth_password="sEcReT"), {},
                 "'KRB5' is not supported", id="unknown-auth-method"),
    pytest.param(dict(LVM_SINGLE, auth_username_in="a", auth_password_in="sEcReT"), {},
                 "mutual CHAP", id="mutual-without-chap"),
    pytest.param(dict(IRONIC, auth_password_in=None), {}, "both auth_username_in and auth_password_in",
                 id="mutual-half"),
    pytest.param(dict(MP_PER_PORTAL, discovery_auth_username_in="x", discovery_auth_password_in="sEcReT"), {},
                 "not supported by iscsi_volume", id="discovery-mutual"),
    pytest.param(LVM_SINGLE, {"format": "role"}, "needs name=", id="role-without-name"),
    pytest.param(LVM_SINGLE, {"name": "x"}, "only applies to format=role", id="name-with-module-format"),
    pytest.param(LVM_SINGLE, {"format": "yaml"}, "format must be", id="bad-format"),
    pytest.param(LVM_SINGLE, {"multipath": "yes"}, "multipath must be", id="bad-multipath"),
]


@pytest.mark.parametrize("props, kwargs, message", ERRORS)
def test_errors(props, kwargs, message):
    with pytest.raises(AnsibleFilterError) as e:
        f(props, **kwargs)
    assert message in str(e.value)
    for secret in ("sEcReT", "p-secret", "n1-secret", "a1-secret", "p1-secret"):
        assert secret not in str(e.value)


def test_credentials_without_method_warn_and_are_not_used(monkeypatch):
    warned = []
    monkeypatch.setattr(mod.display, "warning", warned.append)
    props = {"target_portal": "192.0.2.10:3260", "target_iqn": IQN, "auth_username": "u", "auth_password": "sEcReT"}
    assert "chap_username" not in f(props)
    assert len(warned) == 1 and "auth_method is not set" in warned[0] and "sEcReT" not in warned[0]


def test_registered_as_filter():
    assert mod.FilterModule().filters()["iscsi_volume_args"] is f


@pytest.mark.parametrize("props", [LVM_CHAP, MP_SAME, MP_PER_PORTAL, IRONIC], ids=["lvm", "mp", "per-portal", "ironic"])
def test_module_args_are_valid_iscsi_volume_arguments(props):
    """Every key the filter returns is an option of iscsi_volume (read from its argument spec)."""
    from unit.plugins.modules.modtest_util import import_collection_module
    options = set(import_collection_module("iscsi_volume").argument_spec())
    assert {"portals", "iqn", "lun", "chap_password", "discover"} <= options
    assert set(f(props, multipath=True)) <= options
