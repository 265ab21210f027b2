# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""The deploy role's helper (roles/deploy_image/files/deploy_helper.py), its parts that need no block device:
sample regions, checksums, the image command (test image, formats, the checksum cache, the download marker),
progress parsing and the progress wait. The parts on a block device run on the lab
(tests/integration/lab/test_deploy_image_lab.py)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
HELPER = os.path.join(REPO, "roles", "deploy_image", "files", "deploy_helper.py")
_spec = importlib.util.spec_from_file_location("brick_deploy_helper", HELPER)
h = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(h)
MIB = 1024 * 1024


def run_helper(cmd, req):
    """As the role runs it: python3 - CMD JSON, the script on stdin."""
    with open(HELPER) as f:
        src = f.read()
    p = subprocess.run([sys.executable, "-", cmd, json.dumps(req)], input=src, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)
    return p.returncode, json.loads(p.stdout)


@pytest.mark.parametrize("size", [4 * MIB, 48 * MIB, 10 * 1024 * MIB + 512], ids=["4MiB", "48MiB", "10GiB+512"])
def test_sample_regions(size):
    r = h.sample_regions(size, "sha256:abc")
    assert r == h.sample_regions(size, "sha256:abc")  # deterministic
    assert all(0 <= o and o + n <= size for o, n in r)
    total = sum(n for _o, n in r)
    if size <= 4 * MIB:
        assert r == [(0, size)]
    else:
        assert r[0] == (0, MIB) and r[-1][0] + r[-1][1] == size
        assert total <= 4 * MIB + 4096 and len(r) == 34
        assert all(o % 4096 == 0 for o, _n in r[:-1])
        assert r != h.sample_regions(size, "sha256:other")  # another image samples other places


@pytest.mark.parametrize("given, want", [
    ("", ""),
    ("sha256:ABCDEF", "sha256:abcdef"),
    ("d41d8cd98f00b204e9800998ecf8427e", "md5:d41d8cd98f00b204e9800998ecf8427e"),
    ("a" * 64, "sha256:" + "a" * 64),
    ("sha256:http://192.0.2.10:8080/SHA256SUMS", "sha256:http://192.0.2.10:8080/SHA256SUMS"),
], ids=["none", "algo", "bare-md5", "bare-sha256", "checksum-url"])
def test_norm_checksum(given, want):
    assert h.norm_checksum(given) == want


def test_norm_checksum_rejects_garbage():
    with pytest.raises(h.Fail):
        h.norm_checksum("not-a-digest")


def test_image_test_image_raw_and_the_checksum_cache(tmp_path):
    img = str(tmp_path / "test.raw")
    req = {"path": img, "format": "auto", "test_image_size": 1 * MIB, "sum_cache": str(tmp_path / "s" / "c.json")}
    rc, res = run_helper("image", req)
    assert rc == 0 and res["made_test_image"] and res["cache_written"], res
    assert res["format"] == "raw" and res["virtual_size"] == MIB
    with open(img, "rb") as f:
        first = f.read(512)
    assert first.startswith(b"brick.storage test image, sector 0 of 2048") and first.endswith(b"\n")
    ident = res["identity"]
    assert ident.startswith("sha256:")
    # again: nothing made, the checksum comes from the cache (kept by size and mtime)
    rc, res = run_helper("image", req)
    assert rc == 0 and not res["made_test_image"] and not res["cache_written"] and res["identity"] == ident
    # check mode makes nothing
    rc, res = run_helper("image", dict(req, path=str(tmp_path / "other.raw"), check_mode=True))
    assert rc == 0 and res["would_make_test_image"] and not os.path.exists(str(tmp_path / "other.raw"))


def test_image_checksum_given_for_a_path_is_verified(tmp_path):
    img = tmp_path / "disk.raw"
    img.write_bytes(b"\0" * 4096)
    rc, res = run_helper("image", {"path": str(img), "checksum": "md5:" + "0" * 32})
    assert rc == 1 and "not the checksum given" in res["msg"], res
    import hashlib
    md5 = hashlib.md5(b"\0" * 4096).hexdigest()
    rc, res = run_helper("image", {"path": str(img), "checksum": md5})
    assert rc == 0 and res["identity"] == "md5:" + md5, res


def test_image_url_marker(tmp_path):
    cached = tmp_path / "cache" / "abc-disk.raw"
    req = {"path": str(cached), "url": "http://192.0.2.10:8080/disk.raw", "checksum": "sha256:" + "1" * 64,
           "marker": str(cached) + ".brick.json"}
    rc, res = run_helper("image", req)
    assert rc == 0 and res["download"] and not res["exists"], res
    cached.parent.mkdir()
    cached.write_bytes(b"x" * 512)  # what get_url (having verified the checksum) leaves
    rc, res = run_helper("image", dict(req, downloaded=True))
    assert rc == 0 and res["cache_written"] and res["identity"] == "sha256:" + "1" * 64, res
    rc, res = run_helper("image", req)
    assert rc == 0 and not res["download"] and not res["cache_written"], res
    # another checksum (a new image at the same URL): download again
    rc, res = run_helper("image", dict(req, checksum="sha256:" + "2" * 64))
    assert rc == 0 and res["download"] and res["exists"], res


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")
def test_image_qcow2_virtual_size(tmp_path):
    img = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "48M"], check=True)
    rc, res = run_helper("image", {"path": img, "format": "auto", "sum_cache": str(tmp_path / "c.json")})
    assert rc == 0 and res["format"] == "qcow2" and res["virtual_size"] == 48 * MIB, res
    rc, res = run_helper("image", {"path": img, "format": "raw"})
    assert rc == 1 and "is a qcow2 image, not raw" in res["msg"]
    backed = str(tmp_path / "overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", "qcow2", backed], check=True)
    rc, res = run_helper("image", {"path": backed})
    assert rc == 1 and "backing file" in res["msg"]


def test_progress_parsing_of_qemu_img_and_dd(tmp_path):
    prog = str(tmp_path / "p" / "progress")
    fake = ("import sys,time\n"
            "for p in ('0.00', '37.50', '100.00'):\n"
            "    sys.stdout.write('    (%s/100%%)\\r' % p); sys.stdout.flush(); time.sleep(0.05)\n"
            "sys.stderr.write('2097152 bytes (2.1 MB, 2.0 MiB) copied, 1 s, 2 MB/s\\r')\n"
            "sys.stderr.write('qemu-img: a real error line\\n'); sys.exit(3)\n")
    rc, err = h.run_with_progress([sys.executable, "-c", fake], h.Progress(prog), "write", total=4 * MIB)
    assert rc == 3 and err == "qemu-img: a real error line"
    with open(prog) as f:
        assert f.read().split() == ["write", "50.0"]  # the dd line came last: 2 of 4 MiB


def test_wait_for_a_step_and_for_the_end(tmp_path):
    prog, results = str(tmp_path / "progress"), str(tmp_path / "job")
    with open(results, "w") as f:
        json.dump({"started": True, "finished": False}, f)
    h.Progress(prog).set("write", 30)
    t0 = time.time()
    assert h.cmd_wait({"progress": prog, "results_file": results, "phase": "write", "pct": 25})["reached"]
    res = h.cmd_wait({"progress": prog, "results_file": results, "phase": "write", "pct": 50, "max_wait": 0.3,
                      "interval": 0.1})
    assert not res["reached"] and not res["ended"] and time.time() - t0 < 5
    h.Progress(prog).set("verify", 10)  # a later phase passes every step of the write
    assert h.cmd_wait({"progress": prog, "phase": "write", "pct": 100})["reached"]
    assert not h.cmd_wait({"progress": prog, "results_file": results, "phase": "end", "pct": 100,
                           "max_wait": 0.2, "interval": 0.1})["reached"]
    with open(results, "w") as f:
        json.dump({"rc": 0, "stdout": "{}"}, f)  # the job's result: it has ended
    res = h.cmd_wait({"progress": prog, "results_file": results, "phase": "end", "pct": 100})
    assert res["reached"] and res["ended"] and not os.path.exists(prog)  # the last look removes the file
