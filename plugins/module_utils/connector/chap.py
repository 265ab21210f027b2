# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""CHAP credentials of a volume: session CHAP, mutual CHAP and discovery CHAP.

The secrets are registered with the runner, which masks them everywhere and refuses any command line that would
carry one; they reach open-iscsi only through its record files (see iscsiadm.write_record).
"""

from __future__ import annotations

from . import validate
from .errors import InvalidInput

# Every auth key of a record: the lines we write replace all of them (a stale mutual CHAP pair must not survive).
NODE_AUTH_KEYS = ("node.session.auth.authmethod", "node.session.auth.username", "node.session.auth.password",
                  "node.session.auth.username_in", "node.session.auth.password_in")
DISCOVERY_AUTH_KEYS = ("discovery.sendtargets.auth.authmethod", "discovery.sendtargets.auth.username",
                       "discovery.sendtargets.auth.password", "discovery.sendtargets.auth.username_in",
                       "discovery.sendtargets.auth.password_in")


class Auth(object):
    """CHAP credentials.  Secrets are registered with the runner so they are masked everywhere, and they never go
    on a command line: they are written into the node (or discovery) record files (see iscsiadm.write_record)."""

    def __init__(self, username=None, password=None, username_in=None, password_in=None,
                 discovery_username=None, discovery_password=None):
        self.username = username
        self.password = password
        self.username_in = username_in
        self.password_in = password_in
        self.discovery_username = discovery_username
        self.discovery_password = discovery_password
        for user, secret, what in ((username, password, "chap"),
                                   (username_in, password_in, "mutual chap"),
                                   (discovery_username, discovery_password, "discovery chap")):
            if secret and not user:
                raise InvalidInput("a %s secret was given without a user name" % what)
            if user and not secret:
                raise InvalidInput("a %s user name was given without a secret" % what)
            if user or secret:
                validate.chap_user(user, "%s user name" % what)
                validate.chap_secret(secret, "%s secret" % what)
        if username_in and not username:
            raise InvalidInput("mutual CHAP needs session CHAP (username/password) too")

    def secrets(self):
        return [s for s in (self.password, self.password_in, self.discovery_password) if s]

    def node_params(self):
        """The node record's auth settings as (key, value) pairs (written to the record file, never to argv)."""
        if not self.username:
            return []
        params = [("node.session.auth.authmethod", "CHAP"),
                  ("node.session.auth.username", self.username),
                  ("node.session.auth.password", self.password)]
        if self.username_in:
            params += [("node.session.auth.username_in", self.username_in),
                       ("node.session.auth.password_in", self.password_in)]
        return params

    def discovery_params(self):
        """The discovery record's auth settings as (key, value) pairs."""
        if not self.discovery_username:
            return []
        return [("discovery.sendtargets.auth.authmethod", "CHAP"),
                ("discovery.sendtargets.auth.username", self.discovery_username),
                ("discovery.sendtargets.auth.password", self.discovery_password)]
