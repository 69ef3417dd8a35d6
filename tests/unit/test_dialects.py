"""Other tools' directory markers: which listed names are directories, as s3fs 1.90 reads them."""

from __future__ import annotations

import stat
from collections.abc import Mapping

import pytest

from obsfs.backend.base import ObjectInfo
from obsfs.dialects import Child, Kind, children_of, folder_key, marker_keys, object_kind
from obsfs.layout import MAX_KEY_BYTES
from obsfs.meta import DIR_CONTENT_TYPE


def obj(key: str, size: int = 0, *, content_type: str | None = None,
        metadata: Mapping[str, str] | None = None) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag=f"etag-{key}", last_modified=0.0, content_type=content_type,
                      metadata=metadata)


def headed(key: str, size: int = 0, *, content_type: str = "binary/octet-stream",
           metadata: Mapping[str, str] | None = None) -> ObjectInfo:
    return obj(key, size, content_type=content_type, metadata=metadata or {})


@pytest.mark.parametrize(("info", "has_children", "kind"), [
    (headed("d", 3), True, Kind.FILE),  # data: a file, whatever is below
    (headed("d", 3, content_type=DIR_CONTENT_TYPE), True, Kind.FILE),
    (headed("d"), True, Kind.DIR),  # no attributes: the keys below decide
    (headed("d"), False, Kind.FILE),
    (headed("d"), None, Kind.ASK),
    (headed("d", content_type=DIR_CONTENT_TYPE), False, Kind.DIR),
    (headed("d", content_type=DIR_CONTENT_TYPE), None, Kind.DIR),
    (headed("d", metadata={"mode": str(stat.S_IFREG | 0o644)}), True, Kind.FILE),  # an s3fs empty file
    (headed("d", metadata={"mode": str(stat.S_IFDIR | 0o711)}), None, Kind.DIR),
    (headed("d", metadata={"mtime": "1700000000"}), True, Kind.FILE),  # s3fs attributes, no mode
    (headed("d", metadata={"mode": "junk"}, content_type=DIR_CONTENT_TYPE), None, Kind.DIR),
    (obj("d"), True, Kind.DIR),  # listed: no metadata known
    (obj("d"), False, Kind.FILE),
    (obj("d"), None, Kind.ASK),
])
def test_object_kind(info: ObjectInfo, has_children: bool | None, kind: Kind) -> None:
    assert object_kind(info, has_children=has_children) is kind


def test_children_of_reads_every_dialect() -> None:
    objects = [obj("a_$folder$"), obj("b"), obj("c", 3), obj("d_$folder$"), obj("e"), obj("plain", 5),
               obj("_$folder$"), obj("x_$folder$_$folder$")]
    prefixes = ["b", "c", "d", "f"]
    listed = children_of([(o.key, o) for o in objects], prefixes)
    assert {name: child.is_dir for name, child in listed.items()} == {
        "a": True,  # only its _$folder$ marker
        "b": True,  # a zero-byte object with keys below
        "c": False,  # data hides the keys below
        "d": True,  # keys below and a _$folder$ marker
        "e": False,  # a zero-byte object alone: a file until its HEAD says otherwise
        "f": True,  # implicit
        "plain": False,
        "x_$folder$": True,  # only one suffix is taken off
    }
    assert listed["a"] == Child(is_dir=True, folder=objects[0])
    assert listed["b"].object_marker and not listed["c"].object_marker and not listed["d"].object_marker
    assert listed["d"] == Child(is_dir=True, folder=objects[3], children=True)


def test_children_of_without_dialects_is_the_plain_listing() -> None:
    objects = [obj("f1", 1), obj("f2")]
    listed = children_of([(o.key, o) for o in objects], ["d1", "d2"])
    assert listed == {"f1": Child(is_dir=False, obj=objects[0]), "f2": Child(is_dir=False, obj=objects[1]),
                      "d1": Child(is_dir=True, children=True), "d2": Child(is_dir=True, children=True)}


def test_marker_keys() -> None:
    assert marker_keys("p/d", "p/d/", object_marker=False) == ["p/d/", "p/d_$folder$"]
    assert marker_keys("p/d", "p/d/", object_marker=True) == ["p/d/", "p/d_$folder$", "p/d"]
    longest = "k" * (MAX_KEY_BYTES - 1)
    assert folder_key(longest) is None
    assert marker_keys(longest, longest + "/", object_marker=False) == [longest + "/"]
