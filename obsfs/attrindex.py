"""The attribute index of a directory: what HEADs of its files returned, kept in the bucket as a hint.

A LIST carries no user metadata, so a cold ``ls -l`` costs one HEAD per file. With ``-o attr_index``
each directory this mount writes to gets one object, ``<root>/.obsfs-index/<dir>/index.json``,
holding for each file what a HEAD of it said: ETag, size, Last-Modified (whole seconds, as both a
HEAD and a LIST give it), content type, and the s3fs attribute headers exactly as stored. A listing
that shows a file with the same ETag, size and Last-Modified gets the entry as the HEAD it replaces,
and it goes through the same parser (``meta.parse_attrs``) as a real HEAD's answer.

Why those three fields: a new body changes the ETag; a metadata-only change (s3fs's or obsfs's
chmod, a COPY onto itself) keeps the ETag and size but gives a new Last-Modified, unless it comes
within the same second. So a HEAD answer is recorded only once that second is over: the server's
``Date`` on the answer is a later second than ``Last-Modified`` (``settled``; the server's clock,
so no skew between hosts matters). Any change after such a HEAD has a later Last-Modified and no
longer matches. (The metadata cache, metacache.py, trusts the ETag alone, which is weaker.)

Anything this module cannot read (another format version, not JSON, wrong types) is no index at
all, or no entry: the file is HEADed as without the option, never shown with a guessed mode.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from dataclasses import dataclass

from obsfs.backend.base import ObjectInfo

INDEX_DIR = ".obsfs-index"  # at the mount root; a reserved name there (FsConfig.hidden)
INDEX_NAME = "index.json"
FORMAT = "obsfs-attr-index"
VERSION = 1
CONTENT_TYPE = "application/json"
# The metadata a HEAD answer is read for (meta.parse_attrs, dialects.object_kind); nothing else is kept.
ATTR_FIELDS = ("mode", "uid", "gid", "mtime", "ctime", "atime", "rdev")


@dataclass(frozen=True)
class IndexEntry:
    """What one HEAD of a file said, reduced to what a listing can check and a lookup reads."""

    etag: str
    size: int
    modified: int  # Last-Modified, whole seconds since the epoch
    content_type: str | None
    metadata: Mapping[str, str]


def entry_of(info: ObjectInfo) -> IndexEntry | None:
    """The entry for a HEAD answer; None if it cannot be checked against a listing later."""
    if info.metadata is None or not info.etag or info.last_modified <= 0:
        return None
    meta = {name: info.metadata[name] for name in ATTR_FIELDS if name in info.metadata}
    return IndexEntry(info.etag, info.size, int(info.last_modified), info.content_type, meta)


def settled(info: ObjectInfo) -> bool | None:
    """Whether the server answered this HEAD in a later second than the object's Last-Modified,
    so that a change after it cannot show the same Last-Modified; None if the answer has no
    usable ``Date`` (such an answer is never recorded)."""
    try:
        answered = email.utils.parsedate_to_datetime((info.metadata or {}).get("date", "")).timestamp()
    except (TypeError, ValueError):
        return None
    return int(answered) > int(info.last_modified)


def as_headed(listed: ObjectInfo, entry: IndexEntry | None) -> ObjectInfo | None:
    """What a HEAD of the listed object would answer, if ``entry`` was taken from that very object
    version; None when anything the listing shows differs."""
    if (entry is None or listed.etag != entry.etag or listed.size != entry.size
            or int(listed.last_modified) != entry.modified):
        return None
    # Not dataclasses.replace: this runs for every file of a cold listing, and it costs 3x.
    return ObjectInfo(listed.key, listed.size, listed.etag, listed.last_modified, entry.content_type,
                      dict(entry.metadata))


def index_key(prefix: str, dir_key: str) -> str:
    """Where the index of the directory whose keys start with ``dir_key`` lives; ``prefix`` is the
    mount's root (layout.Layout.prefix)."""
    return f"{prefix}{INDEX_DIR}/{dir_key[len(prefix):]}{INDEX_NAME}"


def place(prefix: str, key: str, hidden: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """The (directory key, name) of the entry an object is, or None for a key no index covers:
    outside the mount, the index's own objects, a name reserved at the root. A name ending in
    "/" is a directory marker (the name is then empty)."""
    if not key.startswith(prefix):
        return None
    rel = key[len(prefix):]
    top = rel.split("/", 1)[0]
    if not rel or top == INDEX_DIR or ("/" not in rel.rstrip("/") and top in hidden):
        return None
    if rel.endswith("/"):
        return key, ""
    cut = key.rfind("/", len(prefix)) + 1 or len(prefix)
    return key[:cut], key[cut:]


def encode(entries: Mapping[str, IndexEntry]) -> bytes:
    body = {name: {"etag": e.etag, "size": e.size, "modified": e.modified, "type": e.content_type,
                   "meta": dict(e.metadata)} for name, e in sorted(entries.items())}
    return json.dumps({"format": FORMAT, "version": VERSION, "entries": body},
                      separators=(",", ":"), ensure_ascii=False).encode()


def decode(data: bytes) -> dict[str, IndexEntry]:
    """The entries of an index object; those that are not exactly as ``encode`` writes them are
    left out, and an object of another format or version gives none."""
    return {name: entry for name, item in decode_lazily(data).items() if (entry := checked(item)) is not None}


def decode_lazily(data: bytes) -> dict[str, object]:
    """The entries of an index object by name, each still to be ``checked``: a listing of 10,000
    files needs the names first (its hints, listranges.py), and checking every entry took three
    times as long as the JSON decoding."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        return {}
    raw = doc.get("entries")
    if not isinstance(raw, dict):
        return {}
    return {name: item for name, item in raw.items() if name and "/" not in name}


def checked(item: object) -> IndexEntry | None:
    """An entry as ``encode`` writes it, or None."""
    if not isinstance(item, dict):
        return None
    etag, size, modified = item.get("etag"), item.get("size"), item.get("modified")
    content_type, meta = item.get("type"), item.get("meta")
    if not (isinstance(etag, str) and etag and _count(size) and _count(modified)
            and (content_type is None or isinstance(content_type, str)) and isinstance(meta, dict)
            and all(name in ATTR_FIELDS and isinstance(value, str) for name, value in meta.items())):
        return None
    assert isinstance(size, int) and isinstance(modified, int)
    return IndexEntry(etag, size, modified, content_type, meta)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
