"""Open file handles on disk, so that a daemon taking over a kernel session (``-o keeper``, after a
``kill -9`` or a planned handover) understands the fh numbers the kernel holds for open fds.

Two tables in the inode table's database (``inodes.db``), written in its transactions, so the
commit that ``obsfs.fs.boundary`` makes before every reply covers a new handle too:

- ``handles``: fh -> (inode number, writable, directory). A row lives from the open (or create,
  or opendir) to its release. The next daemon makes the handle again, lazily, when a request names
  an fh it does not hold. fh numbers are not reused while the kernel may hold them: the next
  number is one more than the highest row, and a row goes only when the kernel released it.
- ``staged``: inode number -> the local file that holds an open file's written data, the stored
  version it started from (its base ETag, for the conditional upload) and the attributes a new,
  never uploaded file has nowhere else. Data written through a handle is in that file before the
  write() is answered (FUSE without writeback cache sends every write() to us), and a file in
  the page cache survives the death of the process. So the next daemon keeps the file instead
  of discarding it as a partial write, and the app's later writes and close go on with it.

Rows mean something only within one kernel session: a new mount starts with no fh the kernel
holds. The session is named by whoever holds the FUSE connection (the keeper: its pid and start
time); rows of another session are dropped when the table is opened, and their staged files are
then unacknowledged partial writes, as after any crash of a plain mount.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from obsfs.inodemap import InodeMap

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handles (
    fh       INTEGER PRIMARY KEY,  -- the number the kernel holds for an open file or directory
    ino      INTEGER NOT NULL,
    writable INTEGER NOT NULL,
    is_dir   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS staged (
    ino          INTEGER PRIMARY KEY,
    data_file    TEXT NOT NULL,   -- name in the staging dir
    base_etag    TEXT,            -- stored version the contents started from; NULL: a new object
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, atime_ns INTEGER NOT NULL,
    content_type TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS session (
    id   INTEGER PRIMARY KEY CHECK (id = 0),
    name TEXT NOT NULL,
    started_ns INTEGER NOT NULL  -- when its first daemon started: the root's times
);
"""


@dataclass(frozen=True)
class HandleRow:
    ino: int
    writable: bool
    is_dir: bool


@dataclass(frozen=True)
class StagedRow:
    ino: int
    data_file: str
    base_etag: str | None
    mode: int
    uid: int
    gid: int
    atime_ns: int
    content_type: str


class HandleTable:
    def __init__(self, numbers: InodeMap, session: str, now_ns: int) -> None:
        self.numbers = numbers
        # The root's (and implicit directories') times: if they changed under the kernel with a
        # new daemon, it would drop every name it cached below the root and look them up again.
        self.started_ns = now_ns
        self._next = 1
        self._valid = False  # rows on disk are this session's
        db = numbers.db
        try:
            db.executescript(_SCHEMA)
            row = db.execute("SELECT name, started_ns FROM session").fetchone()
            if row is not None and row[0] == session:
                self.started_ns = int(row[1])
            else:
                db.execute("BEGIN")
                db.execute("DELETE FROM handles")
                db.execute("DELETE FROM staged")
                db.execute("INSERT OR REPLACE INTO session VALUES (0, ?, ?)", (session, now_ns))
                db.execute("COMMIT")
            self._next = db.execute("SELECT coalesce(max(fh), 0) + 1 FROM handles").fetchone()[0]
            self._valid = True
        except sqlite3.Error as exc:
            # A full cache disk costs only survival, as for the inode numbers: this daemon's
            # handles work, a next daemon of this session may not understand them, and rows of
            # another session (not dropped) are never read. Numbers
            # above any an earlier daemon can have given keep them apart from its rows.
            log.warning("handle table: %s; open files will not survive a restart of this daemon", exc)
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._next = 1 << 40

    def open(self, ino: int, *, writable: bool, is_dir: bool) -> int:
        fh = self._next
        self._next += 1
        self.numbers.write("INSERT INTO handles VALUES (?, ?, ?, ?)", (fh, ino, writable, is_dir))
        return fh

    def get(self, fh: int) -> HandleRow | None:
        rows = self._read("SELECT ino, writable, is_dir FROM handles WHERE fh = ?", (fh,))
        return HandleRow(int(rows[0][0]), bool(rows[0][1]), bool(rows[0][2])) if rows else None

    def close(self, fh: int) -> None:
        self.numbers.write("DELETE FROM handles WHERE fh = ?", (fh,))

    def stage(self, row: StagedRow) -> None:
        self.numbers.write("INSERT OR REPLACE INTO staged VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (row.ino, row.data_file, row.base_etag, row.mode, row.uid, row.gid, row.atime_ns,
                            row.content_type))

    def unstage(self, ino: int) -> None:
        self.numbers.write("DELETE FROM staged WHERE ino = ?", (ino,))

    def staged_in_use(self) -> list[StagedRow]:
        """The staged files of inodes that an fd the kernel holds is open on."""
        rows = self._read("SELECT ino, data_file, base_etag, mode, uid, gid, atime_ns, content_type FROM staged "
                          "WHERE ino IN (SELECT ino FROM handles) ORDER BY ino", ())
        return [StagedRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """Rows, or none if the tables could not be made or reset (a full cache disk)."""
        if not self._valid:
            return []
        try:
            return self.numbers.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            log.debug("handle table: %s", exc)
            return []

    def forget_unused_staging(self) -> None:
        """Rows of inodes no handle is open on any more (their release wrote the journal)."""
        self.numbers.write("DELETE FROM staged WHERE ino NOT IN (SELECT ino FROM handles)", ())
