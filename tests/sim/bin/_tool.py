# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The fake commands of the simulated host: ``python3 bin/_tool.py TOOL [ARGS...]``.

Every ``bin/TOOL`` (iscsiadm, multipath, ...) is a ``#!/bin/sh`` wrapper that execs this file with its own name:
ansible-test's shebang check allows no ``python3`` shebang, and ``python`` is not on every PATH.  This file finds
the sim via ``BRICK_SIM_ROOT``, imports ``sim.cli`` relative to its own location and never imports the connector.
"""
import os
import sys


def run():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from sim.cli import main  # after the sys.path insert
    if len(sys.argv) < 2:
        sys.stderr.write("usage: %s TOOL [ARGS...]\n" % sys.argv[0])
        return 2
    return main(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    sys.exit(run())
