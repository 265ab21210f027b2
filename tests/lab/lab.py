"""Host-side helper for the brick.storage QEMU lab (stdlib only).

Used by tests/integration/lab/conftest.py; also usable from a shell:

    python3 tests/lab/lab.py start|reset|reboot|stop|status|versions|ssh CMD

The heavy lifting is in build-image.sh and boot.sh next to this file; this
class only wraps them with timeouts and returns (rc, stdout, stderr) tuples.
"""
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LAB_DIR = "/var/tmp/brick-lab"
DEFAULT_SSH_PORT = 2222
MIN_FREE_GB = 5  # image 3 GiB sparse (~0.6 GiB used) + overlay/state ~0.5 GiB + build tree


class LabError(RuntimeError):
    pass


class Lab:
    def __init__(self, lab_dir=None, ssh_port=None, log=None):
        self.lab_dir = lab_dir or os.environ.get("LAB_DIR") or DEFAULT_LAB_DIR
        self.ssh_port = int(ssh_port or os.environ.get("LAB_SSH_PORT") or DEFAULT_SSH_PORT)
        self.key = os.path.join(self.lab_dir, "id_ed25519")
        self.boot_sh = os.path.join(HERE, "boot.sh")
        self.build_sh = os.path.join(HERE, "build-image.sh")
        self.inventory_yml = os.path.join(HERE, "inventory.yml")
        self.unavailable_reason = None
        self.timings = {}
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._lock_fd = None

    # -- environment -------------------------------------------------------
    def env(self):
        env = dict(os.environ)
        env["LAB_DIR"] = self.lab_dir
        env["LAB_SSH_PORT"] = str(self.ssh_port)
        return env

    def image_built(self):
        return all(os.path.exists(os.path.join(self.lab_dir, f))
                   for f in ("root.raw", "vmlinuz", "initrd.img", "image.stamp", "id_ed25519"))

    def available(self):
        """True if the lab can run here; else False and self.unavailable_reason."""
        reasons = []
        if sys.platform != "linux":
            reasons.append("not Linux")
        if not shutil.which("qemu-system-x86_64"):
            if os.geteuid() != 0 or not shutil.which("apt-get"):
                reasons.append("qemu-system-x86_64 not installed and cannot be "
                               "installed (needs root + apt-get)")
            else:
                rc = subprocess.run(["apt-cache", "policy", "qemu-system-x86"],
                                    capture_output=True, text=True, check=False)
                if "Candidate: (none)" in rc.stdout or rc.returncode != 0:
                    reasons.append("qemu-system-x86 is not installable from apt "
                                   "(try apt-get update)")
        if not self.image_built() and os.geteuid() != 0:
            reasons.append("no lab image in %s and building one needs root "
                           "(mmdebstrap --mode=root)" % self.lab_dir)
        probe = self.lab_dir
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        st = os.statvfs(probe or "/")
        free_gb = st.f_bavail * st.f_frsize / 2**30
        if free_gb < MIN_FREE_GB and not self.image_built():
            reasons.append("only %.1f GiB free under %s (need %d)" % (free_gb, probe, MIN_FREE_GB))
        self.unavailable_reason = "; ".join(reasons) or None
        return not reasons

    # -- serialization between concurrent test sessions ---------------------
    def lock(self, timeout=1800):
        """Hold an exclusive lock on the lab for this process (one pytest session)."""
        os.makedirs(self.lab_dir, exist_ok=True)
        self._lock_fd = open(os.path.join(self.lab_dir, "session.lock"), "w")
        t0 = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not warned:
                    self._log("[lab] another session uses the lab (%s/session.lock): waiting"
                              % self.lab_dir)
                    warned = True
                if time.monotonic() - t0 > timeout:
                    raise LabError("lab busy for %d s (session.lock)" % timeout) from None
                time.sleep(2)

    def unlock(self):
        if self._lock_fd:
            self._lock_fd.close()
            self._lock_fd = None

    # -- lifecycle ----------------------------------------------------------
    def _run_script(self, name, args, timeout):
        """Run a lab script, stream its output to stderr, raise on failure."""
        t0 = time.monotonic()
        proc = subprocess.Popen([name] + list(args), env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        out = []
        try:
            for line in proc.stdout:
                out.append(line)
                self._log(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            watchdog.cancel()
        if time.monotonic() - t0 >= timeout:
            raise LabError("%s %s: timed out after %d s" % (name, " ".join(args), timeout))
        dt = time.monotonic() - t0
        if rc != 0:
            raise LabError("%s %s failed (rc %d):\n%s" % (name, " ".join(args), rc, "".join(out[-30:])))
        return dt, "".join(out)

    def ensure_built(self, timeout=1200):
        """Build the image unless the cached one matches the inputs (cheap if cached)."""
        self.timings["build"], _out = self._run_script(self.build_sh, [], timeout)
        return self.timings["build"]

    def is_running(self):
        return subprocess.run([self.boot_sh, "status"], env=self.env(),
                              capture_output=True, check=False).returncode == 0

    def start(self, timeout=900):
        self.timings["start"], _out = self._run_script(self.boot_sh, ["start"], timeout)
        return self.timings["start"]

    def reset(self, timeout=300):
        self.timings["reset"], _out = self._run_script(self.boot_sh, ["reset"], timeout)
        return self.timings["reset"]

    def reboot(self, timeout=900):
        """Cold reboot of the running guest (boot.sh reboot): returns when ssh
        answers again and systemd has finished booting. The target config
        comes back from lab-target's saved config; sessions, maps, iptables
        rules and everything in RAM are gone. `reset` still returns to "ready"."""
        self.timings["reboot"], _out = self._run_script(self.boot_sh, ["reboot"], timeout)
        return self.timings["reboot"]

    def stop(self, timeout=120):
        self.timings["stop"], _out = self._run_script(self.boot_sh, ["stop"], timeout)
        return self.timings["stop"]

    # -- guest access ---------------------------------------------------------
    def ssh_argv(self):
        return ["ssh", "-i", self.key, "-p", str(self.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=60",
                "root@127.0.0.1"]

    def ssh(self, cmd, timeout=120, input=None):
        """Run a shell command line in the guest as root: (rc, stdout, stderr).

        rc is 124 (like timeout(1)) if it did not finish in time.
        """
        try:
            p = subprocess.run(self.ssh_argv() + [cmd], capture_output=True, text=True,
                               timeout=timeout, input=input, check=False)
        except subprocess.TimeoutExpired as e:
            def s(x):
                return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
            return 124, s(e.stdout), s(e.stderr) + "\n[lab] timed out after %s s" % timeout
        return p.returncode, p.stdout, p.stderr

    def check(self, cmd, timeout=120):
        """ssh() that raises LabError on a non-zero rc; returns stdout."""
        rc, out, err = self.ssh(cmd, timeout=timeout)
        if rc != 0:
            raise LabError("guest command failed (rc %d): %s\nstdout: %s\nstderr: %s"
                           % (rc, cmd, out, err))
        return out

    def target(self, *args, check=True, timeout=120):
        """Run `lab-target ARGS` in the guest; returns (rc, stdout, stderr).

        With check=True (default) a non-zero rc raises LabError.
        """
        cmd = "lab-target " + " ".join(shlex.quote(str(a)) for a in args)
        rc, out, err = self.ssh(cmd, timeout=timeout)
        if check and rc != 0:
            raise LabError("%s failed (rc %d): %s %s" % (cmd, rc, out, err))
        return rc, out, err

    def versions(self):
        """Kernel / open-iscsi / multipath-tools (and friends) in the guest."""
        script = r"""
echo "kernel=$(uname -r)"
echo "kernel_build=$(uname -v)"
echo "iscsiadm=$(iscsiadm --version 2>&1 | awk '{print $NF}')"
echo "multipath-tools=$(multipath -h 2>&1 | sed -n 's/^multipath-tools v\([^ ]*\).*/\1/p' | head -1)"
for p in open-iscsi multipath-tools targetcli-fb python3-rtslib-fb udev parted; do
  echo "pkg:$p=$(dpkg-query -W -f '${Version}' $p 2>/dev/null)"
done
echo "python3=$(python3 -c 'import platform; print(platform.python_version())')"
echo "debian=$(cat /etc/debian_version)"
"""
        rc, out, err = self.ssh("bash -s", input=script, timeout=120)
        if rc != 0:
            raise LabError("versions: rc %d %s" % (rc, err))
        v = {"packages": {}}
        for line in out.splitlines():
            k, _sep, val = line.partition("=")
            if k.startswith("pkg:"):
                v["packages"][k[4:]] = val
            elif k:
                v[k] = val
        q = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=False)
        v["qemu"] = (q.stdout.splitlines() or [""])[0].replace("QEMU emulator version ", "")
        return v


def main(argv):
    lab = Lab()
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "available":
        ok = lab.available()
        print("available" if ok else "unavailable: %s" % lab.unavailable_reason)
        return 0 if ok else 1
    if cmd == "build":
        lab.ensure_built()
    elif cmd in ("start", "reset", "reboot", "stop"):
        getattr(lab, cmd)()
    elif cmd == "status":
        return 0 if lab.is_running() else 1
    elif cmd == "versions":
        print(json.dumps(lab.versions(), indent=2))
    elif cmd == "ssh":
        rc, out, err = lab.ssh(" ".join(argv[2:]))
        sys.stdout.write(out)
        sys.stderr.write(err)
        return rc
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
