# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Error hierarchy of the connector.

Every error carries a message an operator can act on: what failed, on which object, and what to
do next (``hint``).  Secrets never reach these messages: the runner masks them before it raises.
"""

from __future__ import annotations


class BrickError(Exception):
    """Base class of every error the connector raises."""

    def __init__(self, msg, hint=None, **details):
        super(BrickError, self).__init__(msg)
        self.msg = msg
        self.hint = hint
        self.details = details

    def __str__(self):
        if self.hint:
            return "%s (%s)" % (self.msg, self.hint)
        return self.msg

    def to_dict(self):
        out = {"error": type(self).__name__, "msg": self.msg}
        if self.hint:
            out["hint"] = self.hint
        out.update(self.details)
        return out


class InvalidInput(BrickError):
    """Bad input caught before any command ran."""


class CommandError(BrickError):
    """An external command exited with a code the caller did not accept."""

    def __init__(self, argv, rc, stdout="", stderr="", attempts=1, hint=None):
        self.argv = list(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.attempts = attempts
        tail = (stderr or stdout or "").strip().splitlines()
        why = tail[-1] if tail else "no output"
        msg = "command '%s' failed with exit code %s after %d attempt(s): %s" % (
            " ".join(self.argv), rc, attempts, why)
        super(CommandError, self).__init__(msg, hint=hint, rc=rc, cmd=self.argv)


class CommandTimeout(CommandError):
    """An external command did not finish within its timeout and was killed."""

    def __init__(self, argv, timeout, attempts=1, stdout="", stderr=""):
        self.timeout = timeout
        super(CommandTimeout, self).__init__(argv, None, stdout, stderr, attempts)
        self.msg = "command '%s' did not finish within %ss and was killed (%d attempt(s))" % (
            " ".join(self.argv), timeout, attempts)
        self.hint = "a path may be flaky or a daemon stuck; check the portal and iscsid/multipathd"
        self.args = (self.msg,)


class CommandNotFound(BrickError):
    """A required external tool is not installed."""

    def __init__(self, tool, hint=None):
        self.tool = tool
        super(CommandNotFound, self).__init__(
            "required tool '%s' was not found on PATH" % tool,
            hint=hint or "install the package that provides it (the initiator role installs them: playbooks/prepare.yml)", tool=tool)


class DeviceNotFound(BrickError):
    """A block device or volume path does not exist."""


class DeviceBusy(BrickError):
    """A device is in use (open, held, mounted or swap) and the operation refuses to go on."""


class DeviceWaitTimeout(BrickError):
    """A device did not appear, or did not become idle, within the allowed time."""


class LoginError(BrickError):
    """No iSCSI session could be established."""


class AttachError(BrickError):
    """The volume could not be attached; everything this call created was cleaned up."""


class FlushError(BrickError):
    """Buffers could not be flushed: nothing was removed, data is safe."""


class DetachError(BrickError):
    """The detach did not complete; ``details['leftovers']`` names what is left."""


class VolumeMismatch(BrickError):
    """A device does not serve the volume it should (its WWID differs); nothing was changed."""


class LockTimeout(BrickError):
    """The host lock was not acquired in time; ``details['holder']`` names the holder."""


class SecretExposure(BrickError):
    """A command line or a child's environment would have carried a secret: the command was not run."""


class InternalError(BrickError):
    """A bug: something failed that no input should make fail.  The message never carries a secret."""
