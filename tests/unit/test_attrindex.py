"""The attribute index's format, where its entries live, and when a listing may use one."""

from __future__ import annotations

import json

import pytest

from obsfs.attrindex import IndexEntry, as_headed, decode, encode, entry_of, index_key, place, settled
from obsfs.backend.base import ObjectInfo

HEADED = ObjectInfo("pre/d/f", 5, "abc", 1_700_000_000.0, "text/plain",
                    {"mode": "33188", "uid": "1", "gid": "2", "mtime": "1600000000.5", "content-length": "5",
                     "x-other": "kept out"})
LISTED = ObjectInfo("pre/d/f", 5, "abc", 1_700_000_000.0)


def test_an_entry_is_what_the_head_said_and_round_trips() -> None:
    entry = entry_of(HEADED)
    assert entry == IndexEntry("abc", 5, 1_700_000_000, "text/plain",
                               {"mode": "33188", "uid": "1", "gid": "2", "mtime": "1600000000.5"})
    assert decode(encode({"f": entry, "ü x": entry})) == {"f": entry, "ü x": entry}
    assert entry_of(LISTED) is None, "a listing has no metadata to record"


def test_a_listing_uses_an_entry_only_for_the_same_etag_size_and_second() -> None:
    entry = entry_of(HEADED)
    assert entry is not None
    headed = as_headed(LISTED, entry)
    assert headed is not None and headed.metadata == entry.metadata and headed.content_type == "text/plain"
    assert as_headed(ObjectInfo("pre/d/f", 5, "abc", 1_700_000_000.9), entry) is not None  # whole seconds
    for other in (ObjectInfo("pre/d/f", 5, "abd", 1_700_000_000.0), ObjectInfo("pre/d/f", 6, "abc", 1_700_000_000.0),
                  ObjectInfo("pre/d/f", 5, "abc", 1_700_000_001.0)):
        assert as_headed(other, entry) is None, other
    assert as_headed(LISTED, None) is None


def test_a_head_is_recorded_only_once_the_second_of_its_last_modified_is_over() -> None:
    """A chmod in the same second would keep Last-Modified; the server's Date tells, whatever our clock says."""
    def answered(date: str | None) -> ObjectInfo:
        meta = dict(HEADED.metadata or {}) | ({"date": date} if date is not None else {})
        return ObjectInfo("pre/d/f", 5, "abc", 1_700_000_000.0, "text/plain", meta)

    assert settled(answered("Tue, 14 Nov 2023 22:13:21 GMT")) is True
    assert settled(answered("Tue, 14 Nov 2023 22:13:20 GMT")) is False  # the second of 1_700_000_000
    assert settled(answered(None)) is None and settled(answered("yesterday")) is None


@pytest.mark.parametrize("data", [
    b"", b"not json", b"\xff\xfe", b"[]", b'{"format": "obsfs-attr-index", "version": 2, "entries": {}}',
    b'{"format": "other", "version": 1, "entries": {}}', b'{"format": "obsfs-attr-index", "version": 1}',
    b"[" * 100_000,
])
def test_what_is_not_an_index_has_no_entries(data: bytes) -> None:
    assert decode(data) == {}


def test_malformed_entries_are_left_out() -> None:
    good = {"etag": "e", "size": 1, "modified": 2, "type": None, "meta": {"mode": "33188"}}
    bad = [dict(good, etag=""), dict(good, size=-1), dict(good, size=True), dict(good, modified="2"),
           dict(good, meta={"mode": 33188}), dict(good, meta={"x-other": "1"}), dict(good, type=3), "entry"]
    entries = {f"bad{n}": item for n, item in enumerate(bad)} | {"good": good, "a/b": good, "": good}
    doc = {"format": "obsfs-attr-index", "version": 1, "entries": entries}
    assert list(decode(json.dumps(doc).encode())) == ["good"]


def test_where_entries_and_indexes_live() -> None:
    assert place("pre/", "pre/d/e/f") == ("pre/d/e/", "f")
    assert place("pre/", "pre/f") == ("pre/", "f")
    assert place("", "f") == ("", "f")
    assert place("pre/", "pre/d/") == ("pre/d/", ""), "a directory's marker"
    for key in ("other/f", "pre/.obsfs-index/d/index.json", "pre/", "pre/.volume"):
        assert place("pre/", key, frozenset({".volume"})) is None, key
    assert place("pre/", "pre/d/.volume", frozenset({".volume"})) == ("pre/d/", ".volume"), "reserved at the root only"
    assert index_key("pre/", "pre/d/e/") == "pre/.obsfs-index/d/e/index.json"
    assert index_key("", "") == ".obsfs-index/index.json"
