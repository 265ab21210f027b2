# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Make the connector (``from connector.runner import Runner``) and ``tests`` helpers importable."""

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_REPO, "tests"), os.path.join(_REPO, "plugins", "module_utils")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
