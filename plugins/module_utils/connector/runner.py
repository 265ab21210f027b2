# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The one place where the connector runs external commands.

* argv lists only; a shell is never involved, so nothing a user passes is ever interpreted;
* every call has a timeout; on expiry the whole process group is killed;
* each call names the exit codes it accepts;
* retries use exponential backoff (``delay, delay*factor, ...`` capped at ``max_delay``);
* secrets registered with the runner (or passed per call) are masked in the history and in
  every error it raises; a *protected* secret (:meth:`Runner.protect_secret`, the CHAP secrets) is more:
  a command whose argv would carry it is refused, never run (``/proc/PID/cmdline`` is readable by every
  local user), and no variable that carries it is handed on to a child's environment;
* an argument with a NUL byte is refused with a message (it cannot be passed to exec);
* ``Runner.history`` records every command run (the benchmarks count them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from .errors import CommandError, CommandNotFound, CommandTimeout, InvalidInput, SecretExposure

MASK = "********"
DEFAULT_TIMEOUT = 30.0
# Grace between SIGTERM and SIGKILL for a command that timed out.
KILL_GRACE = 0.5


class Result(object):
    """What one command call produced (after retries)."""

    __slots__ = ("argv", "rc", "stdout", "stderr", "attempts", "duration", "timed_out")

    def __init__(self, argv: list[str], rc: int | None, stdout: str, stderr: str, attempts: int, duration: float,
                 timed_out: bool = False) -> None:
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.attempts = attempts
        self.duration = duration
        self.timed_out = timed_out

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __repr__(self):
        return "Result(argv=%r, rc=%r, attempts=%d)" % (self.argv, self.rc, self.attempts)


def backoff_delays(retries: int, delay: float, factor: float = 2.0, max_delay: float | None = None) -> list[float]:
    """The sleeps between ``retries + 1`` attempts: delay, delay*factor, ... (capped)."""
    out = []
    d = float(delay)
    for _attempt in range(max(0, int(retries))):
        out.append(min(d, max_delay) if max_delay is not None else d)
        d *= factor
    return out


class Runner(object):
    """Runs external commands.  One instance per operation is cheap; it is thread safe."""

    def __init__(self, env=None, path_prefix=None, default_timeout=DEFAULT_TIMEOUT,
                 secrets=(), sleep=time.sleep, clock=time.monotonic):
        base = dict(os.environ)
        if env:
            base.update(env)
        # Stable, parseable output from every tool.
        base["LC_ALL"] = "C"
        base.pop("LANGUAGE", None)
        if path_prefix:
            base["PATH"] = os.pathsep.join([path_prefix, base.get("PATH", os.defpath)])
        self.env = base
        self.default_timeout = default_timeout
        self._secrets = set(s for s in secrets if s)
        self._protected = set()
        self._lock = threading.Lock()
        self.sleep = sleep
        self.clock = clock
        self.history = []

    # -- secrets -----------------------------------------------------------------------------
    def add_secret(self, secret: str | None) -> None:
        if secret:
            with self._lock:
                self._secrets.add(str(secret))

    def protect_secret(self, secret: str | None) -> None:
        """Mask ``secret`` everywhere (as :meth:`add_secret`) and refuse every command whose argv or environment
        would carry it: a CHAP secret must never be visible in ``/proc/PID/cmdline``."""
        if secret:
            secret = str(secret)
            with self._lock:
                self._secrets.add(secret)
                self._protected.add(secret)
                # a variable of our own environment that carries it is not handed on to any child
                for k in [k for k, v in self.env.items() if secret in v or secret in k]:
                    del self.env[k]

    def mask(self, text, extra=()):
        """Return ``text`` (str or list of str) with every known secret replaced by a mask."""
        secrets = sorted(set(self._secrets) | set(s for s in extra if s), key=len, reverse=True)
        if isinstance(text, (list, tuple)):
            return [self.mask(t, extra) for t in text]
        if text is None:
            return text
        for s in secrets:
            text = text.replace(s, MASK)
        return text

    # -- lookup ------------------------------------------------------------------------------
    def which(self, tool: str) -> str | None:
        """Full path of ``tool`` on this runner's PATH, or None."""
        if os.sep in tool:
            return tool if os.access(tool, os.X_OK) else None
        for d in self.env.get("PATH", os.defpath).split(os.pathsep):
            p = os.path.join(d or ".", tool)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
        return None

    def _check_argv(self, argv):
        """Refuse a command whose argv holds a NUL byte or a protected secret."""
        for a in argv:
            if "\x00" in a:
                raise InvalidInput("refusing to run '%s': an argument contains a NUL byte" % self.mask(argv[0]))
        with self._lock:
            secrets = set(self._protected)
        if not secrets:
            return
        for a in argv:
            if any(s in a for s in secrets):
                raise SecretExposure(
                    "refusing to run '%s': its command line would carry a secret, readable by every local user in "
                    "/proc/PID/cmdline" % self.mask(argv[0]),
                    hint="this is a bug of brick.storage (secrets go into record files); if a secret is also a part "
                         "of an IQN, portal or other argument, choose another secret")

    # -- running -----------------------------------------------------------------------------
    def _once(self, argv, timeout, stdin):
        try:
            # The connector never imports ansible (docs/dev/architecture.md), so AnsibleModule.run_command is not an
            # option: this is the one place that runs commands (own process group, killed as a whole on time-out).
            proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
                argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                close_fds=True, start_new_session=True, universal_newlines=True)
        except OSError as e:
            if e.errno in (2, 13):  # ENOENT, EACCES
                raise CommandNotFound(argv[0]) from None
            raise
        except ValueError as e:  # e.g. "embedded null byte"; checked in run() already
            raise InvalidInput("command '%s' cannot be run: %s" % (self.mask(argv[0]), e)) from None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
            return proc.returncode, out, err, False
        except subprocess.TimeoutExpired:
            self._kill(proc)
            try:
                out, err = proc.communicate(timeout=2)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                out, err = "", ""
            return None, out or "", err or "", True

    @staticmethod
    def _kill(proc):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except OSError:
                return
            try:
                proc.wait(KILL_GRACE)
                return
            except subprocess.TimeoutExpired:
                continue

    def run(self, argv, timeout=None, ok_codes=(0,), retries=0, delay=1.0, factor=2.0,
            max_delay=30.0, retry_codes=None, retry_on_timeout=True, retry_if=None,
            stdin=None, secrets=(), check=True):
        """Run ``argv`` and return a :class:`Result`.

        ``ok_codes``     exit codes that count as success.
        ``retries``      extra attempts after the first; waits follow :func:`backoff_delays`.
        ``retry_codes``  retry only on these exit codes (default: any code not in ok_codes).
        ``retry_if``     optional callable(Result) -> bool deciding a retry on an *accepted* result.
        ``check``        raise CommandError/CommandTimeout when the final attempt failed.
        """
        if isinstance(argv, str) or not isinstance(argv, (list, tuple)) or not argv:
            raise TypeError("Runner.run takes a non-empty argv list, never a string")
        argv = [str(a) for a in argv]
        self._check_argv(argv)
        timeout = self.default_timeout if timeout is None else timeout
        waits = backoff_delays(retries, delay, factor, max_delay)
        masked = self.mask(argv, secrets)
        t0 = self.clock()
        attempt = 0
        while True:
            attempt += 1
            a0 = self.clock()
            rc, out, err, timed_out = self._once(argv, timeout, stdin)
            with self._lock:
                self.history.append({"argv": masked, "rc": rc, "timed_out": timed_out,
                                     "duration": round(self.clock() - a0, 4)})
            res = Result(masked, rc, self.mask(out, secrets), self.mask(err, secrets), attempt,
                         self.clock() - t0, timed_out)
            if timed_out:
                failed, retryable = True, retry_on_timeout
            elif rc not in ok_codes:
                failed = True
                retryable = retry_codes is None or rc in retry_codes
            else:
                failed = False
                retryable = bool(retry_if and retry_if(res))
            if (failed or retryable) and retryable and attempt <= len(waits):
                self.sleep(waits[attempt - 1])
                continue
            if failed and check:
                if timed_out:
                    raise CommandTimeout(masked, timeout, attempt, res.stdout, res.stderr)
                raise CommandError(masked, rc, res.stdout, res.stderr, attempt)
            return res

    # -- accounting --------------------------------------------------------------------------
    def count(self, tool: str | None = None) -> int:
        """How many commands ran (optionally only those whose argv[0] basename is ``tool``)."""
        if tool is None:
            return len(self.history)
        return sum(1 for h in self.history if os.path.basename(h["argv"][0]) == tool)
