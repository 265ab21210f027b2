"""The role brick.storage.deploy_image (playbooks/deploy_image.yml) on the real-kernel lab with a qcow2 image from a
URL with a checksum, as Bifrost gives it (instance_info.image_source / image_checksum).

The guest makes a 48 MiB (virtual) qcow2 image with a GPT and random data and serves it over HTTP on its own
loopback. The first deploy downloads it, writes it straight to LUN 0's multipath map (qemu-img convert -n, no raw
copy), reads the whole range back (brick_deploy_verify=full) and shows progress lines; the second deploy changes
nothing and reads only the record's sample blocks (the test prints how much the LIO target served in each run).
Safe mode refuses a LUN that carries a file system this flow did not write.
"""
import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PLAYBOOK = REPO / "playbooks" / "deploy_image.yml"
WEB = "/var/tmp/brick-web"
URL = "http://127.0.0.1:8088/disk.qcow2"
MIB = 1048576
RECAP = re.compile(r"^lab\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def guest(lab, cmd, timeout=180):
    for _attempt in range(4):  # the emulated guest is sometimes too busy for ssh's connect timeout
        rc, out, err = lab.ssh(cmd, timeout=timeout)
        if rc != 255:
            break
        time.sleep(5)
    assert rc == 0, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out


def recap(result):
    m = RECAP.search(result.stdout)
    assert m, result.stdout[-4000:]
    return {"ok": int(m.group(1)), "changed": int(m.group(2)), "unreachable": int(m.group(3)),
            "failed": int(m.group(4))}


def lun_read_mib(lab, lun):
    """MiB the LIO target has served from the LUN's backstore so far (its SCSI LU statistics)."""
    return int(guest(lab, "cat /sys/kernel/config/target/core/fileio_%d/lab%d/statistics/scsi_lu/read_mbytes"
                     % (lun, lun)).strip())


def sessions(lab):
    return int(guest(lab, "ls /sys/class/iscsi_session | wc -l").strip())


@pytest.fixture(scope="module")
def image(lab):
    """Make the qcow2 image in the guest and serve it on 127.0.0.1:8088; returns its sha256."""
    guest(lab, "set -e; rm -rf {w}; mkdir -p {w}; cd {w}; truncate -s 48M disk.raw; "
               "parted -s disk.raw mklabel gpt mkpart root 1MiB 47MiB; "
               "dd if=/dev/urandom of=disk.raw bs=1M seek=3 count=6 conv=notrunc status=none; "
               "dd if=/dev/urandom of=disk.raw bs=1M seek=30 count=5 conv=notrunc status=none; "
               "qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2; rm disk.raw; "
               "systemctl stop brick-web 2>/dev/null || true; "
               "systemd-run --unit brick-web --quiet python3 -m http.server --bind 127.0.0.1 --directory {w} 8088"
               .format(w=WEB))
    sha = guest(lab, "sha256sum %s/disk.qcow2" % WEB).split()[0]
    guest(lab, "for i in $(seq 50); do python3 -c 'import urllib.request as u; u.urlopen(\"%s\").close()' "
               "2>/dev/null && exit 0; sleep 0.2; done; exit 1" % URL)
    yield sha
    guest(lab, "systemctl stop brick-web || true")


def deploy(ansible_lab, **extra):
    # LUN 0 (the lab has two volumes: the flow writes only onto the one named)
    return ansible_lab.playbook(PLAYBOOK, extra_vars=dict({"brick_hosts": "iscsi_lab",
                                                           "brick_deploy_volume": "lab-lun0"}, **extra))


def test_qcow2_from_url_then_a_cheap_second_run(lab, ansible_lab, image):
    source = {"brick_image_source": URL, "brick_image_checksum": "sha256:" + image}
    before = lun_read_mib(lab, 0)
    first = deploy(ansible_lab, brick_deploy_verify="full", brick_deploy_progress_min_mib=0,
                   brick_deploy_progress_step=50, **source)
    r1 = recap(first)
    assert first.rc == 0 and r1["failed"] == 0, first.stdout[-6000:]
    assert r1["changed"] >= 2, first.stdout[-6000:]  # the download and the write
    # progress: a line per 50 % of the write and of the full read-back
    for step in ("write 50%", "write 100%", "verify 50%", "verify 100%"):
        assert "(item=%s)" % step in first.stdout, first.stdout[-6000:]
    assert "written now" in first.stdout and "Checked: written, full verification" in first.stdout
    assert sessions(lab) == 0
    # the qcow2 was written straight to the device: the cache holds the download (11-12 MiB), no raw copy
    files = guest(lab, "find /var/lib/brick-storage -type f -printf '%s %p\\n' | sort -k2").splitlines()
    assert not [f for f in files if f.endswith(".raw")], files
    cached = [f for f in files if f.endswith("-disk.qcow2")]
    assert len(cached) == 1 and int(cached[0].split()[0]) < 20 * MIB, files
    mid = lun_read_mib(lab, 0)

    second = deploy(ansible_lab, **source)
    r2 = recap(second)
    assert second.rc == 0 and r2["failed"] == 0, second.stdout[-6000:]
    assert r2["changed"] == 0, second.stdout[-6000:]
    assert "already there" in second.stdout, second.stdout[-6000:]
    assert "Checked: record of the last write, sample blocks read back; 4.0 MiB of the target read" in second.stdout
    after = lun_read_mib(lab, 0)
    # what the LIO target served for LUN 0: the samples (4 MiB) and what udev/multipathd read at the attach
    print("deploy of a 48 MiB qcow2 from a URL: first run %d MiB read from the LUN (full read-back), second run "
          "%d MiB (%.0f s, %.0f s)" % (mid - before, after - mid, first.duration, second.duration))
    assert after - mid <= 12, (before, mid, after)
    assert sessions(lab) == 0


# Bifrost's layout: the nodes in `baremetal` (never contacted), the deploying host in `target`; the role runs for
# each node, delegated to groups['target'][0] (or localhost without that group), with the node's variables.
BIFROST_INVENTORY = """
all:
  children:
    target:
      hosts:
        lab:
          ansible_host: 127.0.0.1
          ansible_port: "{{ lookup('ansible.builtin.env', 'LAB_SSH_PORT') | default('2222', true) | int }}"
          ansible_user: root
          ansible_ssh_private_key_file: >-
            {{ lookup('ansible.builtin.env', 'LAB_DIR') | default('/var/tmp/brick-lab', true) }}/id_ed25519
          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          ansible_python_interpreter: /usr/bin/python3
    baremetal:
      hosts:
        node-7:
          ansible_host: 192.0.2.107
          instance_info:
            image_source: %(url)s
            image_checksum: %(sha)s
          brick_volumes:
            - name: root
              portals: [127.0.0.1:3260]
              iqn: iqn.2003-01.org.linux-iscsi.lab:target1
              lun: 1
              multipath: "off"
"""
BIFROST_PLAY = """
- name: Write each node's image onto its root volume, on the deploying host
  hosts: baremetal
  gather_facts: false
  become: true
  roles:
    - role: brick.storage.deploy_image
      delegate_to: "{{ groups['target'][0] if groups['target'] is defined else 'localhost' }}"
      vars:
        brick_deploy_volume: root
        brick_image_source: "{{ instance_info.image_source }}"
        brick_image_checksum: "{{ instance_info.image_checksum }}"
"""


def test_safe_mode_refuses_a_volume_with_a_file_system(lab, ansible_lab, image, tmp_path):
    """Through Bifrost's delegation pattern: node-7's root volume (LUN 1) carries a file system."""
    # LUN 1 carries an ext4 file system that this flow did not write (made in its fileio backstore file, which
    # starts empty: LIO serves zeros past its end)
    guest(lab, "truncate -s 64M /var/lib/lab-target/lab1.img && mkfs.ext4 -q -F -L data /var/lib/lab-target/lab1.img"
               " && sync")
    inv = tmp_path / "bifrost.yml"
    inv.write_text(BIFROST_INVENTORY % {"url": URL, "sha": image})
    play = tmp_path / "deploy-on-target.yml"
    play.write_text(BIFROST_PLAY)
    r = ansible_lab.playbook(play, args=["-i", str(inv)])
    assert r.rc == 2, r.stdout[-6000:]
    assert "fatal: [node-7 -> lab(127.0.0.1)]" in r.stdout, r.stdout[-6000:]
    assert "safe mode:" in r.stdout and "carries ext4 at 0x438 (label data)" in r.stdout, r.stdout[-6000:]
    assert "nothing was written" in r.stdout and "brick_safe_mode=false" in r.stdout
    assert "ext4" in guest(lab, "wipefs --no-act /var/lib/lab-target/lab1.img")
    assert sessions(lab) == 0  # detached again after the refusal
