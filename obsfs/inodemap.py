"""The inode number of every path this mount has shown, kept on disk for the life of the cache dir.

The kernel forgets inodes it no longer needs (memory pressure, ``drop_caches``); the next lookup
of the same path must give the same ``st_ino``, or tar, rsync, ``find -samefile`` and git take an
unchanged file for another one. So a number is not a counter's value of the moment but a row here:
``path -> (ino, kind)``, plus the next number to hand out, which only grows. Numbers are never
reused for another entry, so the FUSE ``generation`` can stay 0.

The counter row is not written for every new number: a commit that hands out a number at or
above the stored counter stores the counter ``_RESERVE`` numbers ahead. A later daemon starts
from there, skipping the numbers this one did not use; they were never handed out, and all a
number needs is to be unique and above every number given before. ``cp -r`` of small files
makes one number per file, and so one statement less per create.

A path keeps its number while it names the same entry: a rename moves the rows of the whole
subtree in one statement; an unlink or rmdir deletes them (a file created again at that name is
another file); an entry whose kind changes (another client replaced a file by a directory) gets a
new number, as the kernel must never see one inode change its type.

Durability. A daemon that replaces a crashed one under the same kernel session (kill -9) must know
every number the kernel holds, so a number is committed before the reply that hands it out goes
out (``commit`` is called once per request, by ``obsfs.fs.boundary``): one transaction per
request, and so per readdir batch, not per entry. ``synchronous=OFF`` with WAL keeps a committed
transaction across the death of the process (it is in the page cache), not across a power loss,
which also ends the kernel session. Rows are only ever read back one path at a time, so memory
does not grow with the table.

A cache disk that refuses a write costs only stability: the error is logged once, the numbers of
this daemon stay consistent in memory, and a later remount may number those paths anew.
"""

from __future__ import annotations

import logging
import sqlite3
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

ROOT_INO = 1  # pyfuse3.ROOT_INODE
_BATCH = 500  # paths per SELECT, well under SQLite's limit on bound parameters
_RESERVE = 1024  # numbers the stored counter runs ahead of the numbers handed out

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inodes (
    ino  INTEGER PRIMARY KEY,    -- the number the kernel sees
    path TEXT NOT NULL UNIQUE,   -- relative to the mount's root, "" for the root itself
    kind INTEGER NOT NULL        -- S_IFMT of the entry the number was given to
);
CREATE TABLE IF NOT EXISTS counter (
    id       INTEGER PRIMARY KEY CHECK (id = 0),
    next_ino INTEGER NOT NULL
);
"""


def _subtree(param: str) -> str:
    """Rows at the path bound to ``:param`` and below it (never the root's: it is not renamed
    or removed). Children sort between "p/" and "p0" ("0" follows "/"), so this is a walk of
    the path index, not a LIKE over the table."""
    return f"(path = :{param} OR (path > :{param} || '/' AND path < :{param} || '0'))"


class InodeMap:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT next_ino FROM counter").fetchone()
        if row is None:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO inodes VALUES (?, '', ?)", (ROOT_INO, stat.S_IFDIR))
            self.db.execute("INSERT INTO counter VALUES (0, ?)", (ROOT_INO + 1,))
            self.db.execute("COMMIT")
            row = (ROOT_INO + 1,)
        self._next: int = row[0]
        # The counter as the open transaction will leave it: every number handed out is below it.
        self._stored_next = self._next
        self._in_transaction = False
        self._warned = False

    def close(self) -> None:
        self.commit()
        self.db.close()

    def number(self, path: str, kind: int) -> int:
        """The number of the entry of ``kind`` at ``path``: the one it was given, or a new one."""
        return self.numbers([(path, kind)])[0]

    def created(self, path: str, kind: int) -> int:
        """``number`` of an entry this mount has just created. Its path rarely has a row (an
        unlink or rmdir here drops it), so the row is inserted without the SELECT first; only
        when one is there (another client removed the entry after this mount showed it, or the
        cache disk refused the insert) is the path numbered as a lookup would number it."""
        ino = self._next
        inserted = self._write(lambda: self.db.execute("INSERT OR IGNORE INTO inodes VALUES (?, ?, ?)",
                                                       (ino, path, kind)).rowcount)
        if inserted != 1:
            return self.number(path, kind)
        self._next += 1
        return ino

    def numbers(self, wanted: Sequence[tuple[str, int]]) -> list[int]:
        """``number`` of each (path, kind) of a readdir batch, in one SELECT per 500 paths and
        one INSERT. Every sqlite call releases the GIL, and while the HEAD threads of a cold
        listing run, the trio thread waits to take it back: two calls per entry made a readdir
        of 10,000 slower than the 10,000 HEADs. The paths are siblings (none is below another)."""
        rows: dict[str, tuple[int, int]] = {}
        paths = list(dict.fromkeys(path for path, _ in wanted))
        for start in range(0, len(paths), _BATCH):
            batch = paths[start:start + _BATCH]
            rows.update((path, (ino, kind)) for path, ino, kind in self.db.execute(
                f"SELECT path, ino, kind FROM inodes WHERE path IN ({','.join('?' * len(batch))})", batch))
        for path, kind in wanted:
            row = rows.get(path)
            if row is not None and row[1] != kind:
                self.drop(path)  # another entry: what was below the old one is gone with it
                del rows[path]
        new: list[tuple[int, str, int]] = []
        for path, kind in wanted:
            if path not in rows:
                rows[path] = (self._next, kind)
                new.append((self._next, path, kind))
                self._next += 1
        if new:
            self._write(lambda: self.db.executemany("INSERT INTO inodes VALUES (?, ?, ?)", new))
        return [rows[path][0] for path, _ in wanted]

    def path_of(self, ino: int) -> tuple[str, int] | None:
        """The path and kind ``ino`` was given to, if it still names one: how a daemon that took
        over a kernel session finds the files behind the numbers the kernel holds."""
        row = self.db.execute("SELECT path, kind FROM inodes WHERE ino = ?", (ino,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def drop(self, path: str) -> None:
        """``path`` and everything below it no longer exist: a new entry there is a new file."""
        self.write(f"DELETE FROM inodes WHERE {_subtree('path')}", {"path": path})

    def move(self, old: str, new: str) -> None:
        """Rename: the rows of ``old`` and below carry their numbers to ``new``; what ``new``
        held is replaced. ``new`` is never inside ``old`` (rename refuses that with EINVAL)."""
        names = {"old": old, "new": new}
        self.write(f"DELETE FROM inodes WHERE {_subtree('new')} AND NOT {_subtree('old')}", names)
        self.write(f"UPDATE inodes SET path = :new || substr(path, length(:old) + 1) "
                    f"WHERE {_subtree('old')}", names)

    def commit(self) -> None:
        """Make every number handed out so far survive the process: called before each reply."""
        if self._next > self._stored_next:
            self._stored_next = self._next + _RESERVE  # before the write: a failure resets it
            self.write("UPDATE counter SET next_ino = ?", (self._stored_next,))
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._failed(exc)

    def write(self, sql: str, params: tuple[object, ...] | Mapping[str, object]) -> None:
        """A change that ``commit`` makes durable (handletable.py writes through here too, so one
        commit per request covers both tables)."""
        self._write(lambda: self.db.execute(sql, params))

    def _write(self, change: Callable[[], T]) -> T | None:
        """``change``'s result, or None if the cache disk refused it."""
        try:
            if not self._in_transaction:
                self.db.execute("BEGIN")
                self._in_transaction = True
            return change()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: sqlite3.Error) -> None:
        """A failed statement may have rolled back the whole transaction (SQLITE_FULL does): start
        clean. Numbers already handed out stay valid in memory; the counter is written again with
        the next change, so no number is ever given twice."""
        log.log(logging.DEBUG if self._warned else logging.WARNING,
                "inode table: could not store inode numbers (%s); they stay stable until this mount "
                "ends, but a remount may number some paths anew", exc)
        self._warned = True
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as again:
                log.debug("inode table: rollback failed: %s", again)
        self._in_transaction = False
        self._stored_next = -1
