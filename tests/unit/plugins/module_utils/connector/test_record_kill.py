"""A record write killed half-way leaves nothing open-iscsi reads (issue 21: "a temp record file left in nodes/IQN/
after a SIGKILL").

open-iscsi reads every entry of ``nodes/IQN/`` as a portal record (``ADDR,PORT`` or ``ADDR,PORT,TPGT/IFACE``): a
temporary file of an interrupted write there is a record that nobody made.  The connector writes record files
through a temporary file outside the record tree (the directory that holds ``nodes/``), renamed into place, and
the next record write removes what a killed one left.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

from connector import iscsiadm

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", ".."))
IQN = "iqn.2003-01.org.example.array:vol1"
RECORD = "/etc/iscsi/nodes/%s/10.0.0.1,3260" % IQN
TEXT = "node.name = %s\nnode.conn[0].address = 10.0.0.1\n# END RECORD\n" % IQN


def kill_during_write(root):
    """Run a record write in a child that SIGKILLs itself after fsync, before the rename."""
    code = textwrap.dedent("""
        import os, signal, sys
        sys.path.insert(0, %r)
        from connector.hostfs import HostFS
        from connector import iscsiadm
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        iscsiadm.write_record(HostFS(%r), %r, ["node.session.auth.authmethod"], [("node.session.auth.authmethod", "CHAP")])
    """) % (os.path.join(REPO, "plugins", "module_utils"), root, RECORD)
    child = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL


def record_tree(root):
    out = []
    for directory, _dirs, files in os.walk(os.path.join(root, "etc/iscsi/nodes")):
        out += [os.path.relpath(os.path.join(directory, name), root) for name in files]
    return sorted(out)


def test_a_killed_record_write_leaves_no_file_in_the_record_tree(host):
    os.makedirs(host.fs.path(os.path.dirname(RECORD)), exist_ok=True)
    host.fs.write_private(RECORD, TEXT)
    kill_during_write(host.root)
    assert record_tree(host.root) == [RECORD.lstrip("/")]
    assert host.fs.read_raw(RECORD) == TEXT  # the old record, whole


def test_the_next_record_write_removes_what_a_killed_one_left(host):
    os.makedirs(host.fs.path(os.path.dirname(RECORD)), exist_ok=True)
    host.fs.write_private(RECORD, TEXT)
    kill_during_write(host.root)
    left = [name for name in os.listdir(os.path.join(host.root, "etc/iscsi")) if ".brick-" in name]
    assert left, "the killed write left its temporary file beside the record tree"
    old = time.time() - 3600
    for name in left:
        os.utime(os.path.join(host.root, "etc/iscsi", name), (old, old))
    iscsiadm.write_record(host.fs, RECORD, ["node.startup"], [("node.startup", "manual")])
    assert [name for name in os.listdir(os.path.join(host.root, "etc/iscsi")) if ".brick-" in name] == []
    assert "node.startup = manual" in host.fs.read_raw(RECORD)
