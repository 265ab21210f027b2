# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""os-brick inside the offline lab guest, for bench_lab.py (the recipe of the shared docs, lab.md).

1. On the host, ``pip download`` os-brick's wheels (and pip's own) for the guest's Python and platform into
   ``bench/.osbrick-wheels/`` (git-ignored; downloaded once, reused while the pin does not change).
2. Copy them into the guest (tar over ssh).
3. In the guest (Debian's python3 has no ensurepip): ``python3 -m venv --without-pip``, then pip run from its own
   wheel installs os-brick offline (``--no-index --find-links``).

The venv lives in the guest's overlay until the next ``boot.sh reset`` (which the bench does at its end), so the
lab's saved "ready" state is never changed.  About a minute under TCG.
"""

from __future__ import absolute_import, division, print_function

import glob
import io
import os
import re
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WHEELS = os.path.join(HERE, ".osbrick-wheels")
GUEST_WHEELS = "/root/brick-bench-wheels"
GUEST_VENV = "/opt/brick-bench-osbrick"
GUEST_PY = GUEST_VENV + "/bin/python"
PLATFORMS = ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64", "any")


def pinned_version():
    """The os-brick version pinned in bench/requirements-bench.txt."""
    with open(os.path.join(HERE, "requirements-bench.txt")) as f:
        for line in f:
            m = re.match(r"^\s*os-brick==(\S+)", line)
            if m:
                return m.group(1)
    raise RuntimeError("no os-brick pin in bench/requirements-bench.txt")


def _guest_python(lab):
    rc, out, err = lab.ssh("python3 -c 'import sys; print(\"%d%d\" % sys.version_info[:2])'", timeout=120)
    if rc != 0:
        raise RuntimeError("guest python3: %s" % err)
    return out.strip()


def download(version, pyver):
    """The wheels for the guest's CPython ``pyver`` (``311``), downloaded once into bench/.osbrick-wheels/PYVER."""
    dest = os.path.join(WHEELS, "cp%s" % pyver)
    if glob.glob(os.path.join(dest, "os_brick-%s-*.whl" % version)) and glob.glob(os.path.join(dest, "pip-*.whl")):
        return dest
    os.makedirs(dest, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "-q", "--dest", dest, "--only-binary=:all:",
            "--python-version", "%s.%s" % (pyver[0], pyver[1:]), "--implementation", "cp", "--abi", "cp%s" % pyver]
    for plat in PLATFORMS:
        argv += ["--platform", plat]
    p = subprocess.run(argv + ["os-brick==%s" % version, "pip"], capture_output=True, text=True, timeout=900,
                       check=False)
    if p.returncode != 0:
        raise RuntimeError("pip download os-brick==%s failed: %s" % (version, p.stderr[-1500:]))
    return dest


def install(lab, log=lambda m: None):
    """os-brick in the guest's venv; returns {"python", "version", "seconds"} or raises RuntimeError."""
    version = pinned_version()
    rc, out, _err = lab.ssh("%s -c 'from importlib import metadata; print(metadata.version(\"os-brick\"))'"
                            % GUEST_PY, timeout=300)
    if rc == 0 and out.strip() == version:
        return {"python": GUEST_PY, "version": version, "seconds": 0.0, "reused": True}
    t0 = time.monotonic()
    pyver = _guest_python(lab)
    log("os-brick %s: wheels for the guest's Python %s" % (version, pyver))
    dest = download(version, pyver)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for f in sorted(os.listdir(dest)):
            tf.add(os.path.join(dest, f), arcname=os.path.basename(GUEST_WHEELS) + "/" + f)
    p = subprocess.run(lab.ssh_argv() + ["rm -rf %s && tar -x -C %s" % (GUEST_WHEELS, os.path.dirname(GUEST_WHEELS))],
                       input=buf.getvalue(), capture_output=True, timeout=300, check=False)
    if p.returncode != 0:
        raise RuntimeError("copying the wheels into the guest failed: %s" % p.stderr.decode(errors="replace"))
    log("os-brick %s: offline install in the guest (about a minute under TCG)" % version)
    cmd = ("rm -rf {venv} && python3 -m venv --without-pip {venv} && "
           "{py} $(ls {w}/pip-*.whl | head -1)/pip install -q --no-index --find-links {w} os-brick=={v}"
           ).format(venv=GUEST_VENV, py=GUEST_PY, w=GUEST_WHEELS, v=version)
    rc, out, err = lab.ssh(cmd, timeout=1200)
    if rc != 0:
        raise RuntimeError("offline pip install in the guest failed (rc %s): %s %s" % (rc, out[-800:], err[-1500:]))
    return {"python": GUEST_PY, "version": version, "seconds": round(time.monotonic() - t0, 1), "reused": False}
