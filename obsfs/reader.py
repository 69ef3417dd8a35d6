"""Reading objects that have no local copy: aligned chunks, parallel readahead, two caches.

A read is served from 4 MiB chunks: from the few chunks kept in memory, then the disk cache
(``readcache.py``, keyed by ETag), then a ranged GET with If-Match on the ETag, so a file that
changes mid-read fails with EIO instead of mixing two versions. Concurrent readers of one chunk
share one GET. A sequential reader gets the next chunks fetched in parallel, the window doubling
up to MAX_AHEAD; a seek resets it.

The chunks held in memory (fetched ahead, being fetched, or recently read), for all open files
together, are bounded by ``-o read_memory``: that bound, not the file's size, is what reading
costs the daemon. A sequential reader needs the chunk it is in plus its window, so the window is
one chunk less than the bound; a readahead that finds no room waits for the next READ.

Each READ waits for the store at most one read deadline, whether it fetches its chunk or joins
a fetch already in flight; once one has given up, the handle's next READs fail at once for a
while (``deadline.Stall``), so one read() syscall fails after one deadline, not one per READ.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

import trio

from obsfs.backend.aio import AsyncStore
from obsfs.deadline import Stall
from obsfs.errors import ObsfsError, TemporaryFailure
from obsfs.readcache import ReadCache

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # unit of ranged GETs and of the read cache: large enough that per-request cost is small
MAX_AHEAD = 8  # chunks fetched ahead of a sequential reader, in parallel, when memory allows
# Readahead of a file larger than this share of the disk cache skips the disk cache: one scan would
# push out many chunks worth keeping, the kernel's page cache serves an immediate re-read anyway
# (keep_cache), and the cache writes slowed a cold 1 GiB read from 475-510 to 294-377 MB/s here.
SCAN_SHARE = 4

ChunkId = tuple[str, str, int]  # key, ETag, index
Chunk = bytes | bytearray  # a bytearray as the GET filled it: never copied, never changed


@dataclass
class ReadState:
    """One open file's access pattern."""

    next_offset: int = 0  # where a sequential reader reads next
    ahead: int = 0  # readahead window in chunks: doubles while sequential, 0 after a seek
    key: str | None = None  # the object read through this handle, if any
    stall: Stall = field(default_factory=Stall)

    def advance(self, off: int, size: int, max_ahead: int) -> int:
        """Take in a READ of ``size`` bytes at ``off``; how many chunks to fetch ahead of it."""
        # The kernel's readahead sends several READs at once and they may arrive out of order: a
        # read near the furthest point so far still counts as sequential.
        near = abs(off - self.next_offset) <= 2 * CHUNK
        self.ahead = min(max(1, self.ahead * 2), max_ahead) if near else 0
        self.next_offset = max(self.next_offset, off + size) if near else off + size
        return self.ahead


def chunk_slots(read_memory: int) -> int:
    """Chunks the reader may hold at once within ``read_memory`` bytes: at least the one being
    read and one ahead, so that a tiny setting slows reading down instead of stopping it."""
    return max(2, read_memory // CHUNK)


@dataclass(eq=False)
class ChunkFlight:
    """A chunk being fetched; later readers of the same chunk wait for it instead of a second GET."""

    done: trio.Event = field(default_factory=trio.Event)
    data: Chunk | None = None


class ChunkReader:
    def __init__(self, store: AsyncStore, read_cache: ReadCache, read_memory: int) -> None:
        self.store = store
        self.read_cache = read_cache
        self.metrics = store.metrics
        self.nursery: trio.Nursery | None = None  # set by mount.py; readahead and cache writes run here
        self.slots = chunk_slots(read_memory)
        self.max_ahead = min(MAX_AHEAD, self.slots - 1)
        self._flights: dict[ChunkId, ChunkFlight] = {}
        # Fetched chunks, least recently used first, so that a reader does not read back what was
        # just fetched; with the flights, no more than ``slots`` (see _make_room).
        self._recent: OrderedDict[ChunkId, Chunk] = OrderedDict()
        self._unread: set[ChunkId] = set()  # fetched ahead, no READ served from them yet

    @property
    def held(self) -> int:
        """Chunks in memory now: fetched, or being fetched."""
        return len(self._recent) + len(self._flights)

    async def read(self, state: ReadState, key: str, etag: str, total: int, off: int, size: int) -> memoryview:
        """The bytes at ``off``: a view into the chunk, so a 1 MiB read copies nothing here (pyfuse3
        replies from any buffer)."""
        state.key = key
        if off >= total:
            return memoryview(b"")
        size = min(size, total - off)
        first, last = off // CHUNK, (off + size - 1) // CHUNK
        ahead = state.advance(off, size, self.max_ahead)
        for index in range(last + 1, min(-(-total // CHUNK), last + 1 + ahead)):
            self._prefetch((key, etag, index), total)
        until = state.stall.deadline(trio.current_time(), self.store.read_deadline, self.store.reachability)
        try:
            parts = [await self._chunk((key, etag, index), total, until) for index in range(first, last + 1)]
        except TemporaryFailure:
            state.stall.failed(trio.current_time())
            raise
        data = memoryview(parts[0] if len(parts) == 1 else b"".join(parts))
        start = off - first * CHUNK
        return data[start:start + size]

    def forget(self, key: str) -> None:
        """The last handle of ``key`` closed: its chunks leave memory (the disk cache and the
        kernel's page cache still have them), so an idle daemon does not keep them."""
        for chunk in [c for c in self._recent if c[0] == key]:
            del self._recent[chunk]
            self._unread.discard(chunk)

    async def _chunk(self, chunk: ChunkId, total: int, until: float) -> Chunk:
        """The chunk from memory, the disk cache, a fetch in flight or a new GET; by ``until``."""
        recent = self._recent.get(chunk)
        if recent is not None:
            self._recent.move_to_end(chunk)
            self._unread.discard(chunk)
            return recent
        cached = self.read_cache.get(*chunk)
        if cached is not None:
            self.metrics.from_disk_cache.inc(len(cached))
            self._make_room()
            self._recent[chunk] = cached
            return cached
        flight = self._flights.get(chunk)
        if flight is not None:
            # The flight may have a later deadline (a readahead started after ours began) or none left.
            with trio.move_on_at(until):
                await flight.done.wait()
            if flight.data is not None:
                self._unread.discard(chunk)
                return flight.data
            if not flight.done.is_set():
                raise TemporaryFailure(f"GET {chunk[0]}: no answer in time (chunk {chunk[2]})", key=chunk[0])
        return await self._fetch(chunk, total, until=until)

    async def _fetch(self, chunk: ChunkId, total: int, *, keep: bool = True, until: float | None = None,
                     ahead: bool = False) -> Chunk:
        key, etag, index = chunk
        self._make_room()
        flight = ChunkFlight()
        self._flights[chunk] = flight
        try:
            start = index * CHUNK
            data = await self.store.get_range(key, start, min(CHUNK, total - start), etag=etag or None,
                                              until=until)
            flight.data = data
            if etag:  # without an ETag, a chunk cannot be told from the next version's: not kept
                self._recent[chunk] = data  # in the slot its flight held
                if ahead:
                    self._unread.add(chunk)
        finally:
            del self._flights[chunk]
            flight.done.set()
        if keep and etag and self.nursery is not None:
            # Readers already have the data; the disk copy is for later, off the trio thread.
            self.nursery.start_soon(trio.to_thread.run_sync, self.read_cache.put, key, etag, index, data)
        return data

    def _make_room(self) -> None:
        """Drop chunks until one more fits: those already read first (a sequential reader is past
        them), least recently used first. Only fetches that a READ waits for may find every slot
        in flight and go over, by at most the READs the kernel has in flight."""
        while self._recent and self.held >= self.slots:
            victim = next((c for c in self._recent if c not in self._unread), next(iter(self._recent)))
            del self._recent[victim]
            self._unread.discard(victim)

    def _prefetch(self, chunk: ChunkId, total: int) -> None:
        if (self.nursery is None or chunk in self._flights or chunk in self._recent
                or self.read_cache.has(*chunk)):
            return
        self.nursery.start_soon(self._prefetch_quietly, chunk, total)

    async def _prefetch_quietly(self, chunk: ChunkId, total: int) -> None:
        # Readahead never pushes the bound: with every slot in flight, a later READ asks again.
        if chunk in self._flights or len(self._flights) >= self.slots - 1:
            return
        try:
            await self._fetch(chunk, total, keep=total <= self.read_cache.capacity // SCAN_SHARE, ahead=True)
        except ObsfsError as exc:  # the reader that needs this chunk will fetch it and see the error
            log.debug("readahead of %s chunk %d failed: %s", chunk[0], chunk[2], exc)
