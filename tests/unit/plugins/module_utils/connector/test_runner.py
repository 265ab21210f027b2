"""Unit tests of the command runner (real processes, no mocks of subprocess)."""
import os
import sys
import time

import pytest

from connector.errors import CommandError, CommandNotFound, CommandTimeout
from connector.runner import MASK, Runner, backoff_delays


def test_argv_only_never_a_shell(tmp_path):
    r = Runner()
    with pytest.raises(TypeError):
        r.run("echo hi")
    marker = tmp_path / "pwned"
    # shell metacharacters are passed literally to the program, never interpreted
    res = r.run(["echo", "$(touch %s); echo x" % marker])
    assert res.stdout.strip() == "$(touch %s); echo x" % marker
    assert not marker.exists()


def test_timeout_kills_the_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = "import os,time; open(%r,'w').write(str(os.getpid())); time.sleep(60)" % str(pidfile)
    r = Runner()
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout) as ei:
        r.run([sys.executable, "-c", script], timeout=0.5)
    took = time.monotonic() - t0
    assert took < 3.0, took
    assert "0.5" in str(ei.value)
    pid = int(pidfile.read_text())
    # the process is gone (killed), not orphaned
    for _poll in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("process %d survived its timeout" % pid)
    assert r.history[-1]["timed_out"] is True


def test_timeout_kills_grandchildren_too(tmp_path):
    pidfile = tmp_path / "gc.pid"
    # a shell-free parent that spawns a sleeping grandchild
    inner = "import os,time; open(%r,'w').write(str(os.getpid())); time.sleep(60)" % str(pidfile)
    script = "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c',%r]); time.sleep(60)" % inner
    r = Runner()
    with pytest.raises(CommandTimeout):
        r.run([sys.executable, "-c", script], timeout=1.0)
    pid = int(pidfile.read_text())
    for _poll in range(500):  # up to 10 s: on a loaded machine its new parent may reap it late
        if not _alive(pid):
            break
        time.sleep(0.02)
    else:
        pytest.fail("grandchild %d survived" % pid)


def _alive(pid):
    """Running, not just a zombie that its (new) parent has not reaped yet: a killed process is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.parametrize("retries,delay,factor,cap,expected", [
    (0, 1, 2, None, []),
    (3, 1, 2, None, [1, 2, 4]),
    (4, 0.5, 3, None, [0.5, 1.5, 4.5, 13.5]),
    (5, 1, 2, 5, [1, 2, 4, 5, 5]),
])
def test_backoff_sequence(retries, delay, factor, cap, expected):
    assert backoff_delays(retries, delay, factor, cap) == expected


def test_retries_sleep_with_exponential_backoff(tmp_path):
    slept = []
    r = Runner(sleep=slept.append)
    with pytest.raises(CommandError) as ei:
        r.run(["false"], retries=3, delay=0.5, factor=2)
    assert slept == [0.5, 1.0, 2.0]
    assert ei.value.attempts == 4
    assert r.count("false") == 4


def test_retry_stops_at_first_success(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    script = ("import sys;p=%r;n=int(open(p).read())+1;open(p,'w').write(str(n));sys.exit(0 if n>=3 else 6)"
              % str(counter))
    slept = []
    r = Runner(sleep=slept.append)
    res = r.run([sys.executable, "-c", script], retries=5, delay=0.1, retry_codes=(6,))
    assert res.rc == 0 and res.attempts == 3
    assert slept == [0.1, 0.2]


def test_retry_codes_limit_what_is_retried():
    slept = []
    r = Runner(sleep=slept.append)
    with pytest.raises(CommandError) as ei:
        r.run([sys.executable, "-c", "import sys; sys.exit(21)"], retries=3, retry_codes=(6,))
    assert ei.value.rc == 21 and ei.value.attempts == 1 and slept == []


@pytest.mark.parametrize("code,ok,raises", [(0, (0,), False), (21, (0, 21), False), (15, (0, 15, 255), False),
                                            (21, (0,), True), (1, (0, 2), True)])
def test_accepted_exit_codes(code, ok, raises):
    r = Runner()
    argv = [sys.executable, "-c", "import sys; sys.exit(%d)" % code]
    if raises:
        with pytest.raises(CommandError) as ei:
            r.run(argv, ok_codes=ok)
        assert ei.value.rc == code
    else:
        assert r.run(argv, ok_codes=ok).rc == code


def test_check_false_returns_failure_without_raising():
    r = Runner()
    res = r.run(["false"], check=False)
    assert res.rc == 1 and not res.ok


def test_secrets_masked_in_history_output_and_errors():
    r = Runner(secrets=["hunter2"])
    r.add_secret("s3cr3t-in")
    script = "import sys; print('pw=hunter2'); sys.stderr.write('bad s3cr3t-in\\n'); sys.exit(24)"
    with pytest.raises(CommandError) as ei:
        r.run([sys.executable, "-c", script, "--password", "hunter2", "-v", "per-call-pw"],
              secrets=["per-call-pw"])
    e = ei.value
    for text in (str(e), e.stdout, e.stderr, " ".join(e.argv), repr(r.history)):
        assert "hunter2" not in text and "s3cr3t-in" not in text and "per-call-pw" not in text
    assert MASK in " ".join(e.argv) and MASK in e.stderr


def test_missing_tool_is_a_clear_error():
    r = Runner()
    with pytest.raises(CommandNotFound) as ei:
        r.run(["brick-no-such-tool"])
    assert "brick-no-such-tool" in str(ei.value) and "not found" in str(ei.value)
    assert r.which("brick-no-such-tool") is None
    assert r.which("sh")


def test_history_records_every_call_and_environment_is_c_locale():
    r = Runner(env={"LANG": "de_DE.UTF-8"})
    out = r.run([sys.executable, "-c", "import os; print(os.environ['LC_ALL'])"]).stdout.strip()
    assert out == "C"
    r.run(["true"])
    assert [os.path.basename(h["argv"][0]) for h in r.history][-1] == "true"
    assert r.count() == 2 and r.count("true") == 1


def test_path_prefix_puts_fake_tools_first(tmp_path):
    tool = tmp_path / "iscsiadm"
    tool.write_text("#!/bin/sh\necho fake\n")
    tool.chmod(0o755)
    r = Runner(path_prefix=str(tmp_path))
    assert r.run(["iscsiadm"]).stdout.strip() == "fake"
