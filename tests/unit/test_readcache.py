"""The clean-data cache: bounded by bytes, LRU, keyed by ETag, rebuilt from its directory."""

from __future__ import annotations

import os
from pathlib import Path

from obsfs.readcache import ReadCache


def test_roundtrip_and_etag_keying(tmp_path: Path) -> None:
    cache = ReadCache(str(tmp_path), capacity=1000, chunk_size=100)
    cache.put("k", "etag1", 0, b"a" * 100)
    assert cache.get("k", "etag1", 0) == b"a" * 100
    assert cache.get("k", "etag2", 0) is None  # a new version of the object misses
    assert cache.get("k", "etag1", 1) is None
    assert (cache.hits, cache.misses) == (1, 2)


def test_least_recently_used_goes_first(tmp_path: Path) -> None:
    cache = ReadCache(str(tmp_path), capacity=300, chunk_size=100)
    for index in range(3):
        cache.put("k", "e", index, bytes([index]) * 100)
    assert cache.get("k", "e", 0) is not None  # chunk 0 is now the most recent
    cache.put("k", "e", 3, b"x" * 100)
    assert cache.has("k", "e", 0) and not cache.has("k", "e", 1)
    assert cache.used == 300 and len(os.listdir(tmp_path)) == 3


def test_rebuilt_from_disk_and_torn_writes_dropped(tmp_path: Path) -> None:
    first = ReadCache(str(tmp_path), capacity=1000, chunk_size=100)
    first.put("k", "e", 0, b"z" * 100)
    (tmp_path / "deadbeef.7.tmp").write_bytes(b"half")  # a write cut short by a crash
    again = ReadCache(str(tmp_path), capacity=1000, chunk_size=100)
    assert again.get("k", "e", 0) == b"z" * 100
    assert not (tmp_path / "deadbeef.7.tmp").exists()
    smaller = ReadCache(str(tmp_path), capacity=50, chunk_size=100)  # a lower cache_size evicts
    assert smaller.used == 0 and os.listdir(tmp_path) == []


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = ReadCache(str(tmp_path), capacity=0, chunk_size=100)
    cache.put("k", "e", 0, b"a")
    assert cache.get("k", "e", 0) is None and os.listdir(tmp_path) == []
