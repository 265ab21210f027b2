# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""brick.storage boot scan: after iscsid's boot logins, scan exactly the LUNs the collection attached.

Run by brick-storage-boot-luns.service (role brick.storage.initiator).  The attach records each attached LUN in
/var/lib/brick-storage/boot-luns/<IQN>.json and gives its node record ``node.session.scan = manual``, so the boot
login brings in no LUN by itself; this script waits (bounded) for each recorded session to be logged in and writes
"C T L" for each recorded LUN to /sys/class/scsi_host/hostH/scan.  Nothing else is scanned: another LUN the target
maps to this initiator stays out, as it was before the reboot.

Prints one JSON document: {"scanned": ["hostH C T L", ...], "missing": ["PORTAL IQN IFACE", ...], "errors": [...]}.
Exit code 0 when every recorded session was found, 1 otherwise.  Stdlib only (Python 3.6+).
"""

from __future__ import print_function

import argparse
import ipaddress
import json
import os
import sys
import threading
import time

STATE_DIR = "/var/lib/brick-storage/boot-luns"
POLL = 0.5
WRITE_TIMEOUT = 30.0


def address_key(address):
    text = str(address or "").strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).compressed
    except ValueError:
        return text


def portal_text(address, port):
    address = str(address)
    return ("[%s]:%s" if ":" in address else "%s:%s") % (address, port)


def read(root, path):
    try:
        with open(root + path) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def listdir(root, path):
    try:
        return sorted(os.listdir(root + path))
    except OSError:
        return []


def load_records(root, state_dir, errors):
    """[(iqn, address, port, iface, [kernel LUNs])] of every state file."""
    records = []
    for name in listdir(root, state_dir):
        if not name.endswith(".json") or name.startswith("."):
            continue
        try:
            with open("%s%s/%s" % (root, state_dir, name)) as handle:
                data = json.load(handle)
            iqn = data["iqn"]
            for rec in data["records"]:
                luns = sorted(set(int(x) for x in rec["luns"]))
                if luns:
                    records.append((iqn, rec["address"], int(rec["port"]), rec.get("iface") or "default", luns))
        except (IOError, OSError, ValueError, KeyError, TypeError) as e:
            errors.append("%s/%s: %s" % (state_dir, name, e))
    return records


def sessions(root):
    """Logged-in iSCSI sessions: dicts with iqn, iface, addresses, port, host, dir (the session's sysfs dir)."""
    out = []
    for name in listdir(root, "/sys/class/iscsi_session"):
        attrs = "/sys/class/iscsi_session/" + name
        if read(root, attrs + "/state") != "LOGGED_IN":
            continue
        conn = "/sys/class/iscsi_connection/connection%s:0" % name[len("session"):]
        real = os.path.realpath(root + attrs)
        session_dir = os.path.dirname(os.path.dirname(real))
        hosts = [part for part in real.split(os.sep) if part.startswith("host") and part[4:].isdigit()]
        if not hosts:
            continue
        out.append({"iqn": read(root, attrs + "/targetname"), "iface": read(root, attrs + "/ifacename") or "default",
                    "addresses": set(address_key(read(root, conn + "/" + key))
                                     for key in ("persistent_address", "address")),
                    "ports": set(read(root, conn + "/" + key) for key in ("persistent_port", "port")),
                    "host": int(hosts[-1][4:]), "dir": session_dir})
    return out


def find_session(found, record):
    iqn, address, port, iface, _luns = record
    for session in found:
        if (session["iqn"] == iqn and session["iface"] == iface and address_key(address) in session["addresses"]
                and str(port) in session["ports"]):
            return session
    return None


def scan_lines(session):
    """The "C T" of the session's SCSI target ("- -" before the kernel made one) and the LUNs it has already."""
    channel_target, present = "- -", set()
    for entry in sorted(os.listdir(session["dir"])) if os.path.isdir(session["dir"]) else []:
        parts = entry[len("target"):].split(":") if entry.startswith("target") else []
        if len(parts) != 3:
            continue
        channel_target = "%s %s" % (parts[1], parts[2])
        for device in os.listdir(os.path.join(session["dir"], entry)):
            hctl = device.split(":")
            if len(hctl) == 4 and hctl[3].isdigit():
                present.add(int(hctl[3]))
    return channel_target, present


def bounded_write(write, path, data, timeout):
    """``write(path, data)`` in a thread: a scan that blocks in the kernel (a session in recovery) costs at most
    ``timeout`` seconds.  Returns an error text or None."""
    result = []

    def run():
        try:
            write(path, data)
            result.append(None)
        except (IOError, OSError) as e:
            result.append(str(e))

    worker = threading.Thread(target=run)
    worker.daemon = True
    worker.start()
    worker.join(max(0.1, timeout))
    if not result:
        return "the write did not return within %.0fs" % timeout
    return result[0]


def scan_record(session, luns, write, timeout, report):
    channel_target, present = scan_lines(session)
    for lun in luns:
        if lun in present:
            continue
        line = "%s %d" % (channel_target, lun)
        error = bounded_write(write, "/sys/class/scsi_host/host%d/scan" % session["host"], line, timeout)
        if error:
            report["errors"].append("host%d scan %s: %s" % (session["host"], line, error))
        else:
            report["scanned"].append("host%d %s" % (session["host"], line))


def boot_scan(root="", state_dir=STATE_DIR, timeout=120.0, write=None, clock=time.monotonic, sleep=time.sleep):
    """Scan the recorded LUNs of every recorded session that logs in within ``timeout`` seconds."""
    root = "" if root in (None, "", "/") else root.rstrip("/")
    if write is None:
        def write(path, data):
            with open(root + path, "w") as handle:
                handle.write(data)
    report = {"scanned": [], "missing": [], "errors": []}
    pending = load_records(root, state_dir, report["errors"])
    deadline = clock() + timeout
    while pending:
        found = sessions(root)
        waiting = []
        for record in pending:
            session = find_session(found, record)
            if session is None:
                waiting.append(record)
            else:
                scan_record(session, record[4], write, min(WRITE_TIMEOUT, max(1.0, deadline - clock())), report)
        pending = waiting
        if not pending or clock() >= deadline:
            break
        sleep(POLL)
    report["missing"] = ["%s %s %s" % (portal_text(address, port), iqn, iface)
                         for iqn, address, port, iface, _luns in pending]
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description="Scan the LUNs brick.storage attached, after the boot logins.")
    parser.add_argument("--root", default=os.environ.get("BRICK_STORAGE_ROOT", "/"), help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", default=STATE_DIR)
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the recorded sessions to log in (default 120)")
    args = parser.parse_args(argv)
    report = boot_scan(args.root, args.state_dir, args.timeout)
    for line in report["missing"]:
        print("brick-storage-boot-luns: no session of %s within %.0fs: its LUNs were not scanned"
              % (line, args.timeout), file=sys.stderr)
    for line in report["errors"]:
        print("brick-storage-boot-luns: %s" % line, file=sys.stderr)
    print(json.dumps(report, sort_keys=True))
    return 1 if report["missing"] or report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
