# -*- coding: utf-8 -*-
"""The simulated iscsiadm's node-record layout is open-iscsi 2.1.8's (tests/lab/real-sysfs-notes.txt, g.; idbm.c
idbm_rec_write): ``--op new`` without a tpgt writes the flat FILE ``nodes/IQN/ADDR,PORT`` (node.tpgt = -1, the iface
named inside) and overwrites an existing one whatever its iface; a SendTargets discovery writes
``nodes/IQN/ADDR,PORT,TPGT/IFACE`` and replaces a flat file of the same portal; an ``--op new`` after a discovery
adds the flat file beside the discovered record."""

from simtest_util import IQN, P1, P2, node


def ia(h, *args):
    return h.run("iscsiadm", *args)


def _base(h):
    return h.fs.path("/etc/iscsi/nodes/%s" % IQN)


def _setting(h, record, key):
    values = [line.split("=", 1)[1].strip() for line in (h.fs.read_raw(record) or "").splitlines()
              if line.split("=", 1)[0].strip() == key]
    return values[-1] if values else None


def test_op_new_without_tpgt_writes_the_flat_file_with_the_iface_inside(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    rc, _out, err = ia(host, *node(IQN, P1, "-I", "default", "--op", "new")[1:])
    assert rc == 0, err
    record = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260"]
    assert not host.fs.isdir(record) and host.fs.is_private_file(record)
    assert _setting(host, record, "iface.iscsi_ifacename") == "default"
    assert _setting(host, record, "node.tpgt") == "-1"
    # listed as open-iscsi prints a tpgt of -1 (unsigned)
    assert ia(host, "-m", "node") == (0, "10.0.0.1:3260,4294967295 %s\n" % IQN, "")


def test_op_new_overwrites_the_flat_file_of_another_iface(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.fs.write_private("/etc/iscsi/ifaces/iser", "iface.iscsi_ifacename = iser\n")
    assert ia(host, *node(IQN, P1, "-I", "iser", "--op", "new")[1:])[0] == 0
    assert ia(host, *node(IQN, P1, "-I", "iser", "--op", "update", "-n", "node.startup", "-v", "manual")[1:])[0] == 0
    assert ia(host, *node(IQN, P1, "-I", "default", "--op", "new")[1:])[0] == 0
    record = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260"]
    assert _setting(host, record, "iface.iscsi_ifacename") == "default"
    assert _setting(host, record, "node.startup") != "manual"
    # the iser record is gone: a lookup on that iface finds nothing
    assert ia(host, *node(IQN, P1, "-I", "iser", "--op", "show")[1:])[0] == 21


def test_a_lookup_on_another_iface_does_not_match_the_flat_file(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    host.fs.write_private("/etc/iscsi/ifaces/iser", "iface.iscsi_ifacename = iser\n")
    ia(host, *node(IQN, P1, "-I", "default", "--op", "new")[1:])
    rc, _out, err = ia(host, *node(IQN, P1, "-I", "iser", "--op", "update", "-n", "node.startup", "-v", "manual")[1:])
    assert (rc, err) == (21, "iscsiadm: No records found\n")
    assert ia(host, *node(IQN, P1, "-I", "iser", "--op", "delete")[1:])[0] == 21
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260"]


def test_a_discovery_replaces_the_flat_file_and_a_later_op_new_goes_beside(host):
    host.add_target(IQN, portals=[P1, P2], luns={0: 64})
    ia(host, *node(IQN, P1, "--op", "new")[1:])
    assert ia(host, "-m", "discovery", "-t", "sendtargets", "-p", P1)[0] == 0
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260,1", "10.0.0.2,3260,1"]
    assert ia(host, *node(IQN, P1, "--op", "new")[1:])[0] == 0
    assert host.fs.listdir("/etc/iscsi/nodes/" + IQN) == ["10.0.0.1,3260", "10.0.0.1,3260,1", "10.0.0.2,3260,1"]
    rc, out, _err = ia(host, "-m", "node")
    assert rc == 0 and out.splitlines() == ["10.0.0.1:3260,4294967295 %s" % IQN, "10.0.0.1:3260,1 %s" % IQN,
                                            "10.0.0.2:3260,1 %s" % IQN]
    # a login through both records of the portal: one session, the second one says "session exists" (rc 15)
    rc, _out, err = ia(host, *node(IQN, P1, "--login")[1:])
    assert rc == 15 and "1 already present" in err and len(host.sessions(IQN)) == 1


def test_delete_of_the_flat_record_removes_the_file_and_the_empty_target_dir(host):
    host.add_target(IQN, portals=[P1], luns={0: 64})
    before = host.snapshot()
    ia(host, *node(IQN, P1, "--op", "new")[1:])
    assert ia(host, *node(IQN, P1, "--op", "delete")[1:])[0] == 0
    assert host.snapshot() == before
    assert host.fs.isdir("/etc/iscsi/nodes")
