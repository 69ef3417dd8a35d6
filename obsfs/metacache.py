"""Exact attributes of objects, kept on disk and keyed by ETag.

Listings carry no user metadata, so a file's stored mode, owner and mtime need one HEAD each.
Those answers are kept here: as long as a listing shows the same ETag, the object (and so its
metadata, which can only change with a new ETag or a COPY we made ourselves) is unchanged, and a
remount lists a directory of 10,000 files without 10,000 HEADs. A stale row is harmless: the
ETag no longer matches and the HEAD happens as if there were no cache. Losing the file costs
only speed, so it is written without fsync, and new rows are written in batches (one
transaction each per row cost 6% of a cold ``ls -l``).

A file whose table has other columns (written by an obsfs before a field was added) is emptied
and made anew: every row would need a HEAD to fill the new column, which is what a miss costs.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from obsfs.meta import Attrs, representable

log = logging.getLogger(__name__)

# The table's name changes with its columns. A file in which another obsfs version kept its own
# table is emptied (see MetaCache._start_over); an older one's rows were wrong anyway for FIFOs,
# sockets and devices, which it cached as regular files.
_TABLE = "attrs_v3"  # v2 had no atime_ns
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    key TEXT PRIMARY KEY, etag TEXT NOT NULL,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, content_type TEXT,
    rdev INTEGER NOT NULL
)
"""
_COLUMNS = "key, etag, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, content_type, rdev"
_INSERT = f"INSERT OR REPLACE INTO {_TABLE} ({_COLUMNS}) VALUES ({', '.join('?' * len(_COLUMNS.split(',')))})"
_BATCH = 500  # keys per SELECT, well under SQLite's limit on bound parameters
_PENDING = 256  # rows collected before one INSERT transaction


class MetaCache:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self._start_over()
        self.db.execute(_SCHEMA)
        self._pending: dict[str, tuple[str, str, int, int, int, int, int, int, str | None, int]] = {}

    def _start_over(self) -> None:
        """Drop every table if another obsfs version has used this file since we did.

        Its table has other columns, and its rows may hold what it made of metadata we read
        differently. Our own rows may be stale as well: its chmod changed an object's metadata
        under the same ETag without telling our table. Every version keeps one table named after
        its schema, so the presence of another one says all this, in either direction.
        """
        tables = {name for (name,) in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
        if tables - {_TABLE}:
            log.info("metadata cache: written by another obsfs version (%s); starting empty",
                     ", ".join(sorted(tables)))
            for name in tables:
                self.db.execute(f'DROP TABLE "{name}"')

    def close(self) -> None:
        self.flush()
        self.db.close()

    def put(self, key: str, etag: str, attrs: Attrs, content_type: str | None) -> None:
        self._pending[key] = (key, etag, attrs.mode, attrs.uid, attrs.gid, attrs.atime_ns, attrs.mtime_ns,
                              attrs.ctime_ns, content_type, attrs.rdev)
        if len(self._pending) >= _PENDING:
            self.flush()

    def flush(self) -> None:
        """Write the collected rows; every read and delete flushes first, so none is ever missed."""
        if not self._pending:
            return
        rows, self._pending = list(self._pending.values()), {}
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany(_INSERT, rows)
        except sqlite3.Error as exc:  # a full disk only costs the caching
            log.info("metadata cache: could not store %d rows: %s", len(rows), exc)

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)
        try:
            self.db.execute(f"DELETE FROM {_TABLE} WHERE key = ?", (key,))
        except sqlite3.Error as exc:
            log.info("metadata cache: could not drop %s: %s", key, exc)

    def keys_in(self, prefix: str) -> list[str]:
        """The cached keys of the files directly under ``prefix`` (a directory's key, or the
        root's ""): a listing's hint at the names an earlier listing found there."""
        self.flush()
        # Every key below the prefix, at any depth, is read: its own directory is a range of the
        # primary key (a directory key ends in "/", and "0" follows it), the root all of the table.
        below = "instr(substr(key, ?), '/') = 0"
        try:
            if prefix:
                rows = self.db.execute(f"SELECT key FROM {_TABLE} WHERE key > ? AND key < ? AND {below}",
                                       (prefix, prefix[:-1] + "0", len(prefix) + 1)).fetchall()
            else:
                rows = self.db.execute(f"SELECT key FROM {_TABLE} WHERE {below}", (1,)).fetchall()
        except sqlite3.Error as exc:
            log.info("metadata cache: could not read the keys under %s: %s", prefix, exc)
            return []
        return [key for (key,) in rows]

    def lookup(self, wanted: Iterable[tuple[str, str]]) -> dict[str, tuple[Attrs, str | None]]:
        """Attributes (size 0: the listing has the size) for the (key, etag) pairs still current."""
        self.flush()
        etags = dict(wanted)
        keys = list(etags)
        found: dict[str, tuple[Attrs, str | None]] = {}
        for start in range(0, len(keys), _BATCH):
            batch = keys[start:start + _BATCH]
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM {_TABLE} WHERE key IN ({','.join('?' * len(batch))})", batch).fetchall()
            for key, etag, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, content_type, rdev in rows:
                attrs = Attrs(mode=mode, uid=uid, gid=gid, size=0, atime_ns=atime_ns, mtime_ns=mtime_ns,
                              ctime_ns=ctime_ns, rdev=rdev)
                # A row an older obsfs wrote from metadata it did not check is HEADed again.
                if etags.get(key) == etag and representable(attrs):
                    found[key] = (attrs, content_type)
        return found
