"""ChunkReader without a mount: what stays in memory, and when a chunk is fetched again."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectStore
from obsfs.errors import TemporaryFailure
from obsfs.readcache import ReadCache
from obsfs.reader import CHUNK, MAX_AHEAD, ChunkReader, ReadState, chunk_slots


class CountingStore:
    bucket = "fake"

    def __init__(self) -> None:
        self.gets: list[tuple[str, int]] = []

    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        self.gets.append((key, start))
        return bytearray(key[0].encode() * length)


def test_closing_the_last_handle_drops_its_chunks_from_memory(tmp_path: Path) -> None:
    fake = CountingStore()
    store = AsyncStore(cast(ObjectStore, fake), read_deadline=5, write_deadline=5)
    reader = ChunkReader(store, ReadCache(str(tmp_path / "data"), 0, CHUNK), 32 << 20)  # no disk cache

    async def main() -> None:
        for key in ("a", "b"):
            assert bytes(await reader.read(ReadState(), key, "etag", 2 * CHUNK, 0, 10)) == key.encode() * 10
        await reader.read(ReadState(), "a", "etag", 2 * CHUNK, 5, 10)
        assert len(fake.gets) == 2  # the second read of "a" came from memory
        reader.forget("a")
        await reader.read(ReadState(), "a", "etag", 2 * CHUNK, 5, 10)
        await reader.read(ReadState(), "b", "etag", 2 * CHUNK, 5, 10)
        assert fake.gets == [("a", 0), ("b", 0), ("a", 0)]  # "b" is still in memory

    trio.run(main)


class HangingStore:
    """A store that accepts every GET and never answers (until released)."""

    bucket = "fake"

    def __init__(self) -> None:
        self.release = threading.Event()

    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        self.release.wait(60)
        return bytearray(length)


def test_a_read_after_a_failed_one_fails_at_once(tmp_path: Path) -> None:
    """The kernel retries the page whose READ failed, right away: that READ, and the next ones,
    must not wait a deadline of their own, or one read() syscall takes several. On a MockClock,
    which jumps to the deadline as soon as everything waits for the hanging thread (so only the
outcomes and the virtual times are checked, not what the thread did meanwhile)."""
    fake = HangingStore()
    store = AsyncStore(cast(ObjectStore, fake), read_deadline=5, write_deadline=5)
    reader = ChunkReader(store, ReadCache(str(tmp_path / "data"), 0, CHUNK), 32 << 20)
    state = ReadState()

    async def failing_read() -> float:
        start = trio.current_time()
        with pytest.raises(TemporaryFailure):
            await reader.read(state, "k", "etag", 2 * CHUNK, 0, 10)
        return trio.current_time() - start

    async def main() -> None:
        assert await failing_read() == pytest.approx(5)
        assert await failing_read() == 0  # the retry: no wait (a GET would hang until the deadline)
        await trio.sleep(1)  # virtual time
        store.reachability.answered(trio.current_time())  # any call answered: the next read tries again
        assert await failing_read() == pytest.approx(5)

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        fake.release.set()


def test_the_window_grows_while_sequential_up_to_its_limit_and_a_seek_resets_it() -> None:
    state = ReadState()
    windows = [state.advance(offset, 1 << 20, max_ahead=3) for offset in range(0, 8 << 20, 1 << 20)]
    assert windows == [1, 2, 3, 3, 3, 3, 3, 3]
    assert state.advance(100 * CHUNK, 1 << 20, max_ahead=3) == 0


@pytest.mark.parametrize(("read_memory", "slots"), [(0, 2), (CHUNK - 1, 2), (3 * CHUNK, 3), (32 << 20, 8)])
def test_read_memory_in_chunks(read_memory: int, slots: int) -> None:
    assert chunk_slots(read_memory) == slots


class WatchedStore(CountingStore):
    """Records how many chunks the reader held each time a GET started (its flight included)."""

    def __init__(self) -> None:
        super().__init__()
        self.reader: ChunkReader | None = None
        self.held: list[int] = []

    def get_range(self, key: str, start: int, length: int, *, etag: str | None = None) -> bytearray:
        assert self.reader is not None
        self.held.append(self.reader.held)  # an int read from a worker thread: a snapshot
        return super().get_range(key, start, length, etag=etag)


@pytest.mark.parametrize("chunks", [3, 8])
def test_a_sequential_read_holds_no_more_chunks_than_read_memory(tmp_path: Path, chunks: int) -> None:
    """The bound holds with readahead running, and the window fits in it: no chunk fetched
    ahead is dropped before it was read, so each is fetched once."""
    fake = WatchedStore()
    store = AsyncStore(cast(ObjectStore, fake), read_deadline=5, write_deadline=5)
    reader = fake.reader = ChunkReader(store, ReadCache(str(tmp_path / "data"), 0, CHUNK), chunks * CHUNK)
    assert reader.max_ahead == min(MAX_AHEAD, chunks - 1)
    total = 24 * CHUNK
    state = ReadState()
    seen_after_reads: list[int] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            reader.nursery = nursery
            for offset in range(0, total, 1 << 20):
                assert bytes(await reader.read(state, "k", "etag", total, offset, 1 << 20)) == b"k" * (1 << 20)
                seen_after_reads.append(reader.held)

    trio.run(main)
    assert max(fake.held + seen_after_reads) <= chunks
    assert sorted(start for _, start in fake.gets) == list(range(0, total, CHUNK))
