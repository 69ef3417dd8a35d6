"""Where each path lives in the bucket: pure string rules, shared by every handler.

Paths are relative, ``/``-separated, without leading slash; the root is ``""``. A mount of
``BUCKET:/PREFIX`` puts every key under ``PREFIX/``. Directories are ``dir/`` marker keys (or just
key prefixes); files and symlinks are the plain key.

Not every key has a path: a component may be longer than a FUSE name (255 bytes against S3's
1,024), empty (``a//b``), or ``.``/``..``. Such keys stay out of listings (``listed_name``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from obsfs.errors import ObsfsError
from obsfs.warnonce import WarnOnce

log = logging.getLogger(__name__)

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


_unreachable = WarnOnce(log)


def listed_name(parent_key: str, key: str) -> str | None:
    """The name a key or common prefix listed under the directory ``parent_key`` has in it; None
    for the directory's own marker and for a key no lookup could reach. Listing that one would
    show a name that fails with ENAMETOOLONG or ENOENT on every access; it is logged instead,
    once, because every listing of its directory meets it again."""
    if key == parent_key:
        return None
    try:
        return decode_name(key[len(parent_key):].removesuffix("/").encode())
    except InvalidName as exc:
        _unreachable(key, "%r is left out of its directory listing, as no path can reach it (%s); "
                          "rename it with another S3 client to see it", key, exc)
        return None


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

    def entry_key(self, path: str, *, is_dir: bool) -> str:
        """The key that holds the entry at ``path``. Asked where an entry is made or moved, so that
        a path the store cannot hold fails there, with ENAMETOOLONG, and not at its upload, after
        close() or rename() have reported success."""
        return self.dir_key(path) if is_dir else self.file_key(path)

    def moved_key(self, key: str, old: str, new: str) -> str:
        """``key``, below the directory ``old``, once that is renamed to ``new``: a longer name
        can push a key deep below it over the limit."""
        return _checked(self.dir_key(new) + key[len(self.dir_key(old)):])

    def path_of(self, key: str) -> str:
        return key[len(self.prefix):].rstrip("/")
