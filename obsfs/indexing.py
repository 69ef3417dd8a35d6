"""``-o attr_index``: keeping each directory's attribute index (attrindex.py) and reading it in listings.

Writing. The store tells us every key this mount wrote or deleted (``AsyncStore.on_change``):
uploads, chmod/chown/utimens copies, symlinks, special files, renames, conflict copies, queued
deletes, from the handlers and from the journal's recovery alike. Each directory that changed is
rewritten at most once per ``upload_delay`` (more rarely while its rewrites are slow, see
``SPACING``), as dirtimes.py does for directory times: the files written at least ``SETTLE`` ago
are HEADed (so an entry is what the store holds, never what we meant to write: a foreign write or
chmod in between is recorded as it is), the current index is read, merged and written back, or
deleted once it has no entry left. A directory whose marker we deleted (rmdir, rename) starts from an empty index.

Two mounts rewriting one index at once may lose each other's entries, and a kill -9 loses the
rewrites still pending: both cost a HEAD in some later listing, never a wrong attribute, since a
listing uses an entry only for the exact object version it was taken from.

Reading. A listing of a directory starts the GET of its index along with its first LIST page;
the names in it are where the listing's other ranges start (listranges.py), and each listed file
whose ETag, size and Last-Modified match its entry (checked only then) is taken as HEADed: into
the metadata cache, and so shown exact, with no background HEAD.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from obsfs.attrindex import (
    CONTENT_TYPE,
    IndexEntry,
    as_headed,
    checked,
    decode_lazily,
    encode,
    entry_of,
    index_key,
    place,
    settled,
)
from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectInfo
from obsfs.dialects import Kind, object_kind
from obsfs.errors import NotFound, ObsfsError
from obsfs.meta import Attrs, Defaults, attrs_from_object
from obsfs.metacache import MetaCache

log = logging.getLogger(__name__)

HEAD_WORKERS = 8  # threads HEADing a rewrite's files: fewer than a listing's, it is background work
SPACING = 4.0  # a directory is rewritten at most every SPACING times its last rewrite took
MAX_INDEX_BYTES = 64 << 20  # about 250,000 entries; a larger object is not read
# A file is HEADed for its entry once this long after it was written: by then the second of its
# Last-Modified is over on the server too, so the HEAD's answer is recorded (attrindex.settled).
SETTLE = 1.05
SETTLE_WAIT = 0.5  # unmount: seconds between rewrites while files wait for SETTLE


@dataclass
class _Changes:
    """What happened in one directory since its index was last rewritten."""

    names: dict[str, tuple[bool, float]] = field(default_factory=dict)  # name -> written (or deleted), when
    reset: bool = False  # its marker was deleted: what the stored index says is of a gone directory


class IndexRead:
    """One directory's index, fetched while its listing runs."""

    def __init__(self, index: AttrIndex, dir_key: str) -> None:
        self._index = index
        self._dir_key = dir_key
        self._entries: dict[str, object] | None = None  # by name, each still to be checked
        self._started = False
        self._done = trio.Event()

    async def fetch(self) -> None:
        self._started = True
        try:
            self._entries = await self._index.load_lazily(self._dir_key)
        finally:
            self._done.set()

    async def keys(self) -> list[str]:
        """The keys of the files the index has entries for: a listing's hint at the names."""
        await self._wait()
        return [self._dir_key + name for name in self._entries or ()]

    async def _wait(self) -> None:
        if not self._started:
            await self.fetch()
        await self._done.wait()

    async def known(self, objects: Iterable[ObjectInfo]) -> dict[str, tuple[Attrs, str | None]]:
        """The listed files the index vouches for: their attributes and content type, as from a
        HEAD (they go to the metadata cache as a HEAD's would)."""
        await self._wait()
        entries = self._entries or {}
        found: dict[str, tuple[Attrs, str | None]] = {}
        if not entries:
            return found
        for listed in objects:
            info = as_headed(listed, checked(entries.get(listed.key[len(self._dir_key):])))
            # A zero-byte object that says it is a directory is left to its HEAD, as a listing
            # does (listing.Listing._headed); obsfs never writes one.
            if info is None or object_kind(info, has_children=False) is Kind.DIR:
                continue
            attrs = attrs_from_object(info, is_dir=False, defaults=self._index.defaults)
            self._index.meta_cache.put(info.key, info.etag, attrs, info.content_type)
            found[info.key] = (attrs, info.content_type)
        return found


class AttrIndex:
    """The indexes of one mount's directories. Code between two awaits is atomic."""

    def __init__(self, store: AsyncStore, prefix: str, *, defaults: Defaults, meta_cache: MetaCache,
                 delay: float, hidden: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.prefix = prefix
        self.defaults = defaults
        self.meta_cache = meta_cache
        self.delay = delay
        self.hidden = hidden
        self._changes: dict[str, _Changes] = {}  # directory key -> changes not yet in its index
        self._scheduled: set[str] = set()  # directories a rewriter task waits for
        # directory key -> its lock, while a rewrite of it runs or waits: such a rewrite may hold
        # changes it took from _changes, which flush_all must then wait for
        self._locks: dict[str, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        store.on_change = self.changed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the rewrites and the index reads run in, until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for dir_key in list(self._changes):  # changed before we ran (the journal's recovery)
                    self._schedule(dir_key)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # a closed nursery takes no task: later changes are only recorded

    def changed(self, key: str, exists: bool) -> None:
        """``key`` was written (``exists``) or deleted by this mount."""
        where = place(self.prefix, key, self.hidden)
        if where is None:
            return
        dir_key, name = where
        if not name and exists:
            return  # a directory marker written: its index lists the files in it, not itself
        changes = self._changes.setdefault(dir_key, _Changes())
        if name:
            changes.names[name] = (exists, trio.current_time())
        else:
            changes.reset = True
        self._schedule(dir_key)

    def _schedule(self, dir_key: str) -> None:
        if self._nursery is not None and dir_key not in self._scheduled:
            self._scheduled.add(dir_key)
            self._nursery.start_soon(self._rewriter, dir_key)

    def reading(self, dir_key: str) -> IndexRead:
        """Start fetching the index of ``dir_key`` (in the background when running)."""
        read = IndexRead(self, dir_key)
        if self._nursery is not None:
            self._nursery.start_soon(read.fetch)
        return read

    async def load(self, dir_key: str) -> dict[str, IndexEntry] | None:
        """The stored entries of a directory: None if it has no index, none if it cannot be read."""
        entries = await self.load_lazily(dir_key)
        return None if entries is None else {name: e for name, item in entries.items()
                                             if (e := checked(item)) is not None}

    async def load_lazily(self, dir_key: str) -> dict[str, object] | None:
        """``load``, each entry still to be checked (attrindex.decode_lazily)."""
        try:
            data = await self.store.read_small(index_key(self.prefix, dir_key), MAX_INDEX_BYTES)
        except NotFound:
            return None
        except ObsfsError as exc:
            log.info("attribute index of %r not read (its files are HEADed): %s", dir_key, exc)
            return {}
        return decode_lazily(data) if len(data) < MAX_INDEX_BYTES else {}

    async def _rewriter(self, dir_key: str) -> None:
        """Rewrite one directory's index until no change is left, spaced out."""
        wait = self.delay
        try:
            while dir_key in self._changes:
                await trio.sleep(wait)
                start = trio.current_time()
                await self._rewrite(dir_key)
                wait = max(self.delay, SPACING * (trio.current_time() - start))
        finally:
            self._scheduled.discard(dir_key)

    async def _rewrite(self, dir_key: str) -> None:
        """Read, merge and write back the index of ``dir_key`` with the changes pending for it."""
        lock = self._locks.setdefault(dir_key, trio.Lock())
        try:
            async with lock:
                changes = self._changes.pop(dir_key, None)
                if changes is None:
                    return
                recent = trio.current_time() - SETTLE
                young = {name: change for name, change in changes.names.items() if change[0] and change[1] > recent}
                if young:  # left for the next rewrite
                    self._changes[dir_key] = _Changes(young)
                    changes.names = {name: change for name, change in changes.names.items() if name not in young}
                if changes.names or changes.reset:
                    await self._merge(dir_key, changes)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(dir_key, None)

    async def _merge(self, dir_key: str, changes: _Changes) -> None:
        headed: dict[str, IndexEntry | None] = {}

        def deliver(key: str, result: ObjectInfo | ObsfsError) -> None:
            name = key[len(dir_key):]
            ripe = settled(result) if isinstance(result, ObjectInfo) else None
            if ripe is False:
                # Written in the second the server answered in: a chmod within that second would
                # keep this Last-Modified. The next rewrite takes it; its old entry goes now.
                self._changes.setdefault(dir_key, _Changes()).names.setdefault(name, (True, trio.current_time()))
            headed[name] = entry_of(result) if ripe and isinstance(result, ObjectInfo) else None

        key = index_key(self.prefix, dir_key)
        try:
            written = [dir_key + name for name, (exists, _) in changes.names.items() if exists]
            if written:
                await self.store.head_many(written, deliver, workers=HEAD_WORKERS)
            stored = {} if changes.reset else await self.load(dir_key)
            entries = dict(stored or {})
            for name in changes.names:
                entry = headed.get(name)  # deleted, gone, or its HEAD failed: no entry
                if entry is None:
                    entries.pop(name, None)
                else:
                    entries[name] = entry
            if entries:
                await self.store.put_bytes(key, encode(entries), metadata={}, content_type=CONTENT_TYPE)
            elif stored is not None:  # its last entry went (or the directory): the object goes too
                await self.store.delete(key)
        except ObsfsError as exc:
            # Lost: its files are HEADed by the next cold listing, as without the option.
            log.info("attribute index of %r not written: %s", dir_key, exc)

    async def flush_all(self, deadline: float) -> None:
        """Rewrite every changed directory now (unmount), within ``deadline`` seconds; files
        written in the last second are taken once it is over (``settled``).

        A rewriter task's rewrite already under way has taken its changes out of ``_changes``:
        it is waited for too (through its lock). Once this returns, the caller stops the writes
        and cancels the rewriters, which would lose that rewrite's PUT (a delete confirmed just
        before unmount stayed in the index)."""
        with trio.move_on_after(deadline):
            limiter = trio.CapacityLimiter(8)

            async def one(dir_key: str) -> None:
                async with limiter:
                    await self._rewrite(dir_key)  # after the one under way, if any

            while self._changes or self._locks:
                async with trio.open_nursery() as nursery:
                    for dir_key in self._changes.keys() | self._locks.keys():
                        nursery.start_soon(one, dir_key)
                if self._changes and not self._locks:  # only files waiting for SETTLE are left
                    await trio.sleep(SETTLE_WAIT)
