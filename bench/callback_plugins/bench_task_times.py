# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Callback of bench/bench_audit.py: the wall time of each task of a playbook run, as JSON lines.

Enabled only by the bench (``ANSIBLE_CALLBACK_PLUGINS`` = this directory, ``ANSIBLE_CALLBACKS_ENABLED`` =
``bench_task_times``); it writes to the file named by ``BRICK_BENCH_TASK_TIMES``.  A task's time runs from its
start to the start of the next task (or the end of the run), the way the linear strategy runs them.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_task_times
type: aggregate
short_description: wall time per task, for bench/bench_audit.py
description: Writes one JSON line per task (name, seconds) to the file in BRICK_BENCH_TASK_TIMES.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._name = None
        self._t0 = None
        self._path = os.environ.get("BRICK_BENCH_TASK_TIMES")

    def _mark(self, name):
        now = time.monotonic()
        if self._name is not None and self._path:
            with open(self._path, "a") as f:
                f.write(json.dumps({"task": self._name, "s": round(now - self._t0, 3)}) + "\n")
        self._name, self._t0 = name, now

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._mark(task.get_name())

    def v2_playbook_on_handler_task_start(self, task):
        self._mark(task.get_name())

    def v2_playbook_on_stats(self, stats):
        self._mark(None)
