# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read what the initiator role manages, in one process, and say what has to change (brick.storage.initiator).

Run by the role as ``python3 - REQUEST_JSON`` with this file on stdin; prints one JSON document. It only reads
(it is safe in check mode); the role writes with its own tasks. Python 3.6+, stdlib only.

iscsid.conf can hold CHAP secrets (the admin's, or settings the role is given): the read prints only the names of
the keys that change, never the file's text, and gets only the settings that are no secret. ``render-conf`` makes
the new text; the role runs it with no_log and the whole request on stdin, ahead of this script
(``BRICK_REQUEST = "..."``, argv ``- render-conf``), so no secret is ever on a command line or in a printed result.
Every command it runs has a timeout (``command_timeout`` of the request, COMMAND_TIMEOUT seconds by default).
"""

import json
import os
import re
import signal
import subprocess
import sys

IFACE_KEYS = {
    "transport": "iface.transport_name",
    "netdev": "iface.net_ifacename",
    "hwaddress": "iface.hwaddress",
    "ipaddress": "iface.ipaddress",
    "initiatorname": "iface.initiatorname",
}
# transports whose iface is an offload engine of a NIC: bound by the NIC's MAC (iface.hwaddress)
OFFLOAD = ("bnx2i", "be2iscsi", "cxgb3i", "cxgb4i", "qla4xxx", "qedi", "ocs")
# iscsid.conf keys whose value is a secret (node.session.auth.password[_in], discovery.*.auth.password[_in]); the
# role's vars/main.yml splits brick_initiator_iscsid_conf with the same expression
SECRET_KEY_RX = re.compile(r"password|secret", re.I)
# seconds any command may run (dpkg-query, rpm, systemctl, iscsiadm): a hung one is killed, never waited for
COMMAND_TIMEOUT = 60
TIMEOUT = {"seconds": COMMAND_TIMEOUT}


def read(path, default=None):
    try:
        with open(path) as f:
            return f.read()
    except (IOError, OSError):
        return default


def run(argv, timeout=None):
    """(rc, stdout, stderr) of a command, killed with its process group after ``timeout`` seconds (rc 124)."""
    seconds = timeout if timeout is not None else TIMEOUT["seconds"]
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             start_new_session=True)
    except OSError as e:
        return 127, "", str(e)
    try:
        out, err = p.communicate(timeout=seconds)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return 124, "", "%s: no answer within %g s (killed)" % (argv[0], seconds)


def split_settings(settings):
    """(settings that are no secret, settings whose value is a secret) of brick_initiator_iscsid_conf."""
    public, secret = {}, {}
    for key, value in (settings or {}).items():
        (secret if SECRET_KEY_RX.search(key) else public)[key] = value
    return public, secret


def render_conf(req):
    """The new iscsid.conf text with every setting (secrets included), the changed keys and a report of them in
    which a secret's value is not shown. Printed only by the role's no_log task."""
    text = read(req["iscsid_conf"])
    if text is None:
        return {"content": None, "changed": [], "report": []}
    settings = req.get("iscsid_settings", {})
    new_text, changed = edit_conf(text, settings)
    report = ["%s = %s" % (key, "(secret, not shown)" if SECRET_KEY_RX.search(key) else settings[key])
              for key in changed]
    return {"content": new_text, "changed": changed, "report": report}


def missing_packages(tool, names):
    if not names:
        return []
    if tool == "dpkg":
        rc, out, _err = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n"] + names)
        have = set(line.split()[0] for line in out.splitlines() if line.endswith(" installed"))
    elif tool == "rpm":
        rc, out, _err = run(["rpm", "-q", "--qf", "%{NAME}\n"] + names)
        have = set(line.strip() for line in out.splitlines() if line.strip() and " " not in line.strip())
    else:
        return list(names)
    return [n for n in names if n not in have]


def initiator_name(text):
    """The InitiatorName of an initiatorname.iscsi, or None (missing file, or a placeholder to generate)."""
    if text is None:
        return None
    name = None
    for line in text.splitlines():
        m = re.match(r"^\s*InitiatorName\s*=\s*(\S+)\s*$", line)
        if m:
            name = m.group(1)
    if name and ("<" in name or name.lower() in ("iqn.", "generatename=yes")):
        return None
    return name


def edit_conf(text, settings):
    """(new text or None when nothing changes, changed keys) of an iscsid.conf with ``settings`` set.

    Every uncommented line of a key is rewritten (the last one would win otherwise); a missing key is appended."""
    lines = (text or "").splitlines()
    changed = []
    for key, value in settings.items():
        want = "%s = %s" % (key, value)
        rx = re.compile(r"^\s*%s\s*=(.*)$" % re.escape(key))
        found = False
        for i, line in enumerate(lines):
            m = rx.match(line)
            if m:
                found = True
                if m.group(1).strip() != str(value):
                    lines[i] = want
                    if key not in changed:
                        changed.append(key)
        if not found:
            if "# Set by brick.storage.initiator" not in lines:
                lines += ["", "# Set by brick.storage.initiator"]
            lines.append(want)
            changed.append(key)
    if not changed:
        return None, []
    return "\n".join(lines) + "\n", changed


def parse_record(text):
    rec = {}
    for line in (text or "").splitlines():
        m = re.match(r"^\s*([\w.\[\]]+)\s*=\s*(.*?)\s*$", line)
        if m:
            v = m.group(2)
            rec[m.group(1)] = "" if v == "<empty>" else v
    return rec


def iface_commands(req, errors):
    """iscsiadm argv lists that bring the requested ifaces to their wanted settings (none when they are)."""
    cmds = []
    for iface in req.get("ifaces", []):
        name = iface.get("name")
        if not name or not re.match(r"^[A-Za-z0-9_.:-]+$", name) or name in ("default", "iser"):
            errors.append("iface name %r: use letters, digits, . _ : - (default and iser are built in)" % (name,))
            continue
        path = os.path.join(req["iface_dir"], name)
        text = read(path)
        if iface.get("state", "present") == "absent":
            if text is not None:
                cmds.append(["iscsiadm", "-m", "iface", "-I", name, "-o", "delete"])
            continue
        want = {}
        for k, key in IFACE_KEYS.items():
            if iface.get(k) not in (None, ""):
                want[key] = str(iface[k])
        want.setdefault("iface.transport_name", "tcp")
        netdev = iface.get("netdev")
        offload = want["iface.transport_name"] in OFFLOAD
        if netdev:
            mac = (read(os.path.join(req.get("sys_class_net", "/sys/class/net"), netdev, "address"), "")
                   or "").strip()
            if not mac:
                errors.append("iface %s: network interface %s does not exist" % (name, netdev))
                continue
            if offload:
                # an offload engine is bound by its NIC's MAC, and an iface has one binding only
                del want["iface.net_ifacename"]
                if want.setdefault("iface.hwaddress", mac).lower() != mac.lower():
                    errors.append("iface %s: hwaddress %s is not the MAC of %s (%s)"
                                  % (name, want["iface.hwaddress"], netdev, mac))
                    continue
            elif "iface.hwaddress" in want:
                errors.append("iface %s: give netdev or hwaddress, not both (open-iscsi binds an iface by one)"
                              % name)
                continue
        have = parse_record(text) if text is not None else None
        if have is None:
            cmds.append(["iscsiadm", "-m", "iface", "-I", name, "-o", "new"])
            have = {}
        # the transport last: once it names an offload driver, iscsiadm checks every later update against it
        for key in sorted(want, key=lambda k: (k == "iface.transport_name", k)):
            if have.get(key, "").lower() != want[key].lower():
                cmds.append(["iscsiadm", "-m", "iface", "-I", name, "-o", "update", "-n", key, "-v", want[key]])
    return cmds


def unit_state(units):
    res = {}
    for u in units:
        _rc, enabled, _e = run(["systemctl", "is-enabled", u])
        _rc, active, _e = run(["systemctl", "is-active", u])
        res[u] = {"enabled": enabled.strip() or "unknown", "active": active.strip() or "unknown"}
    return res


def apply_ifaces(req):
    """Run the iscsiadm commands of the ifaces in order, then read them again: what is left was refused (iscsiadm
    exits 0 on some refused updates, so its exit status alone proves nothing)."""
    errors = []
    done, failed = [], []
    for argv in iface_commands(req, errors):
        rc, out, err = run(argv)
        (done if rc == 0 else failed).append({"cmd": argv, "rc": rc, "out": (out + err).strip()})
        if rc != 0:
            break
    left = iface_commands(req, errors)
    print(json.dumps({"applied": done, "failed": failed, "left": left, "errors": errors,
                      "changed": bool(done or failed)}))
    return 1 if (failed or left or errors) else 0


def os_family(hint, os_release_text):
    """Debian or RedHat: the hint (ansible_facts.os_family) when given, else from /etc/os-release."""
    if hint:
        return hint
    ids = []
    for line in (os_release_text or "").splitlines():
        m = re.match(r"^(ID|ID_LIKE)=(.*)$", line.strip())
        if m:
            ids += m.group(2).strip().strip("\"'").lower().split()
    if any(i in ("debian", "ubuntu") for i in ids):
        return "Debian"
    if any(i in ("rhel", "fedora", "centos", "rocky", "almalinux", "ol") for i in ids):
        return "RedHat"
    return "unknown"


def select_family(req):
    """The request with the settings of the host's OS family merged in (None when the family is unsupported)."""
    family = os_family(req.get("os_family"), read(req.get("os_release", "/etc/os-release")))
    fam = req.get("families", {}).get(family)
    if fam is None:
        return family, None
    req = dict(req)
    req.update({
        "package_tool": fam["package_tool"],
        "packages": (list(fam["packages"]) + (list(fam["deploy_packages"]) if req.get("deploy_packages") else [])
                     + list(req.get("extra_packages", []))) if req.get("install_packages") else [],
        "iface_dir": fam["iface_dir"],
        "units": (list(fam["units_running"]) + list(fam["units_boot"])) if req.get("manage_services") else [],
    })
    return family, req


def request_text(argv):
    """The request: argv[1], or (argv[1] is "-") BRICK_REQUEST, put ahead of this script on stdin by the role."""
    if argv[1] == "-":
        return globals()["BRICK_REQUEST"]
    return argv[1]


def main():
    family, req = select_family(json.loads(request_text(sys.argv)))
    if req is None:
        print(json.dumps({"os_family": family, "supported": False}))
        return 0
    if req.get("command_timeout"):
        TIMEOUT["seconds"] = float(req["command_timeout"])
    if len(sys.argv) > 2 and sys.argv[2] == "apply-ifaces":
        return apply_ifaces(req)
    if len(sys.argv) > 2 and sys.argv[2] == "render-conf":
        print(json.dumps(render_conf(req)))
        return 0
    errors = []
    name_text = read(req["name_file"])
    conf_text = read(req["iscsid_conf"])
    # only settings that are no secret come here (the role keeps the others for render-conf)
    public, _secret = split_settings(req.get("iscsid_settings", {}))
    _new_conf, conf_changed = edit_conf(conf_text, public) if conf_text is not None else (None, [])
    out = {
        "os_family": family,
        "supported": True,
        "packages_missing": missing_packages(req.get("package_tool"), req.get("packages", [])),
        "initiator_name": initiator_name(name_text),
        "initiator_file": name_text is not None,
        "machine_id": (read(req.get("machine_id_file", "/etc/machine-id"), "") or "").strip(),
        "iscsid_conf_exists": conf_text is not None,
        "iscsid_conf_changed": conf_changed,
        # the new text is made by render-conf (no_log): it can hold the admin's CHAP secrets
        "iscsid_conf_render": conf_text is not None and bool(conf_changed or req.get("iscsid_secret_keys")),
        "iface_commands": iface_commands(req, errors),
        "units": unit_state(req.get("units", [])),
        "multipath_conf_exists": os.path.exists(req["multipath_conf"]),
        "multipath_conf_dir_exists": os.path.isdir(req["multipath_conf_dir"]),
        "errors": errors,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
