"""One malloc arena, so that the daemon's RSS follows the read memory it holds (``-o read_memory``).

glibc gives each thread that allocates an arena of its own, up to 8 per core, and a block freed
in an arena's heap stays resident unless it is at the heap's top. The reader's 4 MiB chunks are
allocated in the SDK's worker threads (the GET fills them there) and freed in the trio thread,
so each worker's heap keeps the largest set of chunks it ever held. One arena makes those freed
chunks the next ones handed out. Allocations of chunks are few (one per 4 MiB), and most of
Python's small objects come from its own allocator, so the shared arena's lock is not contended.

Measured reading a 1 GiB object cold through the mount (RGW, load 1-3, 3 runs; VmHWM, time):
without tuning 135-162 MiB, 2.5-3.0 s; one arena 88-95 MiB, 3.1-3.3 s; a fixed mmap threshold
(each chunk its own mapping) 80-84 MiB but 4.1-4.2 s, the page faults of every new chunk.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def one_arena() -> None:
    """Must run before any thread has allocated: an arena, once made, stays."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt (musl), and without per-thread arenas
        return
    if not mallopt(M_ARENA_MAX, 1):
        log.info("mallopt(M_ARENA_MAX, 1) refused: read memory may stay resident after use")
