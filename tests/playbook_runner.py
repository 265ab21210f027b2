# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Run a playbook of this checkout's roles with ansible-playbook (local connection), for the role tests."""

import json
import os
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def play(top, playbook, inventory_vars, *extra):
    coll = os.path.join(top, "collections", "ansible_collections", "brick")
    if not os.path.exists(coll):
        os.makedirs(coll)
        os.symlink(REPO, os.path.join(coll, "storage"))
    inv = os.path.join(top, "inventory.json")
    with open(inv, "w") as f:
        json.dump({"all": {"vars": dict({"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                                        **inventory_vars), "hosts": {"node": {}}}}, f)
    pb = os.path.join(top, "play.yml")
    with open(pb, "w") as f:
        yaml.safe_dump(playbook, f)
    env = dict(os.environ)
    # this checkout first; community.general (parted) from scripts/setup.sh's collections or the environment
    paths = [os.path.join(top, "collections"), os.path.join(REPO, ".ansible", "collections")]
    paths += [x for x in os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if x]
    env.update(ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(paths), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCAL_TEMP=os.path.join(top, "tmp"), ANSIBLE_RETRY_FILES_ENABLED="0",
               ANSIBLE_DEPRECATION_WARNINGS="0")
    p = subprocess.run(["ansible-playbook", "-vvv", "-i", inv, pb] + list(extra), env=env, cwd=top,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=600,
                       check=False)
    return p.returncode, p.stdout
