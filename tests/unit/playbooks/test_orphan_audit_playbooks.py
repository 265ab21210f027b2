# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""playbooks/orphan_audit.yml, verify_attached.yml and verify_detached.yml with ansible-playbook against
three simulated hosts (local connection; each host's modules read its sim tree through BRICK_STORAGE_ROOT,
and the fake iscsiadm/multipath of the sim are first on PATH for the cleanup)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from connector import iscsi
from sim import SimHost

pytestmark = pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-playbook not installed")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
IQN = "iqn.2003-01.org.example.array:vol1"
IQN2 = "iqn.2003-01.org.example.array:vol2"
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"


def connector(h):
    return iscsi.Connector(h.fs, h.runner(), poll=0.01, sleep=lambda s: time.sleep(min(s, 0.02)),
                           device_wait=2.0, multipath_wait=2.0)


def attach(h, lun=0, portals=(P1, P2)):
    return connector(h).connect(iscsi.build_paths(list(portals), [IQN], [lun]))


class Fleet(object):
    def __init__(self, top):
        self.top = str(top)
        coll = os.path.join(self.top, "collections", "ansible_collections", "brick")
        os.makedirs(coll)
        os.symlink(REPO, os.path.join(coll, "storage"))
        self.hosts = {}
        self.expected = {}
        self.extra_hosts = {}

    def add(self, name):
        h = SimHost(os.path.join(self.top, name))
        h.set_fault("time_scale", 0.01)
        h.add_target(IQN, portals=[P1, P2], luns={0: 64, 1: 32})
        h.add_target(IQN2, portals=[P1], luns={0: 16})
        self.hosts[name] = h
        return h

    def inventory(self):
        path = os.path.join(self.top, "inventory.json")
        hosts = dict(self.extra_hosts)
        for name, h in self.hosts.items():
            env = h.env()
            hv = {"brick_storage_environment": {"BRICK_STORAGE_ROOT": h.root, "BRICK_SIM_ROOT": h.root,
                                                "PATH": env["PATH"]},
                  "brick_lock_dir": os.path.join(h.root, "run", "lock")}
            if name in self.expected:
                hv["brick_orphan_audit_expected"] = self.expected[name]
            hosts[name] = hv
        inv = {"all": {"vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                       "hosts": hosts}}
        with open(path, "w") as f:
            json.dump(inv, f)
        return path

    def play(self, playbook, *extra, **kw):
        env = dict(os.environ)
        env.update(kw.get("env", {}))
        env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(self.top, "collections"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=os.path.join(self.top, "tmp"), ANSIBLE_RETRY_FILES_ENABLED="0",
                   ANSIBLE_DEPRECATION_WARNINGS="0")
        argv = ["ansible-playbook", "-i", self.inventory(), os.path.join(REPO, "playbooks", playbook)] + list(extra)
        p = subprocess.run(argv, env=env, cwd=self.top, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, timeout=kw.get("timeout", 300), check=False)
        return p.returncode, p.stdout

    def report(self, d="report"):
        with open(os.path.join(self.top, d, "orphan-report.json")) as f:
            js = json.load(f)
        with open(os.path.join(self.top, d, "orphan-report.txt")) as f:
            return js, f.read()


@pytest.fixture
def fleet(tmp_path):
    fl = Fleet(tmp_path)
    clean = fl.add("clean")
    attach(clean)                                  # healthy 2-path multipath volume (+ local /dev/vda)
    sick = fl.add("sick")
    attach(sick)
    sick.path_fail(P2, session_state="FREE")       # device_on_failed_session
    sick.login(IQN2, P1, scan="manual")            # session_without_lun
    os.symlink("../../sdzz", sick.fs.path("/dev/disk/by-path/ip-10.0.0.9:3260-iscsi-%s-lun-5" % IQN))
    extra = fl.add("extra")
    attach(extra)
    attach(extra, lun=1)                           # not in the expected set
    fl.expected["extra"] = [{"iqn": IQN, "lun": 0}]
    return fl


def recap_changed(out):
    return dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", out, re.M))


def galaxy_version():
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        return re.search(r"^version:\s*(\S+)", f.read(), re.M).group(1)


def test_audit_report_over_three_hosts(fleet):
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report")
    assert rc == 0, out
    # a read-only audit changes nothing, the report files included
    assert recap_changed(out) == {"localhost": 0, "clean": 0, "sick": 0, "extra": 0}, out
    js, txt = fleet.report()
    assert js["schema_version"] == 2 and js["collection"] == "brick.storage"
    assert js["collection_version"] == galaxy_version() and js["run_id"] is None
    t = js["totals"]
    assert t["hosts"] == 3 and t["hosts_audited"] == 3 and t["hosts_with_orphans"] == 2
    assert t["counts"] == {"dangling_link": 1, "device_without_session": 0, "device_on_failed_session": 1,
                           "map_without_working_path": 0, "session_without_lun": 1, "unexpected_lun": 2}
    assert t["orphans"] == 5
    h = js["hosts"]
    assert h["clean"]["status"] == "ok" and h["clean"]["orphans"] == 0 and h["clean"]["items"] == []
    assert h["clean"]["luns"] == 2 and h["clean"]["maps"] == 1
    assert sorted(o["kind"] for o in h["sick"]["items"]) == [
        "dangling_link", "device_on_failed_session", "session_without_lun"]
    assert all(o["reason"] for o in h["sick"]["items"])
    assert {o["kind"] for o in h["extra"]["items"]} == {"unexpected_lun"}
    # readable summary: per-host counts and every orphan with its reason
    assert "clean: 0 orphan(s)" in txt
    assert "sick: 3 orphan(s) (dangling_link=1, device_on_failed_session=1, session_without_lun=1)" in txt
    for o in h["sick"]["items"] + h["extra"]["items"]:
        assert "  - %s: %s" % (o["kind"], o["reason"]) in txt
    assert "vda" not in txt


def _task_hosts(out, task):
    """The hosts that a task of the ansible-playbook output ran on (ok/changed/skipping/fatal/included lines)."""
    block = out.split("TASK [%s]" % task, 1)
    if len(block) == 1:
        return None
    block = block[1].split("TASK [", 1)[0].split("PLAY RECAP", 1)[0]
    hosts = set(re.findall(r"^(?:ok|changed|skipping|fatal): \[([^\]]+)\]", block, re.M))
    hosts.update(re.findall(r"^included: \S+ for (.+)$", block, re.M))
    return {h.strip() for part in hosts for h in part.split(",")}


def test_per_host_work_is_one_module_run(fleet):
    """The settings are checked once for the fleet (not a task per host), and only the hosts with something to
    do (here: fail, because of fail_on_orphans) reach the cleanup/fail tasks: the others end the role in the
    controller, without a worker process."""
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report",
                         "-e", "brick_orphan_audit_fail_on_orphans=true")
    assert rc == 2, out
    assert _task_hosts(out, "Check the audit's settings once for the fleet") == {"clean"}, out
    assert "Validating arguments against arg spec" not in out, out
    assert _task_hosts(out, "brick.storage.orphan_audit : Read the volume paths and orphans of the host") == {
        "clean", "sick", "extra"}, out
    assert _task_hosts(out, "brick.storage.orphan_audit : Clean up, and fail the hosts that must fail") == {
        "sick", "extra"}, out
    # without fail_on_orphans, no host has anything more to do: post.yml is not even included
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report")
    assert rc == 0, out
    assert _task_hosts(out, "brick.storage.orphan_audit : Clean up, and fail the hosts that must fail") is None, out


@pytest.mark.parametrize("setting, value, message", [
    ("brick_orphan_audit_cleanup_kinds", '["dangling_link", "every_thing"]', "every_thing"),
    ("brick_orphan_audit_fail_on_orphans", '"sometimes"', "brick_orphan_audit_fail_on_orphans"),
    ("brick_orphan_audit_expexted", "[]", None),  # a typo is not an error of the spec: nothing to check
])
def test_bad_settings_fail_before_any_module_runs(fleet, setting, value, message):
    before = dict((n, h.snapshot()) for n, h in fleet.hosts.items())
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report",
                         "-e", '{"%s": %s}' % (setting, value))
    if message is None:
        assert rc == 0, out
        return
    assert rc == 2, out
    assert message in out and "Validation of arguments failed" in out, out
    assert "Read the volume paths" not in out, out
    assert not os.path.exists(os.path.join(fleet.top, "report"))
    assert dict((n, h.snapshot()) for n, h in fleet.hosts.items()) == before


def test_fail_on_orphans_fails_only_the_hosts_with_orphans(fleet):
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report",
                         "-e", "brick_orphan_audit_fail_on_orphans=true")
    assert rc == 2, out
    assert "fatal: [sick]" in out and "fatal: [extra]" in out and "fatal: [clean]" not in out
    assert "is FREE" in out  # the failure names the orphans
    assert os.path.exists(os.path.join(fleet.top, "report", "orphan-report.json"))


def test_cleanup_check_mode_then_for_real(fleet):
    before = dict((n, h.snapshot()) for n, h in fleet.hosts.items())
    rep = fleet.top + "/report"
    # the cleanup removes things: without brick_hosts the playbook refuses to start
    rc, out = fleet.play("orphan_audit.yml", "--check", "-e", "brick_orphan_audit_report_dir=" + rep,
                         "-e", "brick_orphan_audit_cleanup=true")
    assert rc != 0 and "set brick_hosts" in out and "has no default hosts" in out, out
    rc, out = fleet.play("orphan_audit.yml", "--check", "-e", "brick_orphan_audit_report_dir=" + rep,
                         "-e", "brick_orphan_audit_cleanup=true", "-e", "brick_hosts=all")
    assert rc == 0, out
    for n, h in fleet.hosts.items():
        assert h.snapshot() == before[n], h.diff(before[n], h.snapshot())
    js, txt = fleet.report()
    assert js["check_mode"] is True
    acts = js["hosts"]["sick"]["cleanup"]["actions"]
    assert sorted(a["action"] for a in acts) == ["file", "iscsi_volume", "iscsi_volume"]
    assert "check mode, nothing removed" in txt
    # honest wording: nothing was removed, so nothing is "left after the cleanup"
    assert "orphans: 5 (check mode: nothing was removed;" in txt and "left after" not in txt, txt

    # For real, limited to the kinds whose removal needs no sysfs write: the modules use a plain HostFS, whose
    # writes to a sim tree's "delete" attributes do not act like the kernel (the connector-level test
    # test_paths.py::test_real_cleanup_through_the_connector_leaves_no_orphan covers device removal).
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + rep, "-e", "brick_hosts=all",
                         "-e", "brick_orphan_audit_cleanup=true", "-e", "brick_orphan_audit_fail_on_orphans=true",
                         "-e", '{"brick_orphan_audit_cleanup_kinds": ["dangling_link", "session_without_lun"]}')
    assert rc == 2, out
    js, txt = fleet.report()
    assert js["totals"]["orphans"] == 5 and js["totals"]["orphans_left"] == 3, txt
    sick = js["hosts"]["sick"]
    assert sick["cleanup"]["changed"] == 2 and sick["cleanup"]["failed"] == []
    assert sick["cleanup"]["orphans_after"] == 1 and "is FREE" in sick["cleanup"]["items_after"][0]
    assert not os.path.lexists(fleet.hosts["sick"].fs.path("/dev/disk/by-path/ip-10.0.0.9:3260-iscsi-%s-lun-5" % IQN))
    assert fleet.hosts["sick"].sessions(iqn=IQN2) == []
    assert "after cleanup: 1 orphan(s)" in txt
    assert "orphans: 5, left after the cleanup: 3" in txt
    # orphans are left on "sick" and "extra": those fail, "clean" does not
    assert "fatal: [sick]" in out and "fatal: [extra]" in out and "fatal: [clean]" not in out
    rc, out = fleet.play("verify_attached.yml", "-e", json.dumps(
        {"brick_volume_portals": [P1, P2], "brick_volume_iqn": IQN, "brick_volume_lun": 0,
         "brick_verify_hosts": "clean:extra"}))
    assert rc == 0, out


def test_verify_attached_and_detached_messages(fleet):
    vol0 = {"brick_volume_portals": [P1, P2], "brick_volume_iqn": IQN, "brick_volume_lun": 0}
    rc, out = fleet.play("verify_attached.yml", "-e", json.dumps(vol0))
    assert rc == 2, out
    assert "fatal: [sick]" in out and "fatal: [clean]" not in out and "fatal: [extra]" not in out
    assert "1 of 2 expected path(s) work; no working path via %s" % P2 in out
    assert "(device transport-offline)" in out
    # one expected path is enough on the sick host
    rc, out = fleet.play("verify_attached.yml", "-e",
                         json.dumps(dict(vol0, brick_volume_expected_paths=1, brick_verify_hosts="sick")))
    assert rc == 0, out
    # detached: LUN 1 only exists on "extra"
    vol1 = dict(vol0, brick_volume_lun=1)
    rc, out = fleet.play("verify_detached.yml", "-e", json.dumps(vol1))
    assert rc == 2 and "fatal: [extra]" in out and "fatal: [clean]" not in out, out
    assert "LUN 1 is not detached from extra: 5 leftover(s): /dev/sd" in out
    rc, out = fleet.play("verify_detached.yml", "-e", json.dumps(dict(vol1, brick_volume_iqn="bad")))
    assert rc == 2 and "invalid input" in out and "malformed" in out


def test_unreachable_host_serial_batches_and_stats(fleet):
    # a fourth host whose ssh port refuses connections
    fleet.extra_hosts["gone"] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 9,
                                 "ansible_ssh_common_args": "-o ConnectTimeout=3"}
    rc, out = fleet.play("orphan_audit.yml", "-e", "brick_orphan_audit_report_dir=" + fleet.top + "/report",
                         "-e", "brick_serial=2", env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert rc != 0, out
    assert "fatal: [gone]" in out and "is unreachable" in out
    for h in ("clean", "sick", "extra"):
        assert "fatal: [%s]" % h not in out
    js, txt = fleet.report()
    # batches clean+sick, then extra+gone: the last batch's report holds every host, none pending
    assert js["hosts"]["gone"]["status"] == "unreachable", js["hosts"]["gone"]
    assert [js["hosts"][h]["status"] for h in ("clean", "sick", "extra")] == ["ok", "ok", "ok"]
    t = js["totals"]
    assert t["hosts"] == 4 and t["hosts_audited"] == 3 and t["hosts_unreachable"] == 1 and t["hosts_pending"] == 0
    assert t["hosts_without_data"] == 1 and t["orphans"] == 5
    assert "gone: UNREACHABLE - gone is unreachable" in txt and "1 unreachable" in txt
    # the job statistics (AWX artifacts) carry every host too
    stats = out[out.index("CUSTOM STATS"):]
    for h in ("clean", "sick", "extra", "gone"):
        assert '"%s"' % h in stats, stats


def test_slices_of_one_run_merge_into_one_report(fleet):
    rep = fleet.top + "/report"
    run = ["-e", "brick_orphan_audit_report_dir=" + rep, "-e", "brick_orphan_audit_run_id=job-42"]
    rc, out = fleet.play("orphan_audit.yml", "--limit", "clean", *run)
    assert rc == 0, out
    js, _txt = fleet.report()
    assert sorted(js["hosts"]) == ["clean"]
    rc, out = fleet.play("orphan_audit.yml", "--limit", "sick:extra", *run)
    assert rc == 0, out
    js, _txt = fleet.report()
    assert js["run_id"] == "job-42" and sorted(js["hosts"]) == ["clean", "extra", "sick"]
    assert js["totals"]["hosts"] == 3 and js["totals"]["orphans"] == 5
    # (a run with another id, or none, writes a report of its own hosts: test_audit_report_over_three_hosts)
