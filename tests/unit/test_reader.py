"""ChunkReader without a mount: what stays in memory, and when a chunk is fetched again."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import trio

from obsfs.backend.aio import AsyncStore
from obsfs.backend.base import ObjectStore
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
