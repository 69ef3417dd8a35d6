"""The durable list of files whose contents are in the cache but not yet in the store.

A row is written (and fsynced, by SQLite's ``synchronous=FULL``) before ``close()`` returns, after
the data file itself was fsynced; it is deleted only once the store has that exact version. So
after a crash (``kill -9``, OOM) the next mount of the same cache dir finds every acknowledged
write here. The schema is deliberately flat: one row per dirty file, no history.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from obsfs.meta import Attrs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dirty (
    data_file    TEXT PRIMARY KEY,  -- name of the staged file in the staging dir
    key          TEXT NOT NULL,     -- object key it belongs to (full key, prefix included)
    base_etag    TEXT,              -- stored version our contents started from; NULL for a new object
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    content_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,  -- a multipart upload started while its file was being written
    key       TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class DirtyRecord:
    data_file: str
    key: str
    base_etag: str | None
    attrs: Attrs  # size is not stored: the data file's size is the truth
    content_type: str


@contextlib.contextmanager
def _as_os_error() -> Iterator[None]:
    """SQLite reports a full cache disk as its own error; callers handle OSError with an errno."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        full = "full" in str(exc)
        raise OSError(errno.ENOSPC if full else errno.EIO, f"cache journal: {exc}") from None


class Journal:
    """SQLite file in the cache dir. Calls are short local writes, made from the trio thread."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def record(self, rec: DirtyRecord) -> None:
        a = rec.attrs
        with _as_os_error():
            self.db.execute(
                "INSERT OR REPLACE INTO dirty VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rec.data_file, rec.key, rec.base_etag, a.mode, a.uid, a.gid, a.mtime_ns, a.ctime_ns,
                 rec.content_type))

    def remove(self, data_file: str) -> None:
        with _as_os_error():
            self.db.execute("DELETE FROM dirty WHERE data_file = ?", (data_file,))

    def note_upload(self, upload_id: str, key: str) -> None:
        """An open multipart upload: if we crash before it is completed or aborted, its parts
        would cost storage for ever, so the next mount aborts what is listed here."""
        with _as_os_error():
            self.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?)", (upload_id, key))

    def forget_upload(self, upload_id: str) -> None:
        with _as_os_error():
            self.db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    def open_uploads(self) -> list[tuple[str, str]]:
        """(upload id, key) of each multipart upload an earlier daemon left open."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT upload_id, key FROM uploads ORDER BY rowid")]

    def all(self) -> list[DirtyRecord]:
        rows = self.db.execute("SELECT data_file, key, base_etag, mode, uid, gid, mtime_ns, ctime_ns, "
                               "content_type FROM dirty ORDER BY rowid").fetchall()
        return [DirtyRecord(data_file=r[0], key=r[1], base_etag=r[2],
                            attrs=Attrs(mode=r[3], uid=r[4], gid=r[5], size=0, mtime_ns=r[6], ctime_ns=r[7]),
                            content_type=r[8]) for r in rows]
