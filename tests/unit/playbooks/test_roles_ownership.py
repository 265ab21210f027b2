# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Issue 21, the roles initiator, deploy_image and partition: what is provably ours.

- item 7: the initiator role prints no CHAP secret of iscsid.conf (the admin's, or one it sets), at -vvv --diff,
  and still says which keys it changed;
- item 17: deploy_image writes only onto the volume named (or the only one), makes the test image only on an
  opt-in, verifies every checksum form for URL and path sources, and checks the target's WWID just before writing;
- every command of the role helpers, and the partition role's wipefs/parted/partprobe, is bounded.
"""

import hashlib
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from unit.playbooks.test_initiator_role import Hosts, recap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELPER = os.path.join(REPO, "roles", "deploy_image", "files", "deploy_helper.py")
STATE_PY = os.path.join(REPO, "roles", "initiator", "files", "initiator_state.py")
MIB = 1024 * 1024

needs_playbook = pytest.mark.skipif(shutil.which("ansible-playbook") is None or os.geteuid() != 0,
                                    reason="ansible-playbook not installed, or not root")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


helper = load(HELPER, "brick_deploy_helper_ownership")
state = load(STATE_PY, "brick_initiator_state_ownership")


def run_script(path, argv, env=None, timeout=60):
    with open(path) as f:
        src = f.read()
    p = subprocess.run([sys.executable, "-"] + argv, input=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=timeout, check=False, env=env)
    return p.returncode, p.stdout, p.stderr


def fake_tool(bindir, name, body):
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)
    return path


# ------------------------------------------------------------------------------------------------ item 7

ADMIN_SECRET = "Adm1n-iscsid-S3cret"
ROLE_SECRET = "R0le-set-S3cret-in"
ISCSID_WITH_CHAP = textwrap.dedent("""\
    iscsid.startup = /bin/systemctl start iscsid.socket
    node.session.auth.authmethod = CHAP
    node.session.auth.username = admin
    node.session.auth.password = %s
    node.session.timeo.replacement_timeout = 120
    """) % ADMIN_SECRET

DEBIAN_NO_PACKAGES = {"__brick_initiator_os_Debian": {
    "packages": [], "deploy_packages": [], "package_tool": "dpkg", "default_prefix": "iqn.1993-08.org.debian:01",
    "iface_dir": "{{ fake_iface_dir }}", "units_running": [], "units_boot": [], "iscsid_unit": "iscsid.service",
    "multipath_conf_required": False}}


@needs_playbook
def test_initiator_prints_no_iscsid_conf_secret_at_vvv_with_diff(tmp_path):
    """Item 7: the admin's CHAP secret in iscsid.conf, and one the role sets there, are in no output (-vvv --diff,
    the read, the write, check mode), while the role reports the keys it changed and writes them."""
    hosts = Hosts(tmp_path)
    hosts.add("h1")
    with open(hosts.path("h1", "etc/iscsi/iscsid.conf"), "w") as f:
        f.write(ISCSID_WITH_CHAP)
    settings = {"node.session.timeo.replacement_timeout": 15, "node.session.auth.password_in": ROLE_SECRET,
                "node.session.auth.username_in": "array"}
    common = ("-vvv", "--diff", "-e", json.dumps(DEBIAN_NO_PACKAGES))
    rc, out = hosts.play("--check", *common, brick_initiator_iscsid_conf=settings, brick_initiator_multipath=False)
    assert rc == 0, out[-4000:]
    leaks = [ln for ln in out.splitlines() if ADMIN_SECRET in ln or ROLE_SECRET in ln]
    assert ADMIN_SECRET not in out and ROLE_SECRET not in out, leaks
    assert hosts.read("h1", "etc/iscsi/iscsid.conf") == ISCSID_WITH_CHAP  # check mode wrote nothing
    rc, out = hosts.play(*common, brick_initiator_iscsid_conf=settings, brick_initiator_multipath=False)
    assert rc == 0, out[-4000:]
    leaked = [ln for ln in out.splitlines() if ADMIN_SECRET in ln or ROLE_SECRET in ln]
    assert not leaked, leaked
    # what changed is still said (the keys; the secret's value hidden)
    report = [ln for ln in out.splitlines() if "iscsid.conf: set " in ln]
    assert report and "node.session.timeo.replacement_timeout = 15" in report[0], out[-4000:]
    assert "node.session.auth.password_in = (secret, not shown)" in report[0], report
    assert recap(out, "h1")["changed"] >= 1
    conf = hosts.read("h1", "etc/iscsi/iscsid.conf")
    assert "node.session.auth.password = %s\n" % ADMIN_SECRET in conf  # the admin's line is kept
    assert "node.session.auth.password_in = %s\n" % ROLE_SECRET in conf
    assert "\nnode.session.timeo.replacement_timeout = 15\n" in conf
    assert oct(os.stat(hosts.path("h1", "etc/iscsi/iscsid.conf")).st_mode & 0o777) == "0o600"
    # a second run changes nothing, the secret key included
    rc, out = hosts.play(*common, brick_initiator_iscsid_conf=settings, brick_initiator_multipath=False)
    assert rc == 0 and recap(out, "h1")["changed"] == 0, out[-4000:]
    assert ADMIN_SECRET not in out and ROLE_SECRET not in out


def test_initiator_state_read_carries_no_secret_and_no_conf_text(tmp_path):
    """Item 7, the script: its read (printed by a task without no_log) holds neither the file's text nor a
    secret value; the secret-bearing settings go to the render step only (no_log), through stdin."""
    conf = tmp_path / "iscsid.conf"
    conf.write_text(ISCSID_WITH_CHAP)
    settings = {"node.session.timeo.replacement_timeout": 15, "node.session.auth.password_in": ROLE_SECRET}
    public, secret = state.split_settings(settings)
    assert public == {"node.session.timeo.replacement_timeout": 15}
    assert secret == {"node.session.auth.password_in": ROLE_SECRET}
    req = {"os_family": "Debian", "families": {"Debian": DEBIAN_NO_PACKAGES["__brick_initiator_os_Debian"]},
           "name_file": str(tmp_path / "none"), "iscsid_conf": str(conf), "iscsid_settings": public,
           "iscsid_secret_keys": sorted(secret), "multipath_conf": str(tmp_path / "mp"),
           "multipath_conf_dir": str(tmp_path / "mpd")}
    rc, out, err = run_script(STATE_PY, [json.dumps(req)])
    assert rc == 0, err
    assert ADMIN_SECRET not in out and "iscsid_conf_new" not in json.loads(out)
    assert json.loads(out)["iscsid_conf_changed"] == ["node.session.timeo.replacement_timeout"]
    assert json.loads(out)["iscsid_conf_render"] is True
    # the render step: the whole request on stdin (never in argv); prints the new text and the changed keys
    full = dict(req, iscsid_settings=settings)
    with open(STATE_PY) as f:
        src = "BRICK_REQUEST = %r\n" % json.dumps(full) + f.read()
    p = subprocess.run([sys.executable, "-", "-", "render-conf"], input=src, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["changed"] == ["node.session.timeo.replacement_timeout", "node.session.auth.password_in"]
    assert "node.session.auth.password_in = %s\n" % ROLE_SECRET in res["content"]
    assert "node.session.auth.password = %s\n" % ADMIN_SECRET in res["content"]
    assert res["report"] == ["node.session.timeo.replacement_timeout = 15",
                             "node.session.auth.password_in = (secret, not shown)"]


def test_initiator_state_commands_are_bounded(tmp_path):
    """Every command of initiator_state.py has a timeout: a systemctl that hangs does not hang the role."""
    bindir = str(tmp_path / "bin")
    fake_tool(bindir, "systemctl", "sleep 60")
    fam = dict(DEBIAN_NO_PACKAGES["__brick_initiator_os_Debian"], units_running=["iscsid.service"])
    req = {"os_family": "Debian", "families": {"Debian": fam}, "manage_services": True,
           "name_file": str(tmp_path / "none"), "iscsid_conf": str(tmp_path / "none"),
           "multipath_conf": str(tmp_path / "mp"), "multipath_conf_dir": str(tmp_path / "mpd"),
           "command_timeout": 1}
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])
    t0 = time.time()
    rc, out, err = run_script(STATE_PY, [json.dumps(req)], env=env, timeout=30)
    assert time.time() - t0 < 15
    assert rc == 0, err
    assert json.loads(out)["units"]["iscsid.service"] == {"enabled": "unknown", "active": "unknown"}


# ------------------------------------------------------------------------------------------------ item 17

IQN = "iqn.2003-01.org.example.array:deploy"
P1 = "10.0.0.1:3260"


def sim_env(top):
    from sim import SimHost
    h = SimHost(os.path.join(top, "host"))
    h.set_fault("time_scale", 0.01)
    h.add_target(IQN, portals=[P1], luns={0: 16, 1: 16})
    env = h.env()
    return h, {"brick_storage_environment": {"BRICK_STORAGE_ROOT": h.root, "BRICK_SIM_ROOT": h.root,
                                             "PATH": env["PATH"]}}


def deploy_play(**role_vars):
    return [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
        {"name": "deploy", "ansible.builtin.include_role": {"name": "brick.storage.deploy_image"},
         "vars": role_vars}]}]


def volumes(*luns):
    return [{"name": "lun%d" % lun, "portals": [P1], "iqn": IQN, "lun": lun, "multipath": "off"} for lun in luns]


@needs_playbook
@pytest.mark.parametrize("case", ["no-volume-named", "no-source-no-opt-in", "bad-checksum"])
def test_deploy_refuses_bad_input_before_anything_runs(tmp_path, case):
    """Item 17: two volumes and no brick_deploy_volume, no source without the test-image opt-in, a checksum that
    is no checksum: a clear failure before any command, no test image made, nothing attached."""
    from playbook_runner import play
    h, hv = sim_env(str(tmp_path))
    test_image = str(tmp_path / "test-image.raw")
    role_vars = {"brick_volumes": volumes(0, 1), "brick_deploy_test_image_path": test_image,
                 "brick_deploy_state_dir": str(tmp_path / "state"), "brick_deploy_cache_dir": str(tmp_path / "c")}
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\1" * 4096)
    if case == "no-volume-named":
        role_vars.update(brick_deploy_test_image=True)
        want = "set brick_deploy_volume to the volume to overwrite: brick_volumes of node has 2 (lun0, lun1)"
    elif case == "no-source-no-opt-in":
        role_vars.update(brick_deploy_volume="lun0")
        want = "no image: give brick_image_source (a URL, or a path on the deploying host)"
    else:
        role_vars.update(brick_deploy_volume="lun1", brick_image_source=str(image),
                         brick_image_checksum="sha256:not-hex")
        want = "image checksum 'sha256:not-hex': give ALGORITHM:HEX"
    rc, out = play(str(tmp_path), deploy_play(**role_vars), hv)
    assert rc != 0, out[-4000:]
    assert want in out, out[-4000:]
    assert h.commands() == [], h.commands()  # no iscsiadm: nothing was attached
    assert not os.path.exists(test_image)


def test_deploy_one_volume_needs_no_name_and_the_opt_in_makes_the_test_image(tmp_path):
    """The vars the role decides with: the only volume is the target without a name; of two, none; the test
    image only with brick_deploy_test_image (rendered with ansible's templar on the role's vars/main.yml)."""
    import yaml
    with open(os.path.join(REPO, "roles", "deploy_image", "vars", "main.yml")) as f:
        role_vars = yaml.safe_load(f)
    with open(os.path.join(REPO, "roles", "deploy_image", "defaults", "main.yml")) as f:
        defaults = yaml.safe_load(f)
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    def trusted(value):  # the role's files are trusted templates, as ansible-core loads them
        if isinstance(value, str):
            return trust_as_template(value)
        if isinstance(value, dict):
            return {k: trusted(v) for k, v in value.items()}
        if isinstance(value, list):
            return [trusted(v) for v in value]
        return value

    def render(expr, **given):
        templar = Templar(loader=DataLoader(), variables=trusted(dict(defaults, **dict(role_vars, **given))))
        return templar.template(trust_as_template(expr))

    assert render("{{ __brick_deploy_volume_name }}", brick_volumes=volumes(3)) == "lun3"
    assert render("{{ __brick_deploy_volume_name }}", brick_volumes=volumes(0, 1)) == ""
    assert render("{{ __brick_deploy_volume_name }}", brick_volumes=volumes(0, 1), brick_deploy_volume="lun1") == "lun1"
    assert render("{{ __brick_deploy_test_image | bool }}", brick_volumes=volumes(0)) is False
    assert render("{{ __brick_deploy_test_image | bool }}", brick_volumes=volumes(0),
                  brick_deploy_test_image=True) is True
    assert render("{{ __brick_deploy_test_image | bool }}", brick_volumes=volumes(0), brick_deploy_test_image=True,
                  brick_image_source="/srv/disk.raw") is False


class ChecksumServer(object):
    """A checksum file (and an image) served over HTTP on 127.0.0.1, as Bifrost's and Ironic's are."""

    def __init__(self, directory):
        handler = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(directory), **kw))
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    web = tmp_path / "web"
    web.mkdir()
    data = os.urandom(8192)
    (web / "disk.raw").write_bytes(data)
    sha256, sha512 = hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
    (web / "SHA256SUMS").write_text("%s  other.qcow2\n%s *disk.raw\n" % ("0" * 64, sha256))
    (web / "SHA512SUMS").write_text("SHA512 (other.raw) = %s\nSHA512 (disk.raw) = %s\n" % ("1" * 128, sha512))
    (web / "disk.raw.sha256").write_text("%s\n" % sha256)  # one digest, no name
    (web / "WRONG").write_text("%s  disk.raw\n" % ("2" * 64))
    srv = ChecksumServer(web)
    try:
        yield srv, str(web / "disk.raw"), sha256, sha512
    finally:
        srv.close()


CHECKSUM_FORMS = {
    "algo-hex": lambda srv, s256, s512: ("sha256:" + s256, "sha256:" + s256),
    "bare-hex": lambda srv, s256, s512: (s256.upper(), "sha256:" + s256),
    "sha512-hex": lambda srv, s256, s512: ("sha512:" + s512, "sha512:" + s512),
    "bare-sha512": lambda srv, s256, s512: (s512, "sha512:" + s512),
    "algo-url": lambda srv, s256, s512: ("sha256:%s/SHA256SUMS" % srv.url, "sha256:" + s256),
    "bare-url": lambda srv, s256, s512: ("%s/SHA256SUMS" % srv.url, "sha256:" + s256),
    "bare-url-bsd-sha512": lambda srv, s256, s512: ("%s/SHA512SUMS" % srv.url, "sha512:" + s512),
    "algo-url-one-digest": lambda srv, s256, s512: ("sha256:%s/disk.raw.sha256" % srv.url, "sha256:" + s256),
}


@pytest.mark.parametrize("form", sorted(CHECKSUM_FORMS))
def test_every_checksum_form_is_verified_for_a_path_source(served, form, tmp_path):
    """Item 17: a path source is verified with every form Bifrost and Ironic use (algo:hex, bare hex, sha512,
    algo:URL and a bare URL of a checksum file), and a wrong checksum of that form fails."""
    srv, path, s256, s512 = served
    given, identity = CHECKSUM_FORMS[form](srv, s256, s512)
    rc, out, err = run_script(HELPER, ["image", json.dumps({"path": path, "checksum": given})])
    assert rc == 0, out + err
    assert json.loads(out)["identity"] == identity
    # the same form with a wrong digest: refused
    wrong = given.replace(s256, "3" * 64).replace(s256.upper(), "3" * 64).replace(s512, "4" * 128)
    wrong = wrong.replace("SHA256SUMS", "WRONG").replace("SHA512SUMS", "WRONG").replace("disk.raw.sha256", "WRONG")
    rc, out, err = run_script(HELPER, ["image", json.dumps({"path": path, "checksum": wrong})])
    assert rc == 1, out + err
    assert "checksum" in json.loads(out)["msg"]


@pytest.mark.parametrize("form", ["algo-url", "bare-url", "bare-url-bsd-sha512", "bare-hex"])
def test_a_url_source_gets_a_checksum_get_url_takes(served, form, tmp_path):
    """Item 17: before a download the helper turns the checksum (a bare checksum-file URL too, which get_url
    refuses) into ALGO:HEX for get_url, looked up by the image URL's file name."""
    srv, _path, s256, s512 = served
    given, identity = CHECKSUM_FORMS[form](srv, s256, s512)
    cached = tmp_path / "cache" / "abc-disk.raw"
    req = {"path": str(cached), "url": srv.url + "/disk.raw", "checksum": given, "marker": str(cached) + ".json"}
    rc, out, err = run_script(HELPER, ["image", json.dumps(req)])
    assert rc == 0, out + err
    res = json.loads(out)
    assert res["download"] and res["get_url_checksum"] == identity, res


def test_a_checksum_file_without_the_image_fails_clearly(served):
    srv, path, _s256, _s512 = served
    rc, out, err = run_script(HELPER, ["image", json.dumps({"path": "/srv/elsewhere/unknown.img",
                                                            "checksum": srv.url + "/SHA256SUMS"})])
    assert rc == 1 and "unknown.img" in json.loads(out)["msg"] and "SHA256SUMS" in json.loads(out)["msg"], out
    rc, out, err = run_script(HELPER, ["image", json.dumps({"path": path, "checksum": srv.url + "/missing"})])
    assert rc == 1 and "missing" in json.loads(out)["msg"], out


# -- the WWID right before the write

def fake_block_sysfs(root, name, wwid_file=None, dm_uuid=None, parent=None):
    """/sys/class/block/NAME as the kernel lays it out (a partition is a directory of its disk)."""
    base = os.path.join(root, "devices", "virtual", "block")
    disk = os.path.join(base, parent or name)
    node = os.path.join(disk, name) if parent else disk
    os.makedirs(node, exist_ok=True)
    if wwid_file is not None:
        os.makedirs(os.path.join(disk, "device"), exist_ok=True)
        with open(os.path.join(disk, "device", "wwid"), "w") as f:
            f.write(wwid_file + "\n")
    if dm_uuid is not None:
        os.makedirs(os.path.join(node, "dm"), exist_ok=True)
        with open(os.path.join(node, "dm", "uuid"), "w") as f:
            f.write(dm_uuid + "\n")
    if parent:
        with open(os.path.join(node, "partition"), "w") as f:
            f.write("1\n")
    os.makedirs(os.path.join(root, "class", "block"), exist_ok=True)
    for n, target in ((name, node),) + (((parent, disk),) if parent else ()):
        link = os.path.join(root, "class", "block", n)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


W_OURS = "36001405aaaaaaaaaaaaaaaaaaaaaaaaa"
W_OTHER = "36001405bbbbbbbbbbbbbbbbbbbbbbbbb"


@pytest.mark.parametrize("layout", ["sd", "sd-partition", "dm", "dm-partition"])
def test_the_write_checks_the_targets_wwid_right_before_it(tmp_path, monkeypatch, layout):
    """Item 17: the device found earlier in the play now serves another volume (a LUN re-mapped, a name
    reused): the write refuses with both WWIDs, writes nothing and keeps the record; the right WWID writes."""
    sysfs = str(tmp_path / "sys")
    name = {"sd": "sdq", "sd-partition": "sdq1", "dm": "dm-4", "dm-partition": "dm-5"}[layout]

    def make(wwid):
        shutil.rmtree(sysfs, ignore_errors=True)
        if layout == "sd":
            fake_block_sysfs(sysfs, "sdq", wwid_file="naa." + wwid[1:])
        elif layout == "sd-partition":
            fake_block_sysfs(sysfs, "sdq1", wwid_file="naa." + wwid[1:], parent="sdq")
        elif layout == "dm":
            fake_block_sysfs(sysfs, "dm-4", dm_uuid="mpath-" + wwid)
        else:
            fake_block_sysfs(sysfs, "dm-5", dm_uuid="part1-mpath-" + wwid)

    monkeypatch.setattr(helper, "SYS_ROOT", sysfs, raising=False)
    monkeypatch.setattr(helper, "block_info", lambda target: (MIB, 512, 0, name))
    writes = []
    monkeypatch.setattr(helper, "run_with_progress", lambda argv, *a, **kw: (writes.append(argv), (0, ""))[1])
    monkeypatch.setattr(helper, "write_record", lambda *a, **kw: None)
    record = tmp_path / "record.json"
    record.write_text("{}")
    req = {"target": "/dev/" + name, "wwid": W_OURS, "record": str(record), "writer": "dd", "verify": "none",
           "image": {"path": "/srv/disk.raw", "format": "raw", "virtual_size": 4096, "identity": "sha256:x"}}
    make(W_OTHER)
    with pytest.raises(helper.Fail) as err:
        helper.cmd_write(dict(req))
    assert W_OURS in str(err.value) and W_OTHER in str(err.value) and "nothing was written" in str(err.value)
    assert writes == [] and record.exists()
    # no WWID known for the volume: refused too (nothing proves the device is the volume)
    with pytest.raises(helper.Fail):
        helper.cmd_write(dict(req, wwid=""))
    assert writes == []
    make(W_OURS)
    assert helper.cmd_write(dict(req))["written"] is True
    assert len(writes) == 1


# -- bounded commands

def test_deploy_helper_commands_are_bounded(tmp_path, monkeypatch):
    """Every command of deploy_helper.py has a timeout: a wipefs that hangs (a queueing map with no path) fails
    with a clear message instead of hanging the play; a long job (qemu-img, dd) is bounded by its own timeout."""
    bindir = str(tmp_path / "bin")
    fake_tool(bindir, "wipefs", "sleep 30")
    monkeypatch.setenv("PATH", bindir + os.pathsep + os.environ["PATH"])
    monkeypatch.setattr(helper, "COMMAND_TIMEOUT", 1, raising=False)
    t0 = time.time()
    with pytest.raises(helper.Fail) as err:
        helper.signatures("/dev/sdq")
    assert time.time() - t0 < 10
    assert "wipefs" in str(err.value) and "1 s" in str(err.value), err.value
    t0 = time.time()
    rc, text = helper.run_with_progress(["sleep", "30"], helper.Progress(None), "write", timeout=1)
    assert rc == 124 and "1 s" in text and time.time() - t0 < 10


def _have_community_general():
    paths = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) + [os.path.join(REPO, ".ansible",
                                                                                             "collections")]
    return any(os.path.isdir(os.path.join(p, "ansible_collections", "community", "general")) for p in paths if p)


@needs_playbook
@pytest.mark.skipif(not _have_community_general(), reason="community.general (parted) is not installed: scripts/setup.sh")
def test_partition_role_commands_are_bounded(tmp_path):
    """wipefs (and parted, partprobe) of the partition role run with a bounded timeout: a hung one fails the
    role within brick_partition_command_timeout instead of hanging the play for ever."""
    from connector import iscsi
    from playbook_runner import play
    h, hv = sim_env(str(tmp_path))
    c = iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)), device_wait=2.0,
                        multipath="off")
    dev = c.connect(iscsi.build_paths([P1], [IQN], [0]))["device"]
    bindir = str(tmp_path / "bin")
    fake_tool(bindir, "wipefs", "sleep 60")
    hv["brick_storage_environment"]["PATH"] = bindir + os.pathsep + hv["brick_storage_environment"]["PATH"]
    playbook = [{"hosts": "node", "gather_facts": False, "environment": "{{ brick_storage_environment }}", "tasks": [
        {"name": "partition", "ansible.builtin.include_role": {"name": "brick.storage.partition"},
         "vars": {"brick_partition_device": dev, "brick_partitions": [{"number": 1, "start": "1MiB", "end": "100%"}],
                  "brick_partition_command_timeout": 3}}]}]
    t0 = time.time()
    rc, out = play(str(tmp_path), playbook, hv)
    assert rc != 0, out[-4000:]
    assert time.time() - t0 < 50, out[-4000:]
    assert "Read the signatures on the disk" in out and "Timed out after 3 second" in out, out[-4000:]


@needs_playbook
@pytest.mark.parametrize("checksum_file, ok", [("SHA256SUMS", True), ("WRONG", False)], ids=["right", "wrong"])
def test_deploy_downloads_a_url_with_a_bare_checksum_file_url(tmp_path, served, checksum_file, ok):
    """Item 17, through the role: a URL source with Ironic's bare checksum-file URL is downloaded by get_url and
    verified (it failed inside get_url before); a checksum file that lists another digest fails the download,
    before anything is attached. (The attach after the download fails on the simulator: its kernel does not run
    under ansible-playbook; the download is what is tested.)"""
    from playbook_runner import play
    srv, path, _s256, _s512 = served
    h, hv = sim_env(str(tmp_path))
    cache = tmp_path / "cache"
    role_vars = {"brick_volumes": volumes(0), "brick_image_source": srv.url + "/disk.raw",
                 "brick_image_checksum": "%s/%s" % (srv.url, checksum_file), "brick_deploy_cache_dir": str(cache),
                 "brick_deploy_state_dir": str(tmp_path / "state"), "brick_attach_device_wait_timeout": 2,
                 "brick_attach_verify": False}
    rc, out = play(str(tmp_path), deploy_play(**role_vars), hv)
    assert rc != 0, out[-4000:]
    cached = [p for p in cache.iterdir() if p.name.endswith("-disk.raw")] if cache.exists() else []
    if ok:
        assert "TASK [brick.storage.deploy_image : Download the image]" in out, out[-4000:]
        assert len(cached) == 1 and cached[0].read_bytes() == open(path, "rb").read(), out[-4000:]
        assert "TASK [brick.storage.attach" in out  # the download passed: the flow went on to the attach
    else:
        assert cached == [] and "did not match" in out, out[-4000:]
        assert h.commands() == []  # nothing attached
