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
from obsfs.reader import CHUNK, ChunkReader, ReadState


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
    reader = ChunkReader(store, ReadCache(str(tmp_path / "data"), 0, CHUNK))  # no disk cache

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
    reader = ChunkReader(store, ReadCache(str(tmp_path / "data"), 0, CHUNK))
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
