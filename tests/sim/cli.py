# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The fake commands: iscsiadm, multipath, multipathd, blockdev, fuser, udevadm, partprobe.

``run(sim, tool, args)`` returns ``(rc, stdout, stderr)`` plus an optional ``sleep`` request (seconds
to wait, outside the lock, before answering: blackholed logins).  ``main()`` is what the scripts in
``bin/`` call.  Output formats and exit codes follow open-iscsi 2.1.8, multipath-tools 0.9.4,
util-linux and psmisc.
"""

import os
import sys
import time

from .core import NO_PATH_RETRY, Sim, fmt_portal, portal_key, split_portal

VERSION = "2.1.8"
# iscsiadm exit codes (iscsi_err.h)
E_IDBM, E_INVAL, E_TIMEOUT, E_TRANS, E_SESS_EXISTS, E_FATAL_LOGIN, E_NO_OBJS, E_AUTH = 6, 7, 8, 4, 15, 19, 21, 24
ERR_MSG = {1: "unknown error", 4: "encountered connection failure",
           5: "encountered iSCSI login failure", 6: "encountered iSCSI database failure",
           7: "invalid parameter", 8: "connection timed out", 15: "session exists",
           19: "encountered non-retryable iSCSI login failure", 21: "no objects found",
           24: "iSCSI login failed due to authorization failure"}
HANG_SECONDS = 3600


class Out(object):
    def __init__(self):
        self.out = []
        self.err = []
        self.rc = 0
        self.sleep = 0.0
        self.io_wait = None    # dm-N: the command blocks on I/O queued on that map (see wait_io)

    def o(self, line):
        self.out.append(line + "\n")

    def e(self, line):
        self.err.append(line + "\n")

    def fail(self, rc, line=None):
        if line:
            self.e(line)
        self.rc = rc
        return self

    def result(self):
        return self.rc, "".join(self.out), "".join(self.err)


# ========================================================================================= iscsiadm
NODE_DEFAULTS = [
    ("node.name", None), ("node.tpgt", None), ("node.startup", "automatic"), ("node.leading_login", "No"),
    ("iface.iscsi_ifacename", None), ("iface.transport_name", "tcp"), ("iface.initiatorname", "<empty>"),
    ("iface.ipaddress", "<empty>"), ("iface.hwaddress", "<empty>"), ("iface.net_ifacename", "<empty>"),
    ("node.discovery_address", "<empty>"), ("node.discovery_port", "0"), ("node.discovery_type", "static"),
    ("node.session.initial_cmdsn", "0"), ("node.session.initial_login_retry_max", "8"),
    ("node.session.xmit_thread_priority", "-20"), ("node.session.cmds_max", "128"),
    ("node.session.queue_depth", "32"), ("node.session.nr_sessions", "1"),
    ("node.session.auth.authmethod", "None"), ("node.session.auth.chap_algs", "MD5"),
    ("node.session.timeo.replacement_timeout", "120"), ("node.session.err_timeo.abort_timeout", "15"),
    ("node.session.err_timeo.lu_reset_timeout", "30"), ("node.session.err_timeo.tgt_reset_timeout", "30"),
    ("node.session.err_timeo.host_reset_timeout", "60"), ("node.session.iscsi.FastAbort", "Yes"),
    ("node.session.iscsi.InitialR2T", "No"), ("node.session.iscsi.ImmediateData", "Yes"),
    ("node.session.iscsi.FirstBurstLength", "262144"), ("node.session.iscsi.MaxBurstLength", "16776192"),
    ("node.session.iscsi.DefaultTime2Retain", "0"), ("node.session.iscsi.DefaultTime2Wait", "2"),
    ("node.session.iscsi.MaxConnections", "1"), ("node.session.iscsi.MaxOutstandingR2T", "1"),
    ("node.session.iscsi.ERL", "0"), ("node.session.scan", "auto"), ("node.session.reopen_max", "0"),
    ("node.conn[0].address", None), ("node.conn[0].port", None), ("node.conn[0].startup", "manual"),
    ("node.conn[0].tcp.window_size", "524288"), ("node.conn[0].tcp.type_of_service", "0"),
    ("node.conn[0].timeo.logout_timeout", "15"), ("node.conn[0].timeo.login_timeout", "15"),
    ("node.conn[0].timeo.auth_timeout", "45"), ("node.conn[0].timeo.noop_out_interval", "5"),
    ("node.conn[0].timeo.noop_out_timeout", "5"), ("node.conn[0].iscsi.MaxXmitDataSegmentLength", "0"),
    ("node.conn[0].iscsi.MaxRecvDataSegmentLength", "262144"), ("node.conn[0].iscsi.HeaderDigest", "None"),
    ("node.conn[0].iscsi.IFMarker", "No"), ("node.conn[0].iscsi.OFMarker", "No"),
]
AUTH_KEYS = ("node.session.auth.username", "node.session.auth.password",
             "node.session.auth.username_in", "node.session.auth.password_in")
DISC_DEFAULTS = [("discovery.startup", "manual"), ("discovery.type", "sendtargets"),
                 ("discovery.sendtargets.address", None), ("discovery.sendtargets.port", None),
                 ("discovery.sendtargets.auth.authmethod", "None"),
                 ("discovery.sendtargets.auth.username", "<empty>"),
                 ("discovery.sendtargets.auth.password", "<empty>"),
                 ("discovery.sendtargets.auth.username_in", "<empty>"),
                 ("discovery.sendtargets.auth.password_in", "<empty>"),
                 ("discovery.sendtargets.timeo.login_timeout", "15"),
                 ("discovery.sendtargets.use_discoveryd", "No"),
                 ("discovery.sendtargets.discoveryd_poll_inval", "30"),
                 ("discovery.sendtargets.reopen_max", "5"),
                 ("discovery.sendtargets.timeo.auth_timeout", "45"),
                 ("discovery.sendtargets.timeo.active_timeout", "30"),
                 ("discovery.sendtargets.iscsi.MaxRecvDataSegmentLength", "32768")]
PASSWORD_KEYS = ("password", "password_in")

OPTS_WITH_VALUE = {"-m": "mode", "--mode": "mode", "-T": "targetname", "--targetname": "targetname",
                   "-p": "portal", "--portal": "portal", "-I": "interface", "--interface": "interface",
                   "-o": "op", "--op": "op", "-n": "name", "--name": "name", "-v": "value", "--value": "value",
                   "-t": "type", "--type": "type", "-r": "sid", "--sid": "sid", "-P": "print",
                   "--print": "print", "-L": "loginall", "--loginall": "loginall", "-U": "logoutall",
                   "--logoutall": "logoutall", "-d": "debug", "--debug": "debug"}
FLAGS = {"-l": "login", "--login": "login", "-u": "logout", "--logout": "logout", "-R": "rescan",
         "--rescan": "rescan", "-D": "discover", "--discover": "discover", "-S": "show", "--show": "show",
         "-V": "version", "--version": "version", "-h": "help", "--help": "help"}


def parse_iscsiadm(args):
    o = {"name": [], "value": [], "op": []}
    i = 0
    while i < len(args):
        a = args[i]
        key, val = a, None
        if a.startswith("--") and "=" in a:
            key, val = a.split("=", 1)
        elif not a.startswith("--") and len(a) > 2 and a[:2] in OPTS_WITH_VALUE:
            key, val = a[:2], a[2:]
        if key in OPTS_WITH_VALUE:
            if val is None:
                i += 1
                if i >= len(args):
                    raise ValueError("option '%s' requires an argument" % key)
                val = args[i]
            k = OPTS_WITH_VALUE[key]
            if k in ("name", "value", "op"):
                o[k].append(val)
            else:
                o[k] = val
        elif key in FLAGS:
            o[FLAGS[key]] = True
        else:
            raise ValueError("unrecognized option '%s'" % a)
        i += 1
    return o


def _rec_dir(iqn, addr, port, tpgt):
    return "/etc/iscsi/nodes/%s/%s,%d,%s" % (iqn, addr, port, tpgt)


class Iscsiadm(object):
    def __init__(self, sim, o, out):
        self.sim = sim
        self.o = o
        self.out = out

    # -- node DB ---------------------------------------------------------------------------
    def records(self, iqn=None, portal=None, iface=None):
        """Node records matching the filters: list of dicts (iqn, addr, port, tpgt, iface, path).  Both layouts of
        open-iscsi 2.1.8 (idbm_for_each_portal): the flat file ``ADDR,PORT`` of an ``--op new`` without a tpgt
        (tpgt -1, its iface named inside) and ``ADDR,PORT,TPGT/IFACE`` (a discovered record)."""
        sim = self.sim
        key = portal_key(portal) if portal else None
        out = []
        base = "/etc/iscsi/nodes"
        for t in sorted(os.listdir(sim.P(base))):
            if iqn is not None and t != iqn:
                continue
            for pd in sorted(os.listdir(sim.P("%s/%s" % (base, t)))):
                parts = pd.split(",")
                if len(parts) not in (2, 3) or not parts[1].isdigit():
                    continue
                a, p, tp = parts[0], int(parts[1]), (parts[2] if len(parts) == 3 else "-1")
                if key is not None and "%s:%d" % (a.lower(), p) != key:
                    continue
                full = "%s/%s/%s" % (base, t, pd)
                if len(parts) == 2:
                    if os.path.isdir(sim.P(full)):
                        continue  # open-iscsi: EINVAL
                    found = [(self._flat_iface(full), full)]
                elif os.path.isdir(sim.P(full)):
                    found = [(f, "%s/%s" % (full, f)) for f in sorted(os.listdir(sim.P(full)))]
                else:
                    found = [("default", "%s/default" % full)]
                for f, path in found:
                    if iface is not None and f != iface:
                        continue
                    out.append({"iqn": t, "addr": a, "port": p, "tpgt": tp, "iface": f, "path": path})
        return out

    def _flat_iface(self, path):
        names = [ln.split(" = ", 1)[1] for ln in (self.sim.rfile(path, "") or "").splitlines()
                 if ln.startswith("iface.iscsi_ifacename = ")]
        return names[-1] if names else "default"

    def read_rec(self, r):
        txt = self.sim.rfile(r["path"], "") or ""
        rec = {}
        for ln in txt.splitlines():
            if ln.startswith("#") or " = " not in ln:
                continue
            k, v = ln.split(" = ", 1)
            rec[k] = v
        return rec

    def write_rec(self, path, rec):
        lines = ["# BEGIN RECORD %s" % VERSION]
        lines += ["%s = %s" % (k, v) for k, v in rec.items() if v not in (None, "<empty>")]
        lines.append("# END RECORD")
        self.sim.mkdir(os.path.dirname(path))
        self.sim.wfile(path, "\n".join(lines) + "\n")

    def new_rec(self, iqn, addr, port, tpgt, iface, disc=None):
        rec = {}
        for k, v in NODE_DEFAULTS:
            rec[k] = v
        rec.update({"node.name": iqn, "node.tpgt": str(tpgt), "iface.iscsi_ifacename": iface,
                    "node.conn[0].address": addr, "node.conn[0].port": str(port)})
        if disc:
            rec.update({"node.discovery_address": disc[0], "node.discovery_port": str(disc[1]),
                        "node.discovery_type": "send_targets"})
        flat = "/etc/iscsi/nodes/%s/%s,%d" % (iqn, addr, port)
        if str(tpgt) == "-1":
            # idbm_rec_write: no tpgt -> the flat file, written over whatever flat record (any iface) is there
            self.write_rec(flat, rec)
            return flat
        if self.sim.lexists(flat) and not os.path.isdir(self.sim.P(flat)):
            self.sim.rm(flat)  # "old style portal as a file, but with tpgt": replaced
        path = "%s/%s" % (_rec_dir(iqn, addr, port, tpgt), iface)
        self.write_rec(path, rec)
        return path

    def delete_rec(self, r):
        sim = self.sim
        sim.rm(r["path"])
        pdir = os.path.dirname(r["path"])
        sim.rmdir_if_empty(pdir)
        if r["tpgt"] != "-1":  # a flat record's parent is the target dir itself
            sim.rmdir_if_empty(os.path.dirname(pdir))
        # links from discovery records
        st_dir = "/etc/iscsi/send_targets"
        for d in os.listdir(sim.P(st_dir)):
            ln = "%s/%s/%s,%s,%d,%s,%s" % (st_dir, d, r["iqn"], r["addr"], r["port"], r["tpgt"], r["iface"])
            sim.rm(ln)

    @staticmethod
    def show_lines(rec, defaults, show_secrets=False):
        lines = ["# BEGIN RECORD %s" % VERSION]
        keys = [k for k, _value in defaults]
        if defaults is NODE_DEFAULTS:
            i = keys.index("node.session.auth.chap_algs") + 1
            keys[i:i] = list(AUTH_KEYS)
        keys += [k for k in rec if k not in keys]
        for k in keys:
            v = rec.get(k)
            if v in (None, ""):
                v = "<empty>"
            if k.rsplit(".", 1)[-1] in PASSWORD_KEYS and v != "<empty>" and not show_secrets:
                v = "********"
            lines.append("%s = %s" % (k, v))
        lines.append("# END RECORD")
        return lines

    def iface_ok(self, iface):
        return iface in ("default", "iser") or self.sim.lexists("/etc/iscsi/ifaces/" + iface)

    # -- mode node ---------------------------------------------------------------------------
    def node(self):
        o, out, sim = self.o, self.out, self.sim
        iqn, portal, iface = o.get("targetname"), o.get("portal"), o.get("interface")
        if iface is not None and not self.iface_ok(iface):
            return out.fail(E_IDBM, "iscsiadm: Could not read iface info for %s." % iface)
        ops = o["op"]
        op = ops[0] if ops else None
        if o.get("login"):
            return self.login(iqn, portal, iface)
        if o.get("logout"):
            return self.logout_node(iqn, portal, iface)
        if o.get("rescan"):
            ss = sim.find_sessions(iqn, portal, iface)
            if not ss:
                return out.fail(E_NO_OBJS, "iscsiadm: No session found.")
            for s in ss:
                out.o("Rescanning session [sid: %d, target: %s, portal: %s,%d]" % (
                    s["sid"], s["iqn"], s["addr"], s["port"]))
                sim.scan(s["host"])
            return out
        if o.get("loginall"):
            return self.login(None, None, None, startup=o["loginall"])
        if o.get("logoutall"):
            return self.logout_node(None, None, None)
        if op == "new":
            if not iqn or not portal:
                return out.fail(E_INVAL, "iscsiadm: --op new requires target and portal")
            addr, port = split_portal(portal)
            iface = iface or "default"
            # no tpgt: the flat record of the portal (whatever its iface) is overwritten; discovered ones stay
            for r in self.records(iqn, portal):
                if r["tpgt"] == "-1":
                    self.delete_rec(r)
            self.new_rec(iqn, addr, port, -1, iface)
            out.o("New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=%s] %s,%d,-1 %s] added" % (
                iface, addr, port, iqn))
            return out
        recs = self.records(iqn, portal, iface)
        if op == "update":
            if not o["name"] or len(o["name"]) != len(o["value"]):
                return out.fail(E_INVAL, "iscsiadm: update requires name and value")
            for k in o["name"]:
                if not (k.startswith("node.") or k.startswith("iface.")):
                    return out.fail(E_INVAL, "iscsiadm: Cannot modify %s. Invalid param name." % k)
                if k in ("node.name", "node.tpgt", "node.conn[0].address", "node.conn[0].port"):
                    return out.fail(E_INVAL, "iscsiadm: Cannot modify %s. It is used to lookup the record "
                                             "and cannot be changed." % k)
            if not recs:
                return out.fail(E_NO_OBJS, "iscsiadm: No records found")
            for r in recs:
                rec = self.read_rec(r)
                for k, v in zip(o["name"], o["value"]):
                    rec[k] = v
                self.write_rec(r["path"], rec)
            return out
        if op == "delete":
            if not recs:
                return out.fail(E_NO_OBJS, "iscsiadm: No records found")
            rc = 0
            for r in recs:
                if sim.find_sessions(r["iqn"], fmt_portal(r["addr"], r["port"]), r["iface"]):
                    out.e("iscsiadm: This command will remove the record [iface: %s, target: %s, portal: %s,%d], "
                          "but a session is using it. Logout session then rerun command to remove record." % (
                              r["iface"], r["iqn"], r["addr"], r["port"]))
                    rc = E_SESS_EXISTS
                    continue
                self.delete_rec(r)
            if rc:
                out.e("iscsiadm: Could not execute operation on all records: session exists")
            out.rc = rc
            return out
        if op in ("show", None) and (op == "show" or iqn or portal):
            if not recs:
                return out.fail(E_NO_OBJS, "iscsiadm: No records found")
            for r in recs:
                for ln in self.show_lines(self.read_rec(r), NODE_DEFAULTS, o.get("show")):
                    out.o(ln)
            return out
        if op is None:
            if not recs:
                return out.fail(E_NO_OBJS, "iscsiadm: No records found")
            for r in recs:
                tpgt = "4294967295" if r["tpgt"] == "-1" else r["tpgt"]  # printed unsigned, as open-iscsi does
                out.o("%s,%s %s" % (fmt_portal(r["addr"], r["port"]), tpgt, r["iqn"]))
            return out
        return out.fail(E_INVAL, "iscsiadm: Invalid operation '%s'" % op)

    def _where(self, r):
        return "[iface: %s, target: %s, portal: %s,%d]" % (r["iface"], r["iqn"], r["addr"], r["port"])

    def _login_check(self, r, rec):
        """(rc, seconds) of a login attempt against the array; rc 0 = success."""
        sim = self.sim
        st = sim.st
        key = "%s:%d" % (r["addr"].lower(), r["port"])
        lf = sim.fault("login_fail", {}) or {}
        for p, code in lf.items():
            if portal_key(p) == key:
                return int(code), 0
        down = {}
        for p, how in (sim.fault("portal_down", {}) or {}).items():
            down[portal_key(p)] = how
        served = any(key in t["portals"] for t in st["targets"].values())
        if key in down or not served:
            if down.get(key) == "blackhole":
                try:
                    tmo = float(rec.get("node.conn[0].timeo.login_timeout", "15"))
                    tries = max(1, int(rec.get("node.session.initial_login_retry_max", "8")))
                except ValueError:
                    tmo, tries = 15.0, 8
                return E_TIMEOUT, tmo * tries * sim.time_scale()
            return E_TIMEOUT, 0
        t = st["targets"].get(r["iqn"])
        if t is None or key not in t["portals"]:
            return E_FATAL_LOGIN, 0
        if t["acl"] and st["initiator"] not in t["acl"]:
            return E_AUTH, 0
        method = (rec.get("node.session.auth.authmethod") or "None").upper()
        user, pw = rec.get("node.session.auth.username"), rec.get("node.session.auth.password")
        uin, pwin = rec.get("node.session.auth.username_in"), rec.get("node.session.auth.password_in")
        if t["chap"]:
            if method != "CHAP" or [user, pw] != t["chap"]:
                return E_AUTH, 0
        if uin not in (None, "", "<empty>") and method == "CHAP":
            # the initiator wants the target to authenticate itself
            if not t["mutual_chap"] or [uin, pwin] != t["mutual_chap"]:
                return E_AUTH, 0
        elif t["mutual_chap"] and t["chap"]:
            return E_AUTH, 0
        return 0, 0

    def login(self, iqn, portal, iface, startup=None):
        sim, out = self.sim, self.out
        recs = self.records(iqn, portal, iface)
        if startup:
            recs = [r for r in recs if startup == "all" or self.read_rec(r).get("node.startup") == startup]
        if not recs:
            return out.fail(E_NO_OBJS, "iscsiadm: No records found")
        failed = []
        slow = 0.0
        ok = []
        for r in recs:
            rec = self.read_rec(r)
            pk = fmt_portal(r["addr"], r["port"])
            if sim.find_sessions(r["iqn"], pk, r["iface"]):
                out.e("iscsiadm: %s: 1 session requested, but 1 already present." % r["iface"])
                failed.append((r, E_SESS_EXISTS, False))
                continue
            out.o("Logging in to %s" % self._where(r))
            rc, secs = self._login_check(r, rec)
            if rc:
                failed.append((r, rc, True))
                slow = max(slow, secs)
                continue
            s = sim.create_session(r["iqn"], pk, r["iface"], rec)
            if (rec.get("node.session.scan") or "auto") == "auto":
                sim.scan(s["host"])
            ok.append(r)
        out.sleep = slow
        for r in ok:
            out.o("Login to %s successful." % self._where(r))
        rc = 0
        for r, code, tell in failed:
            if tell:
                out.e("iscsiadm: Could not login to %s." % self._where(r))
                out.e("iscsiadm: initiator reported error (%d - %s)" % (code, ERR_MSG.get(code, "unknown error")))
            rc = code
        if failed:
            out.e("iscsiadm: Could not log into all portals")
        out.rc = rc
        return out

    def _logout_sessions(self, ss):
        out, sim = self.out, self.sim
        for s in ss:
            out.o("Logging out of session [sid: %d, target: %s, portal: %s,%d]" % (
                s["sid"], s["iqn"], s["addr"], s["port"]))
        for s in ss:
            sim.remove_session(s["sid"])
            out.o("Logout of [sid: %d, target: %s, portal: %s,%d] successful." % (
                s["sid"], s["iqn"], s["addr"], s["port"]))
        return out

    def logout_node(self, iqn, portal, iface):
        ss = self.sim.find_sessions(iqn, portal, iface)
        if not ss:
            return self.out.fail(E_NO_OBJS, "iscsiadm: No matching sessions found")
        return self._logout_sessions(ss)

    # -- mode session ------------------------------------------------------------------------
    def session(self):
        o, out, sim = self.o, self.out, self.sim
        sid = o.get("sid")
        if sid is not None:
            sid = sid.rstrip("/").rsplit("session", 1)[-1] if not sid.isdigit() else sid
            s = sim.session_by_id(sid) if sid.isdigit() else None
            if s is None:
                return out.fail(E_NO_OBJS if not o.get("logout") else E_NO_OBJS,
                                "iscsiadm: Could not get session info for sid %s" % o.get("sid")
                                if not o.get("logout") else "iscsiadm: No matching sessions found")
            ss = [s]
        else:
            ss = sim.find_sessions()
        if o.get("logout"):
            if not ss:
                return out.fail(E_NO_OBJS, "iscsiadm: No matching sessions found")
            return self._logout_sessions(ss)
        if o.get("rescan"):
            if not ss:
                return out.fail(E_NO_OBJS, "iscsiadm: No session found.")
            for s in ss:
                out.o("Rescanning session [sid: %d, target: %s, portal: %s,%d]" % (
                    s["sid"], s["iqn"], s["addr"], s["port"]))
                sim.scan(s["host"])
                for name, d in sorted(sim.st["disks"].items()):
                    if d["sid"] == s["sid"]:
                        sim.rescan_disk(name)
            return out
        if not ss:
            return out.fail(E_NO_OBJS, "iscsiadm: No active sessions.")
        level = int(o.get("print") or 0)
        if level == 0:
            for s in ss:
                out.o("tcp: [%d] %s,%d %s (non-flash)" % (s["sid"], fmt_portal(s["addr"], s["port"]),
                                                          s["tpgt"], s["iqn"]))
            return out
        by_t = {}
        for s in ss:
            by_t.setdefault(s["iqn"], []).append(s)
        for iqn in sorted(by_t):
            out.o("Target: %s (non-flash)" % iqn)
            for s in by_t[iqn]:
                pp = "%s,%d" % (fmt_portal(s["addr"], s["port"]), s["tpgt"])
                out.o("\tCurrent Portal: %s" % pp)
                out.o("\tPersistent Portal: %s" % pp)
                out.o("\t\t**********")
                out.o("\t\tInterface:")
                out.o("\t\t**********")
                out.o("\t\tIface Name: %s" % s["iface"])
                out.o("\t\tIface Transport: tcp")
                out.o("\t\tIface Initiatorname: %s" % sim.st["initiator"])
                out.o("\t\tIface IPaddress: %s" % ("fd00::100" if ":" in s["addr"] else "10.0.0.100"))
                out.o("\t\tIface HWaddress: default")
                out.o("\t\tIface Netdev: default")
                out.o("\t\tSID: %d" % s["sid"])
                out.o("\t\tiSCSI Connection State: %s" % (
                    "LOGGED IN" if s["state"] == "LOGGED_IN" else "TRANSPORT WAIT"))
                out.o("\t\tiSCSI Session State: %s" % s["state"])
                out.o("\t\tInternal iscsid Session State: %s" % (
                    "NO CHANGE" if s["state"] == "LOGGED_IN" else "REOPEN"))
                if level >= 3:
                    out.o("\t\t************************")
                    out.o("\t\tAttached SCSI devices:")
                    out.o("\t\t************************")
                    out.o("\t\tHost Number: %d\tState: running" % s["host"])
                    for name, d in sorted(sim.st["disks"].items(), key=lambda x: x[1]["lun"]):
                        if d["sid"] != s["sid"]:
                            continue
                        out.o("\t\tscsi%d Channel 00 Id 0 Lun: %d" % (s["host"], d["lun"]))
                        out.o("\t\t\tAttached scsi disk %s\t\tState: %s" % (name, d["state"]))
        return out

    # -- discovery ---------------------------------------------------------------------------
    def _drec_path(self, addr, port):
        return "/etc/iscsi/send_targets/%s,%d/st_config" % (addr, port)

    def _read_kv(self, path):
        rec = {}
        for ln in (self.sim.rfile(path, "") or "").splitlines():
            if " = " in ln and not ln.startswith("#"):
                k, v = ln.split(" = ", 1)
                rec[k] = v
        return rec

    def _write_kv(self, path, rec):
        self.sim.mkdir(os.path.dirname(path))
        lines = ["# BEGIN RECORD %s" % VERSION] + ["%s = %s" % (k, v) for k, v in rec.items()
                                                   if v not in (None, "<empty>")] + ["# END RECORD"]
        self.sim.wfile(path, "\n".join(lines) + "\n")

    def _new_drec(self, addr, port):
        rec = dict(DISC_DEFAULTS)
        rec["discovery.sendtargets.address"] = addr
        rec["discovery.sendtargets.port"] = str(port)
        self._write_kv(self._drec_path(addr, port), rec)
        return rec

    def sendtargets(self, addr, port, drec, persistent, iface):
        """Talk to the portal; print and (when persistent) record what it reports."""
        sim, out = self.sim, self.out
        st = sim.st
        key = "%s:%d" % (addr, port)
        down = dict((portal_key(p), how) for p, how in (sim.fault("portal_down", {}) or {}).items())
        served = sim.targets_on_portal(fmt_portal(addr, port))
        if key in down or not served:
            if down.get(key) == "blackhole":
                out.sleep = float(drec.get("discovery.sendtargets.timeo.login_timeout", "15")) * sim.time_scale()
                out.e("iscsiadm: connect to %s timed out" % addr)
            else:
                out.e("iscsiadm: cannot make connection to %s: Connection refused" % addr)
            out.e("iscsiadm: connection login retries (reopen_max) 5 exceeded")
            return out.fail(E_TRANS, "iscsiadm: Could not perform SendTargets discovery: encountered connection failure")
        need = None
        for iqn in served:
            if st["targets"][iqn]["discovery_chap"]:
                need = st["targets"][iqn]["discovery_chap"]
        if need:
            method = (drec.get("discovery.sendtargets.auth.authmethod") or "None").upper()
            creds = [drec.get("discovery.sendtargets.auth.username"), drec.get("discovery.sendtargets.auth.password")]
            if method != "CHAP" or creds != need:
                out.e("iscsiadm: Login failed to authenticate with target")
                out.e("iscsiadm: discovery login to %s rejected: initiator failed authorization" % addr)
                return out.fail(E_AUTH, "iscsiadm: Could not perform SendTargets discovery: "
                                        "iSCSI login failed due to authorization failure")
        found = []
        for iqn in served:
            t = st["targets"][iqn]
            for p in t["portals"]:
                a, pt = p.rsplit(":", 1)
                pt = int(pt)
                found.append((a, pt, t["tpgt"], iqn))
        iface = iface or "default"
        if persistent:
            st_dir = "/etc/iscsi/send_targets/%s,%d" % (addr, port)
            # records discovered earlier through this portal that are gone now are deleted
            fresh = set("%s,%s,%d,%s,%s" % (iqn, a, pt, tp, iface) for a, pt, tp, iqn in found)
            for e in os.listdir(sim.P(st_dir)):
                if e != "st_config" and e not in fresh:
                    iqn_, rest = e.split(",", 1)
                    a_, pt_, tp_, if_ = rest.rsplit(",", 3)
                    for r in self.records(iqn_, "%s:%s" % (a_, pt_) if ":" not in a_ else "[%s]:%s" % (a_, pt_), if_):
                        self.delete_rec(r)
                    sim.rm("%s/%s" % (st_dir, e))
            for a, pt, tp, iqn in found:
                # new + update: an existing record is rewritten with the defaults
                for r in self.records(iqn, fmt_portal(a, pt), iface):
                    self.delete_rec(r)
                path = self.new_rec(iqn, a, pt, tp, iface, disc=(addr, port))
                sim.link("%s/%s,%s,%d,%s,%s" % (st_dir, iqn, a, pt, tp, iface), os.path.dirname(path),
                         relative=False)
        for a, pt, tp, iqn in found:
            out.o("%s,%d %s" % (fmt_portal(a, pt), tp, iqn))
        return out

    def discovery(self):
        o, out, sim = self.o, self.out, self.sim
        if (o.get("type") or "").lower() not in ("sendtargets", "st"):
            if o.get("type") is None and not o.get("portal"):
                return self.list_drecs()
            return out.fail(E_INVAL, "iscsiadm: Unsupported discovery type.")
        if not o.get("portal"):
            return out.fail(E_INVAL, "iscsiadm: Please specify portal as <ipaddr>[:<ipport>]")
        addr, port = split_portal(o["portal"])
        persistent = "nonpersistent" not in o["op"]
        path = self._drec_path(addr, port)
        drec = self._read_kv(path) if sim.lexists(path) else None
        if persistent:
            if drec is None:
                drec = self._new_drec(addr, port)
        elif drec is None:
            drec = dict(DISC_DEFAULTS)
        r = self.sendtargets(addr, port, drec, persistent, o.get("interface"))
        if r.rc == 0 and o.get("login"):
            for ln in list(out.out):
                p, iqn = ln.split()
                self.login(iqn, p.rsplit(",", 1)[0], o.get("interface"))
        return out

    def list_drecs(self):
        out, sim = self.out, self.sim
        ds = sorted(os.listdir(sim.P("/etc/iscsi/send_targets")))
        if not ds:
            return out.fail(E_NO_OBJS, "iscsiadm: No discovery records found")
        for d in ds:
            a, p = d.rsplit(",", 1)
            out.o("%s via sendtargets" % fmt_portal(a, int(p)))
        return out

    def discoverydb(self):
        o, out, sim = self.o, self.out, self.sim
        op = o["op"][0] if o["op"] else None
        if not o.get("portal"):
            if op == "show" or op is None:
                if int(o.get("print") or 0) >= 1:
                    return self.discoverydb_tree()
                return self.list_drecs()
            return out.fail(E_INVAL, "iscsiadm: Please specify portal as <ipaddr>[:<ipport>]")
        addr, port = split_portal(o["portal"])
        path = self._drec_path(addr, port)
        exists = sim.lexists(path)
        where = "[%s,%d]" % (addr, port)
        if o.get("discover"):
            if not exists:
                return out.fail(E_IDBM, "iscsiadm: Discovery record %s not found." % where)
            persistent = "nonpersistent" not in o["op"]
            return self.sendtargets(addr, port, self._read_kv(path), persistent, o.get("interface"))
        if op == "new":
            if exists:
                return out.fail(E_SESS_EXISTS, "iscsiadm: Discovery record %s already exists." % where)
            self._new_drec(addr, port)
            out.o("New discovery record for %s added." % where)
            return out
        if op == "update":
            if not exists:
                return out.fail(E_IDBM, "iscsiadm: Discovery record %s not found." % where)
            if not o["name"] or len(o["name"]) != len(o["value"]):
                return out.fail(E_INVAL, "iscsiadm: update requires name and value")
            rec = self._read_kv(path)
            for k, v in zip(o["name"], o["value"]):
                if not k.startswith("discovery."):
                    return out.fail(E_INVAL, "iscsiadm: Cannot modify %s. Invalid param name." % k)
                rec[k] = v
            self._write_kv(path, rec)
            return out
        if op == "delete":
            if not exists:
                return out.fail(E_NO_OBJS, "iscsiadm: Discovery record %s not found." % where)
            st_dir = os.path.dirname(path)
            # the node records found through it go with it
            for e in sorted(os.listdir(sim.P(st_dir))):
                if e == "st_config":
                    continue
                iqn_, rest = e.split(",", 1)
                a_, pt_, tp_, if_ = rest.rsplit(",", 3)
                for r in self.records(iqn_, fmt_portal(a_, int(pt_)), if_):
                    if not sim.find_sessions(r["iqn"], fmt_portal(r["addr"], r["port"]), r["iface"]):
                        self.delete_rec(r)
            sim.rmtree(st_dir)
            return out
        if op in ("show", None):
            if not exists:
                return out.fail(E_NO_OBJS, "iscsiadm: Discovery record %s not found." % where)
            for ln in self.show_lines(self._read_kv(path), DISC_DEFAULTS, o.get("show")):
                out.o(ln)
            return out
        return out.fail(E_INVAL, "iscsiadm: Invalid operation '%s'" % op)

    def discoverydb_tree(self):
        out, sim = self.out, self.sim
        out.o("SENDTARGETS:")
        ds = sorted(os.listdir(sim.P("/etc/iscsi/send_targets")))
        if not ds:
            out.o("No targets found.")
        for d in ds:
            out.o("DiscoveryAddress: %s" % d)
            by_t = {}
            for e in sorted(os.listdir(sim.P("/etc/iscsi/send_targets/" + d))):
                if e == "st_config":
                    continue
                iqn_, rest = e.split(",", 1)
                a_, pt_, tp_, if_ = rest.rsplit(",", 3)
                by_t.setdefault(iqn_, []).append((a_, int(pt_), tp_, if_))
            for iqn in sorted(by_t):
                out.o("Target: %s" % iqn)
                for a, p, tp, ifc in by_t[iqn]:
                    out.o("\tPortal: %s,%s" % (fmt_portal(a, p), tp))
                    out.o("\t\tIface Name: %s" % ifc)
        for kind in ("iSNS:", "STATIC:", "FIRMWARE:"):
            out.o(kind)
            out.o("No targets found.")
        return out


def iscsiadm(sim, args):
    out = Out()
    try:
        o = parse_iscsiadm(args)
    except ValueError as e:
        return out.fail(E_INVAL, "iscsiadm: %s" % e)
    if o.get("version"):
        out.o("iscsiadm version %s" % VERSION)
        return out
    mode = o.get("mode")
    if mode is None:
        return out.fail(E_INVAL, "iscsiadm: no mode specified")
    mode = {"discoverydb": "discoverydb", "discovery": "discovery", "node": "node", "session": "session",
            "iface": "iface"}.get(mode)
    if mode is None:
        return out.fail(E_INVAL, "iscsiadm: Invalid mode '%s'" % o.get("mode"))
    ia = Iscsiadm(sim, o, out)
    with sim.locked():
        if mode == "iface":
            out.o("default tcp,<empty>,<empty>,<empty>,<empty>")
            out.o("iser iser,<empty>,<empty>,<empty>,<empty>")
            return out
        return getattr(ia, mode)()


# ======================================================================================= multipath
def _mp_ll(sim, dms):
    out = Out()
    st = sim.st
    for dm in dms:
        m = st["maps"][dm]
        paths = sorted(m["paths"], key=lambda n: st["disks"][n]["index"])
        vendor, model = "LIO-ORG", "FILEIO"
        if paths:
            t = st["targets"].get(st["disks"][paths[0]]["iqn"]) or {}
            vendor, model = t.get("vendor", vendor), t.get("model", model)
        out.o("%s %s %s,%s" % (m["name"], dm, vendor, model))
        size = m["size"] * 512
        hs = "%dM" % (size // (1 << 20)) if size < (1 << 30) else "%gG" % round(size / float(1 << 30), 1)
        out.o("size=%s features='%s' hwhandler='1 alua' wp=rw" % (hs, sim.features(m)))
        if not paths:
            continue
        active = any(m["paths"][p] == "active" for p in paths)
        out.o("`-+- policy='service-time 0' prio=50 status=%s" % ("active" if active else "enabled"))
        for i, p in enumerate(paths):
            d = st["disks"][p]
            state = "active ready running" if m["paths"][p] == "active" else "failed faulty running"
            out.o("  %s %s %s %-5s %s" % ("`-" if i == len(paths) - 1 else "|-", d["hctl"], p, d["devt"], state))
    return out


def multipath(sim, args):
    out = Out()
    a = list(args)
    with sim.locked() as st:
        if not a or a[0] in ("-ll", "-l") or (a[0] in ("-v2", "-v3") and len(a) == 1):
            dms = sorted((k for k, m in st["maps"].items() if m.get("kind") == "mpath"), key=lambda k: int(k[3:]))
            if len(a) > 1:
                dm = sim.find_map(a[1])
                dms = [dm] if dm and st["maps"][dm].get("kind") == "mpath" else []
            return _mp_ll(sim, dms)
        if a[0] in ("-f", "-F"):
            targets = a[1:2] if a[0] == "-f" else sorted(k for k, m in st["maps"].items() if m.get("kind") == "mpath")
            if a[0] == "-f" and not targets:
                return out.fail(1, "multipath: option requires an argument -- 'f'")
            ff = sim.fault("flush_fail", {}) or {}
            rc = 0
            for ref in targets:
                dm = sim.find_map(ref)
                if dm is None or st["maps"][dm].get("kind") != "mpath":
                    out.e("%s is not a multipath device" % ref)
                    rc = 1
                    continue
                m = st["maps"][dm]
                how = None
                for k in (ref, m["name"], m["wwid"], dm, "/dev/" + dm, "/dev/mapper/" + m["name"]):
                    if k in ff:
                        how = ff[k]
                        break
                if how == "in_use" or sim.map_in_use(dm):
                    out.e("%s: map in use" % m["name"])
                    rc = 1
                    continue
                if how == "io_error":
                    out.e("%s: failed to remove multipath map: Input/output error" % m["name"])
                    rc = 1
                    continue
                sim.remove_map(dm)
            out.rc = rc
            return out
        if a[0] == "-a" and len(a) > 1:
            w = a[1]
            if w.startswith("/dev/"):
                name = os.path.basename(sim.resolve(w))
                d = st["disks"].get(name)
                if d is None:
                    return out.fail(1, "%s: failed to get wwid" % w)
                w = d["wwid"]
            sim.wwid_add(w)
            out.o("wwid '%s' added" % w)
            return out
        if a[0] == "-w" and len(a) > 1:
            sim.wwid_remove(a[1])
            out.o("wwid '%s' removed" % a[1])
            return out
        if a[0] == "-W":
            keep = [m["wwid"] for m in st["maps"].values() if m.get("kind") == "mpath"]
            from .core import WWIDS_HEADER
            sim.wfile("/etc/multipath/wwids", WWIDS_HEADER + "".join("/%s/\n" % w for w in sorted(set(keep))))
            out.o("successfully reset wwids")
            return out
        if a[0] == "-C" and len(a) > 1:
            dm = sim.find_map(a[1] if a[1].startswith("/dev/") or not a[1].startswith("dm-") else a[1])
            if dm is None:
                return out.fail(1)
            m = st["maps"][dm]
            ok = any(v == "active" for v in m["paths"].values())
            out.rc = 0 if ok else 1
            return out
        if a[0] in ("-c",) and len(a) > 1:
            name = os.path.basename(sim.resolve(a[1])) if a[1].startswith("/dev/") else a[1]
            d = st["disks"].get(name)
            if d and (sim.map_of_path(name) or d["wwid"] in sim._wwids()):
                out.o("%s is a valid multipath device path" % a[1])
                return out
            return out.fail(1, "%s is not a valid multipath device path" % a[1])
        if a[0] == "-r" or a[0] == "-v2" or a[0] == "-v3":
            if sim.mpathd_up():
                sim.mpathd_reconfigure()
            return out
    return out.fail(1, "multipath: unsupported arguments in the simulator: %s" % " ".join(a))


def _show_fmt(fmt, vals):
    res = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            res.append(str(vals.get(fmt[i + 1], "%" + fmt[i + 1])))
            i += 2
            continue
        res.append(c)
        i += 1
    return "".join(res)


def multipathd(sim, args):
    out = Out()
    a = list(args)
    if a[:1] == ["-k"]:
        a = " ".join(a[1:]).split()
    down = sim.fault("multipathd_down", False)
    with sim.locked() as st:
        if not st["multipathd"] or down:
            out.o("error receiving packet")
            out.rc = 0 if down == "rc0" else 1
            return out
        cmd = " ".join(a[:3])
        if a[:2] == ["show", "status"]:
            paths = [n for n, d in st["disks"].items() if not d.get("mpathd_forgot")]
            up = sum(1 for dm, m in st["maps"].items() for v in m.get("paths", {}).values() if v == "active")
            out.o("path checker states:")
            out.o("up                  %d" % up)
            out.o("")
            out.o("paths: %d" % len(paths))
            out.o("busy: False")
            return out
        if a[:2] == ["show", "paths"]:
            rows = []
            for n, d in sorted(st["disks"].items(), key=lambda x: x[1]["index"]):
                if d.get("mpathd_forgot"):
                    continue    # `del path` dropped it from multipathd's path list
                dm = sim.map_of_path(n)
                pst = st["maps"][dm]["paths"][n] if dm else "undef"
                rows.append({"d": n, "w": d["wwid"], "i": d["hctl"], "D": d["devt"],
                             "t": pst, "T": "ready" if pst != "failed" and d["state"] == "running" else "faulty",
                             "o": "running" if d["state"] == "running" else "offline",
                             "m": st["maps"][dm]["name"] if dm else "[orphan]", "p": 50})
            if "format" in a:
                fmt = a[a.index("format") + 1] if a.index("format") + 1 < len(a) else "%d"
                if "raw" not in a:
                    out.o(_show_fmt(fmt, dict((k, k) for k in "dwiDtTomp")))
                for r in rows:
                    out.o(_show_fmt(fmt, r))
                return out
            out.o("hcil    dev dev_t pri dm_st  chk_st dev_st  next_check")
            for r in rows:
                out.o("%s %s %s %d %s %s %s XX........ 1/20" % (r["i"], r["d"], r["D"], r["p"], r["t"], r["T"], r["o"]))
            return out
        if a[:2] == ["show", "maps"]:
            rows = []
            for dm, m in sorted(st["maps"].items(), key=lambda x: int(x[0][3:])):
                if m.get("kind") != "mpath":
                    continue
                rows.append({"n": m["name"], "w": m["wwid"], "d": dm, "N": len(m["paths"]),
                             "S": "%dM" % (m["size"] // 2048),
                             "Q": "off" if m.get("no_queueing") else "%d chk" % NO_PATH_RETRY})
            fmt = "%n %d %w"
            if "format" in a and a.index("format") + 1 < len(a):
                fmt = a[a.index("format") + 1]
            if "raw" not in a:
                out.o(_show_fmt(fmt, {"n": "name", "d": "sysfs", "w": "uuid", "N": "paths", "S": "size", "Q": "queueing"}))
            for r in rows:
                out.o(_show_fmt(fmt, r))
            return out
        if cmd in ("add path",) or a[:2] == ["add", "path"]:
            name = os.path.basename(a[2]) if len(a) > 2 else ""
            if name not in st["disks"]:
                out.o("fail")
                out.rc = 1
                return out
            dm = sim.mpathd_path_added(name)
            if dm is None:
                out.o("fail")
                out.rc = 1
                return out
            out.o("ok")
            return out
        if a[:2] == ["del", "path"] or a[:2] == ["remove", "path"]:
            # cli_del_path: ev_remove_path drops the path from its map (a reload of the other paths; the
            # last path of an unused map flushes it) and from multipathd's path list
            name = os.path.basename(a[2]) if len(a) > 2 else ""
            d = st["disks"].get(name)
            if sim.map_of_path(name) is None and (d is None or d.get("mpathd_forgot")):
                sim.mpathd_log("%s: path already removed" % name)
                out.o("fail")
                out.rc = 1
                return out
            sim.mpathd_path_removed(name, daemon_cmd=True)
            if d is not None:
                d["mpathd_forgot"] = True
            out.o("ok")
            return out
        if a[:1] in (["disablequeueing"], ["restorequeueing"]) and len(a) > 1:
            on = a[0] == "restorequeueing"
            if a[1] in ("maps", "multipaths"):
                dms = [k for k, m in st["maps"].items() if m.get("kind") == "mpath"]
            elif a[1] in ("map", "multipath") and len(a) > 2:
                dm = sim.find_map(a[2])
                if dm is None or st["maps"][dm].get("kind") != "mpath":
                    sim.mpathd_log("%s: invalid map name. cannot %s queueing" % (a[2], "restore" if on else "disable"))
                    out.o("fail")
                    out.rc = 1
                    return out
                dms = [dm]
            else:
                return out.fail(1, "multipathd: unsupported command in the simulator: %s" % " ".join(a))
            for dm in dms:
                st["maps"][dm]["no_queueing"] = not on
                st["maps"][dm]["queueing"] = on
            out.o("ok")
            return out
        if a[:2] in (["del", "map"], ["remove", "map"]):
            dm = sim.find_map(a[2]) if len(a) > 2 else None
            if dm is None or st["maps"][dm].get("kind") != "mpath" or sim.map_in_use(dm):
                out.o("fail")
                out.rc = 1
                return out
            sim.remove_map(dm)
            out.o("ok")
            return out
        if a and a[0] not in MULTIPATHD_VERBS:
            # get_cmdvec: ESRCH; the reply is the help text, and the client exits 0 (only "fail" is 1)
            out.o("%s: not found" % " ".join(a))
            out.o("multipath-tools v0.9.4 (12/19, 2022)")
            out.o("CLI commands reference:")
            for ln in MULTIPATHD_HELP:
                out.o(" " + ln)
            return out
        if a[:1] == ["reconfigure"]:
            sim.mpathd_reconfigure()
            out.o("ok")
            return out
        if a[:2] == ["resize", "map"]:
            dm = sim.find_map(a[2]) if len(a) > 2 else None
            if dm is None:
                out.o("fail")
                out.rc = 1
                return out
            m = st["maps"][dm]
            if m["paths"]:
                d = st["disks"][sorted(m["paths"])[0]]
                m["size"] = d["size_mb"] * 2048
                sim.attr("/sys/devices/virtual/block/%s/size" % dm, m["size"])
            out.o("ok")
            return out
    return out.fail(1, "multipathd: unsupported command in the simulator: %s" % " ".join(a))


# multipathd 0.9.4's verbs (cli.c load_keys); any other first word is "not found"
MULTIPATHD_VERBS = ("list", "show", "add", "remove", "del", "switch", "switchgroup", "suspend", "resume",
                    "reinstate", "fail", "resize", "reset", "reload", "forcequeueing", "disablequeueing",
                    "restorequeueing", "reconfigure", "quit", "exit", "shutdown", "getprstatus", "setprstatus",
                    "unsetprstatus", "getprkey", "setprkey", "unsetprkey", "setmarginal", "unsetmarginal")
MULTIPATHD_HELP = ("list|show paths", "list|show maps|multipaths", "add path $path", "remove|del path $path",
                   "add map|multipath $map", "remove|del map|multipath $map", "reconfigure",
                   "resize map|multipath $map", "disablequeueing map|multipath $map",
                   "restorequeueing map|multipath $map", "disablequeueing maps|multipaths",
                   "restorequeueing maps|multipaths", "forcequeueing daemon", "restorequeueing daemon")


# ========================================================================================== others
def _dev_name(sim, dev):
    if not dev.startswith("/dev/") or not sim.lexists(dev):
        return None
    real = sim.resolve(dev)
    if not real.startswith("/dev/") or not os.path.exists(sim.P(real)):
        return None
    return os.path.basename(real)


def blockdev(sim, args):
    out = Out()
    a = list(args)
    devs = [x for x in a if x.startswith("/")]
    opts = [x for x in a if x.startswith("-")]
    if not devs:
        return out.fail(1, "blockdev: no device specified")
    res = []
    with sim.locked() as st:
        for dev in devs:
            name = _dev_name(sim, dev)
            if name is None or not sim.lexists("/sys/class/block/" + name):
                return out.fail(1, "blockdev: cannot open %s: No such file or directory" % dev)
            ff = sim.fault("flush_fail", {}) or {}
            keys = [dev, "/dev/" + name, name]
            m = st["maps"].get(name)
            if m:
                keys += [m["name"], "/dev/mapper/" + m["name"]]
            for op in opts:
                if op == "--flushbufs":
                    if any(ff.get(k) == "io_error" for k in keys):
                        return out.fail(1, "blockdev: ioctl error on BLKFLSBUF: Input/output error")
                    if m and not sim.map_active_paths(name):
                        # the flush is I/O on the map: queued while queue_if_no_path is on, EIO when off
                        if sim.map_queueing(name):
                            out.io_wait = name
                            return out
                        return out.fail(1, EIO_FLUSH)
                elif op == "--getsize64":
                    res.append(str(int(sim.rfile("/sys/class/block/%s/size" % name, "0").strip()) * 512))
                elif op == "--getsz":
                    res.append(sim.rfile("/sys/class/block/%s/size" % name, "0").strip())
                elif op in ("--getss", "--getbsz", "--getpbsz"):
                    res.append("512" if op != "--getbsz" else "4096")
                elif op == "--getro":
                    res.append("0")
                elif op in ("--rereadpt", "--setrw", "--setro"):
                    pass
                else:
                    return out.fail(1, "blockdev: Unknown command: %s" % op)
    for r in res:
        out.o(r)
    return out


EIO_FLUSH = "blockdev: ioctl error on BLKFLSBUF: Input/output error"
IO_POLL = 0.05


def wait_io(sim, out, timeout=HANG_SECONDS):
    """Block like I/O queued on map ``out.io_wait``: it completes (rc 0) once a path of the map is
    active again, fails with EIO once queueing is turned off, and fails when the map goes away.
    Without any of these it sleeps until ``timeout`` (the caller's timeout must kill it)."""
    dm = out.io_wait
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(IO_POLL)
        with sim.locked() as st:
            if dm not in st["maps"]:
                return out.fail(1, "blockdev: ioctl error on BLKFLSBUF: No such device or address")
            if sim.map_active_paths(dm):
                return out
            if not sim.map_queueing(dm):
                return out.fail(1, EIO_FLUSH)
    return out.fail(1, EIO_FLUSH)


def _dm_ref(sim, ref):
    """dm-N of a dmsetup device argument: a dm name, /dev/mapper/NAME, /dev/dm-N."""
    st = sim.st
    if ref.startswith("/dev/"):
        name = _dev_name(sim, ref)
        return name if name in st["maps"] else None
    for dm, m in st["maps"].items():
        if m["name"] == ref:
            return dm
    return None


def _dm_table(sim, dm):
    st = sim.st
    m = st["maps"][dm]
    if m.get("kind") == "part":
        return "0 %d linear %s %d" % (m["size"], st["maps"][m["parent"]]["devt"], 2048 * int(m["name"].rsplit("-part", 1)[1]))
    paths = sorted(m["paths"], key=lambda n: st["disks"][n]["index"])
    feats = sim.features(m)
    if not paths:
        return "0 %d multipath %s 1 alua 0 0" % (m["size"], feats)
    return "0 %d multipath %s 1 alua 1 1 service-time 0 %d 1 %s" % (
        m["size"], feats, len(paths), " ".join("%s 1" % st["disks"][p]["devt"] for p in paths))


def _dm_open_count(sim, dm):
    return len(sim.opened(dm)) + len(sim.map_holders(dm))


def dmsetup(sim, args):
    """dmsetup message NAME 0 queue_if_no_path|fail_if_no_path, table [NAME], info [NAME], ls."""
    out = Out()
    a = [x for x in args if x not in ("-v", "--noudevsync", "--noflush")]
    with sim.locked() as st:
        if not a:
            return out.fail(1, "Command not specified")
        cmd = a[0]
        if cmd == "message":
            if len(a) < 4:
                return out.fail(1, "dmsetup message: Please specify device, sector and message.\nCommand failed.")
            dm = _dm_ref(sim, a[1])
            if dm is None:
                return out.fail(1, "device-mapper: message ioctl on %s  failed: No such device or address\n"
                                   "Command failed." % a[1])
            m = st["maps"][dm]
            msg = " ".join(a[3:])
            if m.get("kind") != "mpath" or msg not in ("queue_if_no_path", "fail_if_no_path"):
                return out.fail(1, "device-mapper: message ioctl on %s  failed: Invalid argument\n"
                                   "Command failed." % m["name"])
            m["queueing"] = msg == "queue_if_no_path"    # the kernel flag only: multipathd does not know
            return out
        if cmd in ("table", "info", "ls"):
            if len(a) > 1 and cmd != "ls":
                dm = _dm_ref(sim, a[1])
                if dm is None:
                    return out.fail(1, "Device does not exist.\nCommand failed.")
                dms = [dm]
            else:
                dms = sorted(st["maps"], key=lambda k: st["maps"][k]["name"])
                if not dms:
                    out.o("No devices found")
                    return out
            for i, dm in enumerate(dms):
                m = st["maps"][dm]
                if cmd == "ls":
                    out.o("%s\t(%s)" % (m["name"], m["devt"]))
                elif cmd == "table":
                    out.o(("%s: " % m["name"] if len(a) == 1 else "") + _dm_table(sim, dm))
                else:
                    if i:
                        out.o("")
                    major, minor = m["devt"].split(":")
                    for k, v in (("Name", m["name"]), ("State", "ACTIVE"), ("Read Ahead", "256"),
                                 ("Tables present", "LIVE"), ("Open count", _dm_open_count(sim, dm)),
                                 ("Event number", 0), ("Major, minor", "%s, %s" % (major, minor)),
                                 ("Number of targets", 1), ("UUID", m["uuid"])):
                        out.o("%-19s%s" % (k + ":", v) if k != "UUID" else "UUID: %s" % v)
            if cmd == "info" and dms:
                out.o("")
            return out
    return out.fail(1, "dmsetup: unsupported in the simulator: %s" % " ".join(args))


def fuser(sim, args):
    """psmisc fuser: pids on stdout (leading space), "DEV:" on stderr; rc 1 and silent when idle."""
    out = Out()
    verbose = any(x in ("-v", "--verbose") for x in args)
    files = [x for x in args if not x.startswith("-")]
    if not files:
        return out.fail(1, "No process specification given")
    found_any = False
    with sim.locked() as st:
        for f in files:
            if not sim.lexists(f) or not os.path.exists(sim.P(sim.resolve(f))):
                out.e("Specified filename %s does not exist." % f)
                out.rc = 1
                continue
            real = sim.resolve(f)
            pids = []
            for pid, p in sorted(st["procs"].items(), key=lambda x: int(x[0])):
                for t in p["fds"].values():
                    if t == real or (sim.lexists(t) and sim.resolve(t) == real):
                        pids.append(pid)
                        break
            if not pids:
                continue
            found_any = True
            if verbose:
                out.e("%-21s USER        PID ACCESS COMMAND" % "")
                for i, pid in enumerate(pids):
                    comm = (sim.rfile("/proc/%s/comm" % pid, "?") or "?").strip()
                    out.e("%-21s root %10s F.... %s" % ((f + ":") if i == 0 else "", pid, comm))
            else:
                out.err.append("%s:" % f)
                out.out.append("".join(" %s" % p for p in pids))
                out.err.append("\n")
    if not out.rc:
        out.rc = 0 if found_any else 1
    return out


def udevadm(sim, args):
    out = Out()
    if args[:1] in (["settle"], ["trigger"], ["control"]):
        return out
    if args[:1] == ["info"]:
        return out
    return out.fail(1, "udevadm: unsupported in the simulator: %s" % " ".join(args))


def partprobe(sim, args):
    out = Out()
    with sim.locked():
        for dev in [x for x in args if not x.startswith("-")]:
            if _dev_name(sim, dev) is None:
                return out.fail(1, "Error: Could not stat device %s - No such file or directory." % dev)
    return out


TOOLS = {"iscsiadm": iscsiadm, "multipath": multipath, "multipathd": multipathd, "blockdev": blockdev,
         "fuser": fuser, "udevadm": udevadm, "partprobe": partprobe, "dmsetup": dmsetup}


def hang_matches(spec, tool, args):
    if isinstance(spec, dict):
        if spec.get("cmd") not in (None, tool):
            return False
        need = spec.get("args_contain")
        if need is None:
            return True
        needs = [need] if isinstance(need, str) else list(need)
        joined = " ".join(args)
        return all((n in args) or (" " in n and n in joined) for n in needs)
    toks = str(spec).split()
    if not toks or toks[0] != tool:
        return False
    pat, argv = toks[1:], list(args)
    return _match_seq(pat, argv)


def _match_seq(pat, argv):
    """argv-prefix match; "..." in the pattern skips any number of arguments."""
    if not pat:
        return True
    if pat[0] == "...":
        return any(_match_seq(pat[1:], argv[i:]) for i in range(len(argv) + 1))
    return bool(argv) and argv[0] == pat[0] and _match_seq(pat[1:], argv[1:])


def prologue(sim, tool, args):
    """Latency, the command log, the hang fault.  Returns True when the command must hang."""
    faults = sim.faults()
    lat = faults.get("latency")
    if lat:
        time.sleep(float(lat))
    sim.log_command([tool] + list(args))
    sim.tick()    # recovery timers set by another process (path_fail) expire here too
    for spec in faults.get("hang") or []:
        if hang_matches(spec, tool, args):
            return True
    return False


def run(sim, tool, args):
    """Run a fake command in-process (after the prologue).  Returns (rc, stdout, stderr, sleep); a
    command that would block on queued I/O returns sleep = HANG_SECONDS."""
    fn = TOOLS[tool]
    o = fn(sim, list(args))
    return o.rc, "".join(o.out), "".join(o.err), HANG_SECONDS if o.io_wait else o.sleep


def main(tool=None, argv=None):
    tool = tool or os.path.basename(sys.argv[0])
    args = sys.argv[1:] if argv is None else argv
    root = os.environ.get("BRICK_SIM_ROOT")
    if not root:
        sys.stderr.write("%s (brick sim): BRICK_SIM_ROOT is not set\n" % tool)
        return 127
    sim = Sim(root)
    if prologue(sim, tool, args):
        time.sleep(HANG_SECONDS)
        return 1
    o = TOOLS[tool](sim, list(args))
    if o.io_wait:
        wait_io(sim, o)
    rc, so, se, sleep = o.rc, "".join(o.out), "".join(o.err), o.sleep
    if sleep:
        time.sleep(sleep)
    if se and tool == "fuser":
        # psmisc interleaves: "DEV:" on stderr, pids on stdout, newline on stderr
        sys.stderr.write(se)
        sys.stderr.flush()
        sys.stdout.write(so)
    else:
        sys.stdout.write(so)
        sys.stderr.write(se)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc
