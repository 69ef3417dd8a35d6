"""Clean object data on local disk: fixed-size chunks keyed by (key, ETag), evicted LRU.

Keying by ETag makes invalidation free: a changed object has a new ETag, so its old chunks are
simply never asked for again and age out. Only clean data lives here; dirty data is in the
staging area and is never evicted. Chunk files are written to a temporary name and renamed, so a
crash leaves either a whole chunk or none, and the index is rebuilt from the directory on start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections import OrderedDict

log = logging.getLogger(__name__)


class ReadCache:
    def __init__(self, directory: str, capacity: int, chunk_size: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self.chunk_size = chunk_size
        self._lru: OrderedDict[str, int] = OrderedDict()  # file name -> bytes, oldest first
        self.used = 0
        self.hits = 0
        self.misses = 0
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._load()

    def _load(self) -> None:
        entries = []
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(".tmp"):
                os.unlink(path)  # a write cut short by a crash
                continue
            st = os.stat(path)
            entries.append((st.st_mtime_ns, name, st.st_size))
        for _, name, size in sorted(entries):
            self._lru[name] = size
            self.used += size
        self._evict()

    def _name(self, key: str, etag: str, index: int) -> str:
        digest = hashlib.sha256(f"{key}\0{etag}".encode()).hexdigest()[:32]
        return f"{digest}.{index}"

    def has(self, key: str, etag: str, index: int) -> bool:
        return self.capacity > 0 and self._name(key, etag, index) in self._lru

    def get(self, key: str, etag: str, index: int) -> bytes | None:
        if self.capacity <= 0:
            return None
        name = self._name(key, etag, index)
        if name not in self._lru:
            self.misses += 1
            return None
        try:
            with open(os.path.join(self.directory, name), "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            self._forget(name)
            self.misses += 1
            return None
        self._lru.move_to_end(name)
        self.hits += 1
        return data

    def put(self, key: str, etag: str, index: int, data: bytes | bytearray) -> None:
        if self.capacity <= 0 or len(data) > self.capacity:
            return
        name = self._name(key, etag, index)
        path = os.path.join(self.directory, name)
        try:
            with open(path + ".tmp", "wb") as stream:
                stream.write(data)
            os.replace(path + ".tmp", path)
        except OSError as exc:  # a full cache disk only costs us the caching
            log.info("read cache: could not store a chunk: %s", exc)
            with contextlib.suppress(OSError):
                os.unlink(path + ".tmp")
            return
        self._forget(name)
        self._lru[name] = len(data)
        self.used += len(data)
        self._evict()

    def _forget(self, name: str) -> None:
        size = self._lru.pop(name, None)
        if size is not None:
            self.used -= size

    def _evict(self) -> None:
        while self.used > self.capacity and self._lru:
            name, size = self._lru.popitem(last=False)
            self.used -= size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, name))
