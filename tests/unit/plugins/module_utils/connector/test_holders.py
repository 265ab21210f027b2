"""Issue 14: a process that holds a device is named by pid, process name and user, never by its command line
(which may carry someone else's secret), unless the caller asks for the command line."""
import os
import pwd
import subprocess

import pytest

from connector import blockers, idle
from connector.errors import DeviceBusy
from connector.hostfs import HostFS

SECRET = "--password=Someone-elses-secret"


def hold(host, dev, pid=4242, uid=1001):
    host.hold_open(dev, pid, "mysql", cmdline="mysql -uroot %s /dev/sdb" % SECRET)
    host._w("/proc/%d/status" % pid, "Name:\tmysql\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t%d\t%d\t%d\t%d\n"
            % (uid, uid, uid, uid))
    host._w("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndbadmin:x:%d:%d::/home/db:/bin/sh\n" % (uid, uid))


@pytest.mark.parametrize("use_fuser", ["always", "never"])
def test_blocker_is_pid_name_and_user_by_default(minihost, use_fuser):
    dev = minihost.add_disk()
    hold(minihost, dev)
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner(), use_fuser=use_fuser)
    assert res["blockers"] == [{"kind": "process", "device": "/dev/sdb", "pid": 4242, "comm": "mysql",
                                "uid": 1001, "user": "dbadmin"}]
    assert idle.describe(res["blockers"][0]) == "pid 4242 (mysql, user dbadmin) has /dev/sdb open"


def test_busy_error_carries_no_command_line(minihost):
    dev = minihost.add_disk()
    hold(minihost, dev)
    with pytest.raises(DeviceBusy) as ei:
        idle.wait_idle(dev, interval=0.05, max_retries=1, fs=minihost.fs, runner=minihost.runner())
    text = str(ei.value) + repr(ei.value.details)
    assert "Someone-elses-secret" not in text and "mysql -uroot" not in text
    assert "pid 4242 (mysql, user dbadmin) has /dev/sdb open" in str(ei.value)


def test_command_line_only_on_request(minihost):
    dev = minihost.add_disk()
    hold(minihost, dev)
    res = idle.inspect(dev, fs=minihost.fs, runner=minihost.runner(), cmdline=True)
    assert res["blockers"][0]["cmdline"] == "mysql -uroot %s /dev/sdb" % SECRET
    assert SECRET in idle.describe(res["blockers"][0])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_a_real_process_of_another_user():
    """On the real /proc: a process of user nobody whose argv holds a secret is named 'nobody', and its argv
    is not read at all unless asked for."""
    nobody = pwd.getpwnam("nobody")

    def drop():
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    p = subprocess.Popen(["sh", "-c", "echo ready; sleep 30; :", "sh", SECRET], stdout=subprocess.PIPE,
                         preexec_fn=drop, universal_newlines=True, cwd="/")
    try:
        assert p.stdout.readline().strip() == "ready"

        class Dev(object):
            path = "/dev/null"
        b = blockers._process_blocker(HostFS("/"), Dev, p.pid)
        assert b["user"] == "nobody" and b["uid"] == nobody.pw_uid
        assert b["comm"] == "sh"
        assert "cmdline" not in b and SECRET not in repr(b)
        assert SECRET in blockers._process_blocker(HostFS("/"), Dev, p.pid, cmdline=True)["cmdline"]
    finally:
        p.kill()
        p.wait()
