# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.report_files: write report files on the controller, in the controller's own process.

The orphan audit wrote its two report files with file + copy + template, three module runs on localhost: about
2 s of a 13 s audit of 50 hosts (bench/bench_audit.py). Writing a few files needs no module: this action does it
where it runs, atomically (HostFS.write_private: a temporary file in the same directory, fsync, rename), and only
when the content differs."""

from __future__ import annotations

import os
import stat

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.brick.storage.plugins.module_utils.connector.hostfs import HostFS


def _check_name(name):
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
        raise AnsibleActionFail("report_files: file names are plain names inside dest, got %r" % (name,))
    return name


def _mode(value):
    try:
        mode = int(str(value), 8)
    except ValueError:
        raise AnsibleActionFail("report_files: mode must be an octal string such as '0644', got %r" % (value,)) from None
    if mode & ~0o777:
        raise AnsibleActionFail("report_files: mode %r has bits beyond 0777" % (value,))
    return mode


def _same(path, data, mode):
    try:
        st = os.lstat(path)  # a link is not a regular file here: it is replaced, never followed
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode or st.st_size != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dest", "files", "mode"))
    ARGUMENT_SPEC = {"dest": {"type": "path", "required": True},
                     "files": {"type": "dict", "required": True},
                     "mode": {"type": "str", "default": "0644"}}

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(self.ARGUMENT_SPEC)
        files = args["files"]
        if not files:
            raise AnsibleActionFail("report_files: files must be a non-empty dictionary of file name: content")
        mode = _mode(args["mode"])
        dest = os.path.abspath(args["dest"])
        todo = []
        for name, content in sorted(files.items()):
            if not isinstance(content, str):
                raise AnsibleActionFail("report_files: the content of %s must be a string" % _check_name(name))
            path = os.path.join(dest, _check_name(name))
            todo.append((path, content, not _same(path, content.encode("utf-8"), mode)))
        written = [path for path, _content, change in todo if change]
        result.update(changed=bool(written), dest=dest, files=[path for path, _content, _change in todo],
                      written=written)
        if self._task.check_mode or not written:
            return result
        fs = HostFS("/")
        try:
            os.makedirs(dest, mode=0o755, exist_ok=True)
            for path, content, change in todo:
                if change:
                    fs.write_private(path, content, mode=mode)  # temporary file, fsync, rename
        except OSError as e:
            raise AnsibleActionFail("report_files: cannot write in %s: %s" % (dest, to_text(e.strerror or e))) from e
        return result
