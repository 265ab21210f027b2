# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The role brick.storage.initiator with ansible-playbook on local "hosts" whose files live in a scratch directory
(InitiatorName, iscsid.conf, machine-id, os-release, the multipath drop-in directory, the iface records, a fake
/sys/class/net) and a fake iscsiadm. Packages and services are off here: the lab's molecule scenario
(roles/initiator/molecule/default) proves them on a real host. Plus the state script's pure functions."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

needs_playbook = [
    pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the role writes root-owned files"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
STATE_PY = os.path.join(REPO, "roles", "initiator", "files", "initiator_state.py")
_spec = importlib.util.spec_from_file_location("brick_initiator_state", STATE_PY)
state = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(state)

ISCSID_CONF = textwrap.dedent("""\
    # iscsid.conf (excerpt of open-iscsi's)
    iscsid.startup = /bin/systemctl start iscsid.socket
    # node.session.timeo.replacement_timeout = 120
    node.session.timeo.replacement_timeout = 120
    node.conn[0].timeo.noop_out_interval = 5
    """)

FAKE_ISCSIADM = textwrap.dedent("""\
    import os, sys
    a = sys.argv[1:]
    name, op = a[a.index("-I") + 1], a[a.index("-o") + 1]
    path = os.path.join(os.environ["FAKE_IFACE_DIR"], name)
    def load():
        rec = {}
        for line in open(path):
            if " = " in line:
                k, v = line.rstrip("\\n").split(" = ", 1)
                rec[k] = v
        return rec
    def save(rec):
        with open(path, "w") as f:
            f.write("# BEGIN RECORD 2.1.8\\n" + "".join("%s = %s\\n" % kv for kv in rec.items()) + "# END RECORD\\n")
    if op == "new":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save({"iface.iscsi_ifacename": name, "iface.transport_name": "tcp", "iface.hwaddress": "<empty>",
              "iface.net_ifacename": "<empty>"})
        print("New interface %s added" % name)
    elif op == "delete":
        os.unlink(path)
    else:
        rec = load()
        k, v = a[a.index("-n") + 1], a[a.index("-v") + 1]
        other = {"iface.net_ifacename": "iface.hwaddress", "iface.hwaddress": "iface.net_ifacename"}.get(k)
        if other and rec.get(other, "<empty>") != "<empty>":
            # open-iscsi 2.1.8: refuses to change the binding, and exits 0
            print("iscsiadm: Can not update interface binding", file=sys.stderr)
            sys.exit(0)
        rec[k] = v
        save(rec)
    """)


class Hosts(object):
    """Local "hosts" for ansible-playbook, each with its own scratch root."""

    def __init__(self, top):
        self.top = str(top)
        coll = os.path.join(self.top, "collections", "ansible_collections", "brick")
        os.makedirs(coll)
        os.symlink(REPO, os.path.join(coll, "storage"))
        self.bin = os.path.join(self.top, "bin")
        os.makedirs(self.bin)
        fake = os.path.join(self.bin, "iscsiadm")
        with open(fake, "w") as f:
            f.write("#!%s\n%s" % (sys.executable, FAKE_ISCSIADM))
        os.chmod(fake, 0o755)
        self.roots = {}
        self.host_vars = {}

    def add(self, name, initiator_name="iqn.1993-08.org.debian:01:0123456789ab", machine_id="c0ffee" * 5 + "00",
            **host_vars):
        root = os.path.join(self.top, name)
        for d in ("etc/iscsi/ifaces", "etc/multipath", "sys/class/net/eth9"):
            os.makedirs(os.path.join(root, d))
        files = {"etc/os-release": 'ID=debian\nVERSION_ID="12"\n', "etc/machine-id": machine_id + "\n",
                 "etc/iscsi/iscsid.conf": ISCSID_CONF, "sys/class/net/eth9/address": "52:54:00:aa:bb:cc\n"}
        if initiator_name is not None:
            files["etc/iscsi/initiatorname.iscsi"] = "InitiatorName=%s\n" % initiator_name
        for rel, text in files.items():
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)
        self.roots[name] = root
        self.host_vars[name] = host_vars
        return root

    def path(self, host, rel):
        return os.path.join(self.roots[host], rel)

    def read(self, host, rel):
        with open(self.path(host, rel)) as f:
            return f.read()

    def play(self, *extra, **role_vars):
        inv = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                       "hosts": {}}}
        for name, root in self.roots.items():
            inv["all"]["hosts"][name] = {
                "__brick_initiator_name_file": root + "/etc/iscsi/initiatorname.iscsi",
                "__brick_initiator_iscsid_conf": root + "/etc/iscsi/iscsid.conf",
                "__brick_initiator_machine_id_file": root + "/etc/machine-id",
                "__brick_initiator_os_release": root + "/etc/os-release",
                "__brick_initiator_sys_class_net": root + "/sys/class/net",
                "__brick_initiator_multipath_main_conf": root + "/etc/multipath.conf",
                "brick_initiator_multipath_conf_dir": root + "/etc/multipath/conf.d",
                "fake_iface_dir": root + "/etc/iscsi/ifaces",
            }
            inv["all"]["hosts"][name].update(self.host_vars[name])
        with open(os.path.join(self.top, "inventory.json"), "w") as f:
            json.dump(inv, f)
        play = [{"hosts": "all", "gather_facts": False,
                 "environment": {"PATH": self.bin + ":" + os.environ["PATH"], "FAKE_IFACE_DIR": "{{ fake_iface_dir }}"},
                 "roles": [{"role": "brick.storage.initiator",
                            "vars": dict({"brick_initiator_install_packages": False,
                                          "brick_initiator_manage_services": False,
                                          "brick_initiator_python": sys.executable}, **role_vars)}],
                 "tasks": [{"name": "Show the name", "ansible.builtin.debug": {"msg": "IQN={{ brick_initiator_iqn }}"}}]}]
        pb = os.path.join(self.top, "play.json")
        with open(pb, "w") as f:
            json.dump(play, f)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(self.top, "collections"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=os.path.join(self.top, "tmp"), ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_DEPRECATION_WARNINGS="0")
        argv = ["ansible-playbook", "-i", os.path.join(self.top, "inventory.json"), pb] + list(extra)
        p = subprocess.run(argv, env=env, cwd=self.top, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=300, check=False)
        return p.returncode, p.stdout


def recap(out, host):
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)" % re.escape(host), out, re.M)
    assert m, out
    return {"ok": int(m.group(1)), "changed": int(m.group(2)), "failed": int(m.group(3))}


@pytest.fixture
def hosts(tmp_path):
    return Hosts(tmp_path)


@needs_playbook[0]
@needs_playbook[1]
def test_keep_generate_set_and_config_twice(hosts):
    hosts.add("h1")
    hosts.add("h2", initiator_name=None)            # no InitiatorName yet
    hosts.add("h3", initiator_name="iqn.1993-08.org.debian:01:<generate>")  # a placeholder
    ifaces = [{"name": "tcp-eth9", "netdev": "eth9"},
              {"name": "off-eth9", "transport": "qedi", "netdev": "eth9"},
              {"name": "iser0", "transport": "iser"}]
    kw = dict(brick_initiator_ifaces=ifaces,
              brick_initiator_multipath_devices=[{"vendor": "LIO-ORG", "product": ".*", "no_path_retry": 12,
                                                  "detect_prio": True}],
              brick_initiator_multipath_blacklist=[{"devnode": "^vd[a-z]"}, {"vendor": "QEMU", "product": ".*"}])
    # the iface directory of the OS family is /etc/iscsi/ifaces: point it into each root through the fake
    rc, out = hosts.play("-e", json.dumps({"__brick_initiator_os_Debian": {
        "packages": [], "deploy_packages": [], "package_tool": "dpkg", "default_prefix": "iqn.1993-08.org.debian:01",
        "iface_dir": "{{ fake_iface_dir }}", "units_running": [], "units_boot": [], "iscsid_unit": "iscsid.service",
        "multipath_conf_required": False}}), **kw)
    assert rc == 0, out
    # keep: h1's name is left alone; h2 and h3 get a generated, host-specific name
    assert "InitiatorName=iqn.1993-08.org.debian:01:0123456789ab\n" == hosts.read("h1", "etc/iscsi/initiatorname.iscsi")
    names = {}
    for h in ("h2", "h3"):
        names[h] = re.search(r"^InitiatorName=(\S+)$", hosts.read(h, "etc/iscsi/initiatorname.iscsi"), re.M).group(1)
        assert re.match(r"^iqn\.1993-08\.org\.debian:01:[0-9a-f]{12}$", names[h]), names[h]
        assert "IQN=%s" % names[h] in out
    assert names["h2"] != names["h3"]  # same machine-id (a clone), other inventory name: another name
    # iscsid.conf: the uncommented line rewritten, the comment kept, a missing key appended
    conf = hosts.read("h1", "etc/iscsi/iscsid.conf")
    assert "\nnode.session.timeo.replacement_timeout = 15\n" in conf
    assert "# node.session.timeo.replacement_timeout = 120\n" in conf
    assert conf.endswith("# Set by brick.storage.initiator\nnode.conn[0].timeo.noop_out_timeout = 5\n")
    assert conf.count("noop_out_interval") == 1
    # the multipath drop-in
    mp = hosts.read("h1", "etc/multipath/conf.d/brick-storage.conf")
    assert 'defaults {\n    user_friendly_names "no"\n    find_multipaths "yes"\n}' in mp
    assert 'devices {\n    device {\n        vendor "LIO-ORG"\n        product ".*"\n        no_path_retry "12"\n' \
           '        detect_prio "yes"\n    }\n}' in mp
    assert 'blacklist {\n    devnode "^vd[a-z]"\n    device {\n        vendor "QEMU"' in mp
    # the interfaces: tcp bound by name, offload bound by the NIC's MAC, iser
    tcp = hosts.read("h1", "etc/iscsi/ifaces/tcp-eth9")
    assert "iface.net_ifacename = eth9" in tcp and "iface.transport_name = tcp" in tcp
    off = hosts.read("h1", "etc/iscsi/ifaces/off-eth9")
    assert "iface.hwaddress = 52:54:00:aa:bb:cc" in off and "iface.transport_name = qedi" in off
    assert "iface.net_ifacename = <empty>" in off
    assert "iface.transport_name = iser" in hosts.read("h1", "etc/iscsi/ifaces/iser0")

    # a second run changes nothing
    rc, out = hosts.play("-e", json.dumps({"__brick_initiator_os_Debian": {
        "packages": [], "deploy_packages": [], "package_tool": "dpkg", "default_prefix": "iqn.1993-08.org.debian:01",
        "iface_dir": "{{ fake_iface_dir }}", "units_running": [], "units_boot": [], "iscsid_unit": "iscsid.service",
        "multipath_conf_required": False}}), **kw)
    assert rc == 0, out
    for h in ("h1", "h2", "h3"):
        assert recap(out, h)["changed"] == 0, out

    # generate: h1 gets the name derived from its machine-id and inventory name (so a second run changes nothing);
    # h2's generated name is that already
    rc, out = hosts.play(brick_initiator_name="generate", brick_initiator_multipath=False)
    assert rc == 0, out
    assert recap(out, "h1")["changed"] == 1 and recap(out, "h2")["changed"] == 0, out
    import hashlib
    want = "iqn.1993-08.org.debian:01:" + hashlib.sha256(("c0ffee" * 5 + "00:h1").encode()).hexdigest()[:12]
    assert hosts.read("h1", "etc/iscsi/initiatorname.iscsi").endswith("InitiatorName=%s\n" % want)


@needs_playbook[0]
@needs_playbook[1]
def test_set_name_duplicates_check_mode_and_errors(hosts):
    hosts.add("a")
    hosts.add("b", initiator_name="iqn.1993-08.org.debian:01:0123456789ab")  # the same name as a (cloned hosts)
    hosts.add("c", brick_initiator_name="not an iqn")
    hosts.add("d", brick_initiator_ifaces=[{"name": "x", "netdev": "eth7"}])
    hosts.add("e", brick_initiator_ifaces=[{"name": "x", "netdev": "eth9", "hwaddress": "52:54:00:aa:bb:cc"}])
    off = {"brick_initiator_multipath": False}
    rc, out = hosts.play(**off)
    assert rc == 2, out
    assert "these hosts would share an InitiatorName" in out and "brick_initiator_name: generate" in out, out
    assert "a, b: iqn.1993-08.org.debian:01:0123456789ab" in out
    assert "brick_initiator_name must be keep, generate or an iSCSI name" in out
    assert "network interface eth7 does not exist" in out
    assert "give netdev or hwaddress, not both" in out
    assert recap(out, "a")["changed"] == 0 and recap(out, "b")["changed"] == 0  # nothing was written

    # check mode: reports the change, writes nothing
    before = hosts.read("a", "etc/iscsi/iscsid.conf")
    rc, out = hosts.play("--check", "--limit", "a", brick_initiator_name="generate", **off)
    assert rc == 0 and recap(out, "a")["changed"] == 2, out  # InitiatorName and iscsid.conf
    assert hosts.read("a", "etc/iscsi/iscsid.conf") == before
    assert hosts.read("a", "etc/iscsi/initiatorname.iscsi") == "InitiatorName=iqn.1993-08.org.debian:01:0123456789ab\n"

    rc, out = hosts.play("--limit", "a", brick_initiator_name="iqn.2004-10.org.example:host-a", **off)
    assert rc == 0, out
    assert "InitiatorName=iqn.2004-10.org.example:host-a\n" in hosts.read("a", "etc/iscsi/initiatorname.iscsi")
    assert oct(os.stat(hosts.path("a", "etc/iscsi/initiatorname.iscsi")).st_mode & 0o777) == "0o600"


# -- the state script's pure functions

@pytest.mark.parametrize("text, name", [
    ("InitiatorName=iqn.1993-08.org.debian:01:abc\n", "iqn.1993-08.org.debian:01:abc"),
    ("## comment\nInitiatorName = iqn.1994-05.com.redhat:x \n", "iqn.1994-05.com.redhat:x"),
    ("GenerateName=yes\n", None),
    ("InitiatorName=iqn.1993-08.org.debian:01:<generate>\n", None),
    (None, None),
], ids=["debian", "spaces", "generate-name", "placeholder", "missing"])
def test_initiator_name(text, name):
    assert state.initiator_name(text) == name


@pytest.mark.parametrize("text, family", [
    ('ID=ubuntu\nID_LIKE=debian\n', "Debian"),
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "RedHat"),
    ('ID=fedora\n', "RedHat"),
    ('ID=opensuse-leap\nID_LIKE="suse opensuse"\n', "unknown"),
], ids=["ubuntu", "rocky", "fedora", "suse"])
def test_os_family(text, family):
    assert state.os_family("", text) == family
    assert state.os_family("Debian", text) == "Debian"  # ansible_facts.os_family wins


def test_edit_conf_unchanged():
    assert state.edit_conf("a.b = 1\n", {"a.b": 1}) == (None, [])
