# -*- coding: utf-8 -*-
# Copyright: brick.storage contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The work of the image deploy flow on the deploying host (role brick.storage.deploy_image).

The role runs it as ``python3 - COMMAND REQUEST_JSON`` with this file on stdin; it prints one JSON document.
Python 3.6+, stdlib only; qemu-img (and wipefs, dd) are run as commands.

Commands:
  image    read the image: format, virtual size, identity (the checksum given, or a sha256 cached by the file's
           size and mtime); makes the test image; tells whether a URL's cached download is current
  plan     read the target: size, sector size, signatures (wipefs), the record of the last write and, when it
           applies, the sample blocks; decides: in_sync, write (the target holds only what this flow wrote
           last) or compare
  compare  (long, run as an async job) compare the whole image range with the image; writes the record when
           they are equal
  write    (long, async) write the image (qemu-img convert -n, or dd), verify it (brick_deploy_verify), record it
  wait     wait until a long job reaches a percentage (or ends), for the role's progress lines

A record (brick_deploy_state_dir/<wwid>[-part<N>].json) says which image this flow wrote to which volume, and the
sha256 of sample blocks of it read back afterwards: a re-run reads those few MiB instead of the whole image.

Checksums: every form Bifrost and Ironic use (ALGO:HEX, a bare hex digest, ALGO:URL and a bare URL of a checksum
file, sha512 too) is resolved to ALGO:HEX first (a checksum file is fetched and the image's line found by its file
name) and verified for URL sources (by get_url) and path sources (here) alike. The write checks, right before it
starts, that the target still reports the volume's WWID (sysfs device/wwid, or the map's dm/uuid). Every command has
a timeout (COMMAND_TIMEOUT, the request's ``command_timeout``; a long job's ``timeout``).
"""

import errno
import hashlib
import json
import mmap
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

MIB = 1024 * 1024
SAMPLE_BLOCK = 64 * 1024
SAMPLE_COUNT = 32
EDGE = MIB            # the first and the last MiB are always sampled (boot code, partition tables, GPT backup)
CHUNK = 4 * MIB
BLKFLSBUF = 0x1261
SCHEMA = 1
QCOW2_MAGIC = b"QFI\xfb"
# seconds a short command may take (wipefs, qemu-img info, a sample comparison), and a checksum file's download;
# the request's command_timeout overrides it. A long job (write, compare) is bounded by the request's timeout.
COMMAND_TIMEOUT = 300
# sysfs (the tests point it to a fake tree)
SYS_ROOT = "/sys"
DIGEST_ALGOS = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}
URL_RX = re.compile(r"^(https?|ftp|file)://", re.I)


class Fail(Exception):
    pass


# bytes read from the target by this process (O_DIRECT reads, and what qemu-img compare was asked to read)
READ = {"target": 0}


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def run(argv, timeout=None, **kw):
    """(rc, stdout, stderr); the command and its children are killed after ``timeout`` (COMMAND_TIMEOUT) seconds:
    rc 124 and a message that says so (a queueing map with no path blocks a reader for ever)."""
    seconds = COMMAND_TIMEOUT if timeout is None else timeout
    try:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             start_new_session=True, **kw)
    except OSError as e:
        return 127, "", "%s: %s" % (argv[0], e)
    try:
        out, err = p.communicate(timeout=seconds)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        kill_group(p)
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # stuck in the kernel (D state): not waited for
        return 124, "", "%s: no answer within %g s (killed)" % (os.path.basename(argv[0]), seconds)


def which(name):
    for d in os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def write_json(path, data):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o700)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ progress

class Progress(object):
    """The progress file of a long job: one line "PHASE PERCENT" (phases: write, verify, compare, then done or
    failed)."""

    def __init__(self, path):
        self.path = path
        self.last = None

    def set(self, phase, pct):
        pct = max(0.0, min(100.0, float(pct)))
        line = "%s %.1f" % (phase, pct)
        if line == self.last or not self.path:
            return
        self.last = line
        d = os.path.dirname(self.path)
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.rename(tmp, self.path)


PCT_RX = re.compile(r"\(\s*([0-9.]+)/100%\)")
BYTES_RX = re.compile(r"^\s*([0-9]+) bytes")


def run_with_progress(argv, progress, phase, total=None, timeout=None):
    """Run a command that reports progress on stdout/stderr (qemu-img -p: "(12.50/100%)" separated by CR; dd
    status=progress: "N bytes ... copied" separated by CR); return (rc, stderr text without progress). After
    ``timeout`` seconds (default: none given, COMMAND_TIMEOUT x 24) the command is killed: rc 124."""
    progress.set(phase, 0)
    seconds = float(timeout) if timeout else COMMAND_TIMEOUT * 24
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    expired = []
    timer = threading.Timer(seconds, lambda: (expired.append(True), kill_group(p)))
    timer.daemon = True
    timer.start()
    try:
        rc, text = _progress_loop(p, progress, phase, total)
    finally:
        timer.cancel()
    if expired:
        return 124, ("%s: no end within %g s (killed)\n%s" % (os.path.basename(argv[0]), seconds, text)).strip()
    return rc, text


def _progress_loop(p, progress, phase, total):
    buf, keep = b"", []
    while True:
        chunk = p.stdout.read1(4096) if hasattr(p.stdout, "read1") else os.read(p.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        parts = re.split(b"[\r\n]", buf)
        buf = parts.pop()
        for part in parts:
            text = part.decode("utf-8", "replace")
            m = PCT_RX.search(text)
            if m:
                progress.set(phase, float(m.group(1)))
                continue
            m = BYTES_RX.match(text)
            if m and total:
                progress.set(phase, 100.0 * int(m.group(1)) / total)
                continue
            if text.strip():
                keep.append(text.strip())
    if buf.strip():
        keep.append(buf.decode("utf-8", "replace").strip())
    rc = p.wait()
    return rc, "\n".join(keep[-20:])


# ------------------------------------------------------------------------------------------------ devices

def block_info(target):
    """(size in bytes, logical sector size, start of a partition in bytes or 0, kernel name) of a block device."""
    st = os.stat(target)
    if not stat.S_ISBLK(st.st_mode):
        raise Fail("%s is not a block device" % target)
    name = os.path.basename(os.path.realpath(target))
    sysdir = "%s/class/block/%s" % (SYS_ROOT, name)
    fd = os.open(target, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    start = 0
    try:
        with open(sysdir + "/start") as f:
            start = int(f.read().strip()) * 512
        parent = os.path.basename(os.path.dirname(os.path.realpath(sysdir)))
        qdir = "%s/class/block/%s/queue" % (SYS_ROOT, parent)
    except (IOError, OSError, ValueError):
        qdir = sysdir + "/queue"
    try:
        with open(qdir + "/logical_block_size") as f:
            ss = int(f.read().strip())
    except (IOError, OSError, ValueError):
        ss = 512
    return size, ss, start, name


def udev_wwid(sysfs_wwid):
    """The udev/multipath form (3600140...) of a sysfs device/wwid (naa.600140...), as the connector makes it."""
    text = (sysfs_wwid or "").strip()
    if not text:
        return None
    for prefix, digit in (("naa.", "3"), ("eui.", "2"), ("t10.", "1")):
        if text.startswith(prefix):
            return digit + text[len(prefix):]
    if re.match(r"^[0-9a-fA-F]{2,}$", text):
        return text  # given in the udev form already
    return "8" + text


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (IOError, OSError):
        return None


def target_wwid(name):
    """The WWID the block device ``name`` (sdX, sdXN, dm-N, a partition map of one) reports now, from sysfs:
    a dm map's dm/uuid (mpath-WWID, partN-mpath-WWID), else the SCSI disk's device/wwid (a partition's disk)."""
    node = "%s/class/block/%s" % (SYS_ROOT, name)
    uuid = read_text(node + "/dm/uuid")
    if uuid is not None:
        m = re.match(r"^(?:part[0-9]+-)?mpath-(\S+)$", uuid)
        return m.group(1) if m else None
    disk = os.path.dirname(os.path.realpath(node)) if os.path.exists(node + "/partition") else node
    return udev_wwid(read_text(disk + "/device/wwid"))


def check_target_wwid(target, name, want, volume):
    """Fail unless ``target`` (kernel name ``name``) reports the volume's WWID ``want`` now: the device found
    earlier in the play may have been re-used by another volume (a LUN re-mapped, a name given again)."""
    if not want:
        raise Fail("the WWID of volume %s is unknown, so nothing proves that %s is that volume: nothing was "
                   "written. Attach it again (the attach reports its WWID) or give its wwid in brick_volumes"
                   % (volume or "?", target))
    have = target_wwid(name)
    if not have or have.lower() != udev_wwid(want).lower():
        raise Fail("%s (%s) reports WWID %s now, not %s of volume %s: nothing was written. The device was "
                   "re-used or the LUN re-mapped since the attach; detach and attach the volume again"
                   % (target, name, have or "none", want, volume or "?"))


def flush_buffers(target):
    """Drop the page cache of the device (BLKFLSBUF), so that a comparison reads what the target holds."""
    import fcntl
    fd = os.open(target, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKFLSBUF, 0)
    except (IOError, OSError):
        pass
    finally:
        os.close(fd)


class DirectReader(object):
    """Reads of a block device with O_DIRECT (never from the page cache), into a page-aligned buffer."""

    def __init__(self, path, ss, count=True):
        self.count = count
        flags = os.O_RDONLY | getattr(os, "O_DIRECT", 0)
        try:
            self.fd = os.open(path, flags)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.fd = os.open(path, os.O_RDONLY)  # no O_DIRECT (a file on tmpfs)
        self.ss = max(512, ss)
        self.buf = mmap.mmap(-1, CHUNK)
        self.bytes = 0

    def read(self, offset, length):
        """``length`` bytes at ``offset`` (both multiples of the sector size, or the read is widened)."""
        out = []
        start = offset - offset % self.ss
        end = offset + length
        aligned_end = end + (-end) % self.ss
        pos = start
        while pos < aligned_end:
            n = min(CHUNK, aligned_end - pos)
            os.lseek(self.fd, pos, os.SEEK_SET)
            got = os.readv(self.fd, [memoryview(self.buf)[:n]])
            if got <= 0:
                break
            self.bytes += got
            if self.count:
                READ["target"] += got
            out.append(bytes(self.buf[:got]))
            pos += got
        data = b"".join(out)
        return data[offset - start:offset - start + length]

    def close(self):
        os.close(self.fd)
        self.buf.close()


def sample_regions(size, identity):
    """[(offset, length)]: the first and last MiB and SAMPLE_COUNT blocks spread over the rest (their places
    depend on the image, so that two images do not share them), all 4 KiB aligned; the whole image when small."""
    if size <= 2 * EDGE + SAMPLE_COUNT * SAMPLE_BLOCK:
        return [(0, size)]
    seed = hashlib.sha256(identity.encode("utf-8")).digest() * 2
    regions = [(0, EDGE)]
    inner = size - 2 * EDGE
    for i in range(SAMPLE_COUNT):
        lo = EDGE + inner * i // SAMPLE_COUNT
        hi = EDGE + inner * (i + 1) // SAMPLE_COUNT - SAMPLE_BLOCK
        jitter = int.from_bytes(seed[i:i + 2], "big")
        off = lo + (max(0, hi - lo) * jitter // 65535)
        off -= off % 4096
        regions.append((off, SAMPLE_BLOCK))
    tail = size - EDGE
    tail -= tail % 4096
    regions.append((tail, size - tail))
    return regions


def hash_regions(reader_read, regions):
    h = hashlib.sha256()
    for off, length in regions:
        h.update(reader_read(off, length))
    return h.hexdigest()


def device_samples(target, ss, regions):
    r = DirectReader(target, ss)
    try:
        return hash_regions(r.read, regions), r.bytes
    finally:
        r.close()


def file_reader(path):
    f = open(path, "rb")

    def read(off, length):
        f.seek(off)
        return f.read(length)
    return f, read


def signatures(target):
    """What wipefs finds on the target (read-only listing): [{type, offset, label, uuid}]."""
    tool = which("wipefs")
    if not tool:
        raise Fail("wipefs (util-linux) is not installed: safe mode cannot check %s" % target)
    rc, out, err = run([tool, "--no-act", "--json", target])
    if rc != 0:
        raise Fail("wipefs --no-act %s failed: %s" % (target, (err or out).strip()))
    out = out.strip()
    if not out:
        return []
    try:
        sigs = json.loads(out).get("signatures", [])
    except ValueError:
        raise Fail("wipefs --no-act --json %s printed no JSON: %s" % (target, out[:200])) from None
    return [{"type": s.get("type"), "offset": s.get("offset"), "label": s.get("label"), "uuid": s.get("uuid")}
            for s in sigs]


# ------------------------------------------------------------------------------------------------ image

def norm_checksum(text):
    """'algo:hex' from 'algo:hex', 'algo:URL' (kept as given) or a bare hex digest (algo from its length)."""
    text = (text or "").strip()
    if not text:
        return ""
    if ":" in text:
        algo, value = text.split(":", 1)
        return "%s:%s" % (algo.strip().lower(), value.strip().lower() if "/" not in value else value.strip())
    algo = {32: "md5", 40: "sha1", 56: "sha224", 64: "sha256", 96: "sha384", 128: "sha512"}.get(len(text))
    if not algo or not re.match(r"^[0-9a-fA-F]+$", text):
        raise Fail("image checksum %r: give ALGORITHM:HEX (sha256:..., md5:...) or a hex digest" % text)
    return "%s:%s" % (algo, text.lower())


def checksum_file_entry(text, name, where):
    """(algorithm or None, hex) of ``name`` in a checksum file: GNU (``HEX  name``, ``HEX *name``), BSD
    (``SHA256 (name) = HEX``), or a file of one bare digest."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    for line in lines:
        m = re.match(r"^(\w+)\s*\((.+)\)\s*=\s*([0-9a-fA-F]+)$", line)
        if m and os.path.basename(m.group(2).strip()) == name:
            return m.group(1).lower().replace("-", ""), m.group(3).lower()
        m = re.match(r"^([0-9a-fA-F]+)\s+\*?(.+)$", line)
        if m and os.path.basename(m.group(2).strip()) == name:
            return None, m.group(1).lower()
    if len(lines) == 1 and re.match(r"^[0-9a-fA-F]+$", lines[0]):
        return None, lines[0].lower()
    raise Fail("the checksum file %s has no line for %s (it lists %d entries): check brick_image_checksum"
               % (where, name, len(lines)))


def fetch_checksum_file(url):
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=COMMAND_TIMEOUT) as resp:
            return resp.read(4 * MIB).decode("utf-8", "replace")
    except (IOError, OSError, ValueError) as e:
        raise Fail("image checksum: cannot read the checksum file %s: %s" % (url, e)) from None


def resolve_checksum(text, name):
    """ALGO:HEX of every form Bifrost and Ironic use: ALGO:HEX, a bare hex digest (the algorithm from its length),
    ALGO:URL or a bare URL of a checksum file (fetched; the line of ``name``, the image's file name). "" = none."""
    text = (text or "").strip()
    if not text:
        return ""
    algo, value = None, text
    if not URL_RX.match(text) and ":" in text:
        algo, value = [part.strip() for part in text.split(":", 1)]
        algo = algo.lower()
    if URL_RX.match(value):
        file_algo, digest = checksum_file_entry(fetch_checksum_file(value), name, value)
        algo = algo or file_algo
    else:
        digest = value.lower()
    algo = algo or DIGEST_ALGOS.get(len(digest))
    if not re.match(r"^[0-9a-f]+$", digest) or not algo:
        raise Fail("image checksum %r: give ALGORITHM:HEX (sha256:..., sha512:..., md5:...), a hex digest, or "
                   "the URL of a checksum file (ALGORITHM:URL or the bare URL)" % text)
    if algo not in hashlib.algorithms_available or hashlib.new(algo).digest_size * 2 != len(digest):
        raise Fail("image checksum %r: %s is not a %s digest (%d hex digits)" % (text, digest, algo, len(digest)))
    return "%s:%s" % (algo, digest)


def file_digest(path, algo="sha256"):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def make_test_image(path, size):
    """The test image: every 512-byte sector is one numbered text line (a write at a wrong offset shows)."""
    n = size // 512
    tmp = path + ".part"
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d, 0o755)
    with open(tmp, "wb") as f:
        for i in range(n):
            line = ("brick.storage test image, sector %d of %d" % (i, n)).ljust(511) + "\n"
            f.write(line.encode("ascii"))
    os.rename(tmp, path)


def qemu_info(path):
    tool = which("qemu-img")
    if not tool:
        return None
    rc, out, err = run([tool, "info", "--output=json", path])
    if rc != 0:
        raise Fail("qemu-img info %s failed: %s" % (path, err.strip()))
    return json.loads(out)


def urllib_path(url):
    import urllib.parse
    return urllib.parse.urlsplit(url).path


def download_is_current(req, path, url, given, res):
    """Whether the cached download of ``url`` is current (its marker: URL, checksum, size, mtime); False asks for
    a download (res["download"]). After a download the marker is written (not in check mode)."""
    marker_path = req.get("marker")
    marker = load_json(marker_path) if marker_path else None
    st = os.stat(path) if os.path.isfile(path) else None
    current = (st is not None and marker is not None and marker.get("url") == url
               and marker.get("checksum") == given and marker.get("size") == st.st_size
               and marker.get("mtime_ns") == st.st_mtime_ns)
    if not current and not req.get("downloaded"):
        res.update(download=True, exists=st is not None)
        return False
    if not current and not req.get("check_mode"):
        write_json(marker_path, {"url": url, "checksum": given, "size": st.st_size,
                                 "mtime_ns": st.st_mtime_ns, "downloaded": now()})
        res["cache_written"] = True
    return True


def cmd_image(req):
    path = req["path"]
    res = {"path": path, "made_test_image": False, "cache_written": False, "download": False,
           "qemu_img": bool(which("qemu-img"))}
    check = req.get("check_mode")
    if req.get("test_image_size"):
        size = int(req["test_image_size"])
        if not (os.path.isfile(path) and os.path.getsize(path) == size):
            if check:
                res.update(exists=False, would_make_test_image=True)
                return res
            make_test_image(path, size)
            res["made_test_image"] = True
    url = req.get("url")
    # the checksum as ALGO:HEX (a checksum file is looked up by the image's file name: the URL's, or the path's)
    given = resolve_checksum(req.get("checksum"), os.path.basename(
        urllib_path(url) if url else path.rstrip("/")))
    res["get_url_checksum"] = given
    if url and not download_is_current(req, path, url, given, res):
        return res
    if not os.path.exists(path):
        res["exists"] = False
        return res
    st = os.stat(path)
    res.update(exists=True, isreg=stat.S_ISREG(st.st_mode), file_size=st.st_size)
    if not res["isreg"]:
        return res
    # format: the qcow2 magic, or what qemu-img probes (vmdk, vdi...), or raw
    fmt = req.get("format") or "auto"
    info = None
    with open(path, "rb") as f:
        magic = f.read(4)
    if fmt == "raw" and magic == QCOW2_MAGIC:
        # writing the qcow2 container byte for byte would give a disk nobody can boot
        raise Fail("%s is a qcow2 image, not raw: set brick_image_format to qcow2 or auto" % path)
    if fmt == "auto":
        if magic == QCOW2_MAGIC:
            fmt = "qcow2"
        elif res["qemu_img"]:
            info = qemu_info(path)
            fmt = info.get("format", "raw")
        else:
            fmt = "raw"
    if fmt != "raw":
        if not res["qemu_img"]:
            raise Fail("%s is a %s image: qemu-img is needed to write it (install qemu-utils / qemu-img)"
                       % (path, fmt))
        info = info or qemu_info(path)
        if info.get("format") != fmt:
            raise Fail("%s is a %s image, not %s (brick_image_format)" % (path, info.get("format"), fmt))
        if info.get("backing-filename"):
            raise Fail("%s has a backing file (%s): give a self-contained image" % (path, info["backing-filename"]))
        res["virtual_size"] = int(info["virtual-size"])
    else:
        res["virtual_size"] = st.st_size
    res["format"] = fmt
    res["identity"] = image_identity(req, path, st, given, res)
    return res


def image_identity(req, path, st, given, res):
    """The image's identity: the checksum given (ALGO:HEX; get_url has verified it for a URL), or the file's digest
    (its algorithm, sha256 without one) kept by size and mtime, which must equal the checksum given."""
    if req.get("url") and given:  # get_url has verified it (or the marker says the download did)
        return given
    cache = load_json(req["sum_cache"]) if req.get("sum_cache") else None
    key = {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    algo = given.split(":", 1)[0] if given else "sha256"
    if cache and all(cache.get(k) == v for k, v in key.items()) and cache.get("algo") == algo:
        identity = "%s:%s" % (algo, cache["digest"])
    else:
        digest = file_digest(path, algo)
        identity = "%s:%s" % (algo, digest)
        if req.get("sum_cache") and not req.get("check_mode"):
            write_json(req["sum_cache"], dict(key, algo=algo, digest=digest))
            res["cache_written"] = True
    if given and identity != given:
        raise Fail("%s has %s, not the checksum given (brick_image_checksum %s)" % (path, identity, given))
    return identity


# ------------------------------------------------------------------------------------------------ plan

def record_for(req, size, start):
    rec = load_json(req["record"]) if req.get("record") else None
    if not rec or rec.get("schema") != SCHEMA or rec.get("wwid") != req.get("wwid"):
        return None
    if rec.get("start") != start:  # the partition moved: the record is about other sectors
        return None
    return rec


def cmd_plan(req):
    target = req["target"]
    size, ss, start, _name = block_info(target)
    img = req["image"]
    isize = int(img["virtual_size"])
    res = {"target": target, "target_size": size, "sector_size": ss, "start": start, "image_size": isize,
           "fits": isize <= size, "aligned": isize % ss == 0, "record": None, "record_match": False,
           "samples_match": None, "record_own": None}
    res["signatures"] = signatures(target)
    rec = record_for(req, size, start)
    verify = req.get("verify", "sample")
    if rec:
        res["record"] = {k: rec.get(k) for k in ("image", "written", "verified")}
        res["record_match"] = (rec.get("image", {}).get("identity") == img["identity"]
                               and rec.get("image", {}).get("size") == isize)
        if verify != "none" or not res["record_match"]:
            regions = [tuple(r) for r in rec.get("samples", {}).get("regions", [])]
            if regions and max(o + n for o, n in regions) <= size:
                digest, _nbytes = device_samples(target, ss, regions)
                same = digest == rec["samples"]["sha256"]
                res["samples_match" if res["record_match"] else "record_own"] = same
    if not res["fits"] or not res["aligned"]:
        res["decision"] = "error"
    elif verify == "full":
        res["decision"] = "compare"
    elif res["record_match"] and (verify == "none" or res["samples_match"]):
        res["decision"] = "in_sync"
    elif rec and not res["record_match"] and res["record_own"]:
        res["decision"] = "write"  # the target holds exactly what this flow wrote last: a new image replaces it
    else:
        res["decision"] = "compare"
    if res["decision"] == "compare":
        # a few sample blocks that differ prove that the image must be written: no need to read the whole range
        regions = sample_regions(isize, img["identity"])
        if not image_samples_equal(req, regions, Progress(None), "plan"):
            res["decision"] = "write"
            res["samples_differ"] = True
    return res


# ------------------------------------------------------------------------------------------------ compare, write

def compare_full(req, progress, phase):
    """True when the target's first image-size bytes equal the image (read bypassing the page cache)."""
    target, img = req["target"], req["image"]
    size, ss, _start, _n = block_info(target)
    flush_buffers(target)
    tool = which("qemu-img")
    if tool:
        argv = [tool, "compare", "-p", "-f", img["format"], "-F", "raw", img["path"], target]
        if img["virtual_size"] < size:
            # compare only the image range: the target is read through a raw node of the image's size
            argv = [tool, "compare", "-p", "--image-opts",
                    "driver=%s,file.driver=file,file.filename=%s" % (img["format"], escape_opt(img["path"])),
                    "driver=raw,size=%d,file.driver=host_device,file.filename=%s"
                    % (img["virtual_size"], escape_opt(target))]
        rc, err = run_with_progress(argv, progress, phase, timeout=req.get("timeout"))
        READ["target"] += img["virtual_size"]  # at most; qemu-img stops at the first difference
        if rc == 0:
            return True
        if rc == 1:
            return False
        raise Fail("qemu-img compare failed (exit %d): %s" % (rc, err))
    if img["format"] != "raw":
        raise Fail("qemu-img is needed to compare a %s image" % img["format"])
    r = DirectReader(target, ss)
    try:
        with open(img["path"], "rb") as f:
            pos, total = 0, img["virtual_size"]
            progress.set(phase, 0)
            while pos < total:
                n = min(CHUNK, total - pos)
                if r.read(pos, n) != f.read(n):
                    return False
                pos += n
                progress.set(phase, 100.0 * pos / total)
        return True
    finally:
        r.close()


def escape_opt(path):
    return path.replace(",", ",,")


def image_samples_equal(req, regions, progress, phase, digest=None):
    """Whether the sample regions of the target equal the image's (sample verification of a write). For a raw
    image, the sha256 of the target's regions goes into ``digest["sha256"]`` when they are equal (the record)."""
    target, img = req["target"], req["image"]
    _size, ss, _start, _n = block_info(target)
    flush_buffers(target)
    if img["format"] == "raw":
        r = DirectReader(target, ss)
        f, fread = file_reader(img["path"])
        h = hashlib.sha256()
        try:
            for i, (off, n) in enumerate(regions):
                data = r.read(off, n)
                if data != fread(off, n):
                    return False
                h.update(data)
                progress.set(phase, 100.0 * (i + 1) / len(regions))
            if digest is not None:
                digest["sha256"] = h.hexdigest()
            return True
        finally:
            f.close()
            r.close()
    tool = which("qemu-img")
    for i, (off, n) in enumerate(regions):
        READ["target"] += n
        rc, out, err = run([tool, "compare", "--image-opts",
                            "driver=raw,offset=%d,size=%d,file.driver=%s,file.file.driver=file,file.file.filename=%s"
                            % (off, n, img["format"], escape_opt(img["path"])),
                            "driver=raw,offset=%d,size=%d,file.driver=host_device,file.filename=%s"
                            % (off, n, escape_opt(target))])
        if rc == 1:
            return False
        if rc != 0:
            raise Fail("qemu-img compare of a sample at %d failed: %s" % (off, (err or out).strip()))
        progress.set(phase, 100.0 * (i + 1) / len(regions))
    return True


def write_record(req, size, ss, start, verified, digest=None):
    img = req["image"]
    regions = sample_regions(int(img["virtual_size"]), img["identity"])
    if digest is None:  # read the samples back (a verification that read them already passes their digest)
        digest, _nbytes = device_samples(req["target"], ss, regions)
    rec = {"schema": SCHEMA, "wwid": req.get("wwid"), "start": start, "target_size": size,
           "image": {"identity": img["identity"], "size": int(img["virtual_size"]), "format": img["format"],
                     "source": req.get("source")},
           "samples": {"regions": [list(r) for r in regions], "sha256": digest},
           "verified": verified, "written": now(), "volume": req.get("volume")}
    if req.get("record"):
        write_json(req["record"], rec)


def cmd_compare(req):
    progress = Progress(req.get("progress"))
    try:
        size, ss, start, _n = block_info(req["target"])
        equal = compare_full(req, progress, "compare")
        res = {"equal": equal, "record_written": False}
        if equal and req.get("record") and not req.get("check_mode"):
            write_record(req, size, ss, start, "full")
            res["record_written"] = True
        progress.set("done", 100)
        return res
    except Exception:
        progress.set("failed", 0)
        raise


def cmd_write(req):
    progress = Progress(req.get("progress"))
    target, img = req["target"], req["image"]
    try:
        size, ss, start, name = block_info(target)
        if img["virtual_size"] > size:
            raise Fail("the image (%d bytes) is larger than %s (%d bytes)" % (img["virtual_size"], target, size))
        writer = req.get("writer", "qemu-img")
        if writer == "qemu-img":
            argv = [which("qemu-img") or "qemu-img", "convert", "-p", "-n", "-f", img["format"], "-O", "raw",
                    "-t", "none", img["path"], target]
        else:
            if img["format"] != "raw":
                raise Fail("dd writes raw images only; %s is %s" % (img["path"], img["format"]))
            argv = ["dd", "if=%s" % img["path"], "of=%s" % target, "bs=4M", "conv=fsync", "oflag=direct",
                    "status=progress"]
        # the last look before the first byte: the target is still the volume (by its WWID)
        check_target_wwid(target, name, req.get("wwid"), req.get("volume"))
        # the old record is void from the first written byte on
        if req.get("record") and os.path.exists(req["record"]):
            os.unlink(req["record"])
        t0 = time.time()
        rc, err = run_with_progress(argv, progress, "write", total=img["virtual_size"], timeout=req.get("timeout"))
        if rc != 0:
            raise Fail("%s failed (exit %d): %s" % (argv[0], rc, err))
        res = {"written": True, "write_seconds": round(time.time() - t0, 1), "verified": "none"}
        verify = req.get("verify", "sample")
        if verify == "full":
            if not compare_full(req, progress, "verify"):
                raise Fail("verification failed: the first %d bytes of %s differ from the image %s"
                           % (img["virtual_size"], target, img["path"]))
            res["verified"] = "full"
        known = {}
        if verify == "sample":
            regions = sample_regions(int(img["virtual_size"]), img["identity"])
            if not image_samples_equal(req, regions, progress, "verify", known):
                raise Fail("verification failed: sample blocks of %s differ from the image %s"
                           % (target, img["path"]))
            res["verified"] = "sample"
        write_record(req, size, ss, start, res["verified"], known.get("sha256"))
        res["record_written"] = bool(req.get("record"))
        progress.set("done", 100)
        return res
    except Exception:
        progress.set("failed", 0)
        raise


# ------------------------------------------------------------------------------------------------ wait

PHASES = ["write", "verify", "compare"]


def job_finished(results_file):
    data = load_json(results_file) if results_file else None
    return data is not None and not (data.get("started") and not data.get("finished"))


def cmd_wait(req):
    """Wait until the job's progress reaches req[phase] req[pct] (or the job ends), at most max_wait seconds."""
    deadline = time.time() + float(req.get("max_wait", 300))
    want_phase, want_pct = req["phase"], float(req["pct"])
    while True:
        try:
            with open(req.get("progress") or "/nonexistent") as f:
                phase, pct = f.read().split()
            pct = float(pct)
        except (IOError, OSError, ValueError):
            phase, pct = "starting", 0.0
        ended = phase in ("done", "failed") or job_finished(req.get("results_file"))
        if ended and want_phase == "end" and req.get("progress"):
            try:  # the last look: the progress file has served its purpose
                os.unlink(req["progress"])
            except OSError:
                pass
        reached = ended or (want_phase != "end" and phase == want_phase and pct >= want_pct) or (
            want_phase != "end" and phase in PHASES and want_phase in PHASES
            and PHASES.index(phase) > PHASES.index(want_phase))
        if reached or time.time() >= deadline:
            return {"phase": phase, "pct": pct, "reached": reached, "ended": ended}
        time.sleep(float(req.get("interval", 1)))


COMMANDS = {"image": cmd_image, "plan": cmd_plan, "compare": cmd_compare, "write": cmd_write, "wait": cmd_wait}


def main(argv):
    global COMMAND_TIMEOUT
    if len(argv) != 3 or argv[1] not in COMMANDS:
        sys.stderr.write("usage: deploy_helper.py {%s} REQUEST_JSON\n" % "|".join(sorted(COMMANDS)))
        return 2
    try:
        req = json.loads(argv[2])
        if req.get("command_timeout"):
            COMMAND_TIMEOUT = float(req["command_timeout"])
        res = COMMANDS[argv[1]](req)
    except Fail as e:
        print(json.dumps({"failed": True, "msg": str(e)}))
        return 1
    except (IOError, OSError) as e:
        print(json.dumps({"failed": True, "msg": "%s: %s" % (type(e).__name__, e)}))
        return 1
    if isinstance(res, dict) and argv[1] in ("plan", "compare", "write"):
        res["bytes_read"] = READ["target"]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
