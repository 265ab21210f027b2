# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Simulated iSCSI initiator host for unit tests, fault injection and benchmarks (see README.md).

``from sim import SimHost`` (also ``SimHostFS``, ``SimDiff``, ``SimError``).  The import is lazy so the fake
commands in ``bin/`` (which import ``sim.cli``) do not pay for the connector's HostFS; hence no ``__all__``
(its names would not be defined in this module).
"""


def __getattr__(name):
    if name in ("SimHost", "SimHostFS", "SimDiff"):
        from . import host
        return getattr(host, name)
    if name == "SimError":
        from .core import SimError
        return SimError
    raise AttributeError("module 'sim' has no attribute '%s'" % name)
