"""Where each path lives in the bucket: pure string rules, shared by every handler.

Paths are relative, ``/``-separated, without leading slash; the root is ``""``. A mount of
``BUCKET:/PREFIX`` puts every key under ``PREFIX/``. Directories are ``dir/`` marker keys (or just
key prefixes); files and symlinks are the plain key.
"""

from __future__ import annotations

from dataclasses import dataclass

from obsfs.errors import ObsfsError

MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255


class InvalidName(ObsfsError):
    """A file name that cannot become an object key (not UTF-8, too long, reserved)."""

    def __init__(self, message: str, *, too_long: bool = False) -> None:
        super().__init__(message)
        self.too_long = too_long


def decode_name(name: bytes) -> str:
    """FUSE names are bytes; keys are UTF-8. Names that are not valid UTF-8 are refused."""
    if len(name) > MAX_NAME_BYTES:
        raise InvalidName("name too long", too_long=True)
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"name {name!r} is not valid UTF-8") from None
    if text in ("", ".", "..") or "/" in text or "\0" in text:
        raise InvalidName(f"invalid name {text!r}")
    return text


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def name_of(path: str) -> str:
    return path.rpartition("/")[2]


def is_under(path: str, ancestor: str) -> bool:
    """True if ``path`` is ``ancestor`` itself or inside it."""
    return not ancestor or path == ancestor or path.startswith(ancestor + "/")


def rebase(path: str, old: str, new: str) -> str:
    """``path`` (under ``old``) moved under ``new``."""
    return new + path[len(old):]


def _checked(key: str) -> str:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidName("path too long for an object key", too_long=True)
    return key


@dataclass(frozen=True)
class Layout:
    """Maps paths to keys for one mount."""

    prefix: str = ""  # "" or "some/prefix/" (always with the trailing slash)

    @staticmethod
    def for_prefix(prefix: str) -> Layout:
        prefix = prefix.strip("/")
        return Layout(prefix=f"{prefix}/" if prefix else "")

    def file_key(self, path: str) -> str:
        return _checked(self.prefix + path)

    def dir_key(self, path: str) -> str:
        """The marker key of a directory, which is also the prefix of its children."""
        return _checked(self.prefix + path + "/") if path else self.prefix

    def path_of(self, key: str) -> str:
        return key[len(self.prefix):].rstrip("/")
