"""s3fs-format attribute metadata: encoding, decoding, defaults and mount-wide overrides."""

from __future__ import annotations

import logging
import os
import stat
import uuid
from collections.abc import Mapping

import pytest

from obsfs.backend.base import ObjectInfo
from obsfs.meta import (
    DIR_CONTENT_TYPE,
    NS,
    Attrs,
    Defaults,
    attrs_from_object,
    format_time_ns,
    implicit_dir_attrs,
    parse_attrs,
    parse_time_ns,
    representable,
    shown,
    to_metadata,
)

DEFAULTS = Defaults(uid=1234, gid=5678)
LAST_MODIFIED = 1_700_000_123.0


def info(metadata: Mapping[str, str] | None, *, key: str = "f", size: int = 42) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag="e", last_modified=LAST_MODIFIED, metadata=metadata)


def test_round_trip_of_a_file() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o640, uid=1001, gid=1002, size=42, atime_ns=1_400_000_000,
                  mtime_ns=1_700_000_000_123_456_789, ctime_ns=1_700_000_001_000_000_000)
    meta = to_metadata(attrs)
    # As s3fs 1.90 writes them: whole seconds bare, nanoseconds with nine digits.
    assert meta == {"mode": str(stat.S_IFREG | 0o640), "uid": "1001", "gid": "1002", "atime": "1.400000000",
                    "mtime": "1700000000.123456789", "ctime": "1700000001"}
    assert attrs_from_object(info(meta), is_dir=False, defaults=DEFAULTS) == attrs


def test_atime_and_ctime_default_to_the_mtime() -> None:
    """Objects of an s3fs before atime, or written by obsfs before it kept one, have only mtime."""
    attrs = attrs_from_object(info({"mtime": "1700000000.5"}), is_dir=False, defaults=DEFAULTS)
    assert attrs.atime_ns == attrs.mtime_ns == attrs.ctime_ns == 1_700_000_000 * NS + NS // 2
    attrs = attrs_from_object(info({"mtime": "9", "atime": "8", "ctime": "10"}), is_dir=False, defaults=DEFAULTS)
    assert (attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns) == (8 * NS, 9 * NS, 10 * NS)


def test_round_trip_of_a_dir_and_a_symlink() -> None:
    d = Attrs(mode=stat.S_IFDIR | 0o750, uid=7, gid=8, size=0, atime_ns=4 * NS, mtime_ns=5 * NS, ctime_ns=6 * NS)
    assert attrs_from_object(info(to_metadata(d), size=0), is_dir=True, defaults=DEFAULTS) == d
    link = Attrs(mode=stat.S_IFLNK | 0o777, uid=7, gid=8, size=3, atime_ns=5 * NS, mtime_ns=5 * NS, ctime_ns=5 * NS)
    back = attrs_from_object(info(to_metadata(link), size=3), is_dir=False, defaults=DEFAULTS)
    assert back == link
    assert back.is_link and not back.is_dir
    assert back.kind == stat.S_IFLNK


@pytest.mark.parametrize(("text", "expected"), [
    ("1700000000", 1_700_000_000 * NS),
    ("1700000000.5", 1_700_000_000 * NS + 500_000_000),
    ("1700000000.000000001", 1_700_000_000 * NS + 1),
    ("1700000000.123456789", 1_700_000_000_123_456_789),
    ("1700000000.1234567891234", 1_700_000_000_123_456_789),  # beyond ns: truncated
    (" 1700000000 ", 1_700_000_000 * NS),
    ("0", 0),
])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time_ns(text) == expected


@pytest.mark.parametrize("text", [None, "", "abc", "1.2.3", "12x", "1.5e3", "NaN", "inf", "-inf", "1_700_000_000",
                                  "\u0661\u0662", "1.", ".5", "9" * 5000,
                                  "1700000000000",  # milliseconds: past 2262 in ns, beyond int64
                                  "-1700000000000", str(2**63 // NS + 1)])
def test_parse_time_rejects_garbage(text: str | None) -> None:
    assert parse_time_ns(text) is None


@pytest.mark.parametrize("ns", [0, 1, NS, 1_700_000_000 * NS, 1_700_000_000_000_000_001, -5 * NS])
def test_format_then_parse_time(ns: int) -> None:
    assert parse_time_ns(format_time_ns(ns)) == ns


@pytest.mark.parametrize("ns", [-500_000_000, -1_500_000_000])
def test_negative_fractional_time_round_trips(ns: int) -> None:
    assert parse_time_ns(format_time_ns(ns)) == ns


def test_unparsable_mtime_falls_back_to_last_modified() -> None:
    attrs = attrs_from_object(info({"mtime": "yesterday"}), is_dir=False, defaults=DEFAULTS)
    assert attrs.mtime_ns == int(LAST_MODIFIED * NS)
    assert attrs.ctime_ns == attrs.mtime_ns


def test_ctime_defaults_to_mtime() -> None:
    attrs = attrs_from_object(info({"mtime": "1000.25"}), is_dir=False, defaults=DEFAULTS)
    assert attrs.mtime_ns == attrs.ctime_ns == 1000 * NS + 250_000_000


@pytest.mark.parametrize("metadata", [None, {}, {"content-type": "text/plain", "etag": '"x"'}])
def test_file_without_metadata_gets_defaults(metadata: Mapping[str, str] | None) -> None:
    attrs = attrs_from_object(info(metadata), is_dir=False, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFREG | 0o644
    assert (attrs.uid, attrs.gid) == (1234, 5678)
    assert attrs.size == 42
    assert attrs.mtime_ns == attrs.ctime_ns == int(LAST_MODIFIED * NS)


def test_dir_without_metadata_gets_defaults() -> None:
    attrs = attrs_from_object(info(None, key="d/", size=0), is_dir=True, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFDIR | 0o755
    assert (attrs.uid, attrs.gid) == (1234, 5678)


@pytest.mark.parametrize("mode", [0o700, stat.S_IFREG | 0o700, stat.S_IFLNK | 0o700])
def test_dir_marker_always_becomes_a_dir(mode: int) -> None:
    """Other tools write dir markers with a plain file mode (or only permission bits)."""
    attrs = attrs_from_object(info({"mode": str(mode)}, key="d/", size=0), is_dir=True, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFDIR | 0o700
    assert attrs.is_dir


@pytest.mark.parametrize("mode", [0o600, stat.S_IFDIR | 0o600, 0o030000 | 0o600, 0o170000 | 0o600])
def test_file_key_with_odd_type_becomes_a_regular_file(mode: int) -> None:
    attrs = attrs_from_object(info({"mode": str(mode)}), is_dir=False, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFREG | 0o600


# What s3fs 1.90 stores for mkfifo, mknod c 1 3, mknod b 259 70000 and a bound socket: the type
# in the mode, no device number.
S3FS_SPECIAL = {"fifo": "4480", "chr": "8576", "blk": "24992", "sock": "49645"}


@pytest.mark.parametrize(("name", "mode"), [("fifo", stat.S_IFIFO | 0o600), ("chr", stat.S_IFCHR | 0o600),
                                            ("blk", stat.S_IFBLK | 0o640), ("sock", stat.S_IFSOCK | 0o755)])
def test_s3fs_special_files_keep_their_type(name: str, mode: int) -> None:
    meta = {"mode": S3FS_SPECIAL[name], "uid": "0", "gid": "0", "mtime": "1796597173", "ctime": "1796597173",
            "atime": "1796597173"}
    attrs, unusable = parse_attrs(info(meta, size=0), is_dir=False, defaults=DEFAULTS)
    assert (attrs.mode, attrs.rdev, unusable) == (mode, 0, [])


@pytest.mark.parametrize("mode", [stat.S_IFCHR | 0o620, stat.S_IFBLK | 0o660])
def test_round_trip_of_a_device(mode: int) -> None:
    attrs = Attrs(mode=mode, uid=0, gid=6, size=0, atime_ns=4 * NS, mtime_ns=5 * NS, ctime_ns=5 * NS,
                  rdev=os.makedev(259, 70000))
    meta = to_metadata(attrs)
    assert meta["rdev"] == str(0x11110370)  # decimal, with glibc's (and the kernel's) split minor bits
    assert attrs_from_object(info(meta, size=0), is_dir=False, defaults=DEFAULTS) == attrs


@pytest.mark.parametrize("mode", [stat.S_IFREG | 0o644, stat.S_IFIFO | 0o644, stat.S_IFSOCK | 0o755])
def test_only_devices_have_a_device_number(mode: int) -> None:
    attrs = attrs_from_object(info({"mode": str(mode), "rdev": "259"}), is_dir=False, defaults=DEFAULTS)
    assert (attrs.mode, attrs.rdev) == (mode, 0)
    assert "rdev" not in to_metadata(attrs), "everything but a device keeps exactly s3fs's fields"


def test_setuid_bits_survive() -> None:
    mode = stat.S_IFREG | 0o4755
    assert attrs_from_object(info({"mode": str(mode)}), is_dir=False, defaults=DEFAULTS).mode == mode


def test_metadata_uid_gid_win_over_defaults_and_garbage_does_not() -> None:
    attrs = attrs_from_object(info({"uid": "0", "gid": "0"}), is_dir=False, defaults=DEFAULTS)
    assert (attrs.uid, attrs.gid) == (0, 0)
    attrs = attrs_from_object(info({"uid": "root", "gid": "", "mode": "rw"}), is_dir=False, defaults=DEFAULTS)
    assert (attrs.uid, attrs.gid) == (1234, 5678)
    assert attrs.mode == stat.S_IFREG | 0o644


def test_implicit_dir() -> None:
    attrs = implicit_dir_attrs(DEFAULTS, 77)
    assert attrs == Attrs(mode=stat.S_IFDIR | 0o755, uid=1234, gid=5678, size=0, atime_ns=77, mtime_ns=77,
                          ctime_ns=77)
    assert DIR_CONTENT_TYPE == "application/x-directory"


def test_shown_without_overrides_is_unchanged() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o666, uid=1, gid=2, size=0, atime_ns=0, mtime_ns=0, ctime_ns=0)
    assert shown(attrs, DEFAULTS) == attrs


def test_shown_applies_umask_but_keeps_the_type() -> None:
    defaults = Defaults(uid=0, gid=0, umask=0o027)
    f = Attrs(mode=stat.S_IFREG | 0o4777, uid=1, gid=2, size=0, atime_ns=0, mtime_ns=0, ctime_ns=0)
    assert shown(f, defaults).mode == stat.S_IFREG | 0o4750
    d = f.with_changes(mode=stat.S_IFDIR | 0o777)
    assert shown(d, defaults).mode == stat.S_IFDIR | 0o750
    assert shown(d, defaults, is_root=True).mode == stat.S_IFDIR | 0o777  # root: mp_umask's job
    assert (shown(f, defaults).uid, shown(f, defaults).gid) == (1, 2)


def test_shown_forces_uid_and_gid_separately() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o644, uid=1, gid=2, size=0, atime_ns=0, mtime_ns=0, ctime_ns=0)
    only_uid = shown(attrs, Defaults(uid=500, gid=600, force_uid=True))
    assert (only_uid.uid, only_uid.gid) == (500, 2)
    both = shown(attrs, Defaults(uid=500, gid=600, force_uid=True, force_gid=True))
    assert (both.uid, both.gid) == (500, 600)
    assert attrs.uid == 1  # the stored value is untouched


def owned_defaults(metadata: Mapping[str, str]) -> Attrs:
    """What an object without metadata shows: the attributes expected for unusable fields."""
    return attrs_from_object(info({k: v for k, v in metadata.items() if k == "content-type"}), is_dir=False,
                             defaults=DEFAULTS)


UNUSABLE = [
    {"mode": "-1"}, {"mode": str(2**32)}, {"mode": str(2**32 + (stat.S_IFREG | 0o644))},
    {"mode": str(0o200000 | stat.S_IFREG | 0o644)}, {"mode": "abc"}, {"mode": ""}, {"mode": "NaN"},
    {"mode": "inf"}, {"mode": "33188.0"}, {"mode": "33_188"}, {"mode": "9" * 5000},
    {"uid": "-5"}, {"uid": str(2**32)}, {"uid": str(2**32 - 1)}, {"uid": "1e3"}, {"gid": "-1"}, {"gid": " "},
    {"mtime": "1700000000000"}, {"mtime": "NaN"}, {"mtime": "inf"}, {"mtime": ""},
    {"ctime": "1700000000000"}, {"ctime": "-inf"}, {"atime": "1700000000000"}, {"atime": "x"},
    {"rdev": "-1"}, {"rdev": str(2**32)}, {"rdev": "8:1"},
]


@pytest.mark.parametrize("metadata", UNUSABLE, ids=lambda m: repr(m)[:40])
def test_unusable_field_gets_its_default_and_is_reported(metadata: Mapping[str, str]) -> None:
    attrs, unusable = parse_attrs(info(metadata), is_dir=False, defaults=DEFAULTS)
    assert attrs == owned_defaults(metadata)
    assert unusable == [f"{name}={value!r}" for name, value in metadata.items()]
    assert representable(attrs)


def test_only_the_unusable_fields_get_defaults() -> None:
    meta = {"mode": str(stat.S_IFREG | 0o600), "uid": "-5", "gid": "42", "mtime": "1700000000000", "ctime": "7"}
    attrs, unusable = parse_attrs(info(meta), is_dir=False, defaults=DEFAULTS)
    assert attrs == Attrs(mode=stat.S_IFREG | 0o600, uid=1234, gid=42, size=42,
                          atime_ns=int(LAST_MODIFIED * NS), mtime_ns=int(LAST_MODIFIED * NS), ctime_ns=7 * NS)
    assert unusable == ["uid='-5'", "mtime='1700000000000'"]


def test_unusable_mode_on_a_dir_marker_gives_the_default_dir() -> None:
    attrs, unusable = parse_attrs(info({"mode": "-1"}, key="d/", size=0), is_dir=True, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFDIR | 0o755
    assert unusable == ["mode='-1'"]


@pytest.mark.parametrize(("metadata", "mode"), [
    ({"mode": "420"}, stat.S_IFREG | 0o644),  # no type bits
    ({"mode": str(stat.S_IFDIR | 0o700)}, stat.S_IFREG | 0o700),  # a dir's type on a file key
    ({"mode": " 33188 "}, stat.S_IFREG | 0o644),
    ({"mode": "+33188"}, stat.S_IFREG | 0o644),
    ({"mode": str(0o177777)}, stat.S_IFREG | 0o7777),
    ({"uid": "0", "gid": str(2**32 - 2)}, stat.S_IFREG | 0o644),
    ({"mtime": "-5", "ctime": "9223372036.854775807"}, stat.S_IFREG | 0o644),  # the int64 ns limits
])
def test_usable_extremes_are_kept_without_a_report(metadata: Mapping[str, str], mode: int) -> None:
    attrs, unusable = parse_attrs(info(metadata), is_dir=False, defaults=DEFAULTS)
    assert unusable == []
    assert attrs.mode == mode
    assert representable(attrs)


def test_unusable_metadata_is_logged_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    key = f"k-{uuid.uuid4().hex}"  # the memory is per process: a key no other test used
    with caplog.at_level(logging.WARNING, logger="obsfs.meta"):
        for _ in range(3):
            attrs_from_object(info({"mode": "-1", "uid": "x"}, key=key), is_dir=False, defaults=DEFAULTS)
        attrs_from_object(info({"mode": "1"}, key=key + "-fine"), is_dir=False, defaults=DEFAULTS)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"{key!r} has user metadata obsfs cannot show; using the defaults for: mode='-1', uid='x'"]


@pytest.mark.parametrize("change", [{"mode": -1}, {"mode": 2**16}, {"uid": -5}, {"gid": 2**32 - 1},
                                    {"mtime_ns": 2**63}, {"ctime_ns": -(2**63) - 1}, {"rdev": 2**32},
                                    {"atime_ns": 2**63}])
def test_representable_rejects_what_the_kernel_cannot_take(change: dict[str, int]) -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o644, uid=1, gid=2, size=0, atime_ns=0, mtime_ns=0, ctime_ns=0)
    assert representable(attrs)
    assert not representable(attrs.with_changes(**change))
