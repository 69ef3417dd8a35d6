"""Volume usage for NodeGetVolumeStats: counted from a listing, remembered for a while.

A bucket has no superblock with a free-block count: the only way to know how much a volume
holds is to list its objects, one request per thousand keys. kubelet asks for every published
volume about once a minute and once per pod, so the answer is cached per volume for ``ttl``
seconds; a failure is cached as well, so that an unreachable store is not hammered either. What
the daemon itself has not uploaded yet is not counted: the store's view is what other nodes and
the quota see.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

DEFAULT_TTL = 60.0


@dataclass(frozen=True)
class Usage:
    objects: int = 0
    bytes: int = 0
    capacity: int = 0  # bytes; 0 when no record says (a static volume)
    problem: str | None = None  # why the store could not be asked; the numbers are then older or 0


class UsageCache:
    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Usage]] = {}
        self._mutex = threading.Lock()

    def get(self, volume_id: str, measure: Callable[[], Usage]) -> Usage:
        """The cached usage of ``volume_id`` while fresh, else ``measure()``'s.

        A failed measurement keeps the last good numbers and adds the problem, so a short outage
        of the store does not make a full volume look empty.
        """
        now = self._clock()
        with self._mutex:
            cached = self._entries.get(volume_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        usage = measure()
        if usage.problem is not None and cached is not None:
            usage = replace(cached[1], problem=usage.problem)
        with self._mutex:
            self._entries[volume_id] = (now, usage)
        return usage

    def forget(self, volume_id: str) -> None:
        with self._mutex:
            self._entries.pop(volume_id, None)
