# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Which sessions belong to a path: kept for the modules that import it; the rules live in ``volume.py``."""

from __future__ import annotations

from .volume import address_key, session_matches

__all__ = ["address_key", "session_matches"]
