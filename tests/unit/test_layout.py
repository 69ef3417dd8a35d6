"""Path <-> key mapping and name decoding."""

from __future__ import annotations

import logging
import uuid

import pytest

from obsfs.errors import ObsfsError
from obsfs.layout import (
    MAX_KEY_BYTES,
    InvalidName,
    Layout,
    decode_name,
    is_under,
    join,
    listed_name,
    name_of,
    parent_of,
    rebase,
)


@pytest.mark.parametrize(("prefix", "expected"), [
    ("", ""), ("/", ""), ("a", "a/"), ("/a/b/", "a/b/"), ("a/b", "a/b/"),
])
def test_for_prefix(prefix: str, expected: str) -> None:
    assert Layout.for_prefix(prefix).prefix == expected


def test_keys_without_prefix() -> None:
    layout = Layout.for_prefix("")
    assert layout.file_key("f") == "f"
    assert layout.file_key("d/f") == "d/f"
    assert layout.dir_key("d") == "d/"
    assert layout.dir_key("") == ""  # the root lists the whole bucket
    assert layout.path_of("d/f") == "d/f"
    assert layout.path_of("d/") == "d"


def test_keys_with_prefix() -> None:
    layout = Layout.for_prefix("/vol/1/")
    assert layout.file_key("f") == "vol/1/f"
    assert layout.dir_key("d/e") == "vol/1/d/e/"
    assert layout.dir_key("") == "vol/1/"
    assert layout.path_of("vol/1/d/e/") == "d/e"
    assert layout.path_of("vol/1/") == ""
    assert layout.path_of(layout.file_key("x y/ü+%41")) == "x y/ü+%41"


def test_too_long_key() -> None:
    layout = Layout.for_prefix("p")
    fits = "x" * (MAX_KEY_BYTES - 2)
    assert layout.file_key(fits) == "p/" + fits
    with pytest.raises(InvalidName) as err:
        layout.file_key(fits + "x")
    assert err.value.too_long
    # Bytes count, not characters: "é" is two bytes in UTF-8.
    with pytest.raises(InvalidName):
        layout.file_key("é" * (MAX_KEY_BYTES // 2))


def test_too_long_dir_key() -> None:
    path = "x" * MAX_KEY_BYTES
    assert len(Layout().file_key(path)) == MAX_KEY_BYTES
    with pytest.raises(InvalidName):
        Layout().dir_key(path)


def test_entry_key_counts_the_marker_slash_and_the_prefix() -> None:
    layout = Layout.for_prefix("p")  # "p/": 2 bytes
    fits = "x" * (MAX_KEY_BYTES - 2)
    assert layout.entry_key(fits, is_dir=False) == "p/" + fits
    with pytest.raises(InvalidName) as err:
        layout.entry_key(fits, is_dir=True)  # "p/xxx/" is one byte too many
    assert err.value.too_long
    assert layout.entry_key(fits[1:], is_dir=True) == f"p/{fits[1:]}/"


def test_moved_key() -> None:
    layout = Layout.for_prefix("p")
    assert layout.moved_key("p/a/b/f", "a", "c/d") == "p/c/d/b/f"
    assert layout.moved_key("p/a/", "a", "z") == "p/z/"  # the marker itself
    deep = "p/a/" + "y" * (MAX_KEY_BYTES - 4)  # exactly the limit
    assert layout.moved_key(deep, "a", "b") == "p/b/" + "y" * (MAX_KEY_BYTES - 4)
    with pytest.raises(InvalidName) as err:
        layout.moved_key(deep, "a", "ab")  # a name one byte longer pushes it over
    assert err.value.too_long


@pytest.mark.parametrize("name", [b"a", b"a b", "ü+%41".encode(), b"x" * 255, b".hidden", b"..."])
def test_decode_valid_names(name: bytes) -> None:
    assert decode_name(name) == name.decode()


@pytest.mark.parametrize("name", [b"\xff\xfe", b"a\xc3"])
def test_invalid_utf8_is_refused(name: bytes) -> None:
    with pytest.raises(InvalidName) as err:
        decode_name(name)
    assert not err.value.too_long
    assert isinstance(err.value, ObsfsError)


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b"])
def test_reserved_names_are_refused(name: bytes) -> None:
    with pytest.raises(InvalidName):
        decode_name(name)


def test_too_long_name() -> None:
    with pytest.raises(InvalidName) as err:
        decode_name(b"x" * 256)
    assert err.value.too_long
    with pytest.raises(InvalidName) as err:
        decode_name("é".encode() * 128)  # 128 characters, 256 bytes
    assert err.value.too_long


def test_join_parent_name() -> None:
    assert join("", "a") == "a"
    assert join("a/b", "c") == "a/b/c"
    assert parent_of("a/b/c") == "a/b"
    assert parent_of("a") == ""
    assert name_of("a/b/c") == "c"
    assert name_of("a") == "a"


@pytest.mark.parametrize(("path", "ancestor", "expected"), [
    ("a", "a", True),
    ("a/b", "a", True),
    ("a/b/c", "a/b", True),
    ("ab", "a", False),
    ("ab/c", "a", False),
    ("a", "a/b", False),
    ("a", "", True),
    ("", "", True),
    ("", "a", False),
])
def test_is_under(path: str, ancestor: str, expected: bool) -> None:
    assert is_under(path, ancestor) is expected


def test_rebase() -> None:
    assert rebase("a", "a", "b") == "b"
    assert rebase("a/x/y", "a", "b/c") == "b/c/x/y"
    assert rebase("a/x", "a", "ab") == "ab/x"


@pytest.mark.parametrize(("parent", "key", "name"), [
    ("", "f", "f"), ("", "d/", "d"), ("a/", "a/f", "f"), ("a/", "a/d/", "d"),
    ("a/", "a/" + "n" * 255, "n" * 255), ("a/", "a/" + "é" * 127 + "/", "é" * 127),
])
def test_listed_name(parent: str, key: str, name: str) -> None:
    assert listed_name(parent, key) == name


def test_listed_name_of_the_directory_marker_is_none_and_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="obsfs.layout"):
        assert listed_name("a/", "a/") is None
    assert caplog.records == []


@pytest.mark.parametrize("rest", ["f" * 256, "é" * 128, "d" * 300 + "/", ".", "../", "/"])
def test_unreachable_listed_name_is_none_and_logged_once(rest: str, caplog: pytest.LogCaptureFixture) -> None:
    parent = f"{uuid.uuid4().hex}/"  # the memory is per process: a key no other test used
    with caplog.at_level(logging.WARNING, logger="obsfs.layout"):
        assert listed_name(parent, parent + rest) is None
        assert listed_name(parent, parent + rest) is None
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"{parent + rest!r} is left out of its directory listing")
