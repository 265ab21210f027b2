"""The user-facing flows on the real-kernel lab: playbooks/attach.yml, detach.yml and deploy_image.yml.

Each playbook runs twice: the first run changes the guest, the second must report changed=0 (the flows are
idempotent). attach/detach run with the example inventory playbooks/inventory/lab.yml; deploy_image runs
exactly as `bash scripts/demo.sh` does (tests/lab/inventory.yml, brick_hosts=iscsi_lab, brick_deploy_volume=lab-lun0
and the opt-in brick_deploy_test_image=true: the volumes come from playbooks/group_vars/iscsi_lab.yml and the test
image is made on the guest).

The tests of this module depend on each other's order (attach, then detach; deploy starts from a clean guest
because it runs after the detach); the module starts from the lab's "ready" state (conftest.lab_ready).
"""
import copy
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

IQN = "iqn.2003-01.org.linux-iscsi.lab:target1"
EXAMPLE_INVENTORY = REPO / "playbooks" / "inventory" / "lab.yml"
# detach.yml and deploy_image.yml have no default hosts (they take volumes away / overwrite them)
HOSTS = {"brick_hosts": "iscsi_lab"}
# deploy_image.yml as scripts/demo.sh runs it: the volume named (the lab has two) and the test image opted in
DEMO = dict(HOSTS, brick_deploy_volume="lab-lun0", brick_deploy_test_image=True)
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
                   r"\s+failed=(?P<failed>\d+)(?:\s+skipped=(?P<skipped>\d+))?", re.M)


def recap(result, host="lab"):
    """PLAY RECAP counts of ``host`` as a dict of ints (summed over plays)."""
    counts = {}
    for m in RECAP.finditer(result.stdout):
        if m.group("host") != host:
            continue
        for k in ("ok", "changed", "unreachable", "failed", "skipped"):
            counts[k] = counts.get(k, 0) + int(m.group(k) or 0)
    assert counts, "no PLAY RECAP for %s in:\n%s" % (host, result.stdout[-4000:])
    return counts


def ok(result, host="lab"):
    """Assert the run succeeded; return its recap."""
    result.check()
    r = recap(result, host)
    assert r["failed"] == 0 and r["unreachable"] == 0, result.stdout[-6000:]
    return r


def guest(lab, cmd):
    for _attempt in range(4):  # the emulated guest is sometimes too busy for ssh's 10 s connect timeout
        rc, out, err = lab.ssh(cmd, timeout=120)
        if rc != 255:
            break
        time.sleep(5)
    assert rc == 0, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out


def sessions(lab):
    return int(guest(lab, "ls /sys/class/iscsi_session | wc -l").strip())


@pytest.fixture(scope="module")
def example(ansible_lab):
    """The same runner, with the example inventory playbooks/inventory/lab.yml."""
    runner = copy.copy(ansible_lab)
    runner.inventory = str(EXAMPLE_INVENTORY)
    return runner


@pytest.mark.lab_slow
def test_attach_twice(lab, example):
    first = example.playbook(REPO / "playbooks" / "attach.yml")
    print("attach.yml: %.0f s" % first.duration)
    r1 = ok(first)
    assert r1["changed"] >= 1, first.stdout[-4000:]
    # LUN 0 over both portals (one map), LUN 1 over one portal: 2 sessions, 1 map with 2 paths
    assert sessions(lab) == 2
    assert "lab-lun0: /dev/dm-" in first.stdout, first.stdout[-4000:]
    assert "multipath map 36001405" in first.stdout, first.stdout[-4000:]
    maps = guest(lab, "ls /sys/block | grep -c '^dm-' || true").strip()
    assert maps == "1", maps

    second = example.playbook(REPO / "playbooks" / "attach.yml")
    r2 = ok(second)
    assert r2["changed"] == 0, second.stdout[-6000:]

    check = example.playbook(REPO / "playbooks" / "attach.yml", args=["--check"])
    assert ok(check)["changed"] == 0, check.stdout[-6000:]


@pytest.mark.lab_slow
def test_detach_twice(lab, example):
    # attached by the previous test (idempotent if run alone)
    ok(example.playbook(REPO / "playbooks" / "attach.yml"))
    check = example.playbook(REPO / "playbooks" / "detach.yml", extra_vars=HOSTS, args=["--check"])
    assert ok(check)["changed"] >= 1, check.stdout[-4000:]
    assert sessions(lab) == 2  # check mode changed nothing

    first = example.playbook(REPO / "playbooks" / "detach.yml", extra_vars=HOSTS)
    r1 = ok(first)
    assert r1["changed"] >= 1, first.stdout[-4000:]
    assert sessions(lab) == 0
    assert guest(lab, "ls /dev/disk/by-path 2>/dev/null | grep -c iscsi || true").strip() == "0"
    assert guest(lab, "ls /sys/block | grep -c '^dm-' || true").strip() == "0"

    second = example.playbook(REPO / "playbooks" / "detach.yml", extra_vars=HOSTS)
    r2 = ok(second)
    assert r2["changed"] == 0, second.stdout[-6000:]


# lab_slow: test_deploy_image_lab.py runs the same playbook twice (written, then already there) in the default run
@pytest.mark.lab_slow
def test_deploy_image_twice(lab, ansible_lab):
    # as scripts/demo.sh runs it: tests/lab/inventory.yml, brick_hosts, brick_deploy_volume and the test-image opt-in
    guest(lab, "rm -f /var/tmp/brick-storage-test-image.raw")
    first = ansible_lab.playbook(REPO / "playbooks" / "deploy_image.yml", extra_vars=DEMO)
    r1 = ok(first)
    assert r1["changed"] >= 1, first.stdout[-6000:]
    assert "image verified" in first.stdout and "written now" in first.stdout, first.stdout[-6000:]
    assert sessions(lab) == 0  # detached at the end

    second = ansible_lab.playbook(REPO / "playbooks" / "deploy_image.yml", extra_vars=DEMO)
    r2 = ok(second)
    assert r2["changed"] == 0, second.stdout[-6000:]
    assert "image verified" in second.stdout and "already there" in second.stdout, second.stdout[-6000:]
    assert sessions(lab) == 0

    # check mode attaches nothing, so it cannot compare the content of a detached volume: it reports the write
    # as a possible change (and nothing else)
    check = ansible_lab.playbook(REPO / "playbooks" / "deploy_image.yml", extra_vars=DEMO, args=["--check"])
    assert ok(check)["changed"] <= 1, check.stdout[-6000:]
    assert "would write" in check.stdout, check.stdout[-6000:]
    assert sessions(lab) == 0


@pytest.mark.lab_slow
def test_deploy_image_content_on_the_lun(lab, example):
    """What the deploy wrote is really on LUN 0 (read through the attach flow, outside the deploy)."""
    ok(example.playbook(REPO / "playbooks" / "attach.yml"))
    try:
        dev = guest(lab, "readlink -f /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-%s-lun-0" % IQN).strip()
        head = guest(lab, "dd if=%s bs=512 count=1 iflag=direct status=none | head -c 40" % dev)
        assert head.startswith("brick.storage test image, sector 0 of"), head
        img = guest(lab, "sha256sum < /var/tmp/brick-storage-test-image.raw").split()[0]
        size = int(guest(lab, "stat -c %s /var/tmp/brick-storage-test-image.raw").strip())
        got = guest(lab, "dd if=%s iflag=direct,count_bytes bs=1M count=%d status=none | sha256sum" % (dev, size)).split()[0]
        assert got == img
    finally:
        ok(example.playbook(REPO / "playbooks" / "detach.yml", extra_vars=HOSTS))
    assert sessions(lab) == 0


def _have_community_general(ansible_lab):
    paths = ansible_lab.env.get("ANSIBLE_COLLECTIONS_PATH", "").split(":") + [str(REPO / ".ansible" / "collections")]
    return any((Path(p) / "ansible_collections" / "community" / "general").is_dir() for p in paths if p)


@pytest.mark.lab_slow
def test_deploy_image_into_partition_on_single_path(lab, ansible_lab):
    """brick_deploy_partition=true on LUN 1 (one portal, no map): GPT + partition 1, image written into /dev/sdX1."""
    if not _have_community_general(ansible_lab):
        pytest.skip("community.general (parted, used by the partition role) is not installed: run scripts/setup.sh")
    runner = copy.copy(ansible_lab)
    runner.env = dict(ansible_lab.env)
    runner.env["ANSIBLE_COLLECTIONS_PATH"] = ":".join(
        [runner.env["ANSIBLE_COLLECTIONS_PATH"], str(REPO / ".ansible" / "collections")])
    extra = dict(HOSTS, brick_deploy_volume="lab-lun1", brick_deploy_partition=True, brick_deploy_test_image=True)
    first = runner.playbook(REPO / "playbooks" / "deploy_image.yml", extra_vars=extra)
    assert ok(first)["changed"] >= 1, first.stdout[-6000:]
    assert re.search(r"image verified: .* is on /dev/sd[a-z]+1 \(written now\)", first.stdout), first.stdout[-6000:]
    second = runner.playbook(REPO / "playbooks" / "deploy_image.yml", extra_vars=extra)
    assert ok(second)["changed"] == 0, second.stdout[-6000:]
    assert "already there" in second.stdout, second.stdout[-6000:]
    assert sessions(lab) == 0
