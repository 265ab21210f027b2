# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""An attach that logs in but finds no LUN (the array does not map it to this host) names the initiator's IQN in
its hint, read from /etc/iscsi/initiatorname.iscsi: that is the name the array's ACL must list."""

import pytest

from connector import iscsi
from connector.errors import AttachError
from sim import SimHost

IQN = "iqn.2003-01.org.example.array:vol1"
P1 = "10.0.0.1:3260"


def fail_attach(h):
    h.add_target(IQN, portals=[P1], luns={0: 64})
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, device_wait=0.3, multipath_wait=1.0, login_timeout=2)
    with pytest.raises(AttachError) as ei:
        c.connect(iscsi.build_paths([P1], [IQN], [5]))  # LUN 5 is not mapped
    return ei.value


def test_the_hint_names_the_initiator(tmp_path):
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    with open(h.fs.path("/etc/iscsi/initiatorname.iscsi"), "w") as f:
        f.write("## comment\nInitiatorName=iqn.1993-08.org.debian:01:cafe0001\n")
    e = fail_attach(h)
    assert "iqn.1993-08.org.debian:01:cafe0001" in e.hint and "ACL" in e.hint, e.hint


def test_the_hint_without_a_name(tmp_path):
    h = SimHost(str(tmp_path / "host"))
    h.set_fault("time_scale", 0.01)
    if h.fs.exists("/etc/iscsi/initiatorname.iscsi"):
        h.fs.unlink("/etc/iscsi/initiatorname.iscsi")
    e = fail_attach(h)
    assert "whose name is unknown" in e.hint, e.hint
