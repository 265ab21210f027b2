# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see LICENSE)
"""Drive os-brick's ISCSIConnector against the brick.storage simulated host (tests/sim).

Runs in the os-brick virtual environment (``bench/.venv-osbrick``, made by bench_commands.py),
never in the collection's own interpreter.  One process runs one scenario (a sequence of
operations on one fresh sim host that the parent created) and prints one JSON document.

What is redirected, and how:

* every path os-brick reads or writes under ``/sys``, ``/dev``, ``/etc/iscsi``, ``/etc/multipath``,
  ``/proc`` and ``/run`` is mapped under the sim root: builtin ``open``, ``os.path.exists/lexists/
  isdir/isfile/islink/realpath``, ``os.listdir``, ``os.readlink``, ``os.stat/lstat``,
  ``os.unlink/remove``, ``os.symlink`` and ``glob.glob`` (results are mapped back to host paths);
* the connector's ``execute`` is :func:`Shim.execute`: argv goes through the sim's fake commands
  with the collection's own ``Runner`` (``SimHost.runner()``), with processutils' semantics
  (``check_exit_code``, ``attempts``, ``ProcessExecutionError``);
* ``tee -a PATH`` (how os-brick writes sysfs as root) becomes ``SimHost.fs.write(PATH, stdin)``:
  the kernel action happens as the real write(2) would do it.  It is counted as a command (on
  a real host it is one process, run through privsep);
* privsep is bypassed: ``os_brick.privileged.rootwrap.execute`` (what code paths that ignore
  the injected executor call, e.g. ``LinuxSCSI.is_multipath_running``) goes to the same shim but
  is recorded with ``"bypass": true``; ``unlink_root`` / ``link_root`` act on the mapped paths;
* sleeps: with ``"fast_sleep": true`` (command-count rows only) os-brick's sleeps are cut to 1/100th
  (at most 20 ms); without it (latency rows) they are real.  ``"charge_tee": true`` makes each
  ``tee`` cost the sim's per-command latency.

``OSBRICK_SIM_DEBUG=SECONDS`` dumps every thread's stack and exits after that long (for a run that hangs).

Usage (the parent does this): ``python osbrick_sim.py SPEC_JSON`` where SPEC is
``{"root", "repo", "use_multipath", "props", "ops": [...], "fast_sleep", "charge_tee",
"lock_dir"}``; ``ops`` items are ``connect`` / ``disconnect`` / ``volume_paths``.
"""

import builtins
import glob as _glob_mod
import json
import logging
import os
import sys
import time
import traceback

PREFIXES = ("/sys/", "/dev/", "/etc/iscsi/", "/etc/multipath/", "/proc/", "/run/")
EXACT = ("/sys", "/dev", "/etc/iscsi", "/etc/multipath", "/etc/multipath.conf", "/proc", "/run")
# Never redirected: what Python and its libraries need from the real host.
KEEP = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/shm", "/dev/tty", "/proc/self", "/dev/fd",
        "/dev/pts", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat")


class Shim(object):
    def __init__(self, spec):
        self.spec = spec
        self.root = os.path.abspath(spec["root"])
        repo = spec["repo"]
        for p in (os.path.join(repo, "tests"), os.path.join(repo, "plugins", "module_utils")):
            if p not in sys.path:
                sys.path.insert(0, p)
        from sim import SimHost  # noqa: E402
        self.host = SimHost(self.root)
        self.runner = self.host.runner()
        self.latency = float(self.host.faults().get("latency") or 0)
        self.calls = []     # every command os-brick ran, in order
        self.real_sleep = time.sleep
        self._orig = {}

    # ---------------------------------------------------------------- path mapping
    def m(self, p):
        """Sim path of host path ``p`` (unchanged when it is not one of ours)."""
        if isinstance(p, bytes):
            return os.fsencode(self.m(os.fsdecode(p)))
        if not isinstance(p, str) or not p.startswith("/") or p.startswith(self.root + "/") or p == self.root:
            return p
        for k in KEEP:
            if p == k or p.startswith(k + "/"):
                return p
        if p in EXACT or p.startswith(PREFIXES):
            return self.root + p
        return p

    def unmap(self, p):
        if isinstance(p, str) and p.startswith(self.root + "/"):
            return p[len(self.root):]
        return p

    def install(self):
        o = self._orig
        o["open"] = builtins.open
        for name in ("exists", "lexists", "isdir", "isfile", "islink", "realpath"):
            o["path." + name] = getattr(os.path, name)
        for name in ("listdir", "readlink", "stat", "lstat", "unlink", "remove", "symlink", "scandir"):
            o[name] = getattr(os, name)
        o["glob"] = _glob_mod.glob
        o["iglob"] = _glob_mod.iglob
        shim = self

        def _open(file, *a, **kw):
            return o["open"](shim.m(file), *a, **kw)

        def _wrap1(fn):
            def w(*a, **kw):
                if a:
                    a = (shim.m(a[0]),) + a[1:]
                return fn(*a, **kw)
            return w

        def _realpath(p, *a, **kw):
            if isinstance(p, str) and shim.m(p) != p:
                return shim.host.fs.realpath(p)
            return o["path.realpath"](p, *a, **kw)

        def _glob(pattern, *a, **kw):
            mp = shim.m(pattern)
            if mp == pattern:
                return list(o["iglob"](pattern, *a, **kw))
            return [shim.unmap(x) for x in o["iglob"](mp, *a, **kw)]

        def _symlink(src, dst, *a, **kw):
            return o["symlink"](src, shim.m(dst), *a, **kw)

        builtins.open = _open
        for name in ("exists", "lexists", "isdir", "isfile", "islink"):
            setattr(os.path, name, _wrap1(o["path." + name]))
        os.path.realpath = _realpath
        for name in ("listdir", "readlink", "stat", "lstat", "unlink", "remove", "scandir"):
            setattr(os, name, _wrap1(o[name]))
        os.symlink = _symlink
        _glob_mod.glob = _glob

    # ---------------------------------------------------------------- commands
    def execute(self, *cmd, **kw):
        return self._execute(cmd, kw, bypass=False)

    def bypass_execute(self, *cmd, **kw):
        return self._execute(cmd, kw, bypass=True)

    def _execute(self, cmd, kw, bypass):
        from oslo_concurrency import processutils as putils
        from connector.errors import BrickError
        argv = [str(c) for c in cmd]
        stdin = kw.get("process_input")
        if isinstance(stdin, bytes):
            stdin = stdin.decode()
        check = kw.get("check_exit_code", True)
        if check is True:
            ok = [0]
        elif check is False:
            ok = None
        elif isinstance(check, int):
            ok = [check]
        else:
            ok = list(check)
        attempts = int(kw.get("attempts", 1) or 1)
        interval = float(kw.get("interval", 1) or 1)
        rate = float(kw.get("backoff_rate", 1) or 1)
        delay_on_retry = kw.get("delay_on_retry", True)
        timeout = kw.get("timeout")
        n = 0
        while True:
            n += 1
            t0 = time.monotonic()
            if argv[0] == "tee":
                rc, out, err = self._tee(argv, stdin)
            else:
                try:
                    r = self.runner.run(argv, ok_codes=tuple(range(256)), check=False, stdin=stdin,
                                        timeout=float(timeout) if timeout else 600.0)
                    rc, out, err = (r.rc if r.rc is not None else -9), r.stdout or "", r.stderr or ""
                except BrickError as e:  # a tool the sim does not have
                    rc, out, err = 127, "", str(e)
            self.calls.append({"argv": argv, "rc": rc, "bypass": bypass, "t": round(t0, 4),
                               "seconds": round(time.monotonic() - t0, 4)})
            if ok is None or rc in ok:
                return out, err
            if n >= attempts:
                raise putils.ProcessExecutionError(exit_code=rc, stdout=out, stderr=err,
                                                   cmd=" ".join(argv))
            if interval and rate:
                time.sleep(interval * (rate ** (n - 1)))
            elif delay_on_retry:
                time.sleep(0.2)

    def _tee(self, argv, stdin):
        path = argv[-1]
        if self.spec.get("charge_tee") and self.latency:
            self.real_sleep(self.latency)
        try:
            self.host.fs.write(path, stdin or "")
            return 0, stdin or "", ""
        except (IOError, OSError) as e:
            return 1, "", "tee: %s: %s\n" % (path, e.strerror or e)

    def unlink_root(self, *links, **kw):
        for link in links:
            try:
                self._orig["unlink"](self.m(link))
            except OSError:
                if not (kw.get("no_errors") or kw.get("raise_at_end")):
                    raise

    def link_root(self, target, link_name, force=True):
        if force:
            try:
                self._orig["unlink"](self.m(link_name))
            except OSError:
                pass
        self._orig["symlink"](target, self.m(link_name))


def main(argv):
    if os.environ.get("OSBRICK_SIM_DEBUG"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["OSBRICK_SIM_DEBUG"]), exit=True)
    spec = json.loads(argv[1]) if not os.path.exists(argv[1]) else json.load(open(argv[1]))
    logging.basicConfig(level=logging.ERROR)
    shim = Shim(spec)

    # Imports first (their cost is not an operation's), then the redirections.
    from oslo_config import cfg
    import os_brick
    from os_brick import utils as brick_utils
    from os_brick.privileged import rootwrap as priv_rootwrap
    from os_brick.initiator.connectors import iscsi as brick_iscsi

    lock_dir = spec.get("lock_dir")
    os.makedirs(lock_dir, exist_ok=True)
    try:
        os_brick.setup(cfg.CONF)
    except Exception:
        pass
    try:
        cfg.CONF.set_override("lock_path", lock_dir, group="os_brick")
    except Exception:
        pass
    try:
        cfg.CONF.set_override("lock_path", lock_dir, group="oslo_concurrency")
    except Exception:
        pass

    # privsep bypass: anything that would go to the privsep daemon runs here, in-process.
    priv_rootwrap.execute = shim.bypass_execute
    priv_rootwrap.execute_root = shim.bypass_execute
    priv_rootwrap.unlink_root = shim.unlink_root
    priv_rootwrap.link_root = shim.link_root
    if spec.get("fast_sleep"):
        real = brick_utils._time_sleep

        def _fast(secs):
            real(min(float(secs) / 100.0, 0.02))
        brick_utils._time_sleep = _fast

    shim.install()
    conn = brick_iscsi.ISCSIConnector(None, execute=shim.execute,
                                      use_multipath=bool(spec.get("use_multipath")),
                                      device_scan_attempts=int(spec.get("device_scan_attempts", 3)))
    props = spec["props"]
    results = []
    device_info = None
    for op in spec["ops"]:
        start_calls = len(shim.calls)
        log0 = len(shim.host.commands())
        t0 = time.monotonic()
        err = None
        out = None
        try:
            if op == "connect":
                device_info = conn.connect_volume(props)
                out = dict((k, v) for k, v in device_info.items() if isinstance(v, (str, int, type(None))))
            elif op == "disconnect":
                conn.disconnect_volume(props, device_info or {}, force=False, ignore_errors=False)
            elif op == "volume_paths":
                out = conn.get_volume_paths(props)
            else:
                raise ValueError("unknown op %s" % op)
        except Exception as e:  # report, do not die: the parent records the error
            err = "%s: %s" % (type(e).__name__, e)
            sys.stderr.write(traceback.format_exc())
        dt = time.monotonic() - t0
        calls = shim.calls[start_calls:]
        results.append({
            "op": op, "seconds": round(dt, 4), "error": err, "result": out,
            "commands": len(calls),
            "via_executor": sum(1 for c in calls if not c["bypass"]),
            "bypass": sum(1 for c in calls if c["bypass"]),
            "tee": sum(1 for c in calls if c["argv"][0] == "tee"),
            "sim_log": len(shim.host.commands()) - log0,
            "timeline": [[round(c["t"] - t0, 3), c["seconds"]] for c in calls],
            "argv": [("[bypass] " if c["bypass"] else "") + " ".join(c["argv"]) + (" (rc %s)" % c["rc"] if c["rc"] else "")
                     for c in calls],
        })
    sys.stdout.write(json.dumps({"os_brick": getattr(os_brick, "__version__", None) or _version(),
                                 "results": results}) + "\n")
    return 0


def _version():
    try:
        from importlib import metadata
        return metadata.version("os-brick")
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv))
