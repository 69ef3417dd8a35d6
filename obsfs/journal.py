"""The durable list of files whose contents are in the cache but not yet in the store.

A row is written (and fsynced, by SQLite's ``synchronous=FULL``) before ``close()`` returns, after
the data file itself was fsynced (or with the data in it: small files, below); it is deleted only
once the store has that exact version. So
after a crash (``kill -9``, OOM) the next mount of the same cache dir finds every acknowledged
write here. The schema is deliberately flat: one row per dirty file, no history.

A full cache disk. An insert that finds no room fails (``close()`` then answers ENOSPC: nothing
was acknowledged). A delete must not fail that way: deleting the row is what lets a clean file's
space be freed and its node forget it, and in WAL mode even a DELETE appends to ``-wal`` and may
need new blocks. So:

- ``journal.reserve``, a preallocated file next to the database, is space only the journal may
  spend: when a delete reports the disk full, the reserve is deleted and the delete retried at
  once (about 8 KiB per delete measured here, so 1 MiB covers a hundred). It is allocated again
  once no delete is owed and there is room.
- A delete that still finds no room (the reserve is spent, or a thread writing elsewhere in the
  cache took the space first) is *owed*: remembered here and retried before every later write to
  the journal and at ``close``. The caller goes on as if the row were gone, and frees its data
  file, which is what drains the disk. An owed row only ever describes a version the store
  already has, or a deleted file, so if a crash comes first the next mount uploads the same bytes
  again (a match by ETag, no conflict) or, its data file already freed, drops the row.
- ``record`` of a data file cancels an owed delete of its row, in the same call: a new
  acknowledged version can never be removed by a delete meant for the one before.

Small files. A row may carry the file's contents (``data``, up to ``JOURNALED_DATA_MAX``): then
its data file is not fsynced, and the row's own fsync is the only one a close() of a small file
costs (``cp -r`` of small files paid a second fsync per file, and a thread hand-off for it, for the
data file). The data file is what counts as long as the machine runs (a kill -9 leaves it whole in
the page cache, and a daemon that takes over an open file goes on writing it). After a reboot it
may be torn, so the first recovery of a new boot (``rebooted``: the kernel's boot id differs from
the one stored at the last recovery) writes each such file from its row before anything reads it.

Which commits are fsynced. ``close()`` promises data that survives a power loss, so its row is
committed with ``synchronous=FULL`` (the WAL is fsynced). An unlink promises less: POSIX makes
it durable only once its directory is fsynced, and a committed WAL transaction survives the death
of the process without an fsync (it is in the page cache; only a power loss or a kernel crash
can drop it). So ``note_deletes`` commits with ``synchronous=NORMAL``: ``rm -r`` of 1,000 files
paid one fsync per file for nothing. So do the deletes of rows that describe only what the store
already has (``_UNSYNCED_DELETES``): ``cp -r`` paid one fsync per file for those. A power loss
drops the newest unsynced transactions whole and in order (the WAL is one log), so a lost unlink
brings back the file as it was, its dirty row included, never half of it; and every later
fsynced commit (a close's row, the confirmation of a batch of deletes) makes the unlinks before
it durable too. ``sync`` makes everything committed durable, for fsyncdir and unmount. While
more uploads are queued, the delete of an uploaded file's row is not even a commit of its own: it
waits for the next ``record`` and goes in its transaction (``remove(later=True)``).

New directories. ``mkdir`` owes the store the directory's marker (obsfs/dirtimes.py): its row
in ``markers`` is committed like an unlink's, without an fsync, and deleted once the marker is
stored, or before the delete of a directory removed first is owed, so that a replay never brings
it back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from obsfs.meta import Attrs

log = logging.getLogger(__name__)

RESERVE_BYTES = 1 << 20
# Files up to this size are journaled with their contents (module docstring). A 64 KiB row costs
# less than the fsync and thread hand-off it saves; larger ones would make the WAL checkpoints
# (copies of every page, on the trio thread) the cost.
JOURNALED_DATA_MAX = 64 << 10
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dirty (
    data_file    TEXT PRIMARY KEY,  -- name of the staged file in the staging dir
    key          TEXT NOT NULL,     -- object key it belongs to (full key, prefix included)
    base_etag    TEXT,              -- stored version our contents started from; NULL for a new object
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    atime_ns INTEGER,  -- NULL in rows an obsfs without atime wrote: the mtime stands in
    data     BLOB      -- a small file's contents, its data file not fsynced; NULL: the data file was
);
CREATE TABLE IF NOT EXISTS boot (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    boot_id TEXT NOT NULL  -- the kernel's boot at the last recovery: another one means a reboot came since
);
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,  -- a multipart upload started while its file was being written
    key       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deletes (
    key  TEXT PRIMARY KEY,  -- removed here (unlink, rmdir); its DELETE is not confirmed by the store yet
    hold TEXT               -- a directory's marker: sent only once no key below this prefix is owed
);
CREATE TABLE IF NOT EXISTS markers (
    key TEXT PRIMARY KEY,  -- the "dir/" marker of a directory made here (mkdir), not in the store yet
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    atime_ns INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class DirtyRecord:
    data_file: str
    key: str
    base_etag: str | None
    attrs: Attrs  # size is not stored: the data file's size is the truth
    content_type: str
    data: bytes | None = None  # the whole contents, of a data file that was not fsynced


# The deletes a full disk may leave owed, by table.
_DELETE = {
    "dirty": "DELETE FROM dirty WHERE data_file = ?",
    "uploads": "DELETE FROM uploads WHERE upload_id = ?",
    "deletes": "DELETE FROM deletes WHERE key = ?",
    "markers": "DELETE FROM markers WHERE key = ?",
}
# Deletes committed without an fsync (module docstring): the row of a file the store has or that
# is gone, the id of an upload that ended, a directory marker the store has or that was removed.
# Lost in a power cut, such a row costs a repeat (an upload of the same bytes, which its ETag shows
# is ours; an abort of an ended upload; a marker PUT again), never data. The confirmation of a
# delete is fsynced: its replay could remove an object this mount wrote since.
_UNSYNCED_DELETES = frozenset({"dirty", "uploads", "markers"})


@contextlib.contextmanager
def _as_os_error() -> Iterator[None]:
    """SQLite reports a full cache disk as its own error; callers handle OSError with an errno."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        full = "full" in str(exc)
        raise OSError(errno.ENOSPC if full else errno.EIO, f"cache journal: {exc}") from None


def _is_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC


class Journal:
    """SQLite file in the cache dir. Calls are short local writes, made from the trio thread, so
    nothing runs between releasing the reserve and the retry that needs its space (threads
    writing elsewhere in the cache dir may, which is why a delete can still end up owed)."""

    def __init__(self, path: Path, *, boot_id: str | None = None) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(dirty)")}
        # A journal of an older obsfs: its rows are acknowledged writes, so it is extended, never replaced.
        for column, kind in (("atime_ns", "INTEGER"), ("data", "BLOB")):
            if column not in columns:
                self.db.execute(f"ALTER TABLE dirty ADD COLUMN {column} {kind}")
        self.boot_id = boot_id or Path(BOOT_ID_FILE).read_text().strip()
        row = self.db.execute("SELECT boot_id FROM boot").fetchone()
        self._stored_boot: str | None = row[0] if row else None
        self.rebooted = self._stored_boot not in (None, self.boot_id)
        self.reserve_path = path.with_suffix(".reserve")
        self.reserved = False  # the reserve file is there, whole
        self.owed: set[tuple[str, str]] = set()  # (table, key) of deletes the disk had no room for
        self._later: set[str] = set()  # dirty rows whose delete waits for the next record (``remove``)
        self._restore_reserve()

    def close(self) -> None:
        """Settle what is owed, if there is room now; what is left, the next mount repairs. The
        unsynced unlinks are made durable first (``sync``), whatever happens to the rest."""
        try:
            self.sync()
            self._settle()
        except OSError as exc:
            log.warning("cache journal: %s", exc)
        if self.owed:
            log.warning("cache journal: %d row(s) of uploaded or deleted files could not be deleted "
                        "(cache disk full); the next mount drops them", len(self.owed))
        self.db.close()

    def record(self, rec: DirtyRecord) -> None:
        a = rec.attrs
        self.owed.discard(("dirty", rec.data_file))  # that delete was for the version before
        self._later.discard(rec.data_file)
        later, self._later = self._later, set()
        with _as_os_error():
            if later:
                self.db.execute("BEGIN IMMEDIATE")
            try:
                if later:
                    self.db.executemany(_DELETE["dirty"], [(name,) for name in later])
                self.db.execute(
                    "INSERT OR REPLACE INTO dirty (data_file, key, base_etag, mode, uid, gid, mtime_ns, ctime_ns, "
                    "content_type, atime_ns, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec.data_file, rec.key, rec.base_etag, a.mode, a.uid, a.gid, a.mtime_ns, a.ctime_ns,
                     rec.content_type, a.atime_ns, rec.data))
                if later:
                    self.db.execute("COMMIT")
            except BaseException:
                if later:
                    self._rollback()
                    self.owed.update(("dirty", name) for name in later)  # settled once there is room
                raise
        self._settle()

    def rebase(self, data_file: str, base_etag: str) -> None:
        """The row's contents are now based on ``base_etag``: an upload of an older version of the
        same data file stored it while the row's version was written. Fsynced, as ``record``."""
        with _as_os_error():
            self.db.execute("UPDATE dirty SET base_etag = ? WHERE data_file = ?", (base_etag, data_file))
        self._settle()

    def remove(self, data_file: str, *, later: bool = False) -> None:
        """Never fails for a full disk: the delete is then owed (see the module docstring).

        ``later``: the caller knows more rows are coming (uploads are queued behind this one), so
        the delete may wait for the next ``record`` and go in its transaction: ``cp -r`` of small
        files then commits once per file instead of twice (0.05 ms of CPU per file, a 30 KiB
        row's). Until then the row stays as an owed one would (module docstring); any other write
        to the journal, or a delete that is not ``later``, runs it."""
        if later:
            self._later.add(data_file)
        else:
            self._delete("dirty", data_file)

    def note_upload(self, upload_id: str, key: str) -> None:
        """An open multipart upload: if we crash before it is completed or aborted, its parts
        would cost storage for ever, so the next mount aborts what is listed here."""
        with _as_os_error():
            self.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?)", (upload_id, key))
        self._settle()

    def forget_upload(self, upload_id: str) -> None:
        """Never fails for a full disk; an owed one makes the next mount abort an upload that is
        already completed or aborted, which it reports and forgets."""
        self._delete("uploads", upload_id)

    def note_deletes(self, keys: list[str], hold: str | None, replacing: str | None) -> None:
        """Owe the store the deletes of ``keys`` (obsfs/deletes.py), in one transaction with the
        removal of the dirty row of ``replacing`` (the data file of the unlinked file): a crash
        then finds the file either still there or deleted, never a pending upload and a pending
        delete of the same version. Not fsynced (module docstring): it survives kill -9, and a
        power loss only before the next ``sync`` or fsynced commit. Raises OSError (ENOSPC) on
        a full disk: nothing changed."""
        with _as_os_error(), self._unsynced():
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT OR REPLACE INTO deletes (key, hold) VALUES (?, ?)",
                                    [(key, hold) for key in keys])
                if replacing is not None:
                    self.db.execute(_DELETE["dirty"], (replacing,))
                self.db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        self.owed.difference_update(("deletes", key) for key in keys)  # owed for an earlier removal
        if replacing is not None:
            self.owed.discard(("dirty", replacing))
        self._settle()

    def note_marker(self, key: str, attrs: Attrs) -> None:
        """mkdir: the store is owed the directory's marker, which is written lazily, with the times
        its first entries give it (obsfs/dirtimes.py). Not fsynced, as ``note_deletes`` is not:
        POSIX makes a new directory durable once its parent is fsynced (``sync``), and the next
        close() of a file, in it or anywhere, fsyncs the WAL it is in. Raises OSError (ENOSPC) on
        a full disk: nothing changed."""
        with _as_os_error(), self._unsynced():
            self.db.execute("INSERT OR REPLACE INTO markers VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (key, attrs.mode, attrs.uid, attrs.gid, attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns))
        self.owed.discard(("markers", key))  # that delete was for a directory removed before
        self._settle()

    def forget_marker(self, key: str) -> None:
        """The store has the marker, or its directory was removed first. Never fails for a full
        disk (an owed row makes the next mount PUT the marker again, harmless while the directory
        exists here; rmdir deletes the row before it owes the marker's delete, so a replay never
        brings a removed directory back)."""
        self._delete("markers", key)

    def markers(self) -> list[tuple[str, Attrs]]:
        """(key, attributes) of each directory an earlier daemon made and did not store."""
        return [(r[0], Attrs(mode=r[1], uid=r[2], gid=r[3], size=0, atime_ns=r[4], mtime_ns=r[5], ctime_ns=r[6]))
                for r in self.db.execute("SELECT key, mode, uid, gid, atime_ns, mtime_ns, ctime_ns FROM markers "
                                         "ORDER BY rowid")]

    def forget_deletes(self, keys: list[str]) -> None:
        """The store confirmed these deletes. One transaction (one fsync) for a whole batch; on a
        full disk the rows are owed one by one, like any delete (a replay deletes again: harmless)."""
        try:
            with _as_os_error():
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.executemany(_DELETE["deletes"], [(key,) for key in keys])
                    self.db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        except OSError as exc:
            if not _is_full(exc):
                raise
            self.owed.update(("deletes", key) for key in keys)
        self._settle()

    @contextlib.contextmanager
    def _unsynced(self) -> Iterator[None]:
        """Commits made inside are not fsynced: durable across the death of the process only."""
        self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self.db.execute("PRAGMA synchronous=FULL")

    def sync(self) -> None:
        """Make every committed transaction durable (fsyncdir, unmount). A checkpoint fsyncs the
        WAL before it copies it into the database, also under ``synchronous=NORMAL``."""
        with _as_os_error():
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _rollback(self) -> None:
        if self.db.in_transaction:  # SQLite may have rolled back by itself (a full disk)
            self.db.execute("ROLLBACK")

    def owed_deletes(self) -> list[tuple[str, str | None]]:
        """(key, hold) of each delete an earlier daemon acknowledged and did not see confirmed."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT key, hold FROM deletes ORDER BY rowid")]

    def _delete(self, table: str, key: str) -> None:
        self.owed.add((table, key))
        self._settle()

    def _settle(self) -> None:
        """Run the owed deletes, spending the reserve if the disk is full; then re-create the
        reserve if it was spent and nothing is owed any more."""
        self.owed.update(("dirty", name) for name in self._later)
        self._later.clear()
        unsynced = sorted(row for row in self.owed if row[0] in _UNSYNCED_DELETES)
        if len(unsynced) > 1 and self._delete_together(unsynced):
            self.owed.difference_update(unsynced)
        for table, key in sorted(self.owed):
            try:
                with self._unsynced() if table in _UNSYNCED_DELETES else contextlib.nullcontext():
                    self._delete_now(table, key)
            except OSError as exc:
                if _is_full(exc):
                    log.info("cache journal: disk full, %d delete(s) owed until there is room", len(self.owed))
                    return
                self.owed.discard((table, key))  # any other failure is its caller's, once, as before
                raise
            self.owed.discard((table, key))
        self._restore_reserve()

    def _delete_together(self, rows: list[tuple[str, str]]) -> bool:
        """Unsynced deletes in one transaction: the rows ``remove(later=True)`` held back, when a
        write other than ``record`` comes first (a mkdir in a ``cp -r``), cost one commit, not
        one each. False if that failed (a full disk): the one-by-one path, with the reserve, and
        with the error for its caller, takes them."""
        try:
            with _as_os_error(), self._unsynced():
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    for table, key in rows:
                        self.db.execute(_DELETE[table], (key,))
                    self.db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
        except OSError as exc:
            log.debug("cache journal: %d deletes in one transaction failed (%s); one by one", len(rows), exc)
            return False
        return True

    def _delete_now(self, table: str, key: str) -> None:
        try:
            with _as_os_error():
                self.db.execute(_DELETE[table], (key,))
        except OSError as exc:
            if not _is_full(exc) or not self._release_reserve():
                raise
            log.warning("cache journal: cache disk full, releasing the journal's reserve")
            with _as_os_error():
                self.db.execute(_DELETE[table], (key,))

    def _release_reserve(self) -> bool:
        """Free the reserve's space for the journal's own next write; False if none is left."""
        if not self.reserved:
            return False
        self.reserved = False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.reserve_path)
        return True

    def _restore_reserve(self) -> None:
        """Allocate the reserve if it is missing; on a disk still too full, try again later."""
        if self.reserved:
            return
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.reserve_path)  # a partial reserve would hold space and promise none
            log.debug("cache journal: no room for the reserve yet: %s", exc)
            return
        self.reserved = True

    def recovered(self) -> None:
        """The data files of this boot's rows are whole (``rebooted`` no longer applies): called
        once recovery wrote those a reboot may have torn. Fsynced, as the rows it speaks for."""
        self.rebooted = False
        if self._stored_boot != self.boot_id:
            with _as_os_error():
                self.db.execute("INSERT OR REPLACE INTO boot VALUES (0, ?)", (self.boot_id,))
            self._stored_boot = self.boot_id

    def open_uploads(self) -> list[tuple[str, str]]:
        """(upload id, key) of each multipart upload an earlier daemon left open."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT upload_id, key FROM uploads ORDER BY rowid")]

    def all(self) -> list[DirtyRecord]:
        rows = self.db.execute("SELECT data_file, key, base_etag, mode, uid, gid, mtime_ns, ctime_ns, "
                               "content_type, atime_ns, data FROM dirty ORDER BY rowid").fetchall()
        return [DirtyRecord(data_file=r[0], key=r[1], base_etag=r[2],
                            attrs=Attrs(mode=r[3], uid=r[4], gid=r[5], size=0, atime_ns=r[6] if r[9] is None else r[9],
                                        mtime_ns=r[6], ctime_ns=r[7]),
                            content_type=r[8], data=r[10]) for r in rows]
