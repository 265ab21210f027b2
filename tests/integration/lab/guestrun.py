"""Run the collection's modules INSIDE the lab guest, several at once with exact start offsets.

Ansible ad-hoc runs from the host cost 7-12 s each and start whenever the controller gets to them, which
is useless for races.  This copies the modules, their module_utils and ansible's own module_utils (the
same files AnsiballZ ships) into the guest once per test module, and runs each module there as
``python3 -m ansible_collections.brick.storage.plugins.modules.NAME ARGS.json`` - the real module code,
its locks and its argument spec, with the JSON result read back.
"""
import io
import json
import os
import subprocess
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# BRICK_LAB_COLLECTION=/path/to/ansible_collections/brick/storage: run the modules of another build of the
# collection (for example an older commit's, to show that a new lab test fails on the old code); default: this repo
COLLECTION = os.environ.get("BRICK_LAB_COLLECTION") or REPO
GUEST_DIR = "/opt/brick-run"

DRIVER = r'''
import json, os, subprocess, sys, threading, time
specs = json.load(open(sys.argv[1]))
out = [None] * len(specs)
t0 = time.monotonic()

def one(i, spec):
    time.sleep(spec.get("delay", 0))
    path = "/tmp/brick-run-args-%%d-%%d.json" %% (os.getpid(), i)
    with open(path, "w") as f:
        json.dump({"ANSIBLE_MODULE_ARGS": spec["args"]}, f)
    start = time.monotonic() - t0
    p = subprocess.run([sys.executable, "-m", "ansible_collections.brick.storage.plugins.modules." + spec["module"],
                        path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                       cwd=%(dir)r, env=dict(os.environ, PYTHONPATH=%(dir)r))
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res = {"failed": True, "msg": "no JSON from the module", "stdout": p.stdout[-3000:]}
    res["_rc"] = p.returncode
    res["_stderr"] = p.stderr[-3000:]
    res["_start"] = round(start, 3)
    res["_end"] = round(time.monotonic() - t0, 3)
    out[i] = res

threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(specs)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
''' % {"dir": GUEST_DIR}


def _payload():
    import ansible
    mu = os.path.join(os.path.dirname(ansible.__file__), "module_utils")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        empty = tarfile.TarInfo("ansible/__init__.py")
        empty.size = 0
        tar.addfile(empty, io.BytesIO(b""))
        tar.add(mu, arcname="ansible/module_utils",
                filter=lambda ti: None if "__pycache__" in ti.name else ti)
        for sub in ("plugins/modules", "plugins/module_utils", "plugins/doc_fragments"):
            tar.add(os.path.join(COLLECTION, sub), arcname="ansible_collections/brick/storage/" + sub,
                    filter=lambda ti: None if "__pycache__" in ti.name else ti)
        for d in ("ansible_collections", "ansible_collections/brick", "ansible_collections/brick/storage",
                  "ansible_collections/brick/storage/plugins"):
            init = tarfile.TarInfo(d + "/__init__.py")
            init.size = 0
            tar.addfile(init, io.BytesIO(b""))
        drv = DRIVER.encode()
        info = tarfile.TarInfo("run.py")
        info.size = len(drv)
        tar.addfile(info, io.BytesIO(drv))
    return buf.getvalue()


class GuestModules:
    """``run(name, args)`` -> result dict; ``race([(name, args, delay), ...])`` -> [result, ...]."""

    def __init__(self, lab):
        self.lab = lab
        self.installed = False

    def install(self):
        import sys
        import time
        t0 = time.monotonic()
        cmd = "rm -rf {d} && mkdir -p {d} && tar -C {d} -xzf - && python3 -m compileall -q {d}/ansible " \
              "{d}/ansible_collections >/dev/null".format(d=GUEST_DIR)
        p = subprocess.run(self.lab.ssh_argv() + [cmd], input=_payload(), capture_output=True, timeout=600,
                           check=False)
        assert p.returncode == 0, "could not install the modules in the guest: %s" % p.stderr.decode()[-2000:]
        self.installed = True
        sys.stderr.write("[guestrun] modules installed in the guest in %.1f s\n" % (time.monotonic() - t0))

    def race(self, specs, timeout=600):
        if not self.installed:
            self.install()
        doc = json.dumps([{"module": m, "args": a, "delay": d} for m, a, d in specs])
        cmd = "cat > /tmp/brick-run-spec.json && python3 %s/run.py /tmp/brick-run-spec.json" % GUEST_DIR
        rc, out, err = self.lab.ssh(cmd, timeout=timeout, input=doc)
        assert rc == 0, "guest driver failed (rc %s): %s %s" % (rc, out[-2000:], err[-2000:])
        return json.loads(out.strip().splitlines()[-1])

    def run(self, name, args, expect_fail=False, timeout=600):
        res = self.race([(name, args, 0)], timeout=timeout)[0]
        if expect_fail:
            assert res.get("failed"), "expected %s to fail: %s" % (name, json.dumps(res, indent=1))
        else:
            assert not res.get("failed"), "%s failed: %s" % (name, json.dumps(res, indent=1))
        return res


def sh(lab, cmd, timeout=120, ok=(0,)):
    """Run a shell command in the guest; fail the test (showing its output) unless its exit code is in ``ok``."""
    rc, out, err = lab.ssh(cmd, timeout=timeout)
    assert rc in ok, "guest: %s\nrc=%s\n%s\n%s" % (cmd, rc, out, err)
    return out
