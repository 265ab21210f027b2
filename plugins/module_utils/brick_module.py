# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The Ansible side shared by the four modules (the connector in ``connector/`` never imports Ansible).

* ``LOCK_OPTIONS``: the argument spec of the options the ``brick.storage.lock`` doc fragment documents;
  ``options()`` merges shared and own specs into a module's spec.
* ``new_module()``: an ``AnsibleModule`` that never ends in a traceback, even when ansible-core's own argument
  checking raises (``check_type_int('inf')`` raises OverflowError).
* ``fail_from_error()``: a connector error (``BrickError``: message, ``hint``, ``details``) as ``fail_json``.
* ``ModuleErrors``: the modules' safety net around their work: a ``BrickError`` becomes ``fail_from_error()``,
  anything else an ``InternalError`` (a bug) with a message that carries no secret.
* ``diff()``: the ``diff`` of a result in diff mode (small before/after dicts).

Modules call the class through ``basic.AnsibleModule`` at run time (not a name bound at import), so a tool that
patches it (ansible-lint's ``args`` rule) sees every module's spec.
"""

import copy

from ansible.module_utils import basic
from ansible_collections.brick.storage.plugins.module_utils.connector.errors import BrickError, InternalError

# The options of every module that takes the host lock; documented by plugins/doc_fragments/lock.py
# (brick.storage.lock).  The default is connector.lockdir.DEFAULT_LOCK_DIR (a unit test keeps them equal; this file
# does not import the lock code, so that modules without a lock stay small).
LOCK_OPTIONS = dict(
    lock_timeout=dict(type="raw", default=300),
    lock_dir=dict(type="path", default="/run/brick-storage"),
)

# What ansible-core's argument checking has been seen to raise instead of failing with a message.
_ANSIBLE_CORE_RAISES = (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError)
MASK = "********"


def options(*specs):
    """One argument spec from several (shared ones such as LOCK_OPTIONS, then the module's own): deep copies, so
    that no module changes a shared spec; a name given twice is a bug."""
    out = {}
    for spec in specs:
        for name, option in spec.items():
            if name in out:
                raise ValueError("option %s is declared twice" % name)
            out[name] = copy.deepcopy(option)
    return out


def unchecked_spec(spec):
    """The same option names, aliases and no_log flags with no type check (every option ``raw``, no suboptions):
    only to fail with a message when checking the real spec raised."""
    out = {}
    for name, option in spec.items():
        out[name] = dict((key, option[key]) for key in ("aliases", "no_log") if key in option)
        out[name]["type"] = "raw"
    return out


def new_module(argument_spec, **kwargs):
    """``AnsibleModule(argument_spec, supports_check_mode=True, **kwargs)`` (``required_together``,
    ``required_if``...).  When ansible-core's own checking raises, the arguments are read again unchecked, only
    to fail with ``error: InvalidInput``: no input ends in a traceback."""
    kwargs.setdefault("supports_check_mode", True)
    try:
        return basic.AnsibleModule(argument_spec=argument_spec, **kwargs)
    except _ANSIBLE_CORE_RAISES as error:
        module = basic.AnsibleModule(argument_spec=unchecked_spec(argument_spec), supports_check_mode=True)
        module.fail_json(msg="invalid input: the arguments could not be checked: %s" % error, error="InvalidInput",
                         changed=False)
    return None  # not reached: fail_json exits


def error_result(error, runner=None, **extra):
    """The failure result of ``error`` (a BrickError): ``msg`` (with the hint), ``error`` (the class name),
    ``hint``, the error's details (but ``cmd``: the message names the command), ``changed=False``, ``commands``
    when a runner is given, then ``extra``."""
    out = error.to_dict()
    out.pop("cmd", None)
    out.update(msg=str(error), changed=False)
    if runner is not None:
        out["commands"] = len(runner.history)
    out.update(extra)
    return out


def fail_from_error(module, error, runner=None, **extra):
    """``module.fail_json()`` for a connector error (see error_result)."""
    module.fail_json(**error_result(error, runner, **extra))


def mask_secrets(module, text, runner=None):
    """``text`` with the secrets masked: those registered with ``runner`` and the value of every no_log option."""
    if runner is not None:
        text = runner.mask(text)
    for secret in getattr(module, "no_log_values", ()):
        if secret:
            text = text.replace(str(secret), MASK)
    return text


def internal_error(module, exc, runner=None, during=None):
    """An unexpected exception as an InternalError (a bug), with a message that carries no secret."""
    where = " %s" % during if during else ""
    msg = "internal error (%s)%s: %s" % (type(exc).__name__, where, exc)
    return InternalError(mask_secrets(module, msg, runner))


class ModuleErrors(object):
    """``with ModuleErrors(module) as errors:`` around a module's work.  Out of the block, a BrickError ends in
    ``fail_from_error()`` and any other exception in an ``InternalError``: no input ends in a traceback.  The
    SystemExit of exit_json/fail_json passes through.

    ``errors.runner`` (set once the module has one) masks its secrets in messages; with ``commands=True`` the
    failure reports how many commands it ran (0 before there is a runner).  ``msg_prefix`` goes before the
    message of a BrickError, ``during`` into the message of an internal error."""

    def __init__(self, module, commands=False, msg_prefix="", during=None):
        self.module = module
        self.commands = commands
        self.msg_prefix = msg_prefix
        self.during = during
        self.runner = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc is None or not isinstance(exc, Exception):
            return False
        extra = {}
        if isinstance(exc, BrickError):
            if self.msg_prefix:
                extra["msg"] = self.msg_prefix + str(exc)
        else:
            exc = internal_error(self.module, exc, self.runner, self.during)
        if self.commands and self.runner is None:
            extra["commands"] = 0
        fail_from_error(self.module, exc, self.runner if self.commands else None, **extra)
        return False  # not reached: fail_json exits


def diff(before, after, name):
    """The ``diff`` of a result: ``before`` and ``after`` are small dicts of sorted lists (what the callback
    shows as a unified diff), ``name`` says of what."""
    return {"before": before, "after": after, "before_header": "%s (before)" % name,
            "after_header": "%s (after)" % name}
