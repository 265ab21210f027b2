"""Issue 14: strict input validation (RFC 3720 iSCSI names, no control characters anywhere, values open-iscsi
can store, bounded numbers) - always InvalidInput with a printable message, never another exception."""
import pytest

from connector import validate as v
from connector.errors import InvalidInput

CONTROL = ["\x00", "\x01", "\x07", "\x08", "\x1b", "\x7f", "\x85", "\x9b"]


@pytest.mark.parametrize("name", [
    "iqn.2003-01.org.linux-iscsi.lab:target1", "iqn.1993-08.org.debian:01:brick-lab0001",
    "iqn.2001-04.com.example:storage:diskarrays-sn-a8675309", "iqn.2001-04.com.example",
    "iqn.1992-01.com.example:storage.disk2.sys1.xyz", "IQN.2003-01.ORG.EXAMPLE:T1", "iqn.2003-01.com.x-y.z:a.b-c:d",
    "eui.02004567A425678D", "eui.02004567a425678d", "naa.52004567BA64678D", "naa.6001405f3a2b4c5d6e7f8091a2b3c4d5",
    "iqn.2003-01.org.x:" + "a" * (223 - len("iqn.2003-01.org.x:")),
])
def test_rfc3720_names_ok(name):
    assert v.iqn(name) == name


@pytest.mark.parametrize("name", [
    "iqn.2003-01.org.x:a/b", "iqn.2003-01.org.x:../../etc", "iqn.2003-01.org.x:a..b", "iqn.2003-01.org..x",
    "iqn.2003-01.org.x:", "iqn.2003-01.org.x:a b", "iqn.2003-01.org.x:a_b", "iqn.2003-01.org.x:a;b",
    "iqn.2003-01.org.x:a$(id)", "iqn.2003-01.-org.x:a", "iqn.2003-01.org-.x", "iqn.2003-00.org.x", "iqn.2003-1.org.x",
    "iqn.203-01.org.x", "iqn.2003-01.org.x:ü", "iqn.2003-01:x", "iqn.2003-01.org.x:" + "a" * 206,
    "eui.02004567A425678", "eui.02004567A425678DD", "eui.02004567A425678G", "naa.52004567BA64678", "naa." + "a" * 24,
    "naa." + "a" * 33, "iqn.2003-01.org.x:t\x00", "iqn.2003-01.org.x\x00:t",
] + ["iqn.2003-01.org.x:a%sb" % c for c in CONTROL])
def test_rfc3720_names_bad(name):
    with pytest.raises(InvalidInput) as ei:
        v.iqn(name)
    assert not v.has_control(str(ei.value))


@pytest.mark.parametrize("func,args", [
    (v.portal, ()), (v.iqn, ()), (v.name, ()), (v.device_path, ()), (v.wwid, ()), (v.lock_dir, ()),
    (v.chap_user, ()), (v.chap_secret, ()),
])
@pytest.mark.parametrize("value", ["10.0.0.1%s:3260", "%s10.0.0.1", "/dev/sdb%s", "/run/brick%s", "name%s",
                                   "3600140%s5", "iqn.2003-01.org.x:t%s"])
@pytest.mark.parametrize("c", CONTROL)
def test_no_control_character_anywhere(func, args, value, c):
    with pytest.raises(InvalidInput) as ei:
        func(value % c, *args)
    assert not v.has_control(str(ei.value))


@pytest.mark.parametrize("func", [v.portal, v.iqn, v.name, v.device_path, v.wwid, v.lock_dir, v.chap_user,
                                  v.chap_secret])
@pytest.mark.parametrize("value", [None, 7, 1.5, True, [], ["x"], {}, {"a": 1}, b"bytes", "", " ", "\t\n"])
def test_wrong_types_are_messages(func, value):
    with pytest.raises(InvalidInput):
        func(value)


@pytest.mark.parametrize("secret", ["s", "with inner space", "=starts-with-equals", "hash#inside", "ü-utf8",
                                    "x" * 255])
def test_secret_ok(secret):
    assert v.chap_secret(secret) == secret


@pytest.mark.parametrize("secret", [" Lead-S3cret", "Trail-S3cret ", "x" * 256, "ü" * 128, "<empty>", "tab\tinside",
                                    "new\nline"])
def test_secret_bad_and_never_echoed(secret):
    with pytest.raises(InvalidInput) as ei:
        v.chap_secret(secret)
    assert secret.strip() not in str(ei.value) + repr(ei.value.details)


@pytest.mark.parametrize("value,ok", [(0, True), (5, True), ("2.5", True), (86400, True), (-1, False),
                                      (86401, False), (float("nan"), False), (float("inf"), False), (1e300, False),
                                      (True, False), ("x", False), (None, False), ([], False)])
def test_seconds(value, ok):
    if ok:
        assert v.seconds(value, "t") == float(value)
    else:
        with pytest.raises(InvalidInput):
            v.seconds(value, "t")


def test_seconds_zero_not_ok_and_count():
    with pytest.raises(InvalidInput):
        v.seconds(0, "t", zero_ok=False)
    assert v.count("7", "n", 0, 10) == 7
    for bad in (True, -1, 11, "x", 1.5, None, 10 ** 30):
        with pytest.raises(InvalidInput):
            v.count(bad, "n", 0, 10)


def test_show_escapes_and_cuts():
    assert v.show("a\x1b[31mb") == "a\\x1b[31mb"
    assert len(v.show("x" * 500)) == 80
