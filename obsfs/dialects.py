"""Directories as other tools mark them, read the way s3fs 1.90 reads them (docs/posix.md,
"Other tools' directories").

obsfs and s3fs mark a directory ``d`` with a ``d/`` object, or not at all (keys below ``d/``).
Other tools left two more marks in buckets that obsfs must browse the same:

- ``d_$folder$``: an object named after the directory with this suffix (old s3fs, Hadoop S3N);
  it makes ``d`` a directory even with nothing below it, and its metadata are ``d``'s attributes
  unless a ``d/`` marker exists.
- ``d``: a zero-byte object at the directory's own name, which is a directory when it says so
  (``Content-Type: application/x-directory`` or a directory mode) or, if it carries no s3fs
  attributes at all, when keys exist below ``d/``.

An object ``d`` with data is a file, whatever is below ``d/``: those keys stay hidden.

Everything here is pure: given the keys a LIST page shows, or one HEAD, which names are
directories. It costs no request, since a ``d_$folder$`` key is listed next to its siblings.
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from obsfs.backend.base import ObjectInfo
from obsfs.layout import MAX_KEY_BYTES
from obsfs.meta import DIR_CONTENT_TYPE, stored_mode

FOLDER_SUFFIX = "_$folder$"
_S3FS_ATTRS = ("mode", "uid", "gid", "mtime", "ctime")


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    ASK = "ask"  # a directory only if keys exist below it: one LIST tells


def object_kind(info: ObjectInfo, *, has_children: bool | None) -> Kind:
    """What the object at a name without a slash is, from its HEAD (``info.metadata`` set) and
    whether keys exist below ``name/`` (None: not known). s3fs's rule: data makes a file; an
    s3fs mode decides; else the directory content type; else, for an object with no s3fs
    attributes at all, the keys below."""
    if info.size > 0:
        return Kind.FILE
    if info.metadata is not None:
        mode = stored_mode(info)
        if mode is not None:
            return Kind.DIR if stat.S_ISDIR(mode) else Kind.FILE
        if info.content_type == DIR_CONTENT_TYPE:
            return Kind.DIR
        if any(name in info.metadata for name in _S3FS_ATTRS):
            return Kind.FILE  # written as a file by s3fs or obsfs, only without a mode
    if has_children is None:
        return Kind.ASK
    return Kind.DIR if has_children else Kind.FILE


@dataclass(frozen=True)
class Child:
    """One name in a listed directory, and the keys that make it what it is."""

    is_dir: bool
    obj: ObjectInfo | None = None  # the object at the name itself: a file, or a directory's zero-byte marker
    folder: ObjectInfo | None = None  # its ``name_$folder$`` marker
    children: bool = False  # keys exist below ``name/``

    @property
    def object_marker(self) -> bool:
        """A zero-byte object at the name marks this directory."""
        return self.is_dir and self.obj is not None


def children_of(objects: Iterable[tuple[str, ObjectInfo]], prefixes: Iterable[str]) -> dict[str, Child]:
    """The names a directory listing shows, from its objects (by name in the directory) and its
    common prefixes (names, without the slash), over all its pages. Without metadata a zero-byte
    object with keys below is taken for a directory and one without for a file; a HEAD of it
    (``object_kind``) may say otherwise."""
    at_name: dict[str, ObjectInfo] = {}
    folders: dict[str, ObjectInfo] = {}
    for name, info in objects:
        stripped = name.removesuffix(FOLDER_SUFFIX)
        if stripped != name:
            if stripped:  # "_$folder$" alone would be a directory without a name
                folders[stripped] = info
        else:
            at_name[name] = info
    below = set(prefixes)
    found: dict[str, Child] = {}
    for name in at_name.keys() | folders.keys() | below:
        obj, folder, children = at_name.get(name), folders.get(name), name in below
        is_dir = obj is None or object_kind(obj, has_children=children) is Kind.DIR
        found[name] = Child(is_dir=is_dir, obj=obj, folder=folder, children=children)
    return found


def folder_key(file_key: str) -> str | None:
    """The ``_$folder$`` marker key of the directory whose name is ``file_key``; None if that
    would be longer than any key can be (so none exists)."""
    key = file_key + FOLDER_SUFFIX
    return key if len(key.encode()) <= MAX_KEY_BYTES else None


def marker_keys(file_key: str, dir_key: str, *, object_marker: bool) -> list[str]:
    """Every key that may mark the directory: what removing it (rmdir, or a rename away from it)
    deletes. A ``d_$folder$`` that does not exist costs nothing in the same batch delete; the
    object at the name is deleted only when it is known to be this directory's marker, never a file."""
    keys = [dir_key]
    folder = folder_key(file_key)
    if folder is not None:
        keys.append(folder)
    if object_marker:
        keys.append(file_key)
    return keys
