# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""MiniHost: just enough of a host tree for the idle checks, with a psmisc-like fake fuser.

Used by the connector's idle and holders tests and the block_device_idle module tests (through the ``minihost``
fixture of tests/unit/conftest.py) and by bench/bench_idle.py:
``from unit.plugins.module_utils.connector.minihost import MiniHost``.
"""

import os
import threading

from connector.hostfs import HostFS
from connector.runner import Runner

FAKE_FUSER = r'''#!/bin/sh
# psmisc-like fuser over a fake /proc: "<name>:" on stderr, " <pid>" on stdout, rc 0/1.
root="${BRICK_STORAGE_ROOT:?}"
dev="$1"
if [ ! -e "$root$dev" ] && [ ! -L "$root$dev" ]; then
    echo "Specified filename $dev does not exist." >&2; exit 1
fi
found=1
printf '%s:' "$dev" >&2
for fd in "$root"/proc/[0-9]*/fd/*; do
    [ -L "$fd" ] || continue
    if [ "$(readlink "$fd")" = "$dev" ]; then
        pid="${fd#$root/proc/}"; pid="${pid%%/*}"
        printf ' %6s' "$pid"; found=0
    fi
done
echo >&2
exit $found
'''


class MiniHost(object):
    """Just enough of a host tree for the idle checks (sysfs layout of docs/dev/sysfs-layout.md)."""

    def __init__(self, root):
        self.root = str(root)
        self.fs = HostFS(self.root)
        self.bindir = os.path.join(self.root, ".bin")
        os.makedirs(self.bindir)
        p = os.path.join(self.bindir, "fuser")
        with open(p, "w") as f:
            f.write(FAKE_FUSER)
        os.chmod(p, 0o755)
        self._minor = 0
        self._dm = 0
        self._w("/proc/self/mountinfo", "21 1 253:0 / / rw - ext4 /dev/vda1 rw\n")
        self._w("/proc/swaps", "Filename\t\t\t\tType\t\tSize\tUsed\tPriority\n")
        self._timers = []

    # tree helpers
    def _p(self, p):
        return self.root + p

    def _w(self, p, data=""):
        os.makedirs(os.path.dirname(self._p(p)), exist_ok=True)
        with open(self._p(p), "w") as f:
            f.write(data)

    def _ln(self, p, target):
        os.makedirs(os.path.dirname(self._p(p)), exist_ok=True)
        os.symlink(target, self._p(p))

    def runner(self, with_fuser=True):
        path = self.bindir + os.pathsep + "/usr/bin:/bin" if with_fuser else os.path.join(self.root, "nobin")
        return Runner(env={"PATH": path, "BRICK_STORAGE_ROOT": self.root})

    # devices
    def add_disk(self, name="sdb"):
        d = "/sys/devices/platform/host2/session1/target2:0:0/2:0:0:0/block/" + name
        self._w(d + "/dev", "8:%d\n" % (16 * (ord(name[-1]) - ord("a"))))
        os.makedirs(self._p(d + "/holders"))
        self._ln("/sys/class/block/" + name, "../../devices/platform/host2/session1/target2:0:0/2:0:0:0/block/" + name)
        self._w("/dev/" + name)
        self._ln("/dev/disk/by-id/scsi-36001405" + name, "../../" + name)
        return "/dev/" + name

    def add_partition(self, disk, n):
        name = os.path.basename(disk)
        pname = name + ("p%d" % n if name[-1].isdigit() else "%d" % n)
        base = self.fs.realpath("/sys/class/block/" + name)
        self._w("%s/%s/partition" % (base, pname), "%d\n" % n)
        self._w("%s/%s/dev" % (base, pname), self.fs.read(base + "/dev").replace(":0", ":%d" % n))
        os.makedirs(self._p("%s/%s/holders" % (base, pname)))
        self._ln("/sys/class/block/" + pname, os.path.relpath(self._p(base + "/" + pname),
                                                              self._p("/sys/class/block")))
        self._w("/dev/" + pname)
        return "/dev/" + pname

    def add_dm(self, name, slaves, uuid=None):
        dm = "dm-%d" % self._dm
        self._dm += 1
        d = "/sys/devices/virtual/block/" + dm
        self._w(d + "/dev", "253:%d\n" % (self._dm + 10))
        self._w(d + "/dm/name", name + "\n")
        self._w(d + "/dm/uuid", (uuid or "mpath-36001405" + name) + "\n")
        os.makedirs(self._p(d + "/holders"))
        os.makedirs(self._p(d + "/slaves"))
        self._ln("/sys/class/block/" + dm, "../../devices/virtual/block/" + dm)
        self._w("/dev/" + dm)
        self._ln("/dev/mapper/" + name, "../" + dm)
        for s in slaves:
            sname = os.path.basename(self.fs.realpath(s))
            sdir = self.fs.realpath("/sys/class/block/" + sname)
            os.symlink(os.path.relpath(self._p(d), self._p(sdir + "/holders")), self._p("%s/holders/%s" % (sdir, dm)))
            os.symlink(os.path.relpath(self._p(sdir), self._p(d + "/slaves")), self._p("%s/slaves/%s" % (d, sname)))
        return "/dev/mapper/" + name

    def add_kpartx(self, mapname, n):
        parent = os.path.basename(self.fs.realpath("/dev/mapper/" + mapname))
        uuid = "part%d-%s" % (n, self.fs.read("/sys/class/block/%s/dm/uuid" % parent))
        return self.add_dm("%s-part%d" % (mapname, n), ["/dev/" + parent], uuid=uuid)

    # users of a device
    def hold_open(self, dev, pid, comm, seconds=None, cmdline=None):
        self._w("/proc/%d/comm" % pid, comm + "\n")
        self._w("/proc/%d/cmdline" % pid, "\x00".join((cmdline or comm).split()) + "\x00")
        self._ln("/proc/%d/fd/3" % pid, dev)
        if seconds is not None:
            t = threading.Timer(seconds, self.release, (pid,))
            t.daemon = True
            t.start()
            self._timers.append(t)

    def release(self, pid):
        try:
            os.unlink(self._p("/proc/%d/fd/3" % pid))
        except OSError:
            pass

    def mount(self, dev, mnt):
        majmin = self.fs.read("/sys/class/block/%s/dev" % os.path.basename(self.fs.realpath(dev)))
        with open(self._p("/proc/self/mountinfo"), "a") as f:
            f.write("40 21 %s / %s rw,relatime - xfs %s rw\n" % (majmin, mnt, dev))

    def swapon(self, dev):
        with open(self._p("/proc/swaps"), "a") as f:
            f.write("%s                               partition\t1048572\t0\t-2\n" % dev)
