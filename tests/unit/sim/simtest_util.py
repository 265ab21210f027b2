# -*- coding: utf-8 -*-
"""Constants and helpers shared by the simulated host's tests."""

IQN = "iqn.2003-01.org.example.array:vol1"
IQN2 = "iqn.2003-01.org.example.array:vol2"
P1, P2, P3 = "10.0.0.1:3260", "10.0.0.2:3260", "10.0.0.3:3260"


def sh(h, *argv, **kw):
    """Run a fake command as a subprocess through the connector's Runner (never raises)."""
    kw.setdefault("timeout", 60)
    return h.runner().run(list(argv), check=False, **kw)


def node(iqn, portal, *rest):
    return ["iscsiadm", "-m", "node", "-T", iqn, "-p", portal] + list(rest)


def links(h, directory):
    """{name: link text} of a /dev/disk/... directory."""
    return dict((e, h.fs.readlink("%s/%s" % (directory, e))) for e in h.fs.listdir(directory))
