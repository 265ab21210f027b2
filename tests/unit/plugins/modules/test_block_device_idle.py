# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""block_device_idle through the module's main(), against the simulated host."""

import os
import time

import pytest

ansible = pytest.importorskip("ansible")
from unit.plugins.modules.modtest_util import call_module as run_module, import_collection_module  # noqa: E402


@pytest.fixture(scope="module")
def module():
    return import_collection_module("block_device_idle")


@pytest.fixture
def trap_bin(tmp_path):
    """A PATH whose fuser (and everything else we might run) records that it ran."""
    bindir = tmp_path / "trapbin"
    bindir.mkdir()
    marker = tmp_path / "ran"
    for tool in ("fuser", "udevadm", "blockdev", "lsof"):
        p = bindir / tool
        p.write_text("#!/bin/sh\necho \"$0 $*\" >> %s\nexit 1\n" % marker)
        p.chmod(0o755)
    return str(bindir), marker


# Bad device paths: InvalidInput before anything runs. The first column is the id.
BAD_PATHS = [
    ("outside-dev", "/etc/passwd"),
    ("traversal", "/dev/../etc/shadow"),
    ("semicolon", "/dev/sdb;reboot"),
    ("command-substitution", "/dev/$(reboot)"),
    ("space", "/dev/sd b"),
    ("backticks", "/dev/`id`"),
    ("relative", "sdb"),
    ("double-slash", "/dev//sdb"),
]


@pytest.mark.parametrize("bad", [pytest.param(bad, id=name) for name, bad in BAD_PATHS])
def test_bad_path_fails_before_anything_runs(module, capsys, monkeypatch, tmp_path, trap_bin, bad):
    bindir, marker = trap_bin
    monkeypatch.setenv("PATH", bindir)
    monkeypatch.setenv("BRICK_STORAGE_ROOT", str(tmp_path))
    failed, res = run_module(module, capsys, {"device": bad, "use_fuser": "always"})
    assert failed
    assert res["error"] == "InvalidInput"
    assert not marker.exists()
    assert res["changed"] is False


@pytest.fixture
def minihost(monkeypatch, minihost):
    """The shared MiniHost (tests/unit/conftest.py), which the module sees through BRICK_STORAGE_ROOT."""
    monkeypatch.setenv("BRICK_STORAGE_ROOT", minihost.root)
    monkeypatch.setenv("PATH", minihost.bindir + os.pathsep + "/usr/bin:/bin")
    return minihost


def test_idle_device(module, capsys, minihost):
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    minihost.add_partition(dev, 2)
    failed, res = run_module(module, capsys, {"device": "/dev/disk/by-id/scsi-36001405sdb"})
    assert not failed and res["changed"] is False
    assert res["idle"] is True and res["checks"] == 1 and res["method"] == "fuser"
    assert res["device"] == "/dev/sdb" and res["partitions"] == ["/dev/sdb1", "/dev/sdb2"]
    assert res["blockers"] == []


def test_waits_for_release(module, capsys, minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 88, "udisksd", seconds=0.6)
    failed, res = run_module(module, capsys, {"device": dev, "interval": 0.2, "use_fuser": "never"})
    assert not failed and res["idle"] and res["method"] == "proc"
    assert 0.6 <= res["waited"] <= 0.85 and res["checks"] in (4, 5)


def test_busy_device_failure_message(module, capsys, minihost):
    dev = minihost.add_disk()
    part = minihost.add_partition(dev, 1)
    minihost.hold_open(part, 4242, "dd", cmdline="dd if=/dev/zero of=/dev/sdb1 bs=1M")
    minihost.mount(part, "/mnt/old")
    failed, res = run_module(module, capsys, {"device": dev, "interval": 0.05, "max_retries": 3,
                                              "show_cmdline": True})
    assert failed and res["changed"] is False
    assert res["error"] == "DeviceBusy" and res["checks"] == 4
    assert "pid 4242 (dd) has /dev/sdb1 open: dd if=/dev/zero of=/dev/sdb1 bs=1M" in res["msg"]
    assert "/dev/sdb1 is mounted on /mnt/old" in res["msg"]
    assert "unmount" in res["msg"]
    assert {b["kind"] for b in res["blockers"]} == {"process", "mount"}


def test_check_mode_inspects_once_and_does_not_fail(module, capsys, minihost):
    dev = minihost.add_disk()
    minihost.hold_open(dev, 5, "blkid")
    t0 = time.monotonic()
    failed, res = run_module(module, capsys, {"device": dev, "interval": 5, "max_retries": 20}, check_mode=True)
    assert time.monotonic() - t0 < 1.0
    assert not failed and res["changed"] is False
    assert res["idle"] is False and res["checks"] == 1 and res["waited"] == 0.0
    assert res["blockers"][0]["pid"] == 5
    # the reason is in msg (warnings go to the controller's display, not always into the result)
    assert "check mode does not wait" in res["msg"]


def test_check_mode_still_fails_for_a_missing_device(module, capsys, minihost):
    failed, res = run_module(module, capsys, {"device": "/dev/sdz"}, check_mode=True)
    assert failed and res["error"] == "DeviceNotFound" and "does not exist" in res["msg"]


def test_fuser_always_without_fuser(module, capsys, minihost, monkeypatch, tmp_path):
    dev = minihost.add_disk()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    failed, res = run_module(module, capsys, {"device": dev, "use_fuser": "always"})
    assert failed and res["error"] == "CommandNotFound" and "'fuser' was not found" in res["msg"]
    failed, res = run_module(module, capsys, {"device": dev, "use_fuser": "auto"})
    assert not failed and res["method"] == "proc"


def test_timeout_option(module, capsys, minihost):
    dev = minihost.add_disk()
    minihost.swapon(dev)
    failed, res = run_module(module, capsys, {"device": dev, "interval": 0.1, "timeout": 0.3, "max_retries": 0})
    # checks at 0, 0.1, 0.2 and 0.3 s: 4 on an idle machine; a loaded one (the test run's lab stages run next to
    # the unit tests) may fit one less.  More than one check proves the timeout, not max_retries=0, set the bound.
    assert failed and 2 <= res["checks"] <= 4 and "timeout 0.3s" in res["msg"], res
    assert "/dev/sdb is an active swap area" in res["msg"]


# -- argv shapes ---------------------------------------------------------------------------------------------------
# id, use_fuser, the commands the check starts (fuser once for the device and once per partition; never with the
# /proc scan)
ARGV = [
    ("fuser-when-installed", "auto", ["fuser /dev/sdb", "fuser /dev/sdb1"]),
    ("fuser-always", "always", ["fuser /dev/sdb", "fuser /dev/sdb1"]),
    ("proc-scan-only", "never", []),
]


@pytest.mark.parametrize("use_fuser,expected", [pytest.param(*case[1:], id=case[0]) for case in ARGV])
@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check-mode"])
def test_argv_shapes(module, capsys, monkeypatch, minihost, tmp_path, use_fuser, expected, check_mode):
    bindir = tmp_path / "logbin"
    bindir.mkdir()
    log = tmp_path / "argv.log"
    fuser = bindir / "fuser"  # finds no process (exit 1), and logs its argv
    fuser.write_text("#!/bin/sh\necho \"$(basename \"$0\") $*\" >> %s\nexit 1\n" % log)
    fuser.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + "/usr/bin:/bin")
    dev = minihost.add_disk()
    minihost.add_partition(dev, 1)
    failed, res = run_module(module, capsys, {"device": dev, "use_fuser": use_fuser}, check_mode=check_mode)
    assert not failed and res["idle"] and res["method"] == ("proc" if use_fuser == "never" else "fuser"), res
    assert (log.read_text().splitlines() if log.exists() else []) == expected
