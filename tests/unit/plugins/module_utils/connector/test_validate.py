"""Table-driven tests of input validation (all must fail before any command runs)."""
import pytest

from connector import validate as v
from connector.errors import InvalidInput


@pytest.mark.parametrize("text,host,port,ipv6,iscsiadm,bypath", [
    ("10.0.0.1:3260", "10.0.0.1", 3260, False, "10.0.0.1:3260", "10.0.0.1:3260"),
    ("10.0.0.1", "10.0.0.1", 3260, False, "10.0.0.1:3260", "10.0.0.1:3260"),
    ("array.example.com:3261", "array.example.com", 3261, False, "array.example.com:3261", "array.example.com:3261"),
    ("[fd00::1]:3260", "fd00::1", 3260, True, "[fd00::1]:3260", "fd00::1:3260"),
    ("[FD00::A]", "fd00::a", 3260, True, "[fd00::a]:3260", "fd00::a:3260"),
    ("fd00::1", "fd00::1", 3260, True, "[fd00::1]:3260", "fd00::1:3260"),
    ("[::ffff:10.0.0.1]:3260", "::ffff:10.0.0.1", 3260, True, "[::ffff:10.0.0.1]:3260", "::ffff:10.0.0.1:3260"),
])
def test_portal_ok(text, host, port, ipv6, iscsiadm, bypath):
    p = v.portal(text)
    assert (p.host, p.port, p.ipv6, str(p), p.bypath) == (host, port, ipv6, iscsiadm, bypath)


@pytest.mark.parametrize("text", ["", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:65536", "10.0.0.1:http",
                                  "300.1.1.1:3260", "[fd00::1", "[zz::1]:3260", "fd00::1:3260:x:y:z:w:v:u:t",
                                  "a b:3260", "host;rm -rf /:3260", "$(reboot):3260", "[fd00::1]3260", None])
def test_portal_bad(text):
    with pytest.raises(InvalidInput):
        v.portal(text)


@pytest.mark.parametrize("text", ["iqn.2003-01.org.linux-iscsi.lab:target1", "iqn.2010-10.org.openstack:volume-1a2b",
                                  "IQN.2003-01.ORG.EXAMPLE:T1", "eui.02004567A425678D",
                                  "naa.52004567BA64678D", "naa.6001405f3a2b4c5d6e7f8091a2b3c4d5"])
def test_iqn_ok(text):
    assert v.iqn(text) == text


@pytest.mark.parametrize("text", ["", "iqn", "iqn.2003-13.org.x", "iqn.03-01.org.x", "iqn.2003-01.", "iqn.2003-01.org.x:a b",
                                  "eui.123", "naa.xyz", "target1", "iqn.2003-01.org.x;reboot"])
def test_iqn_bad(text):
    with pytest.raises(InvalidInput):
        v.iqn(text)


@pytest.mark.parametrize("value,expected", [(0, 0), ("7", 7), (255, 255), (300, 300), (16383, 16383), (2 ** 32 - 1, 2 ** 32 - 1)])
def test_lun_ok(value, expected):
    assert v.lun(value) == expected


@pytest.mark.parametrize("value", [-1, 2 ** 32, "x", "1.5", None, True])
def test_lun_bad(value):
    with pytest.raises(InvalidInput):
        v.lun(value)


@pytest.mark.parametrize("path", ["/dev/sdb", "/dev/dm-0", "/dev/mapper/36001405abc", "/dev/disk/by-id/scsi-3600",
                                  "/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-iqn.2003-01.org.x:t-lun-0",
                                  "/dev/disk/by-path/ip-fd00::1:3260-iscsi-iqn.2003-01.org.x:t-lun-0"])
def test_device_path_ok(path):
    assert v.device_path(path) == path


@pytest.mark.parametrize("path", ["", "sdb", "/tmp/x", "/etc/passwd", "/dev/../etc/passwd", "/dev/./sdb", "/dev//sdb",
                                  "/dev/sdb;reboot", "/dev/$(id)", "/dev/sdb\n", "/dev/sdb\n;reboot", "/dev/sd b", "/dev/sdb\x00", "/dev/`id`", "/dev/",
                                  "/devx/sdb", None])
def test_device_path_bad(path):
    with pytest.raises(InvalidInput):
        v.device_path(path)


@pytest.mark.parametrize("name,ok", [("default", True), ("iser", True), ("bnx2i.00:11:22", True),
                                     ("a b", False), ("x;y", False), ("", False), ("-rf", False)])
def test_names(name, ok):
    if ok:
        assert v.name(name) == name
    else:
        with pytest.raises(InvalidInput):
            v.name(name)


def test_iqn_surrounding_white_space_is_stripped_not_kept():
    assert v.iqn(" iqn.2003-01.org.x:t\n") == "iqn.2003-01.org.x:t"
