"""Per-volume try-locks: one call per volume at a time, the next one gets ABORTED at once.

The CO normally sends one call per volume at a time, but after a timeout it retries while the
first call may still be running (a DeleteVolume of a large bucket outlives the provisioner's
deadline). Waiting would pile up threads and run the same work twice; ABORTED tells the CO to back
off and retry, which the spec prescribes for exactly this case. One lock per volume, not one
global lock, so a slow volume never delays the others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from csi.errors import Aborted


class VolumeLocks:
    def __init__(self) -> None:
        self._busy: set[str] = set()
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self, volume_id: str) -> Iterator[None]:
        """Run the block as the only call on ``volume_id``; raise Aborted if another one is running."""
        with self._mutex:
            if volume_id in self._busy:
                raise Aborted(f"an operation on volume {volume_id} is already in progress; retry later")
            self._busy.add(volume_id)
        try:
            yield
        finally:
            with self._mutex:
                self._busy.discard(volume_id)
