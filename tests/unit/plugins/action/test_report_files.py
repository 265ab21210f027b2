# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage.report_files (plugins/action/report_files.py): the controller-side writer of the fleet report."""

import importlib.util
import os
import stat
from types import SimpleNamespace

import pytest

pytest.importorskip("ansible")

from ansible.errors import AnsibleActionFail  # noqa: E402
from ansible.playbook.play_context import PlayContext  # noqa: E402
from ansible.playbook.task import Task  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(HERE))))


def _plugin():
    source = os.path.join(REPO, "plugins", "action", "report_files.py")
    spec = importlib.util.spec_from_file_location("brick_report_files", source)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ACTION = _plugin()


def run(args, check_mode=False):
    task = Task()
    task.args = args
    task.check_mode = check_mode
    connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))  # the action never uses it
    action = ACTION.ActionModule(task, connection, PlayContext(), None, None, None)
    return action.run(task_vars={})


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_writes_creates_the_directory_and_is_idempotent(tmp_path):
    dest = tmp_path / "a" / "b"
    res = run({"dest": str(dest), "files": {"r.json": "{}\n", "r.txt": "hello\n"}})
    assert res["changed"] is True and res["written"] == [str(dest / "r.json"), str(dest / "r.txt")]
    assert (dest / "r.json").read_text() == "{}\n" and (dest / "r.txt").read_text() == "hello\n"
    assert mode_of(str(dest / "r.txt")) == 0o644 and mode_of(str(dest)) & 0o777 == 0o755
    assert sorted(os.listdir(str(dest))) == ["r.json", "r.txt"]  # no temporary file left
    again = run({"dest": str(dest), "files": {"r.json": "{}\n", "r.txt": "hello\n"}})
    assert again["changed"] is False and again["written"] == []
    one = run({"dest": str(dest), "files": {"r.json": "{}\n", "r.txt": "bye\n"}})
    assert one["written"] == [str(dest / "r.txt")] and (dest / "r.txt").read_text() == "bye\n"


def test_a_wrong_mode_alone_is_a_change(tmp_path):
    run({"dest": str(tmp_path), "files": {"r.txt": "x"}})
    os.chmod(str(tmp_path / "r.txt"), 0o600)
    res = run({"dest": str(tmp_path), "files": {"r.txt": "x"}})
    assert res["changed"] is True and mode_of(str(tmp_path / "r.txt")) == 0o644
    res = run({"dest": str(tmp_path), "files": {"r.txt": "x"}, "mode": "0640"})
    assert res["changed"] is True and mode_of(str(tmp_path / "r.txt")) == 0o640


def test_check_mode_writes_nothing_and_says_what_would_change(tmp_path):
    dest = tmp_path / "new"
    res = run({"dest": str(dest), "files": {"r.txt": "x"}}, check_mode=True)
    assert res["changed"] is True and res["written"] == [str(dest / "r.txt")]
    assert not dest.exists()


def test_a_symlink_in_place_of_a_file_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    dest = tmp_path / "rep"
    dest.mkdir()
    os.symlink(str(victim), str(dest / "r.txt"))
    res = run({"dest": str(dest), "files": {"r.txt": "keep me"}})  # same content through the link: still a change
    assert res["changed"] is True
    assert not os.path.islink(str(dest / "r.txt")) and (dest / "r.txt").read_text() == "keep me"
    run({"dest": str(dest), "files": {"r.txt": "report"}})
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    ({"files": {"r.txt": "x"}}, "missing required arguments: dest"),
    ({"dest": "/tmp/x", "files": {}}, "non-empty dictionary"),
    ({"dest": "/tmp/x", "files": ["r.txt"]}, "files"),
    ({"dest": "/tmp/x", "files": {"r.txt": "x"}, "owner": "root"}, "owner"),
    ({"dest": "/tmp/x", "files": {"../r.txt": "x"}}, "plain names"),
    ({"dest": "/tmp/x", "files": {"..": "x"}}, "plain names"),
    ({"dest": "/tmp/x", "files": {"a/b": "x"}}, "plain names"),
    ({"dest": "/tmp/x", "files": {"r.txt": {"a": 1}}}, "must be a string"),
    ({"dest": "/tmp/x", "files": {"r.txt": "x"}, "mode": "rw-r--r--"}, "octal"),
    ({"dest": "/tmp/x", "files": {"r.txt": "x"}, "mode": "4755"}, "beyond 0777"),
])
def test_bad_arguments_fail_before_anything_is_written(tmp_path, args, message):
    if "dest" in args:
        args = dict(args, dest=str(tmp_path / "out"))
    with pytest.raises(AnsibleActionFail) as ei:
        run(args)
    assert message in str(ei.value)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_directory_fails_with_its_name(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(AnsibleActionFail) as ei:
        run({"dest": str(blocker / "sub"), "files": {"r.txt": "x"}})
    assert str(blocker / "sub") in str(ei.value)
