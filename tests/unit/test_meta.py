"""s3fs-format attribute metadata: encoding, decoding, defaults and mount-wide overrides."""

from __future__ import annotations

import stat
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
    parse_time_ns,
    shown,
    to_metadata,
)

DEFAULTS = Defaults(uid=1234, gid=5678)
LAST_MODIFIED = 1_700_000_123.0


def info(metadata: Mapping[str, str] | None, *, key: str = "f", size: int = 42) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag="e", last_modified=LAST_MODIFIED, metadata=metadata)


def test_round_trip_of_a_file() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o640, uid=1001, gid=1002, size=42,
                  mtime_ns=1_700_000_000_123_456_789, ctime_ns=1_700_000_001_000_000_000)
    meta = to_metadata(attrs)
    assert meta == {"mode": str(stat.S_IFREG | 0o640), "uid": "1001", "gid": "1002",
                    "mtime": "1700000000.123456789", "ctime": "1700000001"}
    assert attrs_from_object(info(meta), is_dir=False, defaults=DEFAULTS) == attrs


def test_round_trip_of_a_dir_and_a_symlink() -> None:
    d = Attrs(mode=stat.S_IFDIR | 0o750, uid=7, gid=8, size=0, mtime_ns=5 * NS, ctime_ns=6 * NS)
    assert attrs_from_object(info(to_metadata(d), size=0), is_dir=True, defaults=DEFAULTS) == d
    link = Attrs(mode=stat.S_IFLNK | 0o777, uid=7, gid=8, size=3, mtime_ns=5 * NS, ctime_ns=5 * NS)
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


@pytest.mark.parametrize("text", [None, "", "abc", "1.2.3", "12x", "1.5e3"])
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


@pytest.mark.parametrize("mode", [0o600, stat.S_IFDIR | 0o600, stat.S_IFIFO | 0o600, stat.S_IFCHR | 0o600])
def test_file_key_with_odd_type_becomes_a_regular_file(mode: int) -> None:
    attrs = attrs_from_object(info({"mode": str(mode)}), is_dir=False, defaults=DEFAULTS)
    assert attrs.mode == stat.S_IFREG | 0o600


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
    assert attrs == Attrs(mode=stat.S_IFDIR | 0o755, uid=1234, gid=5678, size=0, mtime_ns=77, ctime_ns=77)
    assert DIR_CONTENT_TYPE == "application/x-directory"


def test_shown_without_overrides_is_unchanged() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o666, uid=1, gid=2, size=0, mtime_ns=0, ctime_ns=0)
    assert shown(attrs, DEFAULTS) == attrs


def test_shown_applies_umask_but_keeps_the_type() -> None:
    defaults = Defaults(uid=0, gid=0, umask=0o027)
    f = Attrs(mode=stat.S_IFREG | 0o4777, uid=1, gid=2, size=0, mtime_ns=0, ctime_ns=0)
    assert shown(f, defaults).mode == stat.S_IFREG | 0o4750
    d = f.with_changes(mode=stat.S_IFDIR | 0o777)
    assert shown(d, defaults).mode == stat.S_IFDIR | 0o750
    assert shown(d, defaults, is_root=True).mode == stat.S_IFDIR | 0o777  # root: mp_umask's job
    assert (shown(f, defaults).uid, shown(f, defaults).gid) == (1, 2)


def test_shown_forces_uid_and_gid_separately() -> None:
    attrs = Attrs(mode=stat.S_IFREG | 0o644, uid=1, gid=2, size=0, mtime_ns=0, ctime_ns=0)
    only_uid = shown(attrs, Defaults(uid=500, gid=600, force_uid=True))
    assert (only_uid.uid, only_uid.gid) == (500, 2)
    both = shown(attrs, Defaults(uid=500, gid=600, force_uid=True, force_gid=True))
    assert (both.uid, both.gid) == (500, 600)
    assert attrs.uid == 1  # the stored value is untouched
