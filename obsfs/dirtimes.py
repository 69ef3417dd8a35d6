"""Which directories have times newer than their ``dir/`` marker, and one marker writer per directory.

Creating, removing or renaming an entry changes its directory's mtime and ctime. The new times
are in memory at once (what stat shows); the marker is written later, once for all the changes
that came within ``upload_delay``: creating 1,000 files in one directory costs a few marker PUTs,
not 1,000. A kill -9 before that write loses only the directory's new times.

Every write of a directory's marker (this lazy one, and chmod or utimens on the directory) runs
under that directory's ``writing`` lock and sends the attributes current when it got the lock, so
the PUTs reach the store in the order of the changes: a lazy write can never put back an older
"now" over an explicit utimens made after it.

A directory without a marker (only keys below it, written by another tool) gets no marker for
that: its new times stay in memory (``implicit``) for the life of the mount, as the mount root's do.

A directory made here (mkdir) is written the same way: its marker is owed from the start (the
journal keeps it, journal.py), so the first lazy write creates it, with the times its first
entries gave it. ``cp -r`` of a tree paid a PUT per mkdir, waited for, and a second one for the
times, per directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
from cachetools import LRUCache

from obsfs.layout import is_under
from obsfs.meta import Attrs

IMPLICIT_KEPT = 4096  # implicit directories whose times are remembered, the least recently changed forgotten


class DirTimes:
    """Pending marker writes by directory path. Code between two awaits is atomic."""

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._locks: dict[str, tuple[trio.Lock, int]] = {}  # path -> lock, tasks holding or waiting for it
        self.implicit: LRUCache[str, Attrs] = LRUCache(IMPLICIT_KEPT)

    def touch(self, path: str) -> bool:
        """``path``'s times changed. True if no write was pending: the caller schedules one."""
        if path in self._pending:
            return False
        self._pending.add(path)
        return True

    def is_pending(self, path: str) -> bool:
        return path in self._pending

    def take(self, path: str) -> bool:
        """Claim the pending write of ``path`` (to write it now, or because the directory is gone or
        an explicit write covers it). False if there was none."""
        if path not in self._pending:
            return False
        self._pending.discard(path)
        return True

    def owed_under(self, path: str) -> list[str]:
        """Paths at and below ``path`` with a write pending or in flight: what a rename of
        ``path`` must wait for, or a PUT that ends after it would write a marker under the old
        name, and the directory would be back there."""
        return sorted({p for p in self._pending if is_under(p, path)} | {p for p in self._locks if is_under(p, path)})

    def forget_implicit(self, path: str) -> None:
        """``path`` and what was below it are gone (rmdir, rename): a directory that appears there
        later is another one."""
        for gone in [p for p in self.implicit if is_under(p, path)]:
            del self.implicit[gone]

    @contextlib.asynccontextmanager
    async def writing(self, path: str) -> AsyncIterator[None]:
        """Held while a marker of ``path`` is written or removed; the lock is dropped once unused."""
        lock, users = self._locks.get(path, (trio.Lock(), 0))
        self._locks[path] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[path]
            if users == 1:
                del self._locks[path]
            else:
                self._locks[path] = (lock, users - 1)
